/* The governance store (src/gateway/authdb.c): budget periods on the
 * calendar of a time zone, keys and their secrets across a reopen, spend
 * records written in batches (chunks of records) and reported, damaged
 * records and chunks skipped, retention by chunk and across one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <uv.h>

#include "authdb.h"
#include "check.h"

static int64_t at(int y, int mo, int d, int h, int mi)
{
	struct tm tm = {0};
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm); /* local time of the TZ set below */
}

static void test_periods(void)
{
	setenv("TZ", "Europe/Paris", 1);
	tzset();
	sg_principal_t p = {0};
	/* 2026-03-29 is the day the clocks go forward in Paris (a 23-hour day) */
	int64_t t = at(2026, 3, 29, 15, 30);
	p.period = SG_PERIOD_DAILY;
	CHECK(sg__authdb_period_start(&p, t) == at(2026, 3, 29, 0, 0));
	CHECK(sg__authdb_period_end(&p, at(2026, 3, 29, 0, 0)) == at(2026, 3, 30, 0, 0));
	CHECK(at(2026, 3, 30, 0, 0) - at(2026, 3, 29, 0, 0) == 23 * 3600);
	p.period = SG_PERIOD_WEEKLY; /* ISO weeks: Monday 2026-03-23 */
	CHECK(sg__authdb_period_start(&p, t) == at(2026, 3, 23, 0, 0));
	CHECK(sg__authdb_period_end(&p, at(2026, 3, 23, 0, 0)) == at(2026, 3, 30, 0, 0));
	CHECK(sg__authdb_period_start(&p, at(2026, 3, 23, 0, 0)) == at(2026, 3, 23, 0, 0));
	p.period = SG_PERIOD_MONTHLY;
	CHECK(sg__authdb_period_start(&p, t) == at(2026, 3, 1, 0, 0));
	CHECK(sg__authdb_period_end(&p, at(2026, 12, 1, 0, 0)) == at(2027, 1, 1, 0, 0));
	p.period = SG_PERIOD_SECONDS;
	p.period_s = 60;
	CHECK(sg__authdb_period_start(&p, 1000) == 960);
	CHECK(sg__authdb_period_end(&p, 960) == 1020);
	p.period = SG_PERIOD_NONE;
	CHECK(sg__authdb_period_start(&p, t) == 0);
	CHECK(sg__authdb_period_end(&p, 0) == INT64_MAX);
	setenv("TZ", "UTC", 1);
	tzset();
}

static char dir[] = "/tmp/sg-authdb-XXXXXX";

static sg_authdb_t *open_db(uv_loop_t *loop, const sg_auth_config_t *cfg)
{
	sg_authdb_t *db = NULL;
	char err[256] = "";
	int rc = sg__authdb_open(&db, loop, cfg, err, sizeof(err));
	CHECK_MSG(rc == 0, "open: %s", err);
	return db;
}

static void close_db(uv_loop_t *loop, sg_authdb_t *db)
{
	sg__authdb_close(db);
	uv_run(loop, UV_RUN_DEFAULT);
	sg__authdb_free(db);
}

static void test_store(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	CHECK(mkdtemp(dir) != NULL);
	sg_auth_config_t cfg = {.secret = "0123456789abcdef", .path = dir, .map_size_mb = 16,
	                        .flush_ms = 10, .retention_days = 0, .record_spend = 1};
	sg_authdb_t *db = open_db(&loop, &cfg);
	if (db == NULL)
		return;

	/* a team, a key in it; the secret comes back once, its digest verifies */
	json_t *view = NULL, *body = json_pack("{s:s, s:I}", "name", "t", "rpm", (json_int_t)5);
	char *key = NULL;
	CHECK(sg__authdb_create(db, 1, body, &view, NULL, NULL) == 0);
	char team[SG_KEY_ID_LEN + 1];
	snprintf(team, sizeof(team), "%s", json_string_value(json_object_get(view, "id")));
	json_decref(body);
	json_decref(view);
	body = json_pack("{s:s, s:[s], s:{s:f, s:s}}", "team", team, "models", "gpt-*", "budget",
	                 "max_usd", 1.5, "period", "daily");
	CHECK(sg__authdb_create(db, 0, body, &view, &key, NULL) == 0);
	json_decref(body);
	CHECK(key && strlen(key) == 3 + SG_KEY_ID_LEN + 1 + SG_KEY_SECRET_LEN);
	CHECK(view && json_object_get(view, "secret_hmac") == NULL);
	char id[SG_KEY_ID_LEN + 1];
	snprintf(id, sizeof(id), "%s", key + 3);
	json_decref(view);
	sg_principal_t *k = sg__authdb_find(db, 0, id, SG_KEY_ID_LEN);
	CHECK(k != NULL);
	const char *secret = key + 3 + SG_KEY_ID_LEN + 1;
	if (k) {
		CHECK(sg__authdb_verify(db, k, secret, strlen(secret), time(NULL)));
		CHECK(!sg__authdb_verify(db, k, "x", 1, time(NULL)));
		CHECK(sg__principal_allows(k, "gpt-4o") && !sg__principal_allows(k, "claude"));
		CHECK(strcmp(k->team, team) == 0);
		CHECK(k->max_usd == 1.5 && k->period == SG_PERIOD_DAILY);
	}
	/* a team with keys cannot go; bad input changes nothing */
	CHECK(sg__authdb_delete(db, 1, team) == SG_EEXIST);
	sg_buf_t errors;
	sg_buf_init(&errors, 0);
	body = json_pack("{s:I, s:s}", "rpm", (json_int_t)-1, "bogus", "x");
	CHECK(sg__authdb_patch(db, 0, id, body, &view, &errors) == SG_EINVAL);
	CHECK(errors.data && strstr(errors.data, "rpm: must be an integer >= 0"));
	CHECK(errors.data && strstr(errors.data, "bogus: unknown field"));
	json_decref(body);
	CHECK(sg__authdb_find(db, 0, id, SG_KEY_ID_LEN) == k && k->lim.rpm == 0);
	sg_buf_free(&errors);

	/* spend: queued, written by the timer, reported (queued ones too) */
	sg_spend_rec_t r = {.t_us = (int64_t)time(NULL) * 1000000, .request_id = SG_IOV("r1"),
	                    .key = {id, strlen(id)}, .team = {team, strlen(team)},
	                    .model = SG_IOV("gpt-4o"), .deployment = SG_IOV("gpt-4o/0"),
	                    .prompt = 10, .completion = 5, .cost = 0.25, .status = 200};
	sg__authdb_record(db, &r);
	r.cache = 1;
	r.cost = 0;
	r.saved = 0.25;
	sg__authdb_record(db, &r);
	k->win->spent = 0.25;
	sg__authdb_window_dirty(db, k->win);
	json_t *rep = NULL;
	CHECK(sg__authdb_report(db, "key", 0, time(NULL) + 1, NULL, &rep) == 0);
	json_t *row = json_array_get(json_object_get(rep, "data"), 0);
	CHECK(json_integer_value(json_object_get(row, "requests")) == 2);
	CHECK(json_integer_value(json_object_get(row, "cache_hits")) == 1);
	CHECK(json_real_value(json_object_get(row, "cost_usd")) == 0.25);
	json_decref(rep);
	CHECK(sg__authdb_report(db, "nope", 0, 1, NULL, &rep) == SG_EINVAL);
	free(key);
	close_db(&loop, db); /* writes what is still queued */

	/* a damaged key record next to good ones: skipped, the rest loads */
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	CHECK(mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 4) == 0 &&
	      mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0 && mdb_dbi_open(txn, "keys", 0, &dbi) == 0);
	MDB_val bk = {SG_KEY_ID_LEN, "zzzzzzzzzzzz"}, bv = {9, "{garbage!"};
	CHECK(mdb_put(txn, dbi, &bk, &bv, 0) == 0);
	MDB_val nk = {SG_KEY_ID_LEN, "yyyyyyyyyyyy"}, nv = {2, "{}"}; /* no secret digest */
	CHECK(mdb_put(txn, dbi, &nk, &nv, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);

	db = open_db(&loop, &cfg);
	if (db == NULL)
		return;
	k = sg__authdb_find(db, 0, id, SG_KEY_ID_LEN);
	CHECK(k != NULL);
	CHECK(sg__authdb_find(db, 0, "zzzzzzzzzzzz", SG_KEY_ID_LEN) == NULL);
	CHECK(sg__authdb_find(db, 0, "yyyyyyyyyyyy", SG_KEY_ID_LEN) == NULL);
	if (k) {
		CHECK(k->win->spent == 0.25); /* the window came back */
		CHECK(k->max_usd == 1.5);
	}
	/* rotation: the old secret works within the grace, the new one always */
	char *k2 = NULL, *k3 = NULL, *k1 = NULL;
	CHECK(sg__authdb_rotate(db, id, 0, &view, &k1) == 0);
	json_decref(view);
	CHECK(sg__authdb_rotate(db, id, 100, &view, &k2) == 0);
	json_decref(view);
	k = sg__authdb_find(db, 0, id, SG_KEY_ID_LEN);
	if (k && k1 && k2) {
		/* within the grace the old secret verifies, the second time by its
		 * tag; once the grace is over the tag does not let it in either */
		const char *s1 = k1 + 4 + SG_KEY_ID_LEN, *s2 = k2 + 4 + SG_KEY_ID_LEN;
		int64_t t = time(NULL);
		CHECK(sg__authdb_verify(db, k, s1, strlen(s1), t));
		CHECK(k->seen_tag != 0 && k->seen_old);
		CHECK(sg__authdb_verify(db, k, s1, strlen(s1), t));
		CHECK(!sg__authdb_verify(db, k, s1, strlen(s1), t + 101));
		CHECK(sg__authdb_verify(db, k, s2, strlen(s2), t + 101));
		CHECK(!k->seen_old);
		CHECK(sg__authdb_verify(db, k, s2, strlen(s2), t + 101));
		CHECK(!sg__authdb_verify(db, k, "nope", 4, t)); /* a wrong one is not the tag's */
	}
	free(k1);
	CHECK(sg__authdb_rotate(db, id, 0, &view, &k3) == 0);
	json_decref(view);
	k = sg__authdb_find(db, 0, id, SG_KEY_ID_LEN);
	if (k && k2 && k3) {
		const char *s2 = k2 + 4 + SG_KEY_ID_LEN, *s3 = k3 + 4 + SG_KEY_ID_LEN;
		CHECK(sg__authdb_verify(db, k, s3, strlen(s3), time(NULL)));
		CHECK(!sg__authdb_verify(db, k, s2, strlen(s2), time(NULL))); /* grace 0 */
		CHECK(k->win->spent == 0.25); /* one window across versions */
	}
	CHECK(sg__authdb_report(db, "team", 0, time(NULL) + 1, NULL, &rep) == 0);
	row = json_array_get(json_object_get(rep, "data"), 0);
	CHECK(json_integer_value(json_object_get(row, "requests")) == 2);
	CHECK(strcmp(json_string_value(json_object_get(row, "team")), team) == 0);
	json_decref(rep);
	free(k2);
	free(k3);
	close_db(&loop, db);
	uv_loop_close(&loop);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

/* A scratch store for one test: its loop, a fresh directory, and a config
 * for it (16 MB map, batches every 10 ms, spend recorded, no retention). */
typedef struct scratch {
	uv_loop_t loop;
	char dir[40];
	sg_auth_config_t cfg;
} scratch_t;

static void scratch_init(scratch_t *t, const char *name)
{
	uv_loop_init(&t->loop);
	snprintf(t->dir, sizeof(t->dir), "/tmp/sg-%s-XXXXXX", name);
	CHECK(mkdtemp(t->dir) != NULL);
	t->cfg = (sg_auth_config_t){.secret = "0123456789abcdef", .path = t->dir,
	                            .map_size_mb = 16, .flush_ms = 10, .retention_days = 0,
	                            .record_spend = 1};
}

static void scratch_done(scratch_t *t)
{
	char cmd[64];
	uv_loop_close(&t->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
	CHECK(system(cmd) == 0);
}

/* The digest is RFC 2104's HMAC-SHA256 (RFC 4231's test cases 2 and 6: a
 * short key, and one longer than a block, hashed first). */
static void test_hmac(void)
{
	static const struct {
		const char *key, *msg, *hex;
	} tv[] = {
		{"Jefe", "what do ya want for nothing?",
		 "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{NULL, "Test Using Larger Than Block-Size Key - Hash Key First",
		 "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
	};
	char big[132];
	memset(big, 0xaa, 131);
	big[131] = '\0';
	for (size_t i = 0; i < 2; i++) {
		uv_loop_t loop;
		uv_loop_init(&loop);
		char d[] = "/tmp/sg-hmac-XXXXXX";
		CHECK(mkdtemp(d) != NULL);
		sg_auth_config_t cfg = {.secret = (char *)(tv[i].key ? tv[i].key : big), .path = d,
		                        .map_size_mb = 16, .flush_ms = 10};
		sg_authdb_t *db = open_db(&loop, &cfg);
		if (db) {
			uint8_t h[32];
			char hex[65];
			sg__authdb_hmac(db, tv[i].msg, strlen(tv[i].msg), h);
			for (int j = 0; j < 32; j++)
				snprintf(hex + 2 * j, 3, "%02x", h[j]);
			CHECK_MSG(strcmp(hex, tv[i].hex) == 0, "case %zu: %s", i, hex);
			close_db(&loop, db);
		}
		uv_loop_close(&loop);
		char cmd[64];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", d);
		CHECK(system(cmd) == 0);
	}
}

static void stop_loop(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* auth.retention_days: records older than that are deleted by the batches
 * (the first one after start included); newer ones stay. */
static void test_retention(void)
{
	scratch_t sc;
	scratch_init(&sc, "retention");
	uv_loop_t *loop = &sc.loop;
	sg_auth_config_t cfg = sc.cfg;
	sg_authdb_t *db = open_db(loop, &cfg);
	if (db == NULL)
		return;
	int64_t now = (int64_t)time(NULL);
	sg_spend_rec_t r = {.request_id = SG_IOV("r"), .key = SG_IOV("k"), .model = SG_IOV("m"),
	                    .cost = 1, .status = 200};
	/* one chunk all older than 25 days (deleted whole), then one across the
	 * cutoff (0, 10, 20, 27 days old: rewritten without the 27) */
	for (int age_days = 40; age_days >= 30; age_days -= 10) {
		r.t_us = (now - age_days * 86400LL) * 1000000;
		sg__authdb_record(db, &r);
	}
	close_db(loop, db); /* written, retention off */
	db = open_db(loop, &cfg);
	if (db == NULL)
		return;
	static const int ages[] = {0, 10, 20, 27};
	for (int i = 0; i < 4; i++) {
		r.t_us = (now - ages[i] * 86400LL) * 1000000;
		sg__authdb_record(db, &r);
	}
	close_db(loop, db);
	json_t *rep = NULL;
	cfg.retention_days = 25;
	db = open_db(loop, &cfg);
	if (db == NULL)
		return;
	CHECK(sg__authdb_report(db, "key", 0, now + 1, NULL, &rep) == 0);
	CHECK(json_integer_value(json_object_get(json_array_get(json_object_get(rep, "data"), 0),
	                                         "requests")) == 6);
	json_decref(rep);
	sg_spend_rec_t fresh = r;
	fresh.t_us = now * 1000000;
	sg__authdb_record(db, &fresh); /* something to write: the batch runs, deleting */
	uv_timer_t t;
	uv_timer_init(loop, &t);
	uv_timer_start(&t, stop_loop, 300, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	CHECK(sg__authdb_report(db, "key", 0, now + 1, NULL, &rep) == 0);
	/* 0, 10 and 20 days old, and the fresh one; 27, 30 and 40 gone */
	CHECK(json_integer_value(json_object_get(json_array_get(json_object_get(rep, "data"), 0),
	                                         "requests")) == 4);
	json_decref(rep);
	json_t *st = sg__authdb_stats(db);
	CHECK(json_integer_value(json_object_get(st, "retention_deleted")) == 3);
	json_decref(st);
	close_db(loop, db);
	scratch_done(&sc);
}

static long requests_of(json_t *rep)
{
	return (long)json_integer_value(
		json_object_get(json_array_get(json_object_get(rep, "data"), 0), "requests"));
}

/* Spend records are stored as chunks of up to 256 KB: a batch of 6,000
 * (~360 KB) is two values, every record reported after a reopen; damaged
 * chunks (too short, a record header running past the value) count for
 * nothing and break nothing; a report's range filters inside a chunk. */
static void test_spend_chunks(void)
{
	scratch_t sc;
	scratch_init(&sc, "chunks");
	uv_loop_t *loop = &sc.loop;
	const char *d = sc.dir;
	sg_auth_config_t cfg = sc.cfg;
	cfg.map_size_mb = 64;
	sg_authdb_t *db = open_db(loop, &cfg);
	if (db == NULL)
		return;
	int64_t now = (int64_t)time(NULL);
	sg_spend_rec_t r = {.request_id = SG_IOV("req-000000"), .key = SG_IOV("kkkkkkkkkkkk"),
	                    .model = SG_IOV("m"), .cost = 0.001, .status = 200};
	for (int i = 0; i < 6000; i++) {
		r.t_us = (now - 100) * 1000000 + i * 10000; /* 100 records a second */
		sg__authdb_record(db, &r);
	}
	close_db(loop, db);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_stat st;
	CHECK(mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 4) == 0 &&
	      mdb_env_open(env, d, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0 && mdb_dbi_open(txn, "spend", 0, &dbi) == 0);
	CHECK(mdb_stat(txn, dbi, &st) == 0 && st.ms_entries == 2);
	uint8_t k1[16] = {0}, k2[16] = {0};
	uint64_t latest = (uint64_t)(now - 50) * 1000000; /* inside every range read below */
	for (int i = 0; i < 8; i++)
		k1[i] = k2[i] = (uint8_t)(latest >> (56 - 8 * i));
	k1[15] = 0xfe;
	k2[15] = 0xff;
	char v1[4] = "abc";              /* shorter than a chunk's header */
	char v2[8 + 10 + 2] = {0};       /* a record header claiming 0xffff bytes */
	v2[8 + 8] = (char)0xff;
	v2[8 + 9] = (char)0xff;
	MDB_val bk1 = {16, k1}, bv1 = {sizeof(v1), v1}, bk2 = {16, k2}, bv2 = {sizeof(v2), v2};
	CHECK(mdb_put(txn, dbi, &bk1, &bv1, 0) == 0 && mdb_put(txn, dbi, &bk2, &bv2, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);

	db = open_db(loop, &cfg);
	if (db == NULL)
		return;
	json_t *rep = NULL;
	CHECK(sg__authdb_report(db, "key", 0, now + 1, NULL, &rep) == 0);
	CHECK(requests_of(rep) == 6000);
	CHECK(fabs(json_real_value(json_object_get(json_array_get(json_object_get(rep, "data"), 0),
	                                           "cost_usd")) - 6.0) < 1e-9);
	json_decref(rep);
	/* [now - 90, now - 80): records 1000..1999, across the first chunk */
	CHECK(sg__authdb_report(db, "key", now - 90, now - 80, NULL, &rep) == 0);
	CHECK(requests_of(rep) == 1000);
	json_decref(rep);
	close_db(loop, db);
	scratch_done(&sc);
}

/* Put the klen bytes of key = the vlen of val into table db of the store in
 * dir (val NULL: delete key). */
static void raw_put(const char *path, const char *db, const void *key, size_t klen,
                    const void *val, size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	CHECK(mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 8) == 0 &&
	      mdb_env_open(env, path, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0 && mdb_dbi_open(txn, db, 0, &dbi) == 0);
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	CHECK((val ? mdb_put(txn, dbi, &k, &v, 0) : mdb_del(txn, dbi, &k, NULL)) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

/* The same with text (val NULL: delete key). */
static void raw_set(const char *path, const char *db, const char *key, const char *val)
{
	raw_put(path, db, key, strlen(key), val, val ? strlen(val) : 0);
}

/* The text of key in table db of the store in dir, into out (n bytes); 0 or -1. */
static int raw_get(const char *path, const char *db, const char *key, char *out, size_t n)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {strlen(key), (void *)key}, v;
	int rc = -1;
	if (mdb_env_create(&env) != 0)
		return -1;
	if (mdb_env_set_maxdbs(env, 8) == 0 && mdb_env_open(env, path, MDB_RDONLY, 0600) == 0 &&
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
		if (mdb_dbi_open(txn, db, 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0 &&
		    v.mv_size < n) {
			memcpy(out, v.mv_data, v.mv_size);
			out[v.mv_size] = '\0';
			rc = 0;
		}
		mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	return rc;
}

/* A store marks its spend records' layout when made; one marked otherwise,
 * or holding spend records without the mark, is refused with a message that
 * names the directory, never misread. */
static void test_layout(void)
{
	scratch_t sc;
	scratch_init(&sc, "layout");
	uv_loop_t *loop = &sc.loop;
	const char *d = sc.dir;
	sg_auth_config_t cfg = sc.cfg;
	sg_authdb_t *db = open_db(loop, &cfg);
	if (db == NULL)
		return;
	sg_spend_rec_t r = {.t_us = (int64_t)time(NULL) * 1000000, .request_id = SG_IOV("r"),
	                    .key = SG_IOV("k"), .model = SG_IOV("m"), .cost = 1, .status = 200};
	sg__authdb_record(db, &r);
	close_db(loop, db);
	db = open_db(loop, &cfg); /* its own mark: opens */
	if (db)
		close_db(loop, db);
	char err[512] = "";
	raw_set(d, "meta", "layout", "3");
	CHECK(sg__authdb_open(&db, loop, &cfg, err, sizeof(err)) == SG_ESTORE && db == NULL);
	CHECK_MSG(strstr(err, d) && strstr(err, "layout"), "%s", err);
	raw_set(d, "meta", "layout", NULL); /* records, no mark */
	err[0] = '\0';
	CHECK(sg__authdb_open(&db, loop, &cfg, err, sizeof(err)) == SG_ESTORE && db == NULL);
	CHECK_MSG(strstr(err, "layout") != NULL, "%s", err);
	scratch_done(&sc);
}

/* Batch after batch with the timer running, each of another size (the
 * buffer a written batch leaves is the next queue's: a smaller batch in a
 * larger buffer, a larger one growing it): every record is written once,
 * none is lost or repeated, whatever the buffer held before. */
static void test_spend_batches(void)
{
	scratch_t sc;
	scratch_init(&sc, "batches");
	uv_loop_t *loop = &sc.loop;
	sg_authdb_t *db = open_db(loop, &sc.cfg);
	if (db == NULL)
		return;
	int64_t now = (int64_t)time(NULL);
	static const int sizes[] = {3000, 7, 1, 5000, 120, 2500, 0, 900};
	long total = 0, cents = 0;
	sg_spend_rec_t r = {.request_id = SG_IOV("req-batch"), .key = SG_IOV("kkkkkkkkkkkk"),
	                    .model = SG_IOV("m"), .status = 200};
	for (size_t b = 0; b < SG_ARRAY_SIZE(sizes); b++) {
		for (int i = 0; i < sizes[b]; i++) {
			r.t_us = (now - 60) * 1000000 + total * 1000;
			r.cost = (double)(1 + (total % 3)) / 100; /* 1, 2 or 3 cents */
			r.model = b % 2 ? SG_IOV("m-odd")
			                : SG_IOV("m-even-batch-with-a-longer-name");
			cents += 1 + (total % 3);
			total++;
			sg__authdb_record(db, &r);
		}
		long written = -1;
		for (int tries = 0; tries < 200 && written != total; tries++) {
			uv_timer_t t;
			uv_timer_init(loop, &t);
			uv_timer_start(&t, stop_loop, 20, 0);
			uv_run(loop, UV_RUN_DEFAULT);
			uv_close((uv_handle_t *)&t, NULL);
			uv_run(loop, UV_RUN_NOWAIT);
			json_t *st = sg__authdb_stats(db);
			written = (long)json_integer_value(json_object_get(st, "spend_records_written"));
			json_decref(st);
		}
		CHECK_MSG(written == total, "batch %zu: %ld of %ld records written", b, written, total);
	}
	json_t *rep = NULL;
	CHECK(sg__authdb_report(db, "day", 0, now + 1, NULL, &rep) == 0);
	CHECK_MSG(requests_of(rep) == total, "%ld of %ld records reported", requests_of(rep), total);
	double usd = json_real_value(
		json_object_get(json_array_get(json_object_get(rep, "data"), 0), "cost_usd"));
	CHECK_MSG(fabs(usd - (double)cents / 100) < 1e-6, "cost %.6f, expected %.2f", usd,
	          (double)cents / 100);
	json_decref(rep);
	CHECK(sg__authdb_report(db, "model", 0, now + 1, NULL, &rep) == 0);
	CHECK(json_array_size(json_object_get(rep, "data")) == 2);
	json_decref(rep);
	close_db(loop, db);
	scratch_done(&sc);
}

/* Layout 2 records (encode_rec, decode_rec) give back every field as it
 * was queued, at their edges: ids packed or not, empty and NULL strings,
 * strings cut at 255 bytes, negative and huge counts, the flags. */
static int same_iov(sg_iovec_t a, const char *b, size_t n)
{
	return a.len == n && (n == 0 || memcmp(a.base, b, n) == 0);
}

static void check_codec(const sg_spend_rec_t *in, int most)
{
	static char text[5 * 256];
	sg_spend_rec_t out;
	int n = sg__authdb_rec_codec(in, &out, text);
	CHECK_MSG(n > 0 && (most == 0 || n <= most), "stored in %d bytes (at most %d)", n, most);
	if (n <= 0)
		return;
	const sg_iovec_t a[5] = {in->request_id, in->key, in->team, in->model, in->deployment};
	const sg_iovec_t b[5] = {out.request_id, out.key, out.team, out.model, out.deployment};
	for (int i = 0; i < 5; i++)
		CHECK_MSG(same_iov(b[i], a[i].base, a[i].len > 255 ? 255 : a[i].len),
		          "string %d: %.*s", i, (int)b[i].len, b[i].base);
	CHECK(out.prompt == in->prompt && out.completion == in->completion);
	CHECK(out.cost == in->cost && out.saved == in->saved);
	CHECK(out.latency_ms == in->latency_ms && out.status == in->status);
	CHECK(out.cache == in->cache && out.flags == in->flags);
}

static void test_rec_codec(void)
{
	/* a cache hit with one of semgate's own request ids: 52 bytes, 88 in layout 1 */
	sg_spend_rec_t hit = {.request_id = SG_IOV("8ad1abc5000000000003"),
	                      .key = SG_IOV("abcdefgh0123"), .model = SG_IOV("gpt-4o-mini"),
	                      .prompt = 11, .completion = 12, .saved = 9.15e-6, .latency_ms = 0,
	                      .status = 200, .cache = 1};
	check_codec(&hit, 52);
	sg_spend_rec_t miss = {.request_id = SG_IOV("req-Client_1.2:3"),
	                       .key = SG_IOV("abcdefgh0123"), .team = SG_IOV("team00000001"),
	                       .model = SG_IOV("gpt-4o"), .deployment = SG_IOV("gpt-4o/0"),
	                       .prompt = 123456, .completion = 7, .cost = 0.0185,
	                       .latency_ms = 1234, .status = 200,
	                       .flags = SG_SPEND_ESTIMATED};
	check_codec(&miss, 0);
	/* not packed: upper case, an odd length, one digit that is not hex; packed: 254 */
	const char *ids[] = {"ABCDEF01", "abc", "abcdeg", "0", "", "0123456789abcdef0/", "0123:4",
	                     "0123456789`a", "\x80\x81", "12345678901234567890123456g8",
	                     "ab", "0123456789abcdef01", "00000000000000000000000000"};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		miss.request_id = (sg_iovec_t){ids[i], strlen(ids[i])};
		check_codec(&miss, 0);
	}
	char hex[300];
	for (int i = 0; i < 299; i++)
		hex[i] = "0123456789abcdef"[i % 16];
	hex[299] = '\0';
	int sizes[3];
	size_t lens[3] = {254, 255, 299}; /* packed; odd: not packed; cut at 255 */
	for (int i = 0; i < 3; i++) {
		static char text[5 * 256];
		sg_spend_rec_t out;
		miss.request_id = (sg_iovec_t){hex, lens[i]};
		check_codec(&miss, 0);
		sizes[i] = sg__authdb_rec_codec(&miss, &out, text);
	}
	CHECK(sizes[0] < sizes[1] - 100 && sizes[1] == sizes[2]);
	/* every short length of a string, and the longest (the copies differ by length) */
	char name[256];
	for (int i = 0; i < 255; i++)
		name[i] = (char)('A' + i % 26);
	for (size_t l = 0; l <= 255; l += l < 40 ? 1 : 215) {
		miss.model = (sg_iovec_t){name, l};
		miss.deployment = (sg_iovec_t){name + 255 - l, l};
		check_codec(&miss, 0);
	}
	/* edges of every number, every flag, empty strings with no base */
	sg_spend_rec_t edge = {.prompt = INT64_MAX, .completion = -5, .cost = -0.5,
	                       .saved = 1e300, .latency_ms = UINT32_MAX, .status = UINT16_MAX,
	                       .cache = 2, .flags = SG_SPEND_UNPRICED | SG_SPEND_ESTIMATED};
	check_codec(&edge, 0);
	edge.prompt = INT64_MIN;
	edge.completion = 0;
	edge.cost = 0;
	edge.saved = 0;
	check_codec(&edge, 0);
}

/* Fill a layout-1 record (as stores made before layout 2 hold them) into
 * out: [time 8][size 2] then the fixed fields and five strings. */
static size_t v1_record(uint8_t *out, int64_t t_us, int64_t prompt, double cost, double saved,
                        uint8_t cache, const char *key, const char *model)
{
	struct {
		int64_t prompt, completion;
		double cost, saved;
		uint32_t latency_ms;
		uint16_t status;
		uint8_t cache, flags;
	} d = {prompt, 1, cost, saved, 5, 200, cache, 0};
	_Static_assert(sizeof(d) == 40, "layout 1's fixed fields");
	const char *strs[5] = {"req-1", key, "", model, ""};
	size_t n = 10;
	memcpy(out + n, &d, sizeof(d));
	n += sizeof(d);
	for (int i = 0; i < 5; i++) {
		out[n++] = (uint8_t)strlen(strs[i]);
		memcpy(out + n, strs[i], strlen(strs[i]));
		n += strlen(strs[i]);
	}
	uint16_t size = (uint16_t)(n - 10);
	memcpy(out, &t_us, 8);
	memcpy(out + 8, &size, 2);
	return n;
}

/* A store of layout 1 opens: its records are reported with the new ones
 * written beside them, and it is marked layout 2 from then on. */
static void test_layout1_store(void)
{
	scratch_t sc;
	scratch_init(&sc, "layout1");
	sg_authdb_t *db = open_db(&sc.loop, &sc.cfg); /* (makes the store's tables) */
	if (db == NULL)
		return;
	close_db(&sc.loop, db);
	int64_t now = (int64_t)time(NULL), t0 = (now - 30) * 1000000;
	uint8_t chunk[8 + 2 * 128];
	size_t n = 8;
	n += v1_record(chunk + n, t0, 100, 0.5, 0, 0, "aaaaaaaaaaaa", "m1");
	n += v1_record(chunk + n, t0 + 1000, 7, 0, 0.25, 1, "aaaaaaaaaaaa", "m1");
	memcpy(chunk, &t0, 8);
	uint8_t k[16] = {0}; /* [latest time, big-endian][sequence] */
	for (int i = 0; i < 8; i++)
		k[i] = (uint8_t)((uint64_t)(t0 + 1000) >> (56 - 8 * i));
	raw_put(sc.dir, "spend", k, sizeof(k), chunk, n);
	raw_set(sc.dir, "meta", "layout", "1");

	if ((db = open_db(&sc.loop, &sc.cfg)) == NULL)
		return;
	sg_spend_rec_t r = {.t_us = (now - 10) * 1000000, .request_id = SG_IOV("0123abcd"),
	                    .key = SG_IOV("aaaaaaaaaaaa"), .model = SG_IOV("m1"), .prompt = 3,
	                    .completion = 4, .cost = 0.125, .status = 200};
	sg__authdb_record(db, &r);
	close_db(&sc.loop, db); /* written */
	if ((db = open_db(&sc.loop, &sc.cfg)) == NULL)
		return;
	json_t *rep = NULL;
	CHECK(sg__authdb_report(db, "key", 0, now + 1, NULL, &rep) == 0);
	json_t *row = json_array_get(json_object_get(rep, "data"), 0);
	CHECK(json_integer_value(json_object_get(row, "requests")) == 3);
	CHECK(json_integer_value(json_object_get(row, "prompt_tokens")) == 110);
	CHECK(json_integer_value(json_object_get(row, "cache_hits")) == 1);
	CHECK(json_real_value(json_object_get(row, "cost_usd")) == 0.625);
	CHECK(json_real_value(json_object_get(row, "saved_usd")) == 0.25);
	json_decref(rep);
	close_db(&sc.loop, db);
	/* marked 2: a version that reads only layout 1 refuses it */
	char mark[8] = "";
	CHECK(raw_get(sc.dir, "meta", "layout", mark, sizeof(mark)) == 0 && strcmp(mark, "2") == 0);
	scratch_done(&sc);
}

int main(void)
{
	test_rec_codec();
	test_layout();
	test_layout1_store();
	test_spend_chunks();
	test_spend_batches();
	test_retention();
	test_hmac();
	test_periods();
	test_store();
	CHECK_DONE();
}
