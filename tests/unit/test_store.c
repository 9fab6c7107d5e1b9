/* Unit tests: the LMDB store (cache/store.c) and sg_hash64 (lib/hash.c).
 * Everything happens in a fresh directory under $TMPDIR, removed at the end. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lmdb_raw.h"
#include "semgate/hash.h"
#include "semgate/store.h"

#define DIM 8
#define EMBEDDER "local-v1:dim=8"

static char root[256]; /* the temp dir holding every test's store */

static const char *path_in_root(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", root, name);
	return buf;
}

static int rm_one(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(p);
}

static void rm_rf(const char *p)
{
	nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static sg_store_opts_t opts_default(void)
{
	sg_store_opts_t o = {0};
	o.embedder_id = EMBEDDER;
	o.dim = DIM;
	return o;
}

static sg_store_t *open_ok(const char *dir, const sg_store_opts_t *o)
{
	char msg[512];
	sg_store_t *s = NULL;
	int err = sg_store_open(&s, dir, o, msg, sizeof(msg));
	if (err)
		fprintf(stderr, "open %s: %s (%s)\n", dir, sg_strerror(err), msg);
	CHECK(err == 0 && s != NULL);
	return s;
}

static void fill_vec(float *v, uint64_t seed)
{
	for (int i = 0; i < DIM; i++)
		v[i] = (float)seed * 0.5f + (float)i;
}

/* A deterministic entry derived from seq: prompt, response, hashes. The
 * strings live in bufs owned by the caller. */
typedef struct gen {
	char ns[32], prompt[64], response[2048];
	sg_entry_in_t in;
} gen_t;

static void gen_entry(gen_t *g, uint64_t seq, const char *ns, size_t resp_len)
{
	memset(g, 0, sizeof(*g));
	snprintf(g->ns, sizeof(g->ns), "%s", ns);
	snprintf(g->prompt, sizeof(g->prompt), "prompt number %" PRIu64, seq);
	if (resp_len >= sizeof(g->response))
		resp_len = sizeof(g->response) - 1;
	for (size_t i = 0; i < resp_len; i++)
		g->response[i] = (char)('a' + (seq + i) % 26);
	g->in.ns = (sg_iovec_t){g->ns, strlen(g->ns)};
	g->in.model = SG_IOV("gpt-4o-mini");
	g->in.scope_json = SG_IOV("{\"model\":\"gpt-4o-mini\",\"temperature\":0}");
	g->in.prompt = (sg_iovec_t){g->prompt, strlen(g->prompt)};
	g->in.response = (sg_iovec_t){g->response, resp_len};
	g->in.scope_hash = sg_hash64(g->ns, strlen(g->ns), 7);
	g->in.exact_hash = sg_hash64(g->prompt, strlen(g->prompt), 0);
	g->in.created_s = 1700000000 + (int64_t)seq;
	g->in.expires_s = seq % 2 ? 0 : 1800000000;
	g->in.prompt_tokens = (uint32_t)seq + 3;
	g->in.completion_tokens = (uint32_t)seq * 2;
}

static int iov_eq(sg_iovec_t a, sg_iovec_t b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

/* Does the stored entry id match what gen_entry(seq) made? */
static int entry_matches(sg_store_t *s, uint64_t id, uint64_t seq, const char *ns,
			 size_t resp_len)
{
	gen_t g;
	sg_entry_t e;
	float want[DIM], got[DIM];
	int ok;

	gen_entry(&g, seq, ns, resp_len);
	if (sg_store_get(s, id, &e) != 0)
		return 0;
	ok = e.m.id == id && iov_eq(e.m.ns, g.in.ns) && iov_eq(e.m.model, g.in.model) &&
	     iov_eq(e.m.scope_json, g.in.scope_json) && iov_eq(e.m.prompt, g.in.prompt) &&
	     iov_eq(e.m.response, g.in.response) && e.m.scope_hash == g.in.scope_hash &&
	     e.m.exact_hash == g.in.exact_hash && e.m.created_s == g.in.created_s &&
	     e.m.expires_s == g.in.expires_s && e.m.prompt_tokens == g.in.prompt_tokens &&
	     e.m.completion_tokens == g.in.completion_tokens;
	sg_entry_free(&e);
	fill_vec(want, seq);
	ok = ok && sg_store_get_vector(s, id, got) == 0 && memcmp(want, got, sizeof(got)) == 0;
	return ok;
}

static uint64_t put_gen(sg_store_t *s, uint64_t seq, const char *ns, size_t resp_len)
{
	gen_t g;
	float v[DIM];
	uint64_t id = 0;
	int err;

	gen_entry(&g, seq, ns, resp_len);
	fill_vec(v, seq);
	err = sg_store_put(s, &g.in, v, &id);
	if (err)
		fprintf(stderr, "put: %s (%s)\n", sg_strerror(err), sg_store_last_error(s));
	CHECK(err == 0);
	return id;
}

/* ---- tests -------------------------------------------------------------- */

static void test_hash(void)
{
	/* XXH64 reference values */
	CHECK(sg_hash64("", 0, 0) == 0xEF46DB3751D8E999ULL);
	CHECK(sg_hash64(NULL, 0, 0) == 0xEF46DB3751D8E999ULL);
	CHECK(sg_hash64("a", 1, 0) == 0xD24EC4F1A98C6E5BULL);
	CHECK(sg_hash64("abc", 3, 0) == 0x44BC2CF5AD770999ULL);
	CHECK(sg_hash64("abc", 3, 1) != sg_hash64("abc", 3, 0));
	/* every length path (<4, <8, <32, >=32) and unaligned input */
	char buf[100];
	for (int i = 0; i < 100; i++)
		buf[i] = (char)i;
	CHECK(sg_hash64(buf + 1, 64, 0) != sg_hash64(buf, 64, 0));
	CHECK(sg_hash64(buf + 1, 37, 5) == sg_hash64(buf + 1, 37, 5));
}

static void test_roundtrip(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "roundtrip"), &o);
	sg_entry_in_t in = {0};
	sg_entry_t e;
	sg_store_stats_t st;
	float v[DIM], got[DIM];
	uint64_t id1 = 0, id2 = 0;
	struct stat sb;

	if (!s)
		return;
	CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
	in.ns = SG_IOV("tenant-a");
	in.model = SG_IOV("gpt-4o");
	in.scope_json = SG_IOV("{\"model\":\"gpt-4o\",\"tools\":[]}");
	in.prompt = (sg_iovec_t){"bin\0ary", 7}; /* NUL inside: slices are byte strings */
	in.response = SG_IOV("{\"choices\":[{\"message\":{\"content\":\"hi\"}}]}");
	in.scope_hash = 0x1122334455667788ULL;
	in.exact_hash = 0xDEADBEEFCAFEF00DULL;
	in.created_s = 1712345678;
	in.expires_s = 1712349999;
	in.prompt_tokens = 12;
	in.completion_tokens = 34;
	fill_vec(v, 42);
	CHECK(sg_store_put(s, &in, v, &id1) == 0);
	CHECK(id1 == 1);

	CHECK(sg_store_get(s, id1, &e) == 0);
	CHECK(e.m.id == id1 && e.m.flags == SG_ENTRY_F_VECTOR);
	CHECK(iov_eq(e.m.ns, in.ns) && iov_eq(e.m.model, in.model));
	CHECK(iov_eq(e.m.scope_json, in.scope_json) && iov_eq(e.m.prompt, in.prompt));
	CHECK(iov_eq(e.m.response, in.response));
	CHECK(e.m.ns.base[e.m.ns.len] == '\0' && e.m.response.base[e.m.response.len] == '\0');
	CHECK_STR(e.m.model.base, "gpt-4o");
	CHECK(e.m.scope_hash == in.scope_hash && e.m.exact_hash == in.exact_hash);
	CHECK(e.m.created_s == in.created_s && e.m.expires_s == in.expires_s);
	CHECK(e.m.prompt_tokens == 12 && e.m.completion_tokens == 34);
	CHECK(e.m.hits == 0 && e.m.last_hit_s == 0);
	sg_entry_free(&e);
	CHECK(e.mem == NULL);
	sg_entry_free(NULL);
	CHECK(sg_store_get_vector(s, id1, got) == 0 && memcmp(got, v, sizeof(v)) == 0);

	/* empty parts and no vector (an exact-only entry) */
	sg_entry_in_t empty = {0};
	CHECK(sg_store_put(s, &empty, NULL, &id2) == 0);
	CHECK(id2 == 2);
	CHECK(sg_store_get(s, id2, &e) == 0);
	CHECK(e.m.flags == 0 && e.m.ns.len == 0 && e.m.response.len == 0);
	CHECK(e.m.prompt.base != NULL && e.m.prompt.base[0] == '\0');
	sg_entry_free(&e);
	CHECK(sg_store_get_vector(s, id2, got) == SG_ENOTFOUND);

	CHECK(sg_store_get(s, 99, &e) == SG_ENOTFOUND && e.mem == NULL);
	CHECK_CONTAINS(sg_store_last_error(s), "MDB_NOTFOUND");

	/* bad input */
	sg_entry_in_t bad = {0};
	bad.prompt = (sg_iovec_t){NULL, 3};
	CHECK(sg_store_put(s, &bad, NULL, NULL) == SG_EINVAL);
	bad.prompt = (sg_iovec_t){"x", SG_STORE_MAX_RECORD};
	CHECK(sg_store_put(s, &bad, NULL, NULL) == SG_ETOOBIG);

	CHECK(sg_store_stats(s, &st) == 0);
	CHECK(st.entries == 2 && st.next_id == 3 && st.checkpoints == 0);
	size_t rec1 = 88 + in.ns.len + in.model.len + in.scope_json.len + in.prompt.len +
		      in.response.len;
	CHECK(st.bytes == rec1 + sizeof(v) + 88);
	CHECK(st.file_bytes > 0 && st.map_size == SG_STORE_DEFAULT_MAP_SIZE);
	CHECK(st.max_map_size == 4 * SG_STORE_DEFAULT_MAP_SIZE);
	CHECK(sg_store_sync(s) == 0);
	sg_store_close(s);
	sg_store_close(NULL);
}

static void test_exact(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "exact"), &o);
	gen_t a, b;
	float v[DIM];
	uint64_t ida, idb, ids[4];
	size_t n = 99;

	if (!s)
		return;
	fill_vec(v, 1);
	gen_entry(&a, 1, "ns", 10);
	gen_entry(&b, 2, "ns", 10);
	b.in.exact_hash = a.in.exact_hash; /* a collision */
	CHECK(sg_store_put(s, &a.in, v, &ida) == 0);
	put_gen(s, 3, "ns", 10);
	CHECK(sg_store_put(s, &b.in, v, &idb) == 0);
	CHECK(sg_store_find_exact(s, a.in.exact_hash, ids, 4, &n) == 0);
	CHECK(n == 2 && ids[0] == ida && ids[1] == idb);
	CHECK(sg_store_find_exact(s, a.in.exact_hash, ids, 1, &n) == 0);
	CHECK(n == 1 && ids[0] == ida);
	CHECK(sg_store_find_exact(s, 12345, ids, 4, &n) == 0 && n == 0);
	/* deleting one leaves the other */
	CHECK(sg_store_delete(s, ida) == 0);
	CHECK(sg_store_find_exact(s, a.in.exact_hash, ids, 4, &n) == 0);
	CHECK(n == 1 && ids[0] == idb);
	sg_store_close(s);
}

static void test_touch(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "touch"), &o);
	sg_entry_t e;
	uint64_t id;

	if (!s)
		return;
	id = put_gen(s, 5, "ns", 300);
	CHECK(sg_store_touch(s, id, 1800000001) == 0);
	CHECK(sg_store_touch(s, id, 1800000002) == 0);
	CHECK(sg_store_get(s, id, &e) == 0);
	CHECK(e.m.hits == 2 && e.m.last_hit_s == 1800000002);
	sg_entry_free(&e);
	CHECK(entry_matches(s, id, 5, "ns", 300)); /* the rest is unchanged */
	CHECK(sg_store_touch(s, 777, 1) == SG_ENOTFOUND);
	sg_store_close(s);
}

typedef struct del_log {
	uint64_t ids[64];        /* deleted ids, in callback order */
	uint64_t scope_hash[64]; /* their scopes */
	size_t n;                /* callbacks seen */
} del_log_t;

static void on_deleted(void *ud, uint64_t id, uint64_t scope_hash)
{
	del_log_t *l = ud;
	if (l->n < 64) {
		l->ids[l->n] = id;
		l->scope_hash[l->n] = scope_hash;
	}
	l->n++;
}

static void test_delete(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "delete"), &o);
	sg_store_stats_t st0, st;
	sg_entry_t e;
	del_log_t log = {{0}, {0}, 0};
	uint64_t ids[8], found[4];
	size_t n;
	float v[DIM];
	gen_t g;

	if (!s)
		return;
	for (int i = 0; i < 8; i++)
		ids[i] = put_gen(s, (uint64_t)i, i % 2 ? "b" : "a", 50);
	CHECK(sg_store_stats(s, &st0) == 0 && st0.entries == 8);

	/* delete one: entry, vector and exact key go */
	gen_entry(&g, 0, "a", 50);
	CHECK(sg_store_delete(s, ids[0]) == 0);
	CHECK(sg_store_get(s, ids[0], &e) == SG_ENOTFOUND);
	CHECK(sg_store_get_vector(s, ids[0], v) == SG_ENOTFOUND);
	CHECK(sg_store_find_exact(s, g.in.exact_hash, found, 4, &n) == 0 && n == 0);
	CHECK(sg_store_delete(s, ids[0]) == SG_ENOTFOUND);
	CHECK(sg_store_stats(s, &st) == 0 && st.entries == 7);
	CHECK(st.bytes == st0.bytes / 8 * 7);

	/* delete_where by namespace */
	CHECK(sg_store_put_checkpoint(s, 1, 1, "x", 1) == 0);
	size_t nd = 0;
	CHECK(sg_store_delete_where(s, "a", on_deleted, &log, &nd) == 0);
	CHECK(nd == 3 && log.n == 3);
	CHECK(log.ids[0] == ids[2] && log.ids[1] == ids[4] && log.ids[2] == ids[6]);
	CHECK(log.scope_hash[0] == sg_hash64("a", 1, 7));
	for (int i = 0; i < 8; i++) {
		int present = sg_store_get(s, ids[i], &e) == 0;
		sg_entry_free(&e);
		CHECK(present == (i % 2 == 1));
	}
	CHECK(sg_store_stats(s, &st) == 0 && st.entries == 4 && st.bytes == st0.bytes / 2);
	CHECK(st.checkpoints == 1);
	CHECK(sg_store_delete_where(s, "nope", on_deleted, &log, &nd) == 0 && nd == 0);

	/* delete all: checkpoints go too */
	log.n = 0;
	CHECK(sg_store_delete_where(s, NULL, on_deleted, &log, &nd) == 0);
	CHECK(nd == 4 && log.n == 4 && log.ids[0] == ids[1] && log.ids[3] == ids[7]);
	CHECK(sg_store_stats(s, &st) == 0);
	CHECK(st.entries == 0 && st.bytes == 0 && st.checkpoints == 0 && st.next_id == 9);
	/* ids are never reused */
	CHECK(put_gen(s, 100, "a", 5) == 9);
	sg_store_close(s);
}

typedef struct iter_log {
	uint64_t ids[64]; /* ids seen in order */
	size_t n;         /* callbacks seen */
	int stop_at;      /* return this ... */
	size_t stop_n;    /* ... at the stop_n-th callback (1-based); 0: never */
	sg_store_t *s;    /* for the re-entrancy check */
	int reentry_rc;   /* what a nested sg_store_get returned */
	int reserve_rc;   /* what a nested sg_store_reserve returned */
	int vec_ok;       /* every vector matched its entry */
} iter_log_t;

static int on_entry(void *ud, const sg_entry_meta_t *m, const float *vec)
{
	iter_log_t *l = ud;
	float want[DIM];
	uint64_t seq;

	if (l->n < 64)
		l->ids[l->n] = m->id;
	l->n++;
	char prompt[64];
	/* borrowed slices are not NUL-terminated */
	snprintf(prompt, sizeof(prompt), "%.*s", (int)SG_MIN(m->prompt.len, 63), m->prompt.base);
	if (sscanf(prompt, "prompt number %" SCNu64, &seq) == 1) {
		fill_vec(want, seq);
		if (!vec || memcmp(vec, want, sizeof(want)) != 0)
			l->vec_ok = 0;
	}
	if (l->s) {
		sg_entry_t e;
		l->reentry_rc = sg_store_get(l->s, m->id, &e);
		/* growing the map would close the read transaction iterated */
		l->reserve_rc = sg_store_reserve(l->s, 1);
	}
	return l->stop_n && l->n == l->stop_n ? l->stop_at : 0;
}

static void test_iter(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "iter"), &o);
	iter_log_t l;
	size_t skipped = 99;

	if (!s)
		return;
	for (uint64_t i = 0; i < 300; i++) /* past 255: big-endian keys must sort */
		put_gen(s, i, "ns", 20);

	memset(&l, 0, sizeof(l));
	l.vec_ok = 1;
	CHECK(sg_store_iter(s, 0, 0, on_entry, &l, &skipped) == 0);
	CHECK(l.n == 300 && skipped == 0 && l.vec_ok);
	int ordered = 1;
	for (size_t i = 0; i < 64; i++)
		ordered &= l.ids[i] == i + 1;
	CHECK(ordered);

	/* paging: after_id + limit */
	memset(&l, 0, sizeof(l));
	CHECK(sg_store_iter(s, 250, 3, on_entry, &l, NULL) == 0);
	CHECK(l.n == 3 && l.ids[0] == 251 && l.ids[1] == 252 && l.ids[2] == 253);
	memset(&l, 0, sizeof(l));
	CHECK(sg_store_iter(s, 298, 10, on_entry, &l, NULL) == 0);
	CHECK(l.n == 2 && l.ids[0] == 299 && l.ids[1] == 300);
	memset(&l, 0, sizeof(l));
	CHECK(sg_store_iter(s, 300, 0, on_entry, &l, NULL) == 0 && l.n == 0);
	CHECK(sg_store_iter(s, UINT64_MAX, 0, on_entry, &l, NULL) == 0 && l.n == 0);

	/* stopping: > 0 stops quietly, < 0 is passed back */
	memset(&l, 0, sizeof(l));
	l.stop_at = 1;
	l.stop_n = 5;
	CHECK(sg_store_iter(s, 0, 0, on_entry, &l, NULL) == 0 && l.n == 5);
	memset(&l, 0, sizeof(l));
	l.stop_at = SG_ECANCELED;
	l.stop_n = 2;
	CHECK(sg_store_iter(s, 0, 0, on_entry, &l, NULL) == SG_ECANCELED && l.n == 2);

	/* no re-entry from a callback, and the store works afterwards */
	memset(&l, 0, sizeof(l));
	l.s = s;
	l.stop_at = 1;
	l.stop_n = 1;
	CHECK(sg_store_iter(s, 0, 0, on_entry, &l, NULL) == 0);
	CHECK(l.reentry_rc == SG_EINVAL);
	CHECK_RC(l.reserve_rc, SG_EINVAL);
	CHECK(entry_matches(s, 1, 0, "ns", 20));
	sg_store_close(s);
}

typedef struct ckpt_log {
	uint64_t scope[8];  /* scope hashes seen */
	uint64_t last[8];   /* their last ids */
	size_t len[8];      /* their blob lengths */
	size_t n;           /* callbacks seen */
} ckpt_log_t;

static int on_checkpoint(void *ud, uint64_t scope_hash, uint64_t last_id, const void *blob,
			 size_t len)
{
	ckpt_log_t *l = ud;
	if (l->n < 8) {
		l->scope[l->n] = scope_hash;
		l->last[l->n] = last_id;
		l->len[l->n] = len;
	}
	l->n++;
	return 0;
}

static void test_checkpoints(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "ckpt"), &o);
	size_t big_len = 300000, len;
	char *big = malloc(big_len);
	ckpt_log_t l;
	uint64_t last;
	void *blob;

	if (!s || !big) {
		free(big);
		sg_store_close(s);
		return;
	}
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)(i * 31);
	CHECK(sg_store_put_checkpoint(s, 0xAAAA, 17, big, big_len) == 0);
	CHECK(sg_store_put_checkpoint(s, 0x1111, 3, "", 0) == 0);
	CHECK(sg_store_get_checkpoint(s, 0xAAAA, &last, &blob, &len) == 0);
	CHECK(last == 17 && len == big_len && memcmp(blob, big, big_len) == 0);
	free(blob);
	CHECK(sg_store_get_checkpoint(s, 0x1111, &last, &blob, &len) == 0);
	CHECK(last == 3 && len == 0 && blob != NULL);
	free(blob);
	/* replace */
	CHECK(sg_store_put_checkpoint(s, 0xAAAA, 18, "new", 3) == 0);
	CHECK(sg_store_get_checkpoint(s, 0xAAAA, &last, &blob, &len) == 0);
	CHECK(last == 18 && len == 3 && memcmp(blob, "new", 3) == 0);
	free(blob);
	memset(&l, 0, sizeof(l));
	CHECK(sg_store_iter_checkpoints(s, on_checkpoint, &l, NULL) == 0);
	CHECK(l.n == 2 && l.scope[0] == 0x1111 && l.last[0] == 3 && l.len[0] == 0);
	CHECK(l.scope[1] == 0xAAAA && l.last[1] == 18 && l.len[1] == 3);
	CHECK(sg_store_delete_checkpoint(s, 0x1111) == 0);
	CHECK(sg_store_delete_checkpoint(s, 0x1111) == SG_ENOTFOUND);
	CHECK(sg_store_get_checkpoint(s, 0x1111, &last, &blob, &len) == SG_ENOTFOUND);
	CHECK(blob == NULL);
	CHECK(sg_store_put_checkpoint(s, 1, 1, NULL, 5) == SG_EINVAL);
	sg_store_close(s);
	free(big);
}

static void test_reopen(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_stats_t st0, st;
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "reopen"), &o);
	uint64_t last, ids[4];
	size_t n, len;
	void *blob;
	gen_t g;

	if (!s)
		return;
	for (uint64_t i = 0; i < 20; i++)
		put_gen(s, i, "ns", 100);
	CHECK(sg_store_touch(s, 3, 99) == 0);
	CHECK(sg_store_delete(s, 20) == 0);
	CHECK(sg_store_put_checkpoint(s, 5, 19, "blob", 4) == 0);
	CHECK(sg_store_stats(s, &st0) == 0);
	sg_store_close(s);

	s = open_ok(dir, &o);
	if (!s)
		return;
	CHECK(sg_store_stats(s, &st) == 0);
	CHECK(st.entries == 19 && st.bytes == st0.bytes && st.next_id == 21);
	int all = 1;
	for (uint64_t i = 0; i < 19; i++)
		all &= entry_matches(s, i + 1, i, "ns", 100);
	CHECK(all);
	sg_entry_t e;
	CHECK(sg_store_get(s, 3, &e) == 0 && e.m.hits == 1 && e.m.last_hit_s == 99);
	sg_entry_free(&e);
	CHECK(sg_store_get(s, 20, &e) == SG_ENOTFOUND);
	gen_entry(&g, 4, "ns", 100);
	CHECK(sg_store_find_exact(s, g.in.exact_hash, ids, 4, &n) == 0 && n == 1 && ids[0] == 5);
	CHECK(sg_store_get_checkpoint(s, 5, &last, &blob, &len) == 0 && last == 19 && len == 4);
	free(blob);
	CHECK(put_gen(s, 50, "ns", 10) == 21); /* next_id continues */
	sg_store_close(s);
}

static void test_mismatch(void)
{
	char dir[300], msg[512];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "mismatch"), &o);
	sg_store_stats_t st;

	if (!s)
		return;
	put_gen(s, 1, "ns", 10);
	sg_store_close(s);

	sg_store_opts_t other = opts_default();
	other.embedder_id = "openai:text-embedding-3-small";
	other.dim = 1536;
	s = NULL;
	CHECK(sg_store_open(&s, dir, &other, msg, sizeof(msg)) == SG_EMISMATCH && s == NULL);
	CHECK_CONTAINS(msg, "was built with embedder 'local-v1:dim=8' (dim 8)");
	CHECK_CONTAINS(msg, "uses 'openai:text-embedding-3-small' (dim 1536)");
	CHECK_CONTAINS(msg, "--rebuild-cache");
	CHECK_CONTAINS(msg, dir);
	/* same id, other dim */
	other.embedder_id = EMBEDDER;
	other.dim = 16;
	CHECK(sg_store_open(&s, dir, &other, msg, sizeof(msg)) == SG_EMISMATCH);
	/* a tiny errmsg buffer is truncated, not overrun */
	char tiny[8];
	CHECK(sg_store_open(&s, dir, &other, tiny, sizeof(tiny)) == SG_EMISMATCH);
	CHECK(strlen(tiny) == 7);
	/* the refused opens changed nothing */
	s = open_ok(dir, &o);
	CHECK(s && entry_matches(s, 1, 1, "ns", 10));
	sg_store_close(s);

	other.rebuild = 1;
	s = open_ok(dir, &other);
	if (!s)
		return;
	CHECK(sg_store_stats(s, &st) == 0 && st.entries == 0 && st.bytes == 0);
	sg_store_close(s);
	/* the new identity is now the stored one */
	CHECK(sg_store_open(&s, dir, &o, msg, sizeof(msg)) == SG_EMISMATCH);
	CHECK_CONTAINS(msg, "(dim 16)");

	/* bad options */
	sg_store_opts_t bad = opts_default();
	bad.dim = 0;
	CHECK(sg_store_open(&s, dir, &bad, msg, sizeof(msg)) == SG_EINVAL);
	bad = opts_default();
	bad.embedder_id = NULL;
	CHECK(sg_store_open(&s, dir, &bad, NULL, 0) == SG_EINVAL);
}

static int write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, p, n);
	close(fd);
	return w == (ssize_t)n ? 0 : -1;
}

static void test_corrupt_files(void)
{
	char dir[300], data[340], msg[512];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "corrupt"), &o);
	struct stat sb;
	int err;

	if (!s)
		return;
	for (uint64_t i = 0; i < 400; i++)
		put_gen(s, i, "ns", 1500);
	sg_store_close(s);
	snprintf(data, sizeof(data), "%s/data.mdb", dir);

	/* truncated to half */
	CHECK(stat(data, &sb) == 0 && sb.st_size > 400 * 1500);
	CHECK(truncate(data, sb.st_size / 2) == 0);
	s = NULL;
	err = sg_store_open(&s, dir, &o, msg, sizeof(msg));
	CHECK(err == SG_ECORRUPT && s == NULL);
	CHECK_CONTAINS(msg, "truncated");
	CHECK_CONTAINS(msg, "--rebuild-cache");

	/* random bytes */
	static unsigned char junk[65536];
	srand(12345);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)rand();
	CHECK(write_file(data, junk, sizeof(junk)) == 0);
	err = sg_store_open(&s, dir, &o, msg, sizeof(msg));
	CHECK(err == SG_ECORRUPT);
	CHECK_CONTAINS(msg, "not a usable LMDB file");
	/* shorter than a page */
	CHECK(write_file(data, junk, 100) == 0);
	CHECK(sg_store_open(&s, dir, &o, msg, sizeof(msg)) == SG_ECORRUPT);

	/* rebuild recovers */
	sg_store_opts_t rb = opts_default();
	rb.rebuild = 1;
	s = open_ok(dir, &rb);
	CHECK(s && put_gen(s, 1, "ns", 10) == 1);
	sg_store_close(s);

	/* a regular file where the directory should be */
	char file[300];
	path_in_root(file, sizeof(file), "plainfile");
	CHECK(write_file(file, "hello", 5) == 0);
	err = sg_store_open(&s, file, &o, msg, sizeof(msg));
	CHECK(err == SG_EIO);
	CHECK_CONTAINS(msg, "is not a directory");
	/* rebuild never deletes a user's file */
	CHECK(sg_store_open(&s, file, &rb, msg, sizeof(msg)) == SG_EIO);
	CHECK(stat(file, &sb) == 0 && sb.st_size == 5);

	/* a directory where data.mdb should be */
	char d2[300], d2data[340];
	path_in_root(d2, sizeof(d2), "datadir");
	snprintf(d2data, sizeof(d2data), "%s/data.mdb", d2);
	CHECK(mkdir(d2, 0700) == 0 && mkdir(d2data, 0700) == 0);
	CHECK(sg_store_open(&s, d2, &o, msg, sizeof(msg)) == SG_EIO);
	CHECK_CONTAINS(msg, "not a regular file");

	/* a parent that does not exist */
	char deep[300];
	path_in_root(deep, sizeof(deep), "no/such/dir");
	CHECK(sg_store_open(&s, deep, &o, msg, sizeof(msg)) == SG_EIO);
	CHECK_CONTAINS(msg, "cannot create");

	/* some other program's LMDB environment */
	char foreign[300];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {5, "hello"}, v = {5, "world"};
	path_in_root(foreign, sizeof(foreign), "foreign");
	CHECK(mkdir(foreign, 0700) == 0);
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_open(env, foreign, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, NULL, 0, &dbi) == 0);
	CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
	CHECK(sg_store_open(&s, foreign, &o, msg, sizeof(msg)) == SG_EMISMATCH);
	CHECK_CONTAINS(msg, "not a semgate cache");
}

/* Overwrite (or with val NULL, shorten to n bytes) the raw value of an entry
 * or vector with LMDB directly. */
static int raw_put(const char *dir, const char *db, uint64_t id, const void *val, size_t n)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint8_t k[8];
	MDB_val key = {8, k}, v = {n, (void *)val};
	int rc;

	for (int i = 7; i >= 0; i--, id >>= 8)
		k[i] = (uint8_t)id;
	if ((rc = mdb_env_create(&env)))
		return rc;
	mdb_env_set_maxdbs(env, 8);
	if (!(rc = mdb_env_open(env, dir, 0, 0600)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
		if ((rc = mdb_dbi_open(txn, db, 0, &dbi)) || (rc = mdb_put(txn, dbi, &key, &v, 0)))
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
	}
	mdb_env_close(env);
	return rc;
}

static int raw_get(const char *dir, uint64_t id, void *buf, size_t cap, size_t *n)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint8_t k[8];
	MDB_val key = {8, k}, v;
	int rc;

	for (int i = 7; i >= 0; i--, id >>= 8)
		k[i] = (uint8_t)id;
	if ((rc = mdb_env_create(&env)))
		return rc;
	mdb_env_set_maxdbs(env, 8);
	if (!(rc = mdb_env_open(env, dir, MDB_RDONLY, 0600)) &&
	    !(rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) {
		if (!(rc = mdb_dbi_open(txn, "entries", 0, &dbi)) &&
		    !(rc = mdb_get(txn, dbi, &key, &v))) {
			*n = SG_MIN(v.mv_size, cap);
			memcpy(buf, v.mv_data, *n);
		}
		mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	return rc;
}

static void test_corrupt_record(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "badrec"), &o);
	iter_log_t l;
	size_t skipped = 0, n = 0;
	char rec[4096];
	sg_entry_t e;
	uint32_t len4;

	if (!s)
		return;
	for (uint64_t i = 0; i < 5; i++)
		put_gen(s, i, "ns", 40);
	sg_store_close(s);

	/* 2: a short value; 3: a length field that lies; 4: a vector of the wrong size */
	CHECK(raw_put(dir, "entries", 2, "short", 5) == 0);
	CHECK(raw_get(dir, 3, rec, sizeof(rec), &n) == 0 && n > 88);
	memcpy(&len4, rec + 80, 4); /* len[PART_RESPONSE] */
	len4 += 1000;
	memcpy(rec + 80, &len4, 4);
	CHECK(raw_put(dir, "entries", 3, rec, n) == 0);
	CHECK(raw_put(dir, "vectors", 4, "abc", 3) == 0);
	/* 5: one byte of the response changed, lengths intact: the checksum sees it */
	CHECK(raw_get(dir, 5, rec, sizeof(rec), &n) == 0 && n > 100);
	rec[n - 3] ^= 0x20;
	CHECK(raw_put(dir, "entries", 5, rec, n) == 0);

	s = open_ok(dir, &o);
	if (!s)
		return;
	CHECK(sg_store_get(s, 2, &e) == SG_ECORRUPT && e.mem == NULL);
	CHECK_CONTAINS(sg_store_last_error(s), "entry 2");
	CHECK(sg_store_get(s, 3, &e) == SG_ECORRUPT);
	CHECK(sg_store_touch(s, 2, 5) == SG_ECORRUPT);
	float v[DIM];
	CHECK(sg_store_get_vector(s, 4, v) == SG_ECORRUPT);
	CHECK(sg_store_get(s, 5, &e) == SG_ECORRUPT);
	CHECK(entry_matches(s, 1, 0, "ns", 40));

	memset(&l, 0, sizeof(l));
	l.vec_ok = 1;
	CHECK(sg_store_iter(s, 0, 0, on_entry, &l, &skipped) == 0);
	CHECK(l.n == 1 && l.ids[0] == 1 && skipped == 4 && l.vec_ok);

	/* corrupt records can still be deleted */
	CHECK(sg_store_delete(s, 2) == 0 && sg_store_delete(s, 3) == 0);
	CHECK(sg_store_iter(s, 0, 0, on_entry, &l, &skipped) == 0 && skipped == 2);
	size_t nd;
	/* 1 and 4 (good record, bad vector) are reported; 5 is dropped silently */
	CHECK(sg_store_delete_where(s, NULL, NULL, NULL, &nd) == 0 && nd == 2);
	CHECK(sg_store_iter(s, 0, 0, on_entry, &l, &skipped) == 0 && skipped == 0);
	sg_store_close(s);
}

static void test_map_growth(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_stats_t st;
	sg_store_t *s;
	uint64_t i, id = 0;
	int err = 0;

	o.map_size = 64 * 1024;
	o.max_map_size = 64 * 1024 * 1024;
	s = open_ok(path_in_root(dir, sizeof(dir), "grow"), &o);
	if (!s)
		return;
	for (i = 0; i < 2000; i++)
		put_gen(s, i, "ns", 2000);
	CHECK(sg_store_stats(s, &st) == 0);
	CHECK(st.entries == 2000 && st.map_size > 4 * 1024 * 1024);
	CHECK(st.map_size <= o.max_map_size);
	int all = 1;
	for (i = 0; i < 2000; i += 97)
		all &= entry_matches(s, i + 1, i, "ns", 2000);
	CHECK(all);
	sg_store_close(s);

	/* and when it may not grow any more: SG_EFULL, nothing half-written */
	o.max_map_size = 256 * 1024;
	s = open_ok(path_in_root(dir, sizeof(dir), "full"), &o);
	if (!s)
		return;
	gen_t g;
	float v[DIM];
	for (i = 0; i < 10000 && err == 0; i++) {
		gen_entry(&g, i, "ns", 2000);
		fill_vec(v, i);
		err = sg_store_put(s, &g.in, v, &id);
	}
	CHECK(err == SG_EFULL);
	CHECK_CONTAINS(sg_store_last_error(s), "maximum size");
	CHECK(i > 20);
	CHECK(sg_store_stats(s, &st) == 0 && st.entries == i - 1 && st.next_id == i);
	CHECK(st.map_size == 256 * 1024);
	CHECK(entry_matches(s, 1, 0, "ns", 2000) && entry_matches(s, i - 1, i - 2, "ns", 2000));
	/* freeing space makes room again */
	CHECK(sg_store_delete(s, 1) == 0 && sg_store_delete(s, 2) == 0);
	CHECK(sg_store_put(s, &g.in, v, &id) == 0 && id == i);
	sg_store_close(s);
}

/* Damage inside LMDB's pages: with opts.verify the store either refuses the
 * file with SG_ECORRUPT or opens it and then never crashes. */
static void test_damaged_pages(void)
{
	char dir[300], data[340], msg[512];
	sg_store_opts_t o = opts_default();
	sg_store_t *s;
	struct stat sb;
	int refused = 0;

	o.verify = 1;
	path_in_root(dir, sizeof(dir), "damaged");
	snprintf(data, sizeof(data), "%s/data.mdb", dir);
	for (unsigned seed = 1; seed <= 12; seed++) {
		sg_store_opts_t fresh = o;
		fresh.rebuild = 1;
		s = open_ok(dir, &fresh);
		if (!s)
			return;
		for (uint64_t i = 0; i < 300; i++)
			put_gen(s, i, "ns", 1500);
		sg_store_close(s);
		int fd = open(data, O_RDWR);
		CHECK(stat(data, &sb) == 0 && fd >= 0);
		if (fd < 0)
			return;
		srand(seed);
		if (seed == 12) {
			/* every page after the two meta pages overwritten */
			static unsigned char junk[4096];
			for (off_t off = 8192; off < sb.st_size; off += sizeof(junk)) {
				for (size_t i = 0; i < sizeof(junk); i++)
					junk[i] = (unsigned char)rand();
				CHECK(pwrite(fd, junk, sizeof(junk), off) == (ssize_t)sizeof(junk));
			}
		} else {
			for (int i = 0; i < 20; i++) {
				unsigned char b = (unsigned char)rand();
				off_t off = 8192 + rand() % (sb.st_size - 8192);
				CHECK(pwrite(fd, &b, 1, off) == 1);
			}
		}
		close(fd);
		int err = sg_store_open(&s, dir, &o, msg, sizeof(msg));
		CHECK(err == 0 || err == SG_ECORRUPT);
		if (err) {
			CHECK_CONTAINS(msg, "damaged");
			refused++;
			continue;
		}
		iter_log_t l;
		size_t skipped = 0;
		memset(&l, 0, sizeof(l));
		err = sg_store_iter(s, 0, 0, on_entry, &l, &skipped);
		CHECK(err == 0 || err == SG_ECORRUPT);
		CHECK(l.n + skipped <= 300);
		sg_store_close(s);
	}
	CHECK(refused >= 1); /* at least the fully overwritten file */
	printf("damaged pages: %d of 12 damaged files refused by verify\n", refused);
}

/* ---- crash consistency ------------------------------------------------------ */

typedef struct ack {
	uint64_t id;  /* assigned id */
	uint64_t seq; /* what the content was generated from */
} ack_t;

static void crash_child(const char *dir, int fd, uint64_t seq0)
{
	sg_store_opts_t o = opts_default();
	sg_store_t *s;
	char msg[256];

	o.map_size = 128 * 1024; /* small: the child grows the map as it goes */
	o.max_map_size = (size_t)1 << 30;
	if (sg_store_open(&s, dir, &o, msg, sizeof(msg)) != 0)
		_exit(2);
	for (uint64_t seq = seq0;; seq++) {
		gen_t g;
		float v[DIM];
		ack_t a;
		gen_entry(&g, seq, "crash", 100 + seq % 1500);
		fill_vec(v, seq);
		if (sg_store_put(s, &g.in, v, &a.id) != 0)
			_exit(3);
		a.seq = seq;
		if (write(fd, &a, sizeof(a)) != sizeof(a))
			_exit(4);
		if (seq % 3 == 0 && sg_store_touch(s, a.id, (int64_t)seq) != 0)
			_exit(5);
	}
}

static void test_crash(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	uint64_t seq0 = 0, total = 0;

	o.max_map_size = (size_t)1 << 30;
	path_in_root(dir, sizeof(dir), "crash");
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	for (int round = 0; round < 5; round++) {
		int p[2], status;
		pid_t pid;
		ack_t a;
		size_t acked = 0, skipped = 99;

		CHECK(pipe(p) == 0);
		fflush(NULL);
		pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			crash_child(dir, p[1], seq0);
		}
		close(p[1]);
		/* Start the clock at the first acknowledged put, so that the kill
		 * lands among the writes however slowly the child starts. */
		ack_t first;
		int started = read(p[0], &first, sizeof(first)) == sizeof(first);
		CHECK(started);
		usleep((useconds_t)(rand() % 50000));
		kill(pid, SIGKILL);
		CHECK(waitpid(pid, &status, 0) == pid);
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

		sg_store_t *s = open_ok(dir, &o);
		if (!s) {
			close(p[0]);
			return;
		}
		int intact = 1;
		a = first;
		for (int more = started; more; more = read(p[0], &a, sizeof(a)) == sizeof(a)) {
			if (!entry_matches(s, a.id, a.seq, "crash", 100 + a.seq % 1500)) {
				fprintf(stderr, "round %d: acked id %" PRIu64 " lost or damaged\n",
					round, a.id);
				intact = 0;
			}
			seq0 = a.seq + 1;
			acked++;
		}
		close(p[0]);
		total += acked;
		CHECK(intact);
		CHECK(acked > 0);
		/* the whole store reads cleanly, and holds at least what was acked */
		iter_log_t l;
		memset(&l, 0, sizeof(l));
		l.vec_ok = 1;
		CHECK(sg_store_iter(s, 0, 0, on_entry, &l, &skipped) == 0);
		CHECK(skipped == 0 && l.vec_ok && l.n >= total);
		/* an entry committed but not yet acked when killed may exist: skip past it */
		seq0 += 1;
		sg_store_close(s);
	}
	printf("crash test: %" PRIu64 " acknowledged puts over 5 SIGKILLs, all intact\n", total);
}

/* ---- chunked checkpoints --------------------------------------------------- */

/* Bytes of blob number `gen` (so that any blob read back can be checked). */
static void ckpt_fill(char *b, size_t n, uint64_t gen)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (char)(i * 131 + gen * 7 + (i >> 9));
}

/* Write blob b as scope's chunked checkpoint in chunks of `chunk` bytes;
 * publish unless stop_after (then only that many chunks, and the writer is
 * abandoned). */
static int ckpt_write(sg_store_t *s, uint64_t scope, uint64_t last_id, const char *b, size_t n,
		      size_t chunk, int stop_after)
{
	sg_store_ckpt_t *w;
	char msg[256];
	int rc = sg_store_ckpt_begin(s, scope, &w, msg, sizeof(msg)), k = 0;

	if (rc)
		return rc;
	for (size_t off = 0; off < n && rc == 0; off += chunk, k++) {
		if (stop_after >= 0 && k == stop_after)
			break;
		rc = sg_store_ckpt_chunk(w, b + off, SG_MIN(chunk, n - off));
	}
	if (rc == 0 && stop_after < 0)
		rc = sg_store_ckpt_publish(w, last_id);
	sg_store_ckpt_free(w); /* an unpublished writer's chunks go */
	return rc;
}

/*
 * As a process killed in the middle of a save: a child opens the store in
 * dir, writes up to k chunks of a checkpoint of blob b (fewer if one fails)
 * and exits without freeing the writer or closing. Returns the chunks
 * written, or -1.
 */
static int ckpt_crash(const char *dir, const sg_store_opts_t *o, uint64_t scope, const char *b,
		      size_t n, size_t chunk, int k)
{
	pid_t pid = fork();
	int status = 0;

	if (pid == 0) {
		sg_store_t *s;
		sg_store_ckpt_t *w;
		char msg[256];
		int i = 0;
		if (sg_store_open(&s, dir, o, msg, sizeof(msg)) ||
		    sg_store_ckpt_begin(s, scope, &w, msg, sizeof(msg)))
			_exit(255);
		for (size_t off = 0; i < k && off < n; off += chunk, i++)
			if (sg_store_ckpt_chunk(w, b + off, SG_MIN(chunk, n - off)))
				break;
		_exit(i);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) == 255)
		return -1;
	return WEXITSTATUS(status);
}

/* Change one byte of chunk `i` of the scope's generation `gen` (or delete
 * the chunk) with LMDB directly. */
static int raw_chunk(const char *dir, uint64_t scope, uint64_t gen, uint32_t i, int del)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint8_t k[20];
	MDB_val key = {20, k}, v;
	int rc;

	for (int j = 7; j >= 0; j--, scope >>= 8)
		k[j] = (uint8_t)scope;
	for (int j = 15; j >= 8; j--, gen >>= 8)
		k[j] = (uint8_t)gen;
	for (int j = 19; j >= 16; j--, i >>= 8)
		k[j] = (uint8_t)i;
	if ((rc = mdb_env_create(&env)))
		return rc;
	mdb_env_set_maxdbs(env, 8);
	if (!(rc = mdb_env_open(env, dir, 0, 0600)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
		if (!(rc = mdb_dbi_open(txn, "ckchunks", 0, &dbi)) &&
		    !(rc = mdb_get(txn, dbi, &key, &v))) {
			if (del) {
				rc = mdb_del(txn, dbi, &key, NULL);
			} else {
				char *copy = malloc(v.mv_size);
				memcpy(copy, v.mv_data, v.mv_size);
				copy[v.mv_size / 2] ^= 0x5a;
				v.mv_data = copy;
				rc = mdb_put(txn, dbi, &key, &v, 0);
				free(copy);
			}
		}
		if (rc)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
	}
	mdb_env_close(env);
	return rc;
}

/* Flip one bit of byte `off` of the scope's manifest, with LMDB directly. */
static int raw_manifest(const char *dir, uint64_t scope, size_t off)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val key = {8, &scope}, v;
	int rc;

	if ((rc = mdb_env_create(&env)))
		return rc;
	mdb_env_set_maxdbs(env, 8);
	if (!(rc = mdb_env_open(env, dir, 0, 0600)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
		if (!(rc = mdb_dbi_open(txn, "manifests", MDB_INTEGERKEY, &dbi)) &&
		    !(rc = mdb_get(txn, dbi, &key, &v))) {
			char copy[64];
			if (v.mv_size <= off || v.mv_size > sizeof(copy)) {
				rc = MDB_BAD_VALSIZE;
			} else {
				memcpy(copy, v.mv_data, v.mv_size);
				copy[off] ^= 0x10;
				v.mv_data = copy;
				rc = mdb_put(txn, dbi, &key, &v, 0);
			}
		}
		if (rc)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
	}
	mdb_env_close(env);
	return rc;
}

/* A chunked checkpoint reads back as written, replaces the previous
 * generation (whose chunks go), and supersedes a single-record one. */
static void test_chunked_checkpoints(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "chunked"), &o);
	size_t n = 100000, len;
	char *b1 = malloc(n), *b2 = malloc(n);
	sg_store_stats_t st;
	ckpt_log_t l;
	uint64_t last;
	void *blob;

	if (!s || !b1 || !b2)
		goto out;
	ckpt_fill(b1, n, 1);
	ckpt_fill(b2, n - 5, 2);
	CHECK(sg_store_put_checkpoint(s, 0xAAAA, 3, "old", 3) == 0);
	CHECK_RC(ckpt_write(s, 0xAAAA, 40, b1, n, 30000, -1), 0); /* 4 chunks */
	CHECK(sg_store_get_checkpoint(s, 0xAAAA, &last, &blob, &len) == 0);
	CHECK(last == 40 && len == n && memcmp(blob, b1, n) == 0);
	free(blob);
	memset(&l, 0, sizeof(l));
	CHECK(sg_store_iter_checkpoints(s, on_checkpoint, &l, NULL) == 0);
	CHECK(l.n == 1 && l.scope[0] == 0xAAAA && l.last[0] == 40 && l.len[0] == n);
	CHECK(sg_store_stats(s, &st) == 0 && st.checkpoints == 1);
	/* a second generation, of one chunk */
	CHECK_RC(ckpt_write(s, 0xAAAA, 41, b2, n - 5, 1 << 20, -1), 0);
	CHECK(sg_store_get_checkpoint(s, 0xAAAA, &last, &blob, &len) == 0);
	CHECK(last == 41 && len == n - 5 && memcmp(blob, b2, n - 5) == 0);
	free(blob);
	/* refused chunks */
	sg_store_ckpt_t *w;
	char msg[256];
	CHECK(sg_store_ckpt_begin(s, 0xBBBB, &w, msg, sizeof(msg)) == 0);
	CHECK(sg_store_ckpt_chunk(w, b1, 0) == SG_EINVAL);
	CHECK(sg_store_ckpt_chunk(w, NULL, 5) == SG_EINVAL);
	CHECK_CONTAINS(sg_store_ckpt_error(w), "refused");
	sg_store_ckpt_free(w);
	/* deleting removes the chunked form */
	CHECK_RC(ckpt_write(s, 0xCCCC, 7, b1, 1000, 300, -1), 0);
	CHECK(sg_store_delete_checkpoint(s, 0xCCCC) == 0);
	CHECK(sg_store_delete_checkpoint(s, 0xCCCC) == SG_ENOTFOUND);
	CHECK(sg_store_get_checkpoint(s, 0xCCCC, &last, &blob, &len) == SG_ENOTFOUND);
	sg_store_close(s);
	s = NULL;
	/* only the live generation's chunk is left (the old 4 were deleted) */
	CHECK(raw_count(dir, "ckchunks") == 1);
	CHECK(raw_count(dir, "manifests") == 1);
	CHECK(raw_count(dir, "checkpoints") == 0); /* superseded */
	/* a single-record checkpoint written now supersedes the chunked one */
	s = open_ok(dir, &o);
	if (!s)
		goto out;
	CHECK(sg_store_put_checkpoint(s, 0xAAAA, 42, "single", 6) == 0);
	CHECK(sg_store_get_checkpoint(s, 0xAAAA, &last, &blob, &len) == 0);
	CHECK(last == 42 && len == 6 && memcmp(blob, "single", 6) == 0);
	free(blob);
	sg_store_close(s);
	s = NULL;
	CHECK(raw_count(dir, "ckchunks") == 0 && raw_count(dir, "manifests") == 0);
out:
	sg_store_close(s);
	free(b1);
	free(b2);
}

/* A save that stops between chunks (a crash) leaves the previous checkpoint
 * readable; its chunks go at the next open or the scope's next save. */
static void test_checkpoint_interrupted(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "ckinter"), &o);
	size_t n = 50000, len;
	char *b1 = malloc(n), *b2 = malloc(n);
	uint64_t last;
	void *blob;

	if (!s || !b1 || !b2)
		goto out;
	ckpt_fill(b1, n, 1);
	ckpt_fill(b2, n, 2);
	CHECK_RC(ckpt_write(s, 9, 100, b1, n, 10000, -1), 0);        /* 5 chunks, published */
	CHECK_RC(ckpt_write(s, 9, 200, b2, n, 10000, 3), 0);         /* 3 of 5, abandoned */
	CHECK(sg_store_get_checkpoint(s, 9, &last, &blob, &len) == 0);
	CHECK(last == 100 && len == n && memcmp(blob, b1, n) == 0);
	free(blob);
	sg_store_close(s);
	s = NULL;
	CHECK(raw_count(dir, "ckchunks") == 5); /* the abandoned writer took its 3 along */
	CHECK(ckpt_crash(dir, &o, 9, b2, n, 10000, 3) == 3);         /* 3 of 5, then killed */
	CHECK(raw_count(dir, "ckchunks") == 8);
	s = open_ok(dir, &o); /* drops the 3 orphans */
	if (!s)
		goto out;
	CHECK(sg_store_get_checkpoint(s, 9, &last, &blob, &len) == 0);
	CHECK(last == 100 && len == n && memcmp(blob, b1, n) == 0);
	free(blob);
	/* the scope's next save drops another crashed one's chunks first */
	CHECK(ckpt_crash(dir, &o, 9, b2, n, 10000, 2) == 2);
	CHECK_RC(ckpt_write(s, 9, 300, b2, n, 25000, -1), 0);
	CHECK(sg_store_get_checkpoint(s, 9, &last, &blob, &len) == 0);
	CHECK(last == 300 && len == n && memcmp(blob, b2, n) == 0);
	free(blob);
	sg_store_close(s);
	s = NULL;
	CHECK(raw_count(dir, "ckchunks") == 2);
	s = open_ok(dir, &o);
	sg_store_close(s);
	s = NULL;
	CHECK(raw_count(dir, "ckchunks") == 2); /* the published ones stay */
out:
	sg_store_close(s);
	free(b1);
	free(b2);
}

/* Everything deleted while a checkpoint is written (DELETE /cache): it is
 * not published over the chunks the deletion took, and its own go. */
static void test_checkpoint_cleared(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "ckclear"), &o);
	size_t n = 40000, len, nd = 0;
	char *b = malloc(n);
	sg_store_ckpt_t *w = NULL;
	char msg[256];
	uint64_t last;
	void *blob;

	if (!s || !b)
		goto out;
	ckpt_fill(b, n, 1);
	for (uint64_t seq = 0; seq < 10; seq++)
		put_gen(s, seq, "ns", 100);
	CHECK_RC(ckpt_write(s, 4, 10, b, n, 10000, -1), 0);
	CHECK(sg_store_ckpt_begin(s, 4, &w, msg, sizeof(msg)) == 0);
	if (!w)
		goto out;
	CHECK(sg_store_ckpt_chunk(w, b, 10000) == 0);
	CHECK(sg_store_delete_where(s, NULL, NULL, NULL, &nd) == 0 && nd == 10);
	CHECK(put_gen(s, 50, "ns", 100) == 11);
	CHECK_RC(sg_store_ckpt_chunk(w, b + 10000, 10000), SG_ECANCELED);
	CHECK_RC(sg_store_ckpt_publish(w, 11), SG_ECANCELED);
	CHECK_CONTAINS(sg_store_ckpt_error(w), "cleared");
	sg_store_ckpt_free(w);
	CHECK_RC(sg_store_get_checkpoint(s, 4, &last, &blob, &len), SG_ENOTFOUND);
	/* the next one is written as usual */
	CHECK_RC(ckpt_write(s, 5, 11, b, n, 10000, -1), 0);
	sg_store_close(s);
	s = NULL;
	CHECK(raw_count(dir, "manifests") == 1 && raw_count(dir, "ckchunks") == 4);
out:
	sg_store_close(s);
	free(b);
}

/* A damaged or missing chunk makes the checkpoint unusable, never wrong: the
 * iteration hands it over with blob NULL and a message. */
static void test_checkpoint_damaged(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "ckbad"), &o);
	size_t n = 40000, len, skipped = 0;
	char *b = malloc(n);
	ckpt_log_t l;
	uint64_t last;
	void *blob;

	if (!s || !b)
		goto out;
	ckpt_fill(b, n, 1);
	CHECK_RC(ckpt_write(s, 1, 10, b, n, 10000, -1), 0);
	CHECK_RC(ckpt_write(s, 2, 20, b, n, 10000, -1), 0);
	CHECK_RC(ckpt_write(s, 3, 30, b, n, 10000, -1), 0);
	CHECK_RC(ckpt_write(s, 4, 40, b, n, 10000, -1), 0);
	sg_store_close(s);
	s = NULL;
	CHECK(raw_chunk(dir, 1, 1, 2, 0) == 0); /* a flipped byte */
	CHECK(raw_chunk(dir, 2, 1, 1, 1) == 0); /* a missing chunk */
	CHECK(raw_manifest(dir, 4, 16) == 0);   /* a flipped bit in last_id */
	s = open_ok(dir, &o);
	if (!s)
		goto out;
	CHECK(sg_store_get_checkpoint(s, 1, &last, &blob, &len) == SG_ECORRUPT);
	CHECK_CONTAINS(sg_store_last_error(s), "checksum");
	CHECK(sg_store_get_checkpoint(s, 2, &last, &blob, &len) == SG_ECORRUPT);
	CHECK_CONTAINS(sg_store_last_error(s), "missing");
	CHECK_RC(sg_store_get_checkpoint(s, 4, &last, &blob, &len), SG_ECORRUPT);
	CHECK_CONTAINS(sg_store_last_error(s), "checksum");
	memset(&l, 0, sizeof(l));
	CHECK(sg_store_iter_checkpoints(s, on_checkpoint, &l, &skipped) == 0);
	CHECK(l.n == 4 && skipped == 3);
	CHECK(l.scope[0] == 1 && l.len[0] == 0 && l.last[0] == 0);
	CHECK(l.scope[1] == 2 && l.len[1] == 0 && l.last[1] == 0);
	CHECK(l.scope[2] == 3 && l.len[2] == n && l.last[2] == 30);
	CHECK(l.scope[3] == 4 && l.len[3] == 0 && l.last[3] == 0);
	/* a new save of the scope replaces the damaged one */
	CHECK_RC(ckpt_write(s, 1, 11, b, n, 10000, -1), 0);
	CHECK(sg_store_get_checkpoint(s, 1, &last, &blob, &len) == 0 && last == 11 && len == n);
	free(blob);
out:
	sg_store_close(s);
	free(b);
}

/* A file of store format 1 (no chunked checkpoints, no secret) opens and is
 * upgraded to the current format: a secret is made, and its checkpoints,
 * keyed by scope ids of the old kind, are dropped (the cache rebuilds the
 * indexes from the stored vectors). */
static void test_format1_upgrade(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s = open_ok(path_in_root(dir, sizeof(dir), "format1"), &o);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint32_t one = 1, format = 0;
	MDB_val k = {6, "format"}, v = {4, &one};
	uint64_t last;
	size_t len;
	void *blob;

	if (!s)
		return;
	CHECK(sg_store_put_checkpoint(s, 77, 5, "legacy", 6) == 0);
	sg_store_close(s);
	/* make it what semgate wrote before: format 1, no new databases */
	CHECK(mdb_env_create(&env) == 0);
	mdb_env_set_maxdbs(env, 8);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "manifests", 0, &dbi) == 0 && mdb_drop(txn, dbi, 1) == 0);
	CHECK(mdb_dbi_open(txn, "ckchunks", 0, &dbi) == 0 && mdb_drop(txn, dbi, 1) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &dbi) == 0 && mdb_put(txn, dbi, &k, &v, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
	CHECK(raw_count(dir, "manifests") == -1);

	o.verify = 1; /* the page walk takes files without the new databases */
	s = open_ok(dir, &o);
	if (!s)
		return;
	CHECK(sg_store_get_checkpoint(s, 77, &last, &blob, &len) == SG_ENOTFOUND);
	sg_hash_key_t hk;
	sg_store_hash_key(s, &hk);
	CHECK(hk.k0 != 0 || hk.k1 != 0);
	sg_store_close(s);
	CHECK(raw_count(dir, "manifests") == 0);
	CHECK(mdb_env_create(&env) == 0);
	mdb_env_set_maxdbs(env, 8);
	CHECK(mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0);
	if (v.mv_size == 4)
		memcpy(&format, v.mv_data, 4);
	CHECK(format == 3);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	s = open_ok(dir, &o); /* and it opens again, verified */
	sg_store_close(s);
}

/* Puts of entries of ~1 KB from seq on until one fails: how many went in. */
static int put_until_full(sg_store_t *s, uint64_t seq, const char *ns)
{
	int n = 0;

	for (;; n++) {
		gen_t g;
		float v[DIM];
		gen_entry(&g, seq + (uint64_t)n, ns, 1000);
		fill_vec(v, seq + (uint64_t)n);
		if (sg_store_put(s, &g.in, v, NULL) != 0)
			return n;
	}
}

/*
 * A save that fills the map at its maximum size (up to the headroom a save
 * leaves) fails, and takes its chunks with it: the owner's writes have the
 * room they had before. A full store
 * opens (nothing is written at open), even with a crashed save's chunks in.
 */
static void test_checkpoint_map_full(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	size_t n = 8 << 20, chunk = 64 << 10, nd = 0;
	char *b = calloc(1, n);
	sg_store_ckpt_t *w = NULL;
	sg_store_t *s;
	char msg[256];
	int rc = 0, chunks = 0, puts;

	o.map_size = o.max_map_size = 4 << 20;
	s = open_ok(path_in_root(dir, sizeof(dir), "ckfull"), &o);
	if (!s || !b)
		goto out;
	for (uint64_t seq = 0; seq < 200; seq++)
		put_gen(s, seq, "ns", 1000);
	CHECK(sg_store_ckpt_begin(s, 42, &w, msg, sizeof(msg)) == 0);
	for (size_t off = 0; w && off < n; off += chunk, chunks++)
		if ((rc = sg_store_ckpt_chunk(w, b + off, chunk)))
			break;
	CHECK_RC(rc, SG_EFULL);
	CHECK(chunks >= 8); /* it failed part-way, the map full of its chunks */
	sg_store_ckpt_free(w);
	/* the room the chunks took is the owner's again (~1.4 KB a put) */
	puts = put_until_full(s, 1000, "x");
	CHECK_MSG(puts >= chunks * 16, "%d puts after %d chunks of 64 KiB", puts, chunks);
	CHECK_RC(sg_store_reserve(s, 1 << 20), SG_EFULL);
	sg_store_close(s);
	CHECK(raw_count(dir, "ckchunks") == 0);

	s = open_ok(dir, &o); /* full: opens without writing */
	if (!s)
		goto out;
	/* room again, a deletion at a time (one of them all would want more
	 * room than a full map has: it copies every page it changes), twice:
	 * the first few can fail for want of a page until others freed some */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < puts; i++)
			nd += sg_store_delete(s, 201 + (uint64_t)i) == 0;
	CHECK_MSG(nd == (size_t)puts, "%zu of %d deleted", nd, puts);
	sg_store_close(s);
	/* a crash while a save filled the map again (up to the headroom a save
	 * leaves: ~3 chunks of this size): it still opens */
	int crashed = ckpt_crash(dir, &o, 42, b, n, chunk, 1000);
	CHECK_MSG(crashed >= 4, "%d chunks before the crash", crashed);
	s = open_ok(dir, &o);
	CHECK(s && entry_matches(s, 200, 199, "ns", 1000));
	sg_store_close(s);

	/* a store filled by puts alone opens too */
	s = open_ok(path_in_root(dir, sizeof(dir), "full"), &o);
	CHECK(s && put_until_full(s, 0, "ns") > 1000);
	sg_store_close(s);
	s = open_ok(dir, &o);
out:
	sg_store_close(s);
	free(b);
}

typedef struct ckpt_thread {
	sg_store_t *s;        /* shared with the main thread */
	int rounds;           /* checkpoints to write */
	int rc;               /* first failure */
	atomic_int need_room; /* the writer hit SG_EFULL: the owner grows the map */
	atomic_int done;      /* the writer is finished */
} ckpt_thread_t;

static void *ckpt_writer(void *arg)
{
	ckpt_thread_t *t = arg;
	size_t n = 200000;
	char *b = malloc(n);

	for (int r = 0; b && r < t->rounds && t->rc == 0; r++) {
		ckpt_fill(b, n, (uint64_t)r + 1);
		t->rc = ckpt_write(t->s, 0xF00D, (uint64_t)r + 1, b, n, 16384, -1);
		if (t->rc == SG_EFULL) { /* as the cache does: the owner grows it, try again */
			atomic_store(&t->need_room, 1);
			while (atomic_load(&t->need_room))
				sched_yield();
			t->rc = 0;
			r--;
		}
	}
	free(b);
	atomic_store(&t->done, 1);
	return NULL;
}

/* A checkpoint writer on another thread alongside the owner's writes and
 * reads, and map growth (the sanitizer build checks the locking). */
static void test_checkpoint_thread(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	sg_store_t *s;
	ckpt_thread_t t = {NULL, 20, 0, 0, 0};
	pthread_t th;
	sg_store_stats_t st;
	uint64_t last, i = 0;
	size_t len, n = 3 << 20;
	void *blob;
	char *b = malloc(n);
	int ok = 1, grown = 0;

	o.map_size = 1 << 20; /* small: it grows meanwhile */
	o.max_map_size = 16 << 20;
	/* The writer never grows the map; sg_store_reserve does, to the maximum. */
	s = open_ok(path_in_root(dir, sizeof(dir), "ckgrow"), &o);
	if (!s || !b)
		goto out;
	ckpt_fill(b, n, 1);
	CHECK_RC(ckpt_write(s, 0xF00D, 1, b, n, 64 << 10, -1), SG_EFULL);
	CHECK(sg_store_stats(s, &st) == 0 && st.map_size == 1 << 20);
	CHECK_RC(sg_store_reserve(s, 4 << 20), 0);
	CHECK(sg_store_stats(s, &st) == 0 && st.map_size >= 5 << 20);
	CHECK_RC(ckpt_write(s, 0xF00D, 1, b, n, 64 << 10, -1), 0);
	CHECK_RC(sg_store_reserve(s, 64 << 20), SG_EFULL);
	CHECK(sg_store_stats(s, &st) == 0 && st.map_size == 16 << 20);
	sg_store_close(s);

	o.max_map_size = 256 << 20;
	s = t.s = open_ok(path_in_root(dir, sizeof(dir), "ckthread"), &o);
	if (!s)
		goto out;
	CHECK(pthread_create(&th, NULL, ckpt_writer, &t) == 0);
	for (; i < 3000 || !atomic_load(&t.done); i++) {
		if (atomic_load(&t.need_room)) {
			/* room for a chunk and more, grown if there was not */
			ok &= sg_store_reserve(s, 1 << 20) == 0;
			ok &= sg_store_stats(s, &st) == 0 && st.file_bytes + (1 << 20) <= st.map_size;
			grown++;
			atomic_store(&t.need_room, 0);
		}
		if (i < 3000) {
			ok &= put_gen(s, i, "ns", 2000) == i + 1;
			if (i % 50 == 0)
				ok &= entry_matches(s, i + 1, i, "ns", 2000);
		}
	}
	pthread_join(th, NULL);
	CHECK(ok);
	CHECK_RC(t.rc, 0);
	CHECK(sg_store_get_checkpoint(s, 0xF00D, &last, &blob, &len) == 0);
	CHECK(last == 20 && len == 200000);
	if (blob && len == 200000) {
		char *want = malloc(len);
		ckpt_fill(want, len, 20);
		CHECK(memcmp(blob, want, len) == 0);
		free(want);
	}
	free(blob);
	/* 3000 entries of 2 KB did not fit in 1 MiB */
	CHECK(sg_store_stats(s, &st) == 0 && st.map_size >= 8 << 20 && st.map_size <= 256 << 20);
	printf("checkpoint thread: 20 checkpoints beside 3000 puts; map grown for it %d times\n",
	       grown);
out:
	sg_store_close(s);
	free(b);
}

/* Kill -9 a process that writes chunked checkpoints over and over: the
 * checkpoint read back is always a whole one of those it published. */
static void test_checkpoint_crash(void)
{
	char dir[300];
	sg_store_opts_t o = opts_default();
	size_t n = 300000;
	char *b = malloc(n), *want = malloc(n);

	path_in_root(dir, sizeof(dir), "ckcrash");
	if (!b || !want)
		goto out;
	for (int round = 0; round < 4; round++) {
		int p[2];
		if (pipe(p) != 0)
			break;
		pid_t pid = fork();
		if (pid == 0) {
			sg_store_t *s;
			char msg[256];
			close(p[0]);
			if (sg_store_open(&s, dir, &o, msg, sizeof(msg)) != 0)
				_exit(1);
			for (uint64_t g = 1;; g++) {
				ckpt_fill(b, n - (size_t)(g % 7) * 1000, g);
				if (ckpt_write(s, 5, g, b, n - (size_t)(g % 7) * 1000, 20000, -1))
					_exit(2);
				if (g == 3 && write(p[1], "x", 1) != 1) /* a few are out */
					_exit(3);
			}
		}
		close(p[1]);
		char x;
		CHECK(read(p[0], &x, 1) == 1);
		close(p[0]);
		struct timespec ts = {0, (long)(round + 1) * 7000000L};
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);

		sg_store_t *s = open_ok(dir, &o);
		uint64_t last = 0;
		size_t len = 0;
		void *blob = NULL;
		if (!s)
			break;
		CHECK(sg_store_get_checkpoint(s, 5, &last, &blob, &len) == 0);
		ckpt_fill(want, n - (size_t)(last % 7) * 1000, last);
		CHECK_MSG(last >= 3 && len == n - (size_t)(last % 7) * 1000 &&
		          blob && memcmp(blob, want, len) == 0,
		          "round %d: generation %" PRIu64 ", %zu bytes", round, last, len);
		free(blob);
		sg_store_close(s);
		/* only the published generation's chunks are left */
		CHECK(raw_count(dir, "ckchunks") == (long)((len + 19999) / 20000));
	}
out:
	free(b);
	free(want);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(root, sizeof(root), "%s/sg_store_test_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	test_hash();
	test_roundtrip();
	test_exact();
	test_touch();
	test_delete();
	test_iter();
	test_checkpoints();
	test_reopen();
	test_mismatch();
	test_corrupt_files();
	test_corrupt_record();
	test_damaged_pages();
	test_map_growth();
	test_crash();
	test_chunked_checkpoints();
	test_checkpoint_interrupted();
	test_checkpoint_damaged();
	test_checkpoint_cleared();
	test_checkpoint_map_full();
	test_format1_upgrade();
	test_checkpoint_thread();
	test_checkpoint_crash();
	rm_rf(root);
	CHECK_DONE();
}
