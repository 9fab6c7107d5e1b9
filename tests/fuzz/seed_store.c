/* Writes the seed corpus of the store and cache_open fuzz targets: stores
 * made through semgate's own API (cache and store), dumped record by record
 * in the targets' input format (store_input.h).
 *
 *   build-fuzz/fuzz/fuzz_seed_store tests/fuzz/corpus/store [PREFIX]
 *   build-fuzz/fuzz/fuzz_seed_store tests/fuzz/corpus/cache_open [PREFIX]
 *
 * PREFIX starts each file's name (e.g. "f3_": seeds of store format 3 beside
 * older ones, which exercise the upgrade at open). Rerun it when the store's
 * or the index's format changes. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "semgate/cache.h"
#include "semgate/cache_key.h"
#include "semgate/index.h"
#include "semgate/log.h"
#include "semgate/store.h"
#include "store_input.h"

static char work[] = "/tmp/semgate-seed.XXXXXX";

static void die(const char *what, int rc) __attribute__((noreturn));

static void die(const char *what, int rc)
{
	fprintf(stderr, "fuzz_seed_store: %s: %s\n", what, sg_strerror(rc));
	exit(1);
}

static void wipe(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/data.mdb", work);
	unlink(path);
	snprintf(path, sizeof(path), "%s/lock.mdb", work);
	unlink(path);
}

static void put_u16(FILE *f, size_t v)
{
	fputc((int)(v >> 8) & 0xff, f);
	fputc((int)v & 0xff, f);
}

/* Dump the store in `work` to outdir/name; format: meta "format" rewritten
 * to this (0: as it is). */
static const char *prefix = "";

static void dump(const char *outdir, const char *name, unsigned flags, uint32_t format)
{
	char path[1024];
	MDB_env *env;
	MDB_txn *txn;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s%s", outdir, prefix, name);
	if ((f = fopen(path, "wb")) == NULL) {
		perror(path);
		exit(1);
	}
	fputc((int)flags, f);
	if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
	    mdb_env_open(env, work, MDB_RDONLY, 0600) ||
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
		die("opening the store to dump it", SG_ESTORE);
	for (int db = 0; db < DB__LAST; db++) {
		MDB_cursor *cur;
		MDB_val k, v;
		MDB_dbi dbi;
		int rc;

		if (mdb_dbi_open(txn, store_dbs[db].name, 0, &dbi) || mdb_cursor_open(txn, dbi, &cur))
			die(store_dbs[db].name, SG_ESTORE);
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			const void *val = v.mv_data;
			if (k.mv_size > 255 || v.mv_size > 65535)
				die("a record too large for the input format", SG_ETOOBIG);
			if (db == DB_META && format && k.mv_size == 6 &&
			    memcmp(k.mv_data, "format", 6) == 0)
				val = &format;
			fputc(db, f);
			fputc((int)k.mv_size, f);
			fwrite(k.mv_data, 1, k.mv_size, f);
			put_u16(f, v.mv_size);
			fwrite(val, 1, v.mv_size, f);
		}
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	fclose(f);
	printf("%s\n", path);
}

static void unit(float *v, int seed)
{
	float n = 0;
	for (int i = 0; i < STORE_DIM; i++) {
		v[i] = (float)((seed * 7 + i * 3) % 11) - 5.0f;
		n += v[i] * v[i];
	}
	n = sqrtf(n > 0 ? n : 1);
	for (int i = 0; i < STORE_DIM; i++)
		v[i] /= n;
}

/* Store the answer to `prompt` (temperature t: another scope). */
static void put(sg_cache_t *c, const char *prompt, double t, int ttl_s, int with_vec)
{
	static const sg_cache_key_opts_t ko = {.embed_mode = SG_EMBED_LAST_USER,
					       .max_temperature = 2.0};
	static const char resp[] = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
				   "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
				   "\"content\":\"Hi\"},\"finish_reason\":\"stop\"}],"
				   "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}";
	json_t *req = json_pack("{s:s,s:f,s:[{s:s,s:s}]}", "model", "gpt-4o-mini", "temperature", t,
				"messages", "role", "user", "content", prompt);
	sg_cache_key_t k;
	float v[STORE_DIM];
	int rc;

	sg_cache_key_init(&k);
	if ((rc = sg_cache_key_build(&k, req, SG_CACHE_CHAT, "default", "gpt-4o-mini", &ko)))
		die("sg_cache_key_build", rc);
	unit(v, (int)strlen(prompt));
	rc = sg_cache_store(c, &k, with_vec ? v : NULL, "default", "gpt-4o-mini",
			    (sg_iovec_t){resp, sizeof(resp) - 1}, 3, 1, STORE_NOW_S - 10, ttl_s,
			    NULL);
	if (rc)
		die("sg_cache_store", rc);
	sg_cache_key_free(&k);
	json_decref(req);
}

static sg_cache_t *open_cache(sg_index_type_t type)
{
	sg_cache_opts_t o = {.path = work, .embedder_id = STORE_EMBEDDER_ID, .dim = STORE_DIM,
			     .index_type = type, .hnsw_min_entries = 2,
			     .index_opts = {.hnsw_m = 4, .hnsw_ef_search = 8},
			     .map_size = STORE_MAP_SIZE, .max_map_size = 2 * STORE_MAP_SIZE,
			     .ckpt_chunk_bytes = 256};
	char err[256];
	sg_cache_t *c;
	int rc;

	wipe();
	if ((rc = sg_cache_open(&c, &o, STORE_NOW_S - 10, err, sizeof(err)))) {
		fprintf(stderr, "%s\n", err);
		die("sg_cache_open", rc);
	}
	return c;
}

int main(int argc, char **argv)
{
	const char *out = argc > 1 ? argv[1] : ".";
	const unsigned fix = STORE_IN_FIX_RECORDS | STORE_IN_FIX_MANIFESTS | STORE_IN_FIX_BLOBS;
	sg_cache_t *c;

	if (argc > 2)
		prefix = argv[2];
	sg_log_set_level(SG_LOG_ERROR);
	if (mkdtemp(work) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	mkdir(out, 0755);

	/* a new, empty cache */
	c = open_cache(SG_INDEX_FLAT);
	sg_cache_close(c);
	dump(out, "empty", 0, 0);

	/* flat indexes of two scopes, checkpointed in 256-byte chunks at close;
	 * one entry expired at the fuzzers' "now", one without a vector */
	c = open_cache(SG_INDEX_FLAT);
	put(c, "What is the capital of France?", 0.0, 0, 1);
	put(c, "What's the capital of France?", 0.0, 0, 1);
	put(c, "Name the capital city of France", 0.0, 5, 1);
	put(c, "Bonjour", 0.7, 0, 1);
	put(c, "exact only", 0.7, 0, 0);
	sg_cache_close(c);
	dump(out, "flat", fix, 0);
	/* the same, read as store format 1 (upgraded in place at open) */
	dump(out, "flat_format1", fix, 1);
	/* and with every checksum left as it is after mutation */
	dump(out, "flat_nofix", 0, 0);

	/* an entry after the checkpoint: recovered from its vector at start */
	c = open_cache(SG_INDEX_FLAT);
	put(c, "first", 0.0, 0, 1);
	sg_cache_close(c);
	{
		static const sg_cache_key_opts_t ko = {.embed_mode = SG_EMBED_LAST_USER,
					       .max_temperature = 2.0};
		sg_store_opts_t so = {.map_size = STORE_MAP_SIZE, .embedder_id = STORE_EMBEDDER_ID,
				      .dim = STORE_DIM};
		json_t *req = json_pack("{s:s,s:f,s:[{s:s,s:s}]}", "model", "gpt-4o-mini",
					"temperature", 0.0, "messages", "role", "user", "content",
					"second");
		sg_cache_key_t k;
		sg_store_t *s;
		float v[STORE_DIM];
		char err[256];
		int rc;

		sg_cache_key_init(&k);
		unit(v, 6);
		if ((rc = sg_cache_key_build(&k, req, SG_CACHE_CHAT, "default", "gpt-4o-mini", &ko)))
			die("sg_cache_key_build", rc);
		sg_entry_in_t e = {.ns = {"default", 7}, .model = {"gpt-4o-mini", 11},
				   .scope_json = {k.scope.data, k.scope.len},
				   .prompt = {k.prompt.data, k.prompt.len}, .response = {"{}", 2},
				   .scope_hash = k.scope_hash, .exact_hash = k.exact_hash,
				   .created_s = STORE_NOW_S - 5};
		if ((rc = sg_store_open(&s, work, &so, err, sizeof(err))) ||
		    (rc = sg_store_put(s, &e, v, NULL)))
			die("an entry after the checkpoint", rc);
		sg_store_close(s);
		sg_cache_key_free(&k);
		json_decref(req);
	}
	dump(out, "unsaved", fix, 0);

	/* an HNSW index */
	c = open_cache(SG_INDEX_HNSW);
	for (int i = 0; i < 6; i++) {
		char p[32];
		snprintf(p, sizeof(p), "question number %d", i);
		put(c, p, 0.0, 0, 1);
	}
	sg_cache_close(c);
	dump(out, "hnsw", fix | STORE_IN_HNSW, 0);

	/* a single-record checkpoint (the form sg_store_put_checkpoint writes) */
	{
		sg_store_opts_t so = {.map_size = STORE_MAP_SIZE, .embedder_id = STORE_EMBEDDER_ID,
				      .dim = STORE_DIM};
		sg_entry_in_t e = {.ns = {"default", 7}, .model = {"m", 1},
				   .scope_json = {"{}", 2}, .prompt = {"p", 1},
				   .response = {"{}", 2}, .scope_hash = 42, .exact_hash = 7,
				   .created_s = STORE_NOW_S - 10};
		sg_index_t *ix;
		sg_store_t *s;
		sg_buf_t blob;
		float v[STORE_DIM];
		uint64_t id;
		char err[256];
		int rc;

		wipe();
		unit(v, 3);
		sg_buf_init(&blob, 0);
		if ((rc = sg_store_open(&s, work, &so, err, sizeof(err))) ||
		    (rc = sg_store_put(s, &e, v, &id)) ||
		    (rc = sg_index_new(&ix, STORE_DIM, SG_INDEX_FLAT, NULL)) ||
		    (rc = sg_index_add(ix, (int64_t)id, v)) || (rc = sg_index_serialize(ix, &blob)) ||
		    (rc = sg_store_put_checkpoint(s, 42, id, blob.data, blob.len)))
			die("single-record checkpoint", rc);
		sg_index_free(ix);
		sg_buf_free(&blob);
		sg_store_close(s);
		dump(out, "single_record", fix, 0);
	}

	wipe();
	rmdir(work);
	return 0;
}
