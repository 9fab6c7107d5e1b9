/* The semantic cache's LMDB store: see include/semgate/store.h for the layout
 * and the durability model.
 *
 * Every write goes through sg__store_write_txn(), which runs a function in one write
 * transaction and, when LMDB reports MDB_MAP_FULL, aborts, doubles the map
 * (up to max_map_size) and runs it again: write functions must therefore be
 * re-runnable, with no side effect outside the transaction. Reads reuse one
 * reset read transaction (renewing costs no allocation). Every MDB_* code is
 * translated in one place, sg__store_mdb_fail(), which also keeps LMDB's message for
 * sg_store_last_error().
 */
#include "store_int.h"

static const char *const meta_format = "format", *const meta_embedder = "embedder",
			 *const meta_dim = "dim", *const meta_next_id = "next_id",
			 *const meta_bytes = "bytes", *const meta_hash_key = "hash_key",
			 *const meta_rehash = "rehash";


void sg__store_set_err(sg_store_t *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
}

/* The one translation of LMDB's codes (MDB_* and errno values) to SG_E*. */
int sg__store_mdb_code(int rc)
{
	int err;

	switch (rc) {
	case MDB_NOTFOUND:
		err = SG_ENOTFOUND;
		break;
	case MDB_MAP_FULL:
		err = SG_EFULL;
		break;
	case MDB_KEYEXIST:
		err = SG_EEXIST;
		break;
	case MDB_CORRUPTED:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_PAGE_NOTFOUND:
		err = SG_ECORRUPT;
		break;
	case MDB_INCOMPATIBLE:
		err = SG_EMISMATCH;
		break;
	case ENOMEM:
		err = SG_ENOMEM;
		break;
	default:
		err = rc > 0 ? SG_EIO : SG_ESTORE; /* errno values are positive */
		break;
	}
	return err;
}

int sg__store_mdb_fail(sg_store_t *s, int rc, const char *what)
{
	s->map_full = rc == MDB_MAP_FULL;
	sg__store_set_err(s, "%s: %s", what, mdb_strerror(rc));
	return sg__store_mdb_code(rc);
}

void sg__store_key_be(uint8_t k[8], uint64_t id)
{
	for (int i = 7; i >= 0; i--, id >>= 8)
		k[i] = (uint8_t)id;
}

uint64_t sg__store_key_id(const MDB_val *k)
{
	const uint8_t *p = k->mv_data;
	uint64_t id = 0;
	for (int i = 0; i < 8; i++)
		id = id << 8 | p[i];
	return id;
}

static size_t round_up(size_t n, size_t to)
{
	return n % to ? n + (to - n % to) : n;
}

/* ---- transactions ---------------------------------------------------- */

int sg__store_enter(sg_store_t *s)
{
	if (s->busy) {
		sg__store_set_err(s, "store called from inside its own iteration callback");
		return SG_EINVAL;
	}
	return 0;
}

int sg__store_read_begin(sg_store_t *s, MDB_txn **txn)
{
	int err = sg__store_enter(s), rc;

	if (err)
		return err;
	for (int tries = 0;; tries++) {
		rc = s->rtxn ? mdb_txn_renew(s->rtxn)
			     : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
		if (rc == 0) {
			*txn = s->rtxn;
			return 0;
		}
		if (s->rtxn) {
			mdb_txn_abort(s->rtxn);
			s->rtxn = NULL;
		}
		/* Another process grew the map: adopt its size and retry once. */
		if (rc != MDB_MAP_RESIZED || tries > 0)
			return sg__store_mdb_fail(s, rc, "mdb_txn_begin(read)");
		pthread_mutex_lock(&s->wlock);
		rc = mdb_env_set_mapsize(s->env, 0);
		pthread_mutex_unlock(&s->wlock);
		if (rc)
			return sg__store_mdb_fail(s, rc, "mdb_env_set_mapsize");
	}
}

void sg__store_read_end(sg_store_t *s)
{
	if (s->rtxn)
		mdb_txn_reset(s->rtxn);
}

static void refresh_map_size(sg_store_t *s)
{
	MDB_envinfo info;
	if (mdb_env_info(s->env, &info) == 0)
		s->map_size = info.me_mapsize;
}

int sg__store_grow(sg_store_t *s)
{
	size_t next;
	int rc;

	if (s->map_size >= s->max_map_size) {
		sg__store_set_err(s, "store map is full at its maximum size (%zu bytes)", s->max_map_size);
		return SG_EFULL;
	}
	next = s->map_size > s->max_map_size / 2 ? s->max_map_size : s->map_size * 2;
	/* mdb_env_set_mapsize wants no transaction in this process. */
	if (s->rtxn) {
		mdb_txn_abort(s->rtxn);
		s->rtxn = NULL;
	}
	if ((rc = mdb_env_set_mapsize(s->env, next)))
		return sg__store_mdb_fail(s, rc, "mdb_env_set_mapsize");
	refresh_map_size(s);
	return 0;
}

/* Run fn in a write transaction and commit; grow the map and re-run it on
 * MDB_MAP_FULL. wlock keeps a checkpoint writer's transaction (another
 * thread) out of the way of a resize, which wants no transaction open. */
static int write_txn_locked(sg_store_t *s, txn_fn fn, void *ctx);

int sg__store_write_txn(sg_store_t *s, txn_fn fn, void *ctx)
{
	int err = sg__store_enter(s);

	if (err)
		return err;
	pthread_mutex_lock(&s->wlock);
	err = write_txn_locked(s, fn, ctx);
	pthread_mutex_unlock(&s->wlock);
	return err;
}

static int write_txn_locked(sg_store_t *s, txn_fn fn, void *ctx)
{
	int err;

	for (int resized = 0;;) {
		MDB_txn *txn;
		int rc = mdb_txn_begin(s->env, NULL, 0, &txn);

		if (rc == MDB_MAP_RESIZED && !resized++) {
			if ((rc = mdb_env_set_mapsize(s->env, 0)))
				return sg__store_mdb_fail(s, rc, "mdb_env_set_mapsize");
			refresh_map_size(s);
			continue;
		}
		if (rc)
			return sg__store_mdb_fail(s, rc, "mdb_txn_begin");
		s->map_full = 0;
		err = fn(s, txn, ctx);
		if (err) {
			mdb_txn_abort(txn);
		} else if ((rc = mdb_txn_commit(txn))) {
			err = sg__store_mdb_fail(s, rc, "mdb_txn_commit");
		}
		if (err != SG_EFULL || !s->map_full)
			return err;
		if ((err = sg__store_grow(s)))
			return err;
	}
}

/* ---- meta ------------------------------------------------------------ */

static int meta_get(sg_store_t *s, MDB_txn *txn, const char *name, MDB_val *v)
{
	MDB_val k = {strlen(name), (void *)name};
	int rc = mdb_get(txn, s->meta, &k, v);
	if (rc == MDB_NOTFOUND) {
		sg__store_set_err(s, "cache at %s: meta '%s' is missing", s->dir, name);
		return SG_ECORRUPT; /* meta keys always exist in a good store */
	}
	return rc ? sg__store_mdb_fail(s, rc, "mdb_get(meta)") : 0;
}

static int meta_get_int(sg_store_t *s, MDB_txn *txn, const char *name, void *out, size_t n)
{
	MDB_val v;
	int err = meta_get(s, txn, name, &v);
	if (err)
		return err;
	if (v.mv_size != n) {
		sg__store_set_err(s, "cache at %s: meta '%s' has %zu bytes, not %zu", s->dir, name,
			v.mv_size, n);
		return SG_ECORRUPT;
	}
	memcpy(out, v.mv_data, n);
	return 0;
}

static int meta_put(sg_store_t *s, MDB_txn *txn, const char *name, const void *p, size_t n)
{
	MDB_val k = {strlen(name), (void *)name}, v = {n, (void *)p};
	int rc = mdb_put(txn, s->meta, &k, &v, 0);
	return rc ? sg__store_mdb_fail(s, rc, "mdb_put(meta)") : 0;
}

/* bytes += delta, never below 0. */
static int bytes_add(sg_store_t *s, MDB_txn *txn, int64_t delta)
{
	uint64_t bytes;
	int err = meta_get_int(s, txn, meta_bytes, &bytes, sizeof(bytes));
	if (err)
		return err;
	if (delta < 0 && (uint64_t)-delta > bytes)
		bytes = 0;
	else
		bytes += (uint64_t)delta;
	return meta_put(s, txn, meta_bytes, &bytes, sizeof(bytes));
}

/* ---- records ----------------------------------------------------------- */

/* Low 32 bits of XXH64 over the header (checksum field zeroed) and the
 * variable parts (len bytes at parts). ~0.1 us per KiB. */
static uint32_t rec_checksum(const rec_hdr_t *h, const void *parts, size_t len)
{
	rec_hdr_t z = *h;
	z.checksum = 0;
	return (uint32_t)sg_hash64(parts, len, sg_hash64(&z, sizeof(z), 0));
}

/* Parse and validate a record: m's slices borrow v's bytes. */
static int rec_decode(sg_store_t *s, const MDB_val *v, uint64_t id, sg_entry_meta_t *m)
{
	sg_iovec_t *parts[PART_LAST] = {&m->ns, &m->model, &m->scope_json, &m->prompt,
					&m->response};
	const char *p = v->mv_data;
	uint64_t total = 0;
	rec_hdr_t h;

	if (v->mv_size < sizeof(h))
		goto bad;
	memcpy(&h, p, sizeof(h));
	if (h.version != REC_VERSION)
		goto bad;
	for (int i = 0; i < PART_LAST; i++)
		total += h.len[i];
	if (total != v->mv_size - sizeof(h) || h.checksum != rec_checksum(&h, p + sizeof(h), total))
		goto bad;
	m->id = id;
	m->flags = h.flags;
	m->created_s = h.created_s;
	m->expires_s = h.expires_s;
	m->hits = h.hits;
	m->last_hit_s = h.last_hit_s;
	m->scope_hash = h.scope_hash;
	m->exact_hash = h.exact_hash;
	m->prompt_tokens = h.prompt_tokens;
	m->completion_tokens = h.completion_tokens;
	p += sizeof(h);
	for (int i = 0; i < PART_LAST; i++) {
		parts[i]->base = p;
		parts[i]->len = h.len[i];
		p += h.len[i];
	}
	return 0;
bad:
	sg__store_set_err(s, "entry %" PRIu64 ": record of %zu bytes is corrupt or truncated", id,
		v->mv_size);
	return SG_ECORRUPT;
}

static int entry_copy(const sg_entry_meta_t *m, sg_entry_t *out)
{
	const sg_iovec_t *src[PART_LAST] = {&m->ns, &m->model, &m->scope_json, &m->prompt,
					    &m->response};
	sg_iovec_t *dst[PART_LAST] = {&out->m.ns, &out->m.model, &out->m.scope_json,
				      &out->m.prompt, &out->m.response};
	size_t size = PART_LAST; /* one NUL after each part */
	char *p;

	for (int i = 0; i < PART_LAST; i++)
		size += src[i]->len;
	if (!(out->mem = malloc(size)))
		return SG_ENOMEM;
	out->m = *m;
	p = out->mem;
	for (int i = 0; i < PART_LAST; i++) {
		if (src[i]->len)
			memcpy(p, src[i]->base, src[i]->len);
		p[src[i]->len] = '\0';
		dst[i]->base = p;
		dst[i]->len = src[i]->len;
		p += src[i]->len + 1;
	}
	return 0;
}

/* ---- open / close -------------------------------------------------------- */

static int prepare_dir(sg_store_t *s, int rebuild)
{
	static const char *const files[] = {"data.mdb", "lock.mdb"};
	char path[4096];
	struct stat sb;

	if (stat(s->dir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode)) {
			sg__store_set_err(s, "cache path %s exists and is not a directory", s->dir);
			return SG_EIO;
		}
	} else if (errno == ENOENT) {
		if (mkdir(s->dir, 0700) != 0) {
			sg__store_set_err(s, "cannot create cache directory %s: %s", s->dir,
				strerror(errno));
			return SG_EIO;
		}
	} else {
		sg__store_set_err(s, "cannot access cache directory %s: %s", s->dir, strerror(errno));
		return SG_EIO;
	}
	for (size_t i = 0; i < SG_ARRAY_SIZE(files); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", s->dir, files[i]) >=
		    sizeof(path)) {
			sg__store_set_err(s, "cache path %s is too long", s->dir);
			return SG_EINVAL;
		}
		if (rebuild && unlink(path) != 0 && errno != ENOENT) {
			sg__store_set_err(s, "cannot remove %s to rebuild the cache: %s", path,
				strerror(errno));
			return SG_EIO;
		}
		if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
			sg__store_set_err(s, "%s is not a regular file", path);
			return SG_EIO;
		}
	}
	return 0;
}

static int env_open(sg_store_t *s)
{
	MDB_envinfo info;
	MDB_stat st;
	struct stat sb;
	int fd, rc, dead;

	if ((rc = mdb_env_create(&s->env)))
		return sg__store_mdb_fail(s, rc, "mdb_env_create");
	if ((rc = mdb_env_set_maxdbs(s->env, 8)) ||
	    (rc = mdb_env_set_mapsize(s->env, s->map_size)))
		return sg__store_mdb_fail(s, rc, "mdb_env_set_mapsize");
	rc = mdb_env_open(s->env, s->dir, MDB_NOSYNC | MDB_NOMETASYNC | MDB_NOTLS, 0600);
	if (rc) {
		int err = sg__store_mdb_fail(s, rc, "mdb_env_open");
		if (err == SG_ECORRUPT)
			sg__store_set_err(s, "cache at %s: data.mdb is not a usable LMDB file (%s): "
				"remove the directory or start with --rebuild-cache",
				s->dir, mdb_strerror(rc));
		else
			sg__store_set_err(s, "cannot open the cache at %s: %s", s->dir, mdb_strerror(rc));
		return err;
	}
	/* LMDB maps the whole file and would take SIGBUS on a page past a
	 * truncated end: refuse a file shorter than its header says. */
	if ((rc = mdb_env_info(s->env, &info)) || (rc = mdb_env_stat(s->env, &st)) ||
	    (rc = mdb_env_get_fd(s->env, &fd)))
		return sg__store_mdb_fail(s, rc, "mdb_env_info");
	if (fstat(fd, &sb) != 0) {
		sg__store_set_err(s, "cannot stat %s/data.mdb: %s", s->dir, strerror(errno));
		return SG_EIO;
	}
	if ((uint64_t)sb.st_size < ((uint64_t)info.me_last_pgno + 1) * st.ms_psize) {
		sg__store_set_err(s, "cache at %s: data.mdb is truncated (%lld bytes, it needs %" PRIu64
			"): remove the directory or start with --rebuild-cache",
			s->dir, (long long)sb.st_size,
			((uint64_t)info.me_last_pgno + 1) * st.ms_psize);
		return SG_ECORRUPT;
	}
	/* Free reader slots left by a killed process. */
	mdb_reader_check(s->env, &dead);
	refresh_map_size(s);
	return 0;
}

/* The child's side of verify_pages(): read every key and value of every
 * database, the free list (dbi 0) and the main one included. Exit status. */
static int verify_walk(const char *dir, size_t map_size)
{
	static const char *const names[] = {"meta",        "entries",   "vectors", "exact",
					    "checkpoints", "manifests", "ckchunks"};
	volatile uint64_t sink = 0; /* keeps the reads from being optimised away */
	MDB_env *env;
	MDB_txn *txn;

	if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
	    mdb_env_set_mapsize(env, map_size) ||
	    mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600) ||
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
		return 1;
	for (int i = -2; i < (int)SG_ARRAY_SIZE(names); i++) {
		MDB_cursor *cur;
		MDB_val k, v;
		MDB_dbi dbi = 0; /* i == -2: the free list */
		int rc = 0;

		if (i >= -1)
			rc = mdb_dbi_open(txn, i < 0 ? NULL : names[i], 0, &dbi);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc || mdb_cursor_open(txn, dbi, &cur))
			return 1;
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
			sink ^= sg_hash64(k.mv_data, k.mv_size, sg_hash64(v.mv_data, v.mv_size, 0));
		mdb_cursor_close(cur);
		if (rc != MDB_NOTFOUND)
			return 1;
	}
	(void)sink;
	return 0;
}

/* LMDB trusts its pages: a damaged B-tree can make it read wild memory.
 * Walk everything once in a child process, which dies instead of us. */
static int verify_pages(sg_store_t *s)
{
	pid_t pid = fork();
	int status;

	if (pid < 0) {
		sg__store_set_err(s, "cannot fork to verify the cache at %s: %s", s->dir, strerror(errno));
		return SG_EIO;
	}
	if (pid == 0) {
		/* Die quietly on bad memory: not via the server's (or ASan's) handler. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		_exit(verify_walk(s->dir, s->map_size));
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			sg__store_set_err(s, "waitpid: %s", strerror(errno));
			return SG_EIO;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		sg__store_set_err(s, "cache at %s: data.mdb is damaged (reading its pages crashed a "
			"check process: signal %d): remove the directory or start with "
			"--rebuild-cache", s->dir, WTERMSIG(status));
	else
		sg__store_set_err(s, "cache at %s: data.mdb is damaged (reading its pages failed): "
			"remove the directory or start with --rebuild-cache", s->dir);
	return SG_ECORRUPT;
}

typedef struct open_ctx {
	const sg_store_opts_t *opts; /* borrowed */
} open_ctx_t;

static int open_dbi(sg_store_t *s, MDB_txn *txn, const char *name, unsigned flags,
		    MDB_dbi *dbi)
{
	int rc = mdb_dbi_open(txn, name, flags | MDB_CREATE, dbi);
	if (rc == MDB_INCOMPATIBLE) {
		sg__store_set_err(s, "%s holds an LMDB database that is not a semgate cache ('%s' has "
			"another type): remove the directory or start with --rebuild-cache",
			s->dir, name);
		return SG_EMISMATCH;
	}
	return rc ? sg__store_mdb_fail(s, rc, "mdb_dbi_open") : 0;
}

static int check_identity(sg_store_t *s, MDB_txn *txn, const sg_store_opts_t *opts,
			  uint32_t *format_out)
{
	uint32_t format, dim;
	MDB_val v;
	int err;

	if ((err = meta_get_int(s, txn, meta_format, &format, sizeof(format))))
		return err;
	if (format != STORE_FORMAT && format != STORE_FORMAT_NO_KEY &&
	    format != STORE_FORMAT_NO_CHUNKS) {
		sg__store_set_err(s, "cache at %s has store format %" PRIu32 "; this semgate uses %u: "
			"remove the directory or start with --rebuild-cache",
			s->dir, format, STORE_FORMAT);
		return SG_EMISMATCH;
	}
	if ((err = meta_get(s, txn, meta_embedder, &v)) ||
	    (err = meta_get_int(s, txn, meta_dim, &dim, sizeof(dim))))
		return err;
	if (v.mv_size > SG_STORE_MAX_EMBEDDER_ID) {
		sg__store_set_err(s, "cache at %s: meta 'embedder' is %zu bytes long", s->dir, v.mv_size);
		return SG_ECORRUPT;
	}
	if (dim != opts->dim || v.mv_size != strlen(opts->embedder_id) ||
	    memcmp(v.mv_data, opts->embedder_id, v.mv_size) != 0) {
		sg__store_set_err(s, "cache at %s was built with embedder '%.*s' (dim %" PRIu32 "); "
			"this configuration uses '%s' (dim %" PRIu32 "): remove the "
			"directory or start with --rebuild-cache",
			s->dir, (int)v.mv_size, (const char *)v.mv_data, dim, opts->embedder_id,
			opts->dim);
		return SG_EMISMATCH;
	}
	*format_out = format;
	return 0;
}

/* A fresh random secret for the store's ids (getrandom: never blocks once the
 * kernel's pool is seeded, which it is long before semgate starts). */
static int new_hash_key(sg_store_t *s)
{
	uint8_t b[16];
	size_t got = 0;
	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			sg__store_set_err(s, "cache at %s: no random bytes for the store's secret: %s", s->dir,
				strerror(errno));
			return SG_EIO;
		}
		got += (size_t)n;
	}
	memcpy(&s->hash_key.k0, b, 8);
	memcpy(&s->hash_key.k1, b + 8, 8);
	return 0;
}

/* sg__store_write_txn() may run a function again (a commit that hit a full map is
 * rolled back, the map grown, the function re-run): inputs stay fixed, and
 * results are taken only once sg__store_write_txn() has returned 0. */
typedef struct rehash_ctx {
	uint64_t after;   /* in: last id done */
	uint64_t last;    /* out: last id of this batch */
	int done;         /* out: no entries left */
	uint64_t changed; /* out: entries of this batch whose ids changed */
} rehash_ctx_t;

/* Derive the ids of up to REHASH_BATCH entries after ctx->after again, under
 * the store's secret: the record's header and the exact index. Idempotent: a
 * crash in the middle is finished at the next open. */
static int rehash_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	rehash_ctx_t *c = arg;
	MDB_cursor *cur;
	c->done = 0;
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	unsigned n = 0;
	uint64_t changed = 0, last = c->after;
	int rc, err = 0;

	if ((rc = mdb_cursor_open(txn, s->entries, &cur)))
		return sg__store_mdb_fail(s, rc, "mdb_cursor_open");
	sg__store_key_be(k, c->after + 1);
	rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	for (; rc == 0 && n < REHASH_BATCH; n++, rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		sg_entry_meta_t m;
		uint64_t id = sg__store_key_id(&key), sh, eh;
		last = id;
		if (rec_decode(s, &val, id, &m) != 0)
			continue; /* a damaged record: what reads it reports it */
		sg_cache_key_ids(&s->hash_key, m.scope_json.base, m.scope_json.len, m.prompt.base,
				 m.prompt.len, &sh, &eh);
		if (sh == m.scope_hash && eh == m.exact_hash)
			continue;
		if (val.mv_size > s->scratch_cap) {
			char *p = realloc(s->scratch, val.mv_size);
			if (!p) {
				err = SG_ENOMEM;
				break;
			}
			s->scratch = p;
			s->scratch_cap = val.mv_size;
		}
		memcpy(s->scratch, val.mv_data, val.mv_size);
		rec_hdr_t h;
		memcpy(&h, s->scratch, sizeof(h));
		h.scope_hash = sh;
		h.exact_hash = eh;
		h.checksum = rec_checksum(&h, s->scratch + sizeof(h), val.mv_size - sizeof(h));
		memcpy(s->scratch, &h, sizeof(h));
		MDB_val nv = {val.mv_size, s->scratch};
		MDB_val ek = {sizeof(m.exact_hash), &m.exact_hash}, ev = {sizeof(id), &id};
		rc = mdb_del(txn, s->exact, &ek, &ev);
		if (rc && rc != MDB_NOTFOUND) {
			err = sg__store_mdb_fail(s, rc, "mdb_del(exact)");
			break;
		}
		ek.mv_data = &eh;
		if ((rc = mdb_put(txn, s->exact, &ek, &ev, 0)) ||
		    (rc = mdb_cursor_put(cur, &key, &nv, MDB_CURRENT))) {
			err = sg__store_mdb_fail(s, rc, "mdb_put(rehash)");
			break;
		}
		changed++;
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	if (rc && rc != MDB_NOTFOUND)
		return sg__store_mdb_fail(s, rc, "mdb_cursor_get(entries)");
	c->done = rc == MDB_NOTFOUND;
	if (c->done) {
		MDB_val mk = {strlen(meta_rehash), (void *)meta_rehash};
		rc = mdb_del(txn, s->meta, &mk, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return sg__store_mdb_fail(s, rc, "mdb_del(meta)");
	}
	c->last = last;
	c->changed = changed;
	return 0;
}

static int rehash_all(sg_store_t *s)
{
	rehash_ctx_t c = {0, 0, 0, 0};
	uint64_t changed = 0;
	int err;
	do {
		if ((err = sg__store_write_txn(s, rehash_fn, &c)))
			return err; /* rolled back: the next open starts over */
		c.after = c.last;
		changed += c.changed;
	} while (!c.done);
	s->rehash = 0;
	sg_log_info("cache at %s: ids of %" PRIu64 " entries derived under the store's secret",
		    s->dir, changed);
	return 0;
}

static int open_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	const sg_store_opts_t *opts = ((open_ctx_t *)arg)->opts;
	MDB_dbi main_dbi;
	MDB_stat st;
	uint32_t format = 0;
	int rc, err, fresh = 0;

	if ((rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) || (rc = mdb_stat(txn, main_dbi, &st)))
		return sg__store_mdb_fail(s, rc, "mdb_stat(main)");
	rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
	if (rc == MDB_NOTFOUND && st.ms_entries == 0) {
		fresh = 1;
	} else if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
		sg__store_set_err(s, "%s holds an LMDB database that is not a semgate cache: remove "
			"the directory or start with --rebuild-cache", s->dir);
		return SG_EMISMATCH;
	} else if (rc) {
		return sg__store_mdb_fail(s, rc, "mdb_dbi_open(meta)");
	}
	if (!fresh && (err = check_identity(s, txn, opts, &format)))
		return err;
	if ((err = open_dbi(s, txn, "meta", 0, &s->meta)) ||
	    (err = open_dbi(s, txn, "entries", 0, &s->entries)) ||
	    (err = open_dbi(s, txn, "vectors", 0, &s->vectors)) ||
	    (err = open_dbi(s, txn, "exact",
			    MDB_INTEGERKEY | MDB_DUPSORT | MDB_DUPFIXED | MDB_INTEGERDUP,
			    &s->exact)) ||
	    (err = open_dbi(s, txn, "checkpoints", MDB_INTEGERKEY, &s->checkpoints)) ||
	    (err = open_dbi(s, txn, "manifests", MDB_INTEGERKEY, &s->manifests)) ||
	    (err = open_dbi(s, txn, "ckchunks", 0, &s->ckchunks)))
		return err;
	/* An older format is upgraded here. (A file of the current format opens
	 * without writing anything: one whose map is full at its maximum size
	 * must still open.) */
	if (!fresh && format != STORE_FORMAT) {
		/* No secret yet: make one; every entry's ids are derived again after
		 * this transaction (sg_store_open), and checkpoints, keyed by the old
		 * scope ids, go (the indexes are rebuilt from the vectors, once). */
		format = STORE_FORMAT;
		uint8_t one = 1;
		if ((err = new_hash_key(s)) ||
		    (err = meta_put(s, txn, meta_hash_key, &s->hash_key, sizeof(s->hash_key))) ||
		    (err = meta_put(s, txn, meta_rehash, &one, 1)) ||
		    (err = meta_put(s, txn, meta_format, &format, sizeof(format))))
			return err;
		if ((rc = mdb_drop(txn, s->checkpoints, 0)) || (rc = mdb_drop(txn, s->manifests, 0)) ||
		    (rc = mdb_drop(txn, s->ckchunks, 0)))
			return sg__store_mdb_fail(s, rc, "mdb_drop");
		sg_log_warn("cache at %s: upgrading to store format %u: entries get ids under a "
			    "secret of this store; indexes are rebuilt from the stored vectors once",
			    s->dir, STORE_FORMAT);
	}
	if (!fresh) {
		MDB_val k = {strlen(meta_rehash), (void *)meta_rehash}, v;
		if ((err = meta_get_int(s, txn, meta_hash_key, &s->hash_key, sizeof(s->hash_key))))
			return err;
		rc = mdb_get(txn, s->meta, &k, &v);
		if (rc && rc != MDB_NOTFOUND)
			return sg__store_mdb_fail(s, rc, "mdb_get(meta)");
		s->rehash = rc == 0;
	}
	if (fresh) {
		uint64_t next_id = 1, bytes = 0;
		format = STORE_FORMAT;
		if ((err = new_hash_key(s)) ||
		    (err = meta_put(s, txn, meta_hash_key, &s->hash_key, sizeof(s->hash_key))) ||
		    (err = meta_put(s, txn, meta_format, &format, sizeof(format))) ||
		    (err = meta_put(s, txn, meta_embedder, opts->embedder_id,
				    strlen(opts->embedder_id))) ||
		    (err = meta_put(s, txn, meta_dim, &opts->dim, sizeof(opts->dim))) ||
		    (err = meta_put(s, txn, meta_next_id, &next_id, sizeof(next_id))) ||
		    (err = meta_put(s, txn, meta_bytes, &bytes, sizeof(bytes))))
			return err;
	} else {
		uint64_t v;
		if ((err = meta_get_int(s, txn, meta_next_id, &v, sizeof(v))) ||
		    (err = meta_get_int(s, txn, meta_bytes, &v, sizeof(v))))
			return err;
	}
	return 0;
}

int sg_store_open(sg_store_t **out, const char *dir, const sg_store_opts_t *opts,
		  char *errmsg, size_t errlen)
{
	long page = sysconf(_SC_PAGESIZE);
	open_ctx_t ctx = {opts};
	sg_store_t *s;
	int err;

	*out = NULL;
	if (errmsg && errlen)
		errmsg[0] = '\0';
	if (!dir || !*dir || !opts || !opts->embedder_id || !*opts->embedder_id ||
	    strlen(opts->embedder_id) > SG_STORE_MAX_EMBEDDER_ID || opts->dim == 0 ||
	    opts->dim > SG_STORE_MAX_DIM) {
		if (errmsg && errlen)
			snprintf(errmsg, errlen, "store: a directory, an embedder id (at most "
				 "%d bytes) and a dim in [1, %d] are required",
				 SG_STORE_MAX_EMBEDDER_ID, SG_STORE_MAX_DIM);
		return SG_EINVAL;
	}
	if (!(s = calloc(1, sizeof(*s))))
		return SG_ENOMEM;
	pthread_mutex_init(&s->wlock, NULL);
	if (page <= 0)
		page = 4096;
	s->dim = opts->dim;
	s->map_size = round_up(opts->map_size ? opts->map_size : SG_STORE_DEFAULT_MAP_SIZE,
			       (size_t)page);
	s->max_map_size = opts->max_map_size ? round_up(opts->max_map_size, (size_t)page)
					     : s->map_size * 4;
	/* The cap is the user's: a default start larger than it starts at the cap
	 * (it used to raise the cap to the default, so 16 MB grew to 1 GiB). */
	if (s->map_size > s->max_map_size)
		s->map_size = s->max_map_size;
	err = SG_ENOMEM;
	if (!(s->dir = strdup(dir)) || !(s->vecbuf = malloc(sizeof(float) * s->dim))) {
		sg__store_set_err(s, "out of memory");
		goto fail;
	}
	if ((err = prepare_dir(s, opts->rebuild)) || (err = env_open(s)) ||
	    (opts->verify && (err = verify_pages(s))) || (err = sg__store_write_txn(s, open_fn, &ctx)))
		goto fail;
	/* Entries not derived again yet are only unreachable (a miss), never
	 * wrong: a store too full for the rewrite still opens, and the next open
	 * goes on with it. */
	if (s->rehash && (err = rehash_all(s)) == SG_EFULL) {
		sg_log_warn("cache at %s: no room to derive every entry's ids under the store's "
			    "secret (%s): entries not done yet are not found until a later start "
			    "finishes it", s->dir, s->err);
		err = 0;
	}
	if (err)
		goto fail;
	/* A save interrupted by a crash left chunks nothing refers to. Dropping
	 * them needs room for the deletions: a full map keeps them (until the
	 * scope's next save or the next open) rather than refuse to open. */
	if ((err = sg__store_drop_orphans(s)) == SG_EFULL) {
		sg_log_warn("cache at %s: unpublished checkpoint chunks are kept for now: %s",
			    s->dir, s->err);
		err = 0;
	}
	if (err)
		goto fail;
	*out = s;
	return 0;
fail:
	if (errmsg && errlen)
		snprintf(errmsg, errlen, "%s", s->err);
	sg_store_close(s);
	return err;
}

void sg_store_close(sg_store_t *s)
{
	if (!s)
		return;
	if (s->rtxn)
		mdb_txn_abort(s->rtxn);
	if (s->env)
		mdb_env_close(s->env);
	free(s->scratch);
	free(s->vecbuf);
	free(s->dir);
	pthread_mutex_destroy(&s->wlock);
	free(s);
}

const char *sg_store_last_error(const sg_store_t *s)
{
	return s->err;
}

/* ---- entries ---------------------------------------------------------- */

typedef struct put_ctx {
	const sg_entry_in_t *e; /* borrowed */
	const float *vec;       /* borrowed; NULL: no vector */
	size_t rec_len;         /* header + variable parts */
	uint64_t id;            /* out: assigned id */
} put_ctx_t;

static int put_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	put_ctx_t *c = arg;
	const sg_entry_in_t *e = c->e;
	const sg_iovec_t *parts[PART_LAST] = {&e->ns, &e->model, &e->scope_json, &e->prompt,
					      &e->response};
	size_t vec_len = c->vec ? sizeof(float) * s->dim : 0;
	uint64_t id, next;
	uint8_t k[8];
	MDB_val key = {8, k}, val = {c->rec_len, NULL};
	rec_hdr_t h;
	char *p;
	int rc, err;

	if ((err = meta_get_int(s, txn, meta_next_id, &id, sizeof(id))))
		return err;
	sg__store_key_be(k, id);
	/* Reserve and fill in place: the record is written once, into the map. */
	if ((rc = mdb_put(txn, s->entries, &key, &val, MDB_NOOVERWRITE | MDB_RESERVE)))
		return sg__store_mdb_fail(s, rc, "mdb_put(entries)");
	memset(&h, 0, sizeof(h));
	h.version = REC_VERSION;
	h.flags = c->vec ? SG_ENTRY_F_VECTOR : 0;
	h.created_s = e->created_s;
	h.expires_s = e->expires_s;
	h.scope_hash = e->scope_hash;
	h.exact_hash = e->exact_hash;
	h.prompt_tokens = e->prompt_tokens;
	h.completion_tokens = e->completion_tokens;
	for (int i = 0; i < PART_LAST; i++)
		h.len[i] = (uint32_t)parts[i]->len;
	p = (char *)val.mv_data + sizeof(h);
	for (int i = 0; i < PART_LAST; i++) {
		if (parts[i]->len)
			memcpy(p, parts[i]->base, parts[i]->len);
		p += parts[i]->len;
	}
	h.checksum = rec_checksum(&h, (char *)val.mv_data + sizeof(h), c->rec_len - sizeof(h));
	memcpy(val.mv_data, &h, sizeof(h));
	if (c->vec) {
		val.mv_size = vec_len;
		val.mv_data = (void *)c->vec;
		if ((rc = mdb_put(txn, s->vectors, &key, &val, 0)))
			return sg__store_mdb_fail(s, rc, "mdb_put(vectors)");
	}
	key.mv_size = sizeof(e->exact_hash);
	key.mv_data = (void *)&e->exact_hash;
	val.mv_size = sizeof(id);
	val.mv_data = &id;
	if ((rc = mdb_put(txn, s->exact, &key, &val, 0)))
		return sg__store_mdb_fail(s, rc, "mdb_put(exact)");
	next = id + 1;
	if ((err = meta_put(s, txn, meta_next_id, &next, sizeof(next))) ||
	    (err = bytes_add(s, txn, (int64_t)(c->rec_len + vec_len))))
		return err;
	c->id = id;
	return 0;
}

int sg_store_put(sg_store_t *s, const sg_entry_in_t *e, const float *vec, uint64_t *id_out)
{
	const sg_iovec_t *parts[PART_LAST] = {&e->ns, &e->model, &e->scope_json, &e->prompt,
					      &e->response};
	put_ctx_t ctx = {e, vec, sizeof(rec_hdr_t), 0};
	int err;

	for (int i = 0; i < PART_LAST; i++) {
		if (!parts[i]->base && parts[i]->len) {
			sg__store_set_err(s, "put: NULL slice with a length");
			return SG_EINVAL;
		}
		if (parts[i]->len > SG_STORE_MAX_RECORD - ctx.rec_len) {
			sg__store_set_err(s, "put: record larger than %zu bytes", SG_STORE_MAX_RECORD);
			return SG_ETOOBIG;
		}
		ctx.rec_len += parts[i]->len;
	}
	if ((err = sg__store_write_txn(s, put_fn, &ctx)))
		return err;
	if (id_out)
		*id_out = ctx.id;
	return 0;
}

int sg_store_get(sg_store_t *s, uint64_t id, sg_entry_t *out)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	sg_entry_meta_t m;
	MDB_txn *txn;
	int rc, err;

	memset(out, 0, sizeof(*out));
	if ((err = sg__store_read_begin(s, &txn)))
		return err;
	sg__store_key_be(k, id);
	if ((rc = mdb_get(txn, s->entries, &key, &val))) {
		err = sg__store_mdb_fail(s, rc, "mdb_get(entries)");
		goto out;
	}
	if ((err = rec_decode(s, &val, id, &m)))
		goto out;
	if ((err = entry_copy(&m, out)))
		sg__store_set_err(s, "out of memory");
out:
	sg__store_read_end(s);
	return err;
}

void sg_entry_free(sg_entry_t *e)
{
	if (!e)
		return;
	free(e->mem);
	memset(e, 0, sizeof(*e));
}

int sg_store_get_vector(sg_store_t *s, uint64_t id, float *vec)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	MDB_txn *txn;
	int rc, err;

	if ((err = sg__store_read_begin(s, &txn)))
		return err;
	sg__store_key_be(k, id);
	if ((rc = mdb_get(txn, s->vectors, &key, &val))) {
		err = sg__store_mdb_fail(s, rc, "mdb_get(vectors)");
	} else if (val.mv_size != sizeof(float) * s->dim) {
		sg__store_set_err(s, "entry %" PRIu64 ": vector of %zu bytes, expected %zu", id,
			val.mv_size, sizeof(float) * s->dim);
		err = SG_ECORRUPT;
	} else {
		memcpy(vec, val.mv_data, val.mv_size);
	}
	sg__store_read_end(s);
	return err;
}

int sg_store_find_exact(sg_store_t *s, uint64_t exact_hash, uint64_t *ids, size_t max,
			size_t *n)
{
	MDB_val key = {sizeof(exact_hash), &exact_hash}, val;
	MDB_cursor *cur = NULL;
	MDB_txn *txn;
	int rc, err;

	*n = 0;
	if ((err = sg__store_read_begin(s, &txn)))
		return err;
	if ((rc = mdb_cursor_open(txn, s->exact, &cur))) {
		err = sg__store_mdb_fail(s, rc, "mdb_cursor_open(exact)");
		goto out;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY); rc == 0 && *n < max;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
		if (val.mv_size != sizeof(uint64_t))
			continue;
		memcpy(&ids[(*n)++], val.mv_data, sizeof(uint64_t));
	}
	if (rc && rc != MDB_NOTFOUND)
		err = sg__store_mdb_fail(s, rc, "mdb_cursor_get(exact)");
out:
	if (cur)
		mdb_cursor_close(cur);
	sg__store_read_end(s);
	return err;
}

typedef struct touch_ctx {
	uint64_t id;     /* entry */
	int64_t now_s;   /* last hit time */
	uint64_t hits;   /* hits to add */
} touch_ctx_t;

static int touch_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	touch_ctx_t *c = arg;
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	sg_entry_meta_t m;
	rec_hdr_t h;
	int rc, err;

	sg__store_key_be(k, c->id);
	if ((rc = mdb_get(txn, s->entries, &key, &val)))
		return sg__store_mdb_fail(s, rc, "mdb_get(entries)");
	if ((err = rec_decode(s, &val, c->id, &m)))
		return err;
	/* val points into the map and may be overwritten by the put: copy. */
	if (s->scratch_cap < val.mv_size) {
		char *p = realloc(s->scratch, val.mv_size);
		if (!p) {
			sg__store_set_err(s, "out of memory");
			return SG_ENOMEM;
		}
		s->scratch = p;
		s->scratch_cap = val.mv_size;
	}
	memcpy(s->scratch, val.mv_data, val.mv_size);
	memcpy(&h, s->scratch, sizeof(h));
	h.hits += c->hits;
	h.last_hit_s = c->now_s;
	h.checksum = rec_checksum(&h, s->scratch + sizeof(h), val.mv_size - sizeof(h));
	memcpy(s->scratch, &h, sizeof(h));
	val.mv_data = s->scratch;
	if ((rc = mdb_put(txn, s->entries, &key, &val, 0)))
		return sg__store_mdb_fail(s, rc, "mdb_put(entries)");
	return 0;
}

int sg_store_touch(sg_store_t *s, uint64_t id, int64_t now_s)
{
	touch_ctx_t ctx = {id, now_s, 1};
	return sg__store_write_txn(s, touch_fn, &ctx);
}

typedef struct touch_batch {
	const sg_store_touch_t *items; /* what to record */
	size_t n;                      /* how many */
} touch_batch_t;

static int touch_batch_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	touch_batch_t *b = arg;
	for (size_t i = 0; i < b->n; i++) {
		touch_ctx_t ctx = {b->items[i].id, b->items[i].now_s, b->items[i].hits};
		int err = touch_fn(s, txn, &ctx);
		if (err && err != SG_ENOTFOUND && err != SG_ECORRUPT)
			return err; /* entries gone or unreadable meanwhile are skipped */
	}
	return 0;
}

int sg_store_touch_batch(sg_store_t *s, const sg_store_touch_t *items, size_t n)
{
	touch_batch_t b = {items, n};
	return n ? sg__store_write_txn(s, touch_batch_fn, &b) : 0;
}

/* Delete one entry, its vector and (if its record is readable) its exact
 * key; *freed gets the bytes it accounted for. */
static int delete_one(sg_store_t *s, MDB_txn *txn, uint64_t id, uint64_t *freed)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	sg_entry_meta_t m;
	uint64_t exact_hash = 0;
	int rc, have_exact;

	sg__store_key_be(k, id);
	if ((rc = mdb_get(txn, s->entries, &key, &val)))
		return sg__store_mdb_fail(s, rc, "mdb_get(entries)");
	*freed = val.mv_size;
	have_exact = rec_decode(s, &val, id, &m) == 0;
	if (have_exact)
		exact_hash = m.exact_hash;
	if ((rc = mdb_del(txn, s->entries, &key, NULL)))
		return sg__store_mdb_fail(s, rc, "mdb_del(entries)");
	rc = mdb_get(txn, s->vectors, &key, &val);
	if (rc == 0) {
		*freed += val.mv_size;
		rc = mdb_del(txn, s->vectors, &key, NULL);
	}
	if (rc && rc != MDB_NOTFOUND)
		return sg__store_mdb_fail(s, rc, "mdb_del(vectors)");
	if (have_exact) {
		MDB_val ek = {sizeof(exact_hash), &exact_hash}, ev = {sizeof(id), &id};
		rc = mdb_del(txn, s->exact, &ek, &ev);
		if (rc && rc != MDB_NOTFOUND)
			return sg__store_mdb_fail(s, rc, "mdb_del(exact)");
	}
	return 0;
}

static int delete_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	uint64_t freed;
	int err = delete_one(s, txn, *(uint64_t *)arg, &freed);
	return err ? err : bytes_add(s, txn, -(int64_t)freed);
}

int sg_store_delete(sg_store_t *s, uint64_t id)
{
	return sg__store_write_txn(s, delete_fn, &id);
}

typedef struct deleted {
	uint64_t id;         /* deleted entry */
	uint64_t scope_hash; /* its scope */
} deleted_t;

typedef struct delete_where_ctx {
	const char *ns;  /* borrowed; NULL = all */
	size_t ns_len;   /* strlen(ns) */
	deleted_t *del;  /* owned: what the transaction deleted */
	size_t n;        /* entries used in del */
	size_t cap;      /* entries allocated in del */
} delete_where_ctx_t;

static int delete_where_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	delete_where_ctx_t *c = arg;
	MDB_cursor *cur = NULL;
	MDB_val key, val;
	sg_entry_meta_t m;
	int rc, err = 0;

	c->n = 0; /* this may be a re-run after the map grew */
	if ((rc = mdb_cursor_open(txn, s->entries, &cur)))
		return sg__store_mdb_fail(s, rc, "mdb_cursor_open(entries)");
	/* Collect first, delete after: no deleting under a moving cursor. */
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != 8 || rec_decode(s, &val, sg__store_key_id(&key), &m) != 0)
			continue;
		if (c->ns && (m.ns.len != c->ns_len || memcmp(m.ns.base, c->ns, c->ns_len)))
			continue;
		if (c->n == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 64;
			deleted_t *d = realloc(c->del, cap * sizeof(*d));
			if (!d) {
				sg__store_set_err(s, "out of memory");
				err = SG_ENOMEM;
				goto out;
			}
			c->del = d;
			c->cap = cap;
		}
		c->del[c->n].id = m.id;
		c->del[c->n++].scope_hash = m.scope_hash;
	}
	if (rc != MDB_NOTFOUND) {
		err = sg__store_mdb_fail(s, rc, "mdb_cursor_get(entries)");
		goto out;
	}
	mdb_cursor_close(cur);
	cur = NULL;
	if (!c->ns) {
		uint64_t zero = 0;
		/* Under wlock, before any checkpoint writer's next transaction.
		 * Counted again if this is re-run, or if the commit fails: a writer
		 * then fails for nothing, which costs only its save. */
		s->clears++;
		if ((rc = mdb_drop(txn, s->entries, 0)) || (rc = mdb_drop(txn, s->vectors, 0)) ||
		    (rc = mdb_drop(txn, s->exact, 0)) || (rc = mdb_drop(txn, s->checkpoints, 0)) ||
		    (rc = mdb_drop(txn, s->manifests, 0)) || (rc = mdb_drop(txn, s->ckchunks, 0))) {
			err = sg__store_mdb_fail(s, rc, "mdb_drop");
			goto out;
		}
		err = meta_put(s, txn, meta_bytes, &zero, sizeof(zero));
	} else {
		uint64_t freed, total = 0;
		for (size_t i = 0; i < c->n && !err; i++) {
			err = delete_one(s, txn, c->del[i].id, &freed);
			total += freed;
		}
		if (!err)
			err = bytes_add(s, txn, -(int64_t)total);
	}
out:
	if (cur)
		mdb_cursor_close(cur);
	return err;
}

int sg_store_delete_where(sg_store_t *s, const char *ns, sg_store_deleted_cb cb, void *ud,
			  size_t *ndeleted)
{
	delete_where_ctx_t ctx = {ns, ns ? strlen(ns) : 0, NULL, 0, 0};
	int err;

	if (ndeleted)
		*ndeleted = 0;
	if ((err = sg__store_write_txn(s, delete_where_fn, &ctx)))
		goto out;
	/* Only now are the deletions real: tell the caller. */
	for (size_t i = 0; cb && i < ctx.n; i++)
		cb(ud, ctx.del[i].id, ctx.del[i].scope_hash);
	if (ndeleted)
		*ndeleted = ctx.n;
out:
	free(ctx.del);
	return err;
}

int sg_store_iter(sg_store_t *s, uint64_t after_id, size_t limit, sg_store_iter_cb cb,
		  void *ud, size_t *nskipped)
{
	const size_t vec_len = sizeof(float) * s->dim;
	MDB_cursor *cur = NULL;
	uint8_t k[8];
	MDB_val key = {8, k}, val, vval;
	size_t skipped = 0, seen = 0;
	sg_entry_meta_t m;
	MDB_txn *txn;
	int rc, err;

	if (nskipped)
		*nskipped = 0;
	if (after_id == UINT64_MAX)
		return 0;
	if ((err = sg__store_read_begin(s, &txn)))
		return err;
	if ((rc = mdb_cursor_open(txn, s->entries, &cur))) {
		err = sg__store_mdb_fail(s, rc, "mdb_cursor_open(entries)");
		goto out;
	}
	sg__store_key_be(k, after_id + 1);
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		const float *vec = NULL;
		int r;

		if (key.mv_size != 8 || rec_decode(s, &val, sg__store_key_id(&key), &m) != 0) {
			skipped++;
			continue;
		}
		if (m.flags & SG_ENTRY_F_VECTOR) {
			int vrc = mdb_get(txn, s->vectors, &key, &vval);
			if (vrc && vrc != MDB_NOTFOUND) {
				err = sg__store_mdb_fail(s, vrc, "mdb_get(vectors)");
				goto out;
			}
			if (vrc || vval.mv_size != vec_len) {
				sg__store_set_err(s, "entry %" PRIu64 ": vector missing or of the wrong size",
					m.id);
				skipped++;
				continue;
			}
			/* Values in LMDB pages are only 2-byte aligned. */
			memcpy(s->vecbuf, vval.mv_data, vec_len);
			vec = s->vecbuf;
		}
		s->busy = 1;
		r = cb(ud, &m, vec);
		s->busy = 0;
		if (r != 0) {
			err = r < 0 ? r : 0;
			rc = 0;
			break;
		}
		if (limit && ++seen == limit)
			break;
	}
	if (rc && rc != MDB_NOTFOUND)
		err = sg__store_mdb_fail(s, rc, "mdb_cursor_get(entries)");
out:
	if (cur)
		mdb_cursor_close(cur);
	sg__store_read_end(s);
	if (nskipped)
		*nskipped = skipped;
	return err;
}

/* ---- maintenance ---------------------------------------------------------- */

int sg_store_sync(sg_store_t *s)
{
	/* Touches only the environment's file: safe from another thread while the
	 * owner keeps using the store (fsync can take 100 ms; keep it off the loop). */
	return mdb_env_sync(s->env, 1) ? SG_EIO : 0;
}

int sg_store_stats(sg_store_t *s, sg_store_stats_t *out)
{
	MDB_stat est, cst, mst;
	struct stat sb;
	MDB_txn *txn;
	int rc, err, fd;

	memset(out, 0, sizeof(*out));
	if ((err = sg__store_read_begin(s, &txn)))
		return err;
	if ((rc = mdb_stat(txn, s->entries, &est)) || (rc = mdb_stat(txn, s->checkpoints, &cst)) ||
	    (rc = mdb_stat(txn, s->manifests, &mst))) {
		err = sg__store_mdb_fail(s, rc, "mdb_stat");
		goto out;
	}
	out->entries = est.ms_entries;
	out->checkpoints = cst.ms_entries + mst.ms_entries; /* a scope has one or the other */
	if ((err = meta_get_int(s, txn, meta_bytes, &out->bytes, sizeof(out->bytes))) ||
	    (err = meta_get_int(s, txn, meta_next_id, &out->next_id, sizeof(out->next_id))))
		goto out;
	if (mdb_env_get_fd(s->env, &fd) == 0 && fstat(fd, &sb) == 0)
		out->file_bytes = (uint64_t)sb.st_size;
	out->map_size = s->map_size;
	out->max_map_size = s->max_map_size;
out:
	sg__store_read_end(s);
	return err;
}

void sg_store_hash_key(const sg_store_t *s, sg_hash_key_t *out)
{
	*out = s->hash_key;
}

