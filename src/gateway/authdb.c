/* The governance store: see authdb.h. */
#include <errno.h>
#include <inttypes.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>
#include <openssl/evp.h>

#include "authdb.h"
#include "counter.h"
#include "semgate/common.h"
#include "semgate/hash.h"
#include "semgate/log.h"
#include "u64map.h"

#define MAX_DOC_BYTES 65536   /* one key's or team's record */
#define MAX_MODELS 256        /* entries of "models" and "model_limits" */
#define MAX_QUEUE 1000000     /* spend records waiting for a batch */
#define SPARE_MAX (8u << 20)  /* a batch buffer larger than this is freed, not kept */
#define RETENTION_EVERY_S 60  /* how often old records are deleted */
#define SG_TIME_MAX_S 95617584000LL /* 5000-01-01: times beyond are refused */

/* Spend records wait in one buffer, each as [time: 8 bytes][size: 2 bytes]
 * and its stored form (encode_rec): no allocation per record, one free per
 * batch, and the thread writes them as they are. */
#define QHDR 10
/* The size's top bit marks a record of layout 2 (encode_rec); without it a
 * record is of layout 1, as stores made before layout 2 hold. */
#define REC_V2 0x8000u
#define REC_SIZE 0x7fffu
/* On disk the same form, in chunks: one LMDB value per up to CHUNK_MAX bytes
 * of a batch's records, [earliest time: 8 bytes] then the records, under the
 * key [latest time, big-endian: 8][sequence: 8]. One append per chunk, not
 * per record (a B-tree insert each cost the writer ~1,000 instructions a
 * record); retention deletes whole chunks by their latest time and rewrites
 * the one that straddles its cutoff; a report reads every chunk from the
 * first whose latest time is in its range. */
#define CHUNK_MAX (256 * 1024)
#define CHDR 8

/* The next record of a queued or stored run of records at *at: its time,
 * bytes and size, or 0 at the end (or at a damaged header: nothing after it
 * can be trusted). */
static int next_rec(const char *buf, size_t len, size_t *at, int64_t *t_us,
                    const uint8_t **rec, uint16_t *n)
{
	if (*at + QHDR > len)
		return 0;
	memcpy(t_us, buf + *at, 8);
	memcpy(n, buf + *at + 8, 2);
	size_t size = *n & REC_SIZE; /* (*n keeps its layout bit, for decode_rec) */
	if (*at + QHDR + size > len)
		return 0;
	*rec = (const uint8_t *)buf + *at + QHDR;
	*at += QHDR + size;
	return 1;
}

typedef struct win_snap {
	char name[SG_KEY_ID_LEN + 3]; /* "k:<id>" or "t:<id>" */
	int64_t start;
	double spent;
	sg_window_t *w;               /* a reference: marked changed again if the write fails */
} win_snap_t;


/* One batch on its way to the disk. */
typedef struct batch {
	char *buf;                   /* the records, queued form (owned) */
	size_t len;                  /* bytes in buf */
	size_t cap;                  /* allocated (kept for reuse: sg_authdb.spare) */
	size_t nrecs;                /* records in buf */
	win_snap_t *wins;
	size_t nwins;
	int64_t retention_before_us; /* delete records before this (0: not this time) */
	int rc;                      /* the write's result */
	int committed;               /* its records are in the store (under commit_lock) */
	size_t deleted;              /* records retention removed */
	int retention_more;          /* retention stopped at its cap: the next batch goes on */
	int64_t span_us;             /* the longest chunk written (latest - earliest), or 0 */
} batch_t;

struct sg_authdb {
	uv_loop_t *loop;
	const sg_auth_config_t *cfg;
	MDB_env *env;
	MDB_dbi keys_db, teams_db, windows_db, spend_db, meta_db;
	sg_u64map_t keys, teams;   /* hash of id -> sg_principal_t (ids are unique per table) */
	char *queue;               /* records waiting for the next batch (queued form) */
	size_t qlen, qcap;         /* bytes in it, allocated */
	size_t nqueue;             /* records in it */
	char *spare;               /* a written batch's buffer, for the next queue: already a
	                            * batch's size, so the queue does not grow again by
	                            * doubling reallocs on the loop (a 512 KB copy each) */
	size_t spare_cap;          /* its size (0: no spare) */
	sg_window_t **dirty;       /* windows changed since the last batch (references) */
	size_t ndirty, capdirty;
	uv_timer_t timer;
	uv_work_t work;
	/* A batch is written on a thread of its own, started for it and joined
	 * after (batch_in: its end, sent to the loop). Not on libuv's pool: a
	 * slow fdatasync would hold one of the threads that the cache's searches
	 * wait for, and while no thread but the loop's lives the kernel does
	 * not reference-count the process's files on every socket call (a
	 * shared descriptor table costs a pass-through request ~1.5%,
	 * bench/bench_threads.sh). */
	uv_thread_t writer;
	uv_async_t batch_in;
	int has_batch_in;          /* batch_in is initialized (else: libuv's pool) */
	int writing;               /* writer runs (flushing is its batch) */
	batch_t *flushing;         /* the batch being written, or NULL */
	uv_mutex_t commit_lock;    /* a batch's commit vs a report's snapshot: a report counts
	                            * the batch in flight from memory until, and only until,
	                            * its records are in the snapshot it reads */
	uint64_t seq;              /* record key sequence within a microsecond */
	int64_t last_retention_s;
	int64_t max_span_us;       /* the longest a chunk has spanned (meta "span_us"): a
	                            * report stops at to + this; under commit_lock */
	uint64_t written, dropped, write_errors, retention_deleted;
	int closed;
	sg_log_limit_t err_log;
	EVP_MD_CTX *hm_in, *hm_out, *hm_tmp; /* HMAC: the padded key blocks absorbed; scratch */
	sg_hash_key_t tag_key;     /* random: the tags of secrets seen (sg_principal_t.seen_tag) */
	uint64_t changes;          /* changes to the tables of keys and teams so far */
};

/* --- small helpers --------------------------------------------------------------------- */

static uint64_t id_hash(const char *id, size_t len)
{
	return sg_hash64(id, len, 0x5e11a7e5ULL);
}

static void random_chars(char *out, size_t n, const char *alphabet, size_t na)
{
	uint8_t b[64];
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(b, sizeof(b), 0);
		if (r <= 0)
			continue; /* EINTR; getrandom never fails otherwise once seeded */
		for (ssize_t i = 0; i < r && got < n; i++) {
			/* rejection sampling: no bias towards the first letters */
			if (b[i] >= 256 - 256 % na)
				continue;
			out[got++] = alphabet[b[i] % na];
		}
	}
	out[n] = '\0';
}

/* HMAC-SHA256 under the server secret (RFC 2104), with the two padded key
 * blocks hashed once at open: a verification then costs two short digests
 * (0.15 µs) instead of OpenSSL's one-shot HMAC() setting everything up
 * again (2 µs). */
static int hmac_init(sg_authdb_t *db, const char *key)
{
	uint8_t ip[64], op[64], kh[32];
	size_t n = strlen(key);
	unsigned int l;
	EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
	int ok = md && (db->hm_in = EVP_MD_CTX_new()) && (db->hm_out = EVP_MD_CTX_new()) &&
	         (db->hm_tmp = EVP_MD_CTX_new());
	if (ok && n > 64) { /* a key longer than a block is hashed first */
		ok = EVP_Digest(key, n, kh, &l, md, NULL);
		key = (const char *)kh;
		n = 32;
	}
	memset(ip, 0x36, sizeof(ip));
	memset(op, 0x5c, sizeof(op));
	for (size_t i = 0; i < n; i++) {
		ip[i] ^= (uint8_t)key[i];
		op[i] ^= (uint8_t)key[i];
	}
	ok = ok && EVP_DigestInit_ex(db->hm_in, md, NULL) && EVP_DigestUpdate(db->hm_in, ip, 64) &&
	     EVP_DigestInit_ex(db->hm_out, md, NULL) && EVP_DigestUpdate(db->hm_out, op, 64);
	explicit_bzero(ip, sizeof(ip));
	explicit_bzero(op, sizeof(op));
	explicit_bzero(kh, sizeof(kh));
	EVP_MD_free(md);
	return ok ? 0 : SG_ENOMEM;
}

static void hmac_secret(sg_authdb_t *db, const char *s, size_t n, uint8_t out[32])
{
	unsigned int l;
	EVP_MD_CTX *t = db->hm_tmp;
	if (!EVP_MD_CTX_copy_ex(t, db->hm_in) || !EVP_DigestUpdate(t, s, n) ||
	    !EVP_DigestFinal_ex(t, out, &l) || !EVP_MD_CTX_copy_ex(t, db->hm_out) ||
	    !EVP_DigestUpdate(t, out, 32) || !EVP_DigestFinal_ex(t, out, &l))
		memset(out, 0, 32); /* out of memory: matches no stored digest (none is all zero) */
}

/* n bytes as 2n lowercase hex digits (no NUL). */
static void hex_of(const uint8_t *h, size_t n, char *out)
{
	static const char x[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = x[h[i] >> 4];
		out[2 * i + 1] = x[h[i] & 15];
	}
}

static void hex32(const uint8_t *h, char out[65])
{
	hex_of(h, 32, out);
	out[64] = '\0';
}

static int unhex32(const char *s, uint8_t out[32])
{
	if (s == NULL || strlen(s) != 64)
		return -1;
	for (int i = 0; i < 64; i++) {
		int c = s[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (v < 0)
			return -1;
		out[i / 2] = (uint8_t)(i % 2 ? out[i / 2] | v : v << 4);
	}
	return 0;
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* --- periods ---------------------------------------------------------------------------- */

/* Start of the calendar period holding t, in the process's time zone
 * (budget.timezone, set at start-up). */
int64_t sg__authdb_period_start(const sg_principal_t *p, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	switch (p->period) {
	case SG_PERIOD_NONE:
		return 0;
	case SG_PERIOD_SECONDS:
		return t - t % p->period_s;
	default:
		break;
	}
	localtime_r(&tt, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	if (p->period == SG_PERIOD_WEEKLY)
		tm.tm_mday -= (tm.tm_wday + 6) % 7; /* weeks start on Monday (ISO 8601) */
	else if (p->period == SG_PERIOD_MONTHLY)
		tm.tm_mday = 1;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm);
}

int64_t sg__authdb_period_end(const sg_principal_t *p, int64_t start)
{
	struct tm tm;
	time_t tt = (time_t)start;
	switch (p->period) {
	case SG_PERIOD_NONE:
		return INT64_MAX;
	case SG_PERIOD_SECONDS:
		return start + p->period_s;
	default:
		break;
	}
	localtime_r(&tt, &tm);
	if (p->period == SG_PERIOD_DAILY)
		tm.tm_mday += 1;
	else if (p->period == SG_PERIOD_WEEKLY)
		tm.tm_mday += 7;
	else
		tm.tm_mon += 1;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm);
}

static void window_unref(sg_window_t *w)
{
	if (w && --w->refs == 0)
		free(w);
}

void sg__authdb_window_dirty(sg_authdb_t *db, sg_window_t *w)
{
	if (w->dirty)
		return;
	if (db->ndirty == db->capdirty) {
		size_t cap = db->capdirty ? db->capdirty * 2 : 64;
		sg_window_t **d = realloc(db->dirty, cap * sizeof(*d));
		if (d == NULL)
			return; /* written with a later batch, when memory allows */
		db->dirty = d;
		db->capdirty = cap;
	}
	w->dirty = 1;
	w->refs++;
	db->dirty[db->ndirty++] = w;
}

void sg__authdb_window_roll(sg_authdb_t *db, sg_principal_t *p, int64_t t)
{
	sg_window_t *w = p->win;
	/* the calendar is read only when the period may have changed (the test in
	 * sg__authdb_window): mktime() costs microseconds */
	int64_t start = sg__authdb_period_start(p, t);
	w->period = p->period;
	w->period_s = p->period_s;
	w->end = sg__authdb_period_end(p, start);
	/* only forward: a call still holding a record from before its period was
	 * changed must not take the window back (and zero what it spent) */
	if (start <= w->start)
		return;
	w->start = start;
	w->spent = 0;
	w->soft_noted = 0;
	sg__authdb_window_dirty(db, w);
}

/* --- principals: parse and validate ------------------------------------------------- */

void sg__principal_ref(sg_principal_t *p)
{
	p->refs++;
}

static void principal_free(sg_principal_t *p)
{
	window_unref(p->win);
	json_decref(p->doc);
	for (size_t i = 0; i < p->nmodels; i++)
		free(p->models[i]);
	free(p->models);
	for (size_t i = 0; i < p->nmlim; i++)
		free(p->mlim[i].model);
	free(p->mlim);
	free(p);
}

void sg__principal_unref(sg_principal_t *p)
{
	if (p && --p->refs == 0)
		principal_free(p);
}

static int parse_time(const char *s, int64_t *out)
{
	struct tm tm = {0};
	int y, mo, d, h, mi, sec, n = 0;
	/* YYYY-MM-DDTHH:MM:SS, every field its full width of digits */
	static const char shape[] = "dddd-dd-ddTdd:dd:dd";
	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		if (s[i] == '\0')
			return -1;
		if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9')
		                    : !(s[i] == shape[i] || (shape[i] == 'T' && s[i] == 't')))
			return -1;
	}
	if (sscanf(s, "%4d-%2d-%2d%*c%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
		return -1;
	const char *p = s + n;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	long off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om, k = 0;
		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
			return -1;
		off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -1;
	}
	if (*p)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	time_t t = timegm(&tm);
	struct tm back;
	/* a day the month does not have (02-30) comes back as another one */
	if (gmtime_r(&t, &back) == NULL || back.tm_mday != d || back.tm_mon != mo - 1)
		return -1;
	*out = (int64_t)t - off;
	return 0;
}

int sg__parse_time_arg(const char *s, int64_t *out)
{
	char *end;
	if (s[0] >= '0' && s[0] <= '9' && strchr(s, '-') == NULL) {
		errno = 0;
		long long v = strtoll(s, &end, 10);
		/* past the year 5000 is a mistake, and would overflow in µs */
		if (*end || errno || v < 0 || v > SG_TIME_MAX_S)
			return -1;
		*out = v;
		return 0;
	}
	return parse_time(s, out) == 0 && *out <= SG_TIME_MAX_S ? 0 : -1;
}

static int parse_period(const char *s, int *period, int64_t *secs)
{
	static const char *const names[] = {"none", "daily", "weekly", "monthly"};
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			*period = i;
			return 0;
		}
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end != s && strcmp(end, "s") == 0 && !errno && v >= 1 && v <= 366LL * 86400) {
		*period = SG_PERIOD_SECONDS;
		*secs = v;
		return 0;
	}
	return -1;
}

static int valid_ns(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && n <= SG_NS_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") == n;
}

#define PERR(...) (errors ? (void)sg_buf_printf(errors, __VA_ARGS__) : (void)0, bad++)

static int check_limitset(json_t *obj, const char *path, sg_limitset_t *l, sg_buf_t *errors)
{
	static const char *const names[] = {"rpm", "tpm", "max_concurrent"};
	long *f[] = {&l->rpm, &l->tpm, &l->max_concurrent};
	int bad = 0;
	for (int i = 0; i < 3; i++) {
		json_t *v = json_object_get(obj, names[i]);
		if (v == NULL || json_is_null(v)) {
			*f[i] = 0;
			continue;
		}
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > 1000000000000LL)
			PERR("%s%s: must be an integer >= 0 (0 or null: no limit)\n", path, names[i]);
		else
			*f[i] = (long)json_integer_value(v);
	}
	return bad;
}

/* Parse a whole record (admin view) into p, checking every field. Returns
 * the number of problems (each appended to errors). */
static int parse_doc(sg_authdb_t *db, int is_team, json_t *doc, sg_principal_t *p,
                     sg_buf_t *errors)
{
	static const char *const key_fields[] = {
		"id", "name", "team", "models", "metadata", "expires_at", "rpm", "tpm",
		"max_concurrent", "model_limits", "budget", "namespace", "disabled", "created_at",
		"updated_at", NULL};
	const char *k;
	json_t *v;
	int bad = 0;

	json_object_foreach(doc, k, v) {
		int known = 0;
		for (const char *const *f = key_fields; *f; f++)
			known |= strcmp(*f, k) == 0;
		if (!known || (is_team && (strcmp(k, "team") == 0 || strcmp(k, "expires_at") == 0)))
			PERR("%s: unknown field\n", k);
	}
	v = json_object_get(doc, "name");
	if (v && !json_is_null(v) && (!json_is_string(v) || json_string_length(v) > 256))
		PERR("name: must be a string of at most 256 bytes\n");
	v = json_object_get(doc, "team");
	p->team[0] = '\0';
	if (v && !json_is_null(v)) {
		if (!json_is_string(v) || json_string_length(v) != SG_KEY_ID_LEN)
			PERR("team: must be a team id\n");
		else if (db && sg__authdb_find(db, 1, json_string_value(v), SG_KEY_ID_LEN) == NULL)
			PERR("team: no team \"%s\"\n", json_string_value(v));
		else
			memcpy(p->team, json_string_value(v), SG_KEY_ID_LEN + 1);
	}
	v = json_object_get(doc, "models");
	if (v && !json_is_null(v)) {
		size_t i;
		json_t *m;
		if (!json_is_array(v) || json_array_size(v) > MAX_MODELS) {
			PERR("models: must be an array of at most %d model names or patterns\n",
			     MAX_MODELS);
		} else if ((p->models = calloc(json_array_size(v) + 1, sizeof(char *))) != NULL) {
			json_array_foreach(v, i, m) {
				if (!json_is_string(m) || json_string_length(m) == 0 ||
				    json_string_length(m) > 256) {
					PERR("models[%zu]: must be a model name or pattern\n", i);
					continue;
				}
				if ((p->models[p->nmodels] = strdup(json_string_value(m))) != NULL)
					p->nmodels++;
			}
		}
	}
	v = json_object_get(doc, "metadata");
	if (v && !json_is_null(v) && !json_is_object(v))
		PERR("metadata: must be an object\n");
	p->expires_at = 0;
	v = json_object_get(doc, "expires_at");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			PERR("expires_at: must be Unix seconds or an RFC 3339 time\n");
		else
			p->expires_at = json_integer_value(v);
	}
	bad += check_limitset(doc, "", &p->lim, errors);
	v = json_object_get(doc, "model_limits");
	if (v && !json_is_null(v)) {
		const char *mk;
		json_t *mv;
		if (!json_is_object(v) || json_object_size(v) > MAX_MODELS) {
			PERR("model_limits: must be an object of model names to {rpm, tpm, "
			     "max_concurrent}\n");
		} else if ((p->mlim = calloc(json_object_size(v) + 1, sizeof(*p->mlim))) != NULL) {
			json_object_foreach(v, mk, mv) {
				char path[300];
				snprintf(path, sizeof(path), "model_limits.%.256s.", mk);
				const char *f;
				json_t *fv;
				if (!json_is_object(mv)) {
					PERR("%s: must be an object\n", path);
					continue;
				}
				json_object_foreach(mv, f, fv) if (strcmp(f, "rpm") && strcmp(f, "tpm") &&
				                                   strcmp(f, "max_concurrent"))
					PERR("%s%s: unknown field\n", path, f);
				sg_model_limit_t *ml = &p->mlim[p->nmlim];
				bad += check_limitset(mv, path, &ml->lim, errors);
				if ((ml->model = strdup(mk)) != NULL)
					p->nmlim++;
			}
		}
	}
	p->max_usd = p->soft_usd = -1;
	p->period = SG_PERIOD_NONE;
	v = json_object_get(doc, "budget");
	if (v && !json_is_null(v)) {
		json_t *mx = json_object_get(v, "max_usd"), *so = json_object_get(v, "soft_usd"),
		       *pe = json_object_get(v, "period");
		const char *f;
		json_t *fv;
		if (!json_is_object(v)) {
			PERR("budget: must be an object {max_usd, soft_usd, period}\n");
		} else {
			json_object_foreach(v, f, fv) if (strcmp(f, "max_usd") && strcmp(f, "soft_usd") &&
			                                  strcmp(f, "period"))
				PERR("budget.%s: unknown field\n", f);
			if (mx && !json_is_null(mx)) {
				if (!json_is_number(mx) || !(json_number_value(mx) >= 0) ||
				    json_number_value(mx) > 1e12)
					PERR("budget.max_usd: must be a number >= 0\n");
				else
					p->max_usd = json_number_value(mx);
			}
			if (so && !json_is_null(so)) {
				if (!json_is_number(so) || !(json_number_value(so) >= 0) ||
				    json_number_value(so) > 1e12)
					PERR("budget.soft_usd: must be a number >= 0\n");
				else
					p->soft_usd = json_number_value(so);
			}
			if (p->max_usd >= 0 && p->soft_usd > p->max_usd)
				PERR("budget.soft_usd: must not be above budget.max_usd\n");
			if (pe && !json_is_null(pe) &&
			    (!json_is_string(pe) ||
			     parse_period(json_string_value(pe), &p->period, &p->period_s) != 0))
				PERR("budget.period: must be \"none\", \"daily\", \"weekly\", \"monthly\" or "
				     "a length in seconds such as \"3600s\"\n");
		}
	}
	p->ns[0] = '\0';
	v = json_object_get(doc, "namespace");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v) || !valid_ns(json_string_value(v)))
			PERR("namespace: must be 1 to %d characters of [A-Za-z0-9._:-]\n", SG_NS_MAX);
		else
			strcpy(p->ns, json_string_value(v));
	}
	v = json_object_get(doc, "disabled");
	if (v && !json_is_boolean(v))
		PERR("disabled: must be true or false\n");
	p->disabled = json_is_true(v);
	return bad;
}

/* What an admin may send: the fields above but the ones semgate keeps. A
 * time may come as RFC 3339 text: made Unix seconds here. */
static int check_input(int is_team, json_t *body, sg_buf_t *errors)
{
	static const char *const own[] = {"id", "disabled", "created_at", "updated_at", NULL};
	const char *k;
	json_t *v;
	int bad = 0;

	if (!json_is_object(body))
		return PERR("the body must be a JSON object\n");
	json_object_foreach(body, k, v) {
		for (const char *const *f = own; *f; f++)
			if (strcmp(*f, k) == 0)
				PERR("%s: is set by semgate, not by a request\n", k);
	}
	v = json_object_get(body, "expires_at");
	if (!is_team && json_is_string(v)) {
		int64_t t;
		if (sg__parse_time_arg(json_string_value(v), &t) != 0)
			PERR("expires_at: must be Unix seconds or an RFC 3339 time\n");
		else
			json_object_set_new(body, "expires_at", json_integer(t));
	}
	return bad;
}

/* A record's stored form: the view plus the secret's digests. */
static char *stored_text(const sg_principal_t *p)
{
	json_t *o = json_deep_copy(p->doc);
	char hex[65];
	if (o == NULL)
		return NULL;
	if (!p->is_team) {
		hex32(p->hash, hex);
		json_object_set_new(o, "secret_hmac", json_string(hex));
		if (p->old_until) {
			hex32(p->old_hash, hex);
			json_object_set_new(o, "old_secret_hmac", json_string(hex));
			json_object_set_new(o, "old_until", json_integer(p->old_until));
		}
	}
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* Write (or with p NULL delete) one record, synced, before it applies. */
static int put_record(sg_authdb_t *db, int is_team, const char *id, const sg_principal_t *p)
{
	MDB_txn *txn;
	MDB_val k = {strlen(id), (void *)id}, v;
	char *text = p ? stored_text(p) : NULL;
	int rc;

	if (p && text == NULL)
		return SG_ENOMEM;
	if ((rc = mdb_txn_begin(db->env, NULL, 0, &txn)) == 0) {
		MDB_dbi dbi = is_team ? db->teams_db : db->keys_db;
		if (p) {
			v = (MDB_val){strlen(text), text};
			rc = mdb_put(txn, dbi, &k, &v, 0);
		} else {
			rc = mdb_del(txn, dbi, &k, NULL);
			if (rc == 0 || rc == MDB_NOTFOUND) {
				char w[SG_KEY_ID_LEN + 3];
				snprintf(w, sizeof(w), "%c:%s", is_team ? 't' : 'k', id);
				MDB_val wk = {strlen(w), w};
				rc = mdb_del(txn, db->windows_db, &wk, NULL);
				rc = rc == MDB_NOTFOUND ? 0 : rc;
			}
		}
		rc = rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
	}
	free(text);
	if (rc != 0) {
		sg_log_error("auth store: cannot write %s %s: %s", is_team ? "team" : "key", id,
		             mdb_strerror(rc));
		return SG_EIO;
	}
	return 0;
}

/* --- the tables ------------------------------------------------------------------------ */

sg_principal_t *sg__authdb_find(sg_authdb_t *db, int is_team, const char *id, size_t len)
{
	if (len != SG_KEY_ID_LEN)
		return NULL;
	sg_principal_t *p = sg__u64map_get(is_team ? &db->teams : &db->keys, id_hash(id, len));
	return p && memcmp(p->id, id, len) == 0 ? p : NULL;
}

/* Put p in its table in place of the principal with its id (if any); the
 * budget window and its runtime figures carry over. */
static int table_put(sg_authdb_t *db, sg_principal_t *p)
{
	sg_u64map_t *m = p->is_team ? &db->teams : &db->keys;
	uint64_t h = id_hash(p->id, SG_KEY_ID_LEN);
	sg_principal_t *old = sg__u64map_get(m, h);
	if (sg__u64map_put(m, h, p) != 0)
		return SG_ENOMEM;
	db->changes++;
	p->refs++;
	if (old) {
		/* one window for every version: calls in flight on the old one settle
		 * where the new one reads */
		window_unref(p->win);
		p->win = old->win;
		p->win->refs++;
		sg__principal_unref(old);
	}
	return 0;
}

uint64_t sg__authdb_changes(const sg_authdb_t *db)
{
	return db->changes;
}

void sg__authdb_hmac(sg_authdb_t *db, const char *msg, size_t n, uint8_t out[32])
{
	hmac_secret(db, msg, n, out);
}

int sg__authdb_verify(sg_authdb_t *db, sg_principal_t *key, const char *secret, size_t len,
                      int64_t now)
{
	/* The secret that verified last time, seen again: its 64-bit SipHash under
	 * a key random per process matches (a guess matches with odds of 2^-64,
	 * and the tag says nothing of the secret). A new record (rotation, any
	 * change) starts without a tag. */
	uint64_t tag = sg_siphash(&db->tag_key, secret, len) | 1;
	if (key->seen_tag && sg_ct_equal(&tag, &key->seen_tag, sizeof(tag)))
		return !key->seen_old || key->old_until >= now;
	uint8_t h[32];
	hmac_secret(db, secret, len, h);
	int ok = sg_ct_equal(h, key->hash, 32);
	/* whole seconds, rounded in the client's favour: a grace of N s is never short */
	int old = key->old_until >= now && sg_ct_equal(h, key->old_hash, 32);
	if (ok | old) {
		key->seen_tag = tag;
		key->seen_old = !ok;
	}
	return ok | old;
}

static void ctr_names(sg_principal_t *p)
{
	static const char *const what[] = {"rpm", "tpm", "conc"};
	snprintf(p->own_ns, sizeof(p->own_ns), "%s-%s", p->is_team ? "team" : "key", p->id);
	for (int i = 0; i < 3; i++) {
		snprintf(p->ctr[i], sizeof(p->ctr[i]), "%c:%s:%s", p->is_team ? 't' : 'k', p->id,
		         what[i]);
		p->ctr_hash[i] = sg_ctr_hash(p->ctr[i], i == 2 ? SG_CTR_CONC : SG_CTR_RATE);
	}
}

static sg_window_t *new_window(int is_team, const char *id)
{
	sg_window_t *w = calloc(1, sizeof(*w));
	if (w) {
		w->refs = 1;
		w->start = -1; /* none yet: the first look opens the current period */
		w->end = -1;
		snprintf(w->name, sizeof(w->name), "%c:%s", is_team ? 't' : 'k', id);
	}
	return w;
}

/* A new record's memory: its id, a window of its own, its counters' names. */
static sg_principal_t *principal_new(int is_team, const char *id)
{
	sg_principal_t *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->is_team = is_team;
	memcpy(p->id, id, SG_KEY_ID_LEN);
	if ((p->win = new_window(is_team, p->id)) == NULL) {
		free(p);
		return NULL;
	}
	ctr_names(p);
	return p;
}

int sg__authdb_id_ok(const char *id, size_t len)
{
	if (len != SG_KEY_ID_LEN)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9')))
			return 0;
	return 1;
}

static sg_principal_t *principal_from_stored(sg_authdb_t *db, int is_team, const char *id,
                                             size_t idlen, const char *text, size_t len)
{
	json_error_t je;
	json_t *doc = json_loadb(text, len, 0, &je);
	sg_principal_t *p = NULL;
	sg_buf_t errors;
	sg_buf_init(&errors, 4096);

	if (!sg__authdb_id_ok(id, idlen)) {
		sg_log_error("auth store: a %s whose id is not %d characters of a-z, 0-9; skipped",
		             is_team ? "team" : "key", SG_KEY_ID_LEN);
		json_decref(doc);
		sg_buf_free(&errors);
		return NULL;
	}
	if (!json_is_object(doc)) {
		sg_log_error("auth store: %s %.*s: the record is not a JSON object; skipped",
		             is_team ? "team" : "key", (int)SG_MIN(idlen, 32), id);
		goto fail;
	}
	if ((p = principal_new(is_team, id)) == NULL)
		goto fail;
	if (!is_team) {
		if (unhex32(json_string_value(json_object_get(doc, "secret_hmac")), p->hash) != 0) {
			sg_log_error("auth store: key %s has no valid secret digest; skipped", p->id);
			goto fail;
		}
		if (unhex32(json_string_value(json_object_get(doc, "old_secret_hmac")), p->old_hash) == 0)
			p->old_until = json_integer_value(json_object_get(doc, "old_until"));
		json_object_del(doc, "secret_hmac");
		json_object_del(doc, "old_secret_hmac");
		json_object_del(doc, "old_until");
	}
	/* a team a key names may have been deleted by hand: the key stays, teamless */
	if (parse_doc(NULL, is_team, doc, p, &errors) != 0) {
		sg_log_error("auth store: %s %s: invalid record (%.*s); skipped",
		             is_team ? "team" : "key", p->id, (int)errors.len, errors.data);
		goto fail;
	}
	p->doc = doc;
	sg_buf_free(&errors);
	return p;
fail:
	json_decref(doc);
	sg_buf_free(&errors);
	if (p) {
		p->doc = NULL;
		principal_free(p);
	}
	return NULL;
}

static int load_table(sg_authdb_t *db, MDB_txn *txn, int is_team)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, is_team ? db->teams_db : db->keys_db, &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		sg_principal_t *p = principal_from_stored(db, is_team, k.mv_data, k.mv_size,
		                                          v.mv_data, v.mv_size);
		if (p && table_put(db, p) != 0) {
			principal_free(p);
			mdb_cursor_close(cur);
			return ENOMEM;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int load_windows(sg_authdb_t *db, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, db->windows_db, &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		int64_t start;
		double spent;
		char text[128];
		if (k.mv_size != SG_KEY_ID_LEN + 2 || v.mv_size >= sizeof(text))
			continue;
		memcpy(text, v.mv_data, v.mv_size);
		text[v.mv_size] = '\0';
		if (sscanf(text, "%" SCNd64 " %lf", &start, &spent) != 2 || !isfinite(spent))
			continue;
		const char *name = k.mv_data;
		sg_principal_t *p = sg__authdb_find(db, name[0] == 't', name + 2, SG_KEY_ID_LEN);
		if (p) {
			p->win->start = start;
			p->win->spent = spent;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* --- spend batches ------------------------------------------------------------------- */

static void put_u64be(uint8_t *b, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

static uint64_t get_u64be(const uint8_t *b)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

/* A record decoded: its fixed fields (then five strings: request id, key,
 * team, model, deployment). Layout 1 stored this struct as it is, then each
 * string as a length byte and its bytes. */
typedef struct disk_rec {
	int64_t prompt, completion;
	double cost, saved;
	uint32_t latency_ms;
	uint16_t status;
	uint8_t cache, flags;
} disk_rec_t;

#define NSTR 5

/* Layout 2, 62 bytes where layout 1 took 98 for a cache hit (37% less disk
 * for the same records): a flags byte (F2_*), the status, latency and
 * token counts as varints (tokens zigzag: a damaged usage may be negative),
 * the cost and the savings as doubles only when not 0, then the five strings
 * as layout 1 has them, but a request id of lowercase hex digits in an even
 * number is stored as their bytes (semgate's own ids: half the size). */
enum {
	F2_CACHE = 3,     /* 0 none/miss, 1 exact hit, 2 semantic hit */
	F2_UNPRICED = 4,  /* SG_SPEND_UNPRICED */
	F2_ESTIMATED = 8, /* SG_SPEND_ESTIMATED */
	F2_COST = 16,     /* a cost follows */
	F2_SAVED = 32,    /* savings follow */
	F2_HEX_ID = 64,   /* the request id is packed hex: its length byte counts bytes */
};
#define V2_FIXED_MAX (1 + 3 + 5 + 10 + 10 + 8 + 8) /* the flags to the savings, at most */

static uint8_t *put_varint(uint8_t *w, uint64_t v)
{
	for (; v >= 0x80; v >>= 7)
		*w++ = (uint8_t)(v | 0x80);
	*w++ = (uint8_t)v;
	return w;
}

/* A varint at *p before end (advanced past it); -1 when cut or too long. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

static uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t u)
{
	return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

/* Which bytes of x are in [lo, hi] (lo >= 1, hi <= 0x7f; bytes below 0x80):
 * their top bit set. */
static inline uint64_t bytes_in(uint64_t x, unsigned lo, unsigned hi)
{
	const uint64_t ones = 0x0101010101010101ull;
	return (x + ones * (0x80 - lo)) & ~(x + ones * (0x7f - hi)) & ones * 0x80;
}

/* 8 ASCII hex digits (lowercase; the first in the lowest byte) as 4 bytes,
 * two digits each; -1 when one is not a digit of 0-9a-f. */
static inline int64_t hex8(uint64_t x)
{
	const uint64_t ones = 0x0101010101010101ull;
	if ((x & ones * 0x80) ||
	    (bytes_in(x, '0', '9') | bytes_in(x, 'a', 'f')) != ones * 0x80)
		return -1;
	uint64_t v = (x & ones * 0x0f) + 9 * ((x >> 6) & ones); /* each byte its value */
	v = ((v << 4) | (v >> 8)) & 0x00ff00ff00ff00ffull;  /* the pairs, in every other byte */
	v = (v | v >> 8) & 0x0000ffff0000ffffull;
	return (int64_t)((v | v >> 16) & 0xffffffffull);
}

/* memcpy for a record's longer strings, kept out of line and out of GCC's
 * interprocedural analysis (noipa) on purpose: wherever it knows the length
 * is at most 255, GCC expands memcpy into rep movsq, which takes some 35
 * cycles to start. libc's memcpy moves them in a few. */
__attribute__((noipa)) static void copy_long(uint8_t *dst, const char *src, size_t n)
{
	memcpy(dst, src, n);
}

/* n bytes of src (at most 255) to dst. Up to 16 (ids, most model names) as
 * two fixed-size copies that overlap, read from within src's n bytes: a few
 * moves, no call. */
static inline void copy_short(uint8_t *dst, const char *src, size_t n)
{
	if (n >= 8 && n <= 16) {
		uint64_t a, b;
		memcpy(&a, src, 8);
		memcpy(&b, src + n - 8, 8);
		memcpy(dst, &a, 8);
		memcpy(dst + n - 8, &b, 8);
	} else if (n >= 4 && n < 8) {
		uint32_t a, b;
		memcpy(&a, src, 4);
		memcpy(&b, src + n - 4, 4);
		memcpy(dst, &a, 4);
		memcpy(dst + n - 4, &b, 4);
	} else if (n < 4) {
		for (size_t i = 0; i < n; i++) /* (at most 3: not made a memcpy call) */
			dst[i] = (uint8_t)src[i];
	} else {
		copy_long(dst, src, n);
	}
}

/* The request id packed, two hex digits a byte, when it is lowercase hex of
 * an even length: its bytes, else 0. Eight digits at a time (semgate's own
 * ids are 20); a shorter tail is padded with zero digits to a word, the
 * bytes it made past the id written over next or never counted. */
static size_t pack_hex(uint8_t *out, const char *id, size_t len)
{
	if (len == 0 || len % 2 || len > 254)
		return 0;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t x = 0x3030303030303030ull; /* "00000000" */
		size_t left = len - i;
		if (left >= 8) {
			memcpy(&x, id + i, 8);
		} else if (len >= 8) { /* the id's last 8 bytes, shifted down to the tail's */
			memcpy(&x, id + len - 8, 8);
			x = x >> 8 * (8 - left) | 0x3030303030303030ull << 8 * left;
		} else { /* (by shifts: GCC makes a copy loop a memcpy call) */
			for (size_t j = 0; j < left; j++)
				x = (x & ~(0xffull << 8 * j)) | (uint64_t)(uint8_t)id[i + j] << 8 * j;
		}
		int64_t b = hex8(x);
		if (b < 0)
			return 0;
		uint32_t b32 = (uint32_t)b;
		memcpy(out + i / 2, &b32, 4);
	}
	return len / 2;
}

/* A string of a record at w: a length byte (at most 255 of it is kept) and
 * its bytes; the end. */
static inline uint8_t *put_str(uint8_t *w, sg_iovec_t s)
{
	size_t l = SG_MIN(s.len, 255);
	*w++ = (uint8_t)l;
	if (l) /* (an empty one's base may be NULL) */
		copy_short(w, s.base, l);
	return w + l;
}

/* The most bytes of a record in layout 2, strings included (the packed id,
 * written by words of 4, may take 4 more than its own). */
#define V2_MAX (V2_FIXED_MAX + NSTR * 256 + 4)

/* A record in layout 2 into out (V2_MAX bytes of room); its size. */
static size_t encode_rec(const sg_spend_rec_t *r, uint8_t *out)
{
	uint8_t *w = out + 1;
	uint8_t f = (uint8_t)((r->cache & F2_CACHE) | (r->flags & SG_SPEND_UNPRICED ? F2_UNPRICED : 0) |
	                      (r->flags & SG_SPEND_ESTIMATED ? F2_ESTIMATED : 0));
	w = put_varint(w, r->status);
	w = put_varint(w, r->latency_ms);
	w = put_varint(w, zigzag(r->prompt));
	w = put_varint(w, zigzag(r->completion));
	if (r->cost != 0) {
		f |= F2_COST;
		memcpy(w, &r->cost, 8);
		w += 8;
	}
	if (r->saved != 0) {
		f |= F2_SAVED;
		memcpy(w, &r->saved, 8);
		w += 8;
	}
	size_t packed = pack_hex(w + 1, r->request_id.base, r->request_id.len);
	if (packed) {
		f |= F2_HEX_ID;
		*w = (uint8_t)packed;
		w += 1 + packed;
	} else {
		w = put_str(w, r->request_id);
	}
	out[0] = f;
	w = put_str(w, r->key);
	w = put_str(w, r->team);
	w = put_str(w, r->model);
	w = put_str(w, r->deployment);
	return (size_t)(w - out);
}

/* The five strings at b[at..n) into strs and lens (from the first'th); -1
 * when one runs past the end. */
static int decode_strs(const uint8_t *b, size_t n, size_t at, int first, const char *strs[NSTR],
                       size_t lens[NSTR])
{
	for (int i = first; i < NSTR; i++) {
		if (at >= n || at + 1 + b[at] > n)
			return -1;
		lens[i] = b[at];
		strs[i] = (const char *)b + at + 1;
		at += 1 + b[at];
	}
	return 0;
}

/* Decode a stored record of either layout (size: as next_rec gives it, with
 * the layout bit); strs get the strings (not NUL-terminated: lens), a packed
 * request id written out as text in id (room for 255 bytes). */
static int decode_rec(const uint8_t *b, uint16_t size, disk_rec_t *d, const char *strs[NSTR],
                      size_t lens[NSTR], char id[256])
{
	size_t n = size & REC_SIZE;
	if (!(size & REC_V2)) {
		if (n < sizeof(*d))
			return -1;
		memcpy(d, b, sizeof(*d));
		if (decode_strs(b, n, sizeof(*d), 0, strs, lens) != 0)
			return -1;
		return isfinite(d->cost) && isfinite(d->saved) ? 0 : -1;
	}
	const uint8_t *p = b + 1, *end = b + n;
	uint64_t status, latency, prompt, completion;
	if (n < 1 || get_varint(&p, end, &status) != 0 || get_varint(&p, end, &latency) != 0 ||
	    get_varint(&p, end, &prompt) != 0 || get_varint(&p, end, &completion) != 0 ||
	    status > UINT16_MAX || latency > UINT32_MAX)
		return -1;
	uint8_t f = b[0];
	*d = (disk_rec_t){.prompt = unzigzag(prompt),
	                  .completion = unzigzag(completion),
	                  .latency_ms = (uint32_t)latency,
	                  .status = (uint16_t)status,
	                  .cache = (uint8_t)(f & F2_CACHE),
	                  .flags = (uint8_t)((f & F2_UNPRICED ? SG_SPEND_UNPRICED : 0) |
	                                     (f & F2_ESTIMATED ? SG_SPEND_ESTIMATED : 0))};
	double *money[2] = {f & F2_COST ? &d->cost : NULL, f & F2_SAVED ? &d->saved : NULL};
	for (int i = 0; i < 2; i++) {
		if (money[i] == NULL)
			continue;
		if (end - p < 8)
			return -1;
		memcpy(money[i], p, 8);
		p += 8;
	}
	size_t at = (size_t)(p - b);
	if (f & F2_HEX_ID) {
		if (at >= n || at + 1 + b[at] > n || b[at] > 127)
			return -1;
		hex_of(b + at + 1, b[at], id);
		strs[0] = id;
		lens[0] = 2 * (size_t)b[at];
		at += 1 + b[at];
	}
	if (decode_strs(b, n, at, f & F2_HEX_ID ? 1 : 0, strs, lens) != 0)
		return -1;
	return isfinite(d->cost) && isfinite(d->saved) ? 0 : -1;
}

int sg__authdb_rec_codec(const sg_spend_rec_t *in, sg_spend_rec_t *out, char *text)
{
	uint8_t b[V2_MAX];
	size_t n = encode_rec(in, b);
	disk_rec_t d;
	const char *strs[NSTR];
	size_t lens[NSTR];
	char id[256];
	if (decode_rec(b, (uint16_t)(n | REC_V2), &d, strs, lens, id) != 0)
		return -1;
	*out = (sg_spend_rec_t){.t_us = in->t_us, .prompt = d.prompt, .completion = d.completion,
	                        .cost = d.cost, .saved = d.saved, .latency_ms = d.latency_ms,
	                        .status = d.status, .cache = d.cache, .flags = d.flags};
	sg_iovec_t *s[NSTR] = {&out->request_id, &out->key, &out->team, &out->model, &out->deployment};
	for (int i = 0; i < NSTR; i++, text += 256) {
		memcpy(text, strs[i], lens[i]);
		*s[i] = (sg_iovec_t){text, lens[i]};
	}
	return (int)n;
}

/* Records in a stored chunk's value (after its header). */
static size_t chunk_count(const MDB_val *v)
{
	size_t at = 0, n = 0;
	int64_t t;
	const uint8_t *rec;
	uint16_t len;
	if (v->mv_size < CHDR)
		return 0;
	while (next_rec((const char *)v->mv_data + CHDR, v->mv_size - CHDR, &at, &t, &rec, &len))
		n++;
	return n;
}

/* Rewrite the chunk under k without its records older than cut_us; the
 * records dropped are counted in *deleted. */
static int chunk_trim(MDB_txn *txn, MDB_dbi dbi, const MDB_val *k, const MDB_val *v,
                      int64_t cut_us, size_t *deleted)
{
	const char *src = (const char *)v->mv_data + CHDR;
	size_t len = v->mv_size - CHDR, at = 0, prev = 0, out = CHDR;
	int64_t t, lo = INT64_MAX;
	const uint8_t *rec;
	uint16_t n;
	char *buf = malloc(v->mv_size);
	if (buf == NULL)
		return ENOMEM;
	for (; next_rec(src, len, &at, &t, &rec, &n); prev = at) {
		if (t < cut_us) {
			(*deleted)++;
			continue;
		}
		memcpy(buf + out, src + prev, at - prev);
		out += at - prev;
		lo = SG_MIN(lo, t);
	}
	memcpy(buf, &lo, 8);
	MDB_val nv = {out, buf};
	MDB_val nk = *k; /* the key lives in the map page the put may change */
	uint8_t kb[16];
	memcpy(kb, k->mv_data, 16);
	nk.mv_data = kb;
	int rc = mdb_put(txn, dbi, &nk, &nv, 0);
	free(buf);
	return rc;
}

/* Delete records older than the batch says, in transactions of their own
 * before the batch's: the pages they free are what a full map needs. Chunks
 * whose latest record is older go whole (at most 1,000 a run: a longer
 * backlog goes on with the next batch); then, in a second transaction (a
 * rewrite needs new pages, which a full map may only have once the deletes
 * are committed), the first chunk left, when it straddles the cutoff, is
 * rewritten without its older records. (Chunks follow one another in time
 * unless the clock stepped back: a straddling chunk further on keeps its old
 * records until it is all old.) */
static void retention(sg_authdb_t *db, batch_t *b)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	int64_t cut = b->retention_before_us;
	size_t deleted = 0;
	int chunks = 0;
	int rc = mdb_txn_begin(db->env, NULL, 0, &txn);
	if (rc != 0)
		return;
	if ((rc = mdb_cursor_open(txn, db->spend_db, &cur)) == 0) {
		for (; (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0 && k.mv_size == 16 &&
		       get_u64be(k.mv_data) < (uint64_t)cut && chunks < 1000;
		     chunks++) {
			size_t n = chunk_count(&v);
			if ((rc = mdb_cursor_del(cur, 0)) != 0)
				break;
			deleted += n;
		}
		mdb_cursor_close(cur);
	}
	if (rc != 0 && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return;
	}
	if (mdb_txn_commit(txn) != 0)
		return;
	b->deleted += deleted;
	if (chunks == 1000) {
		b->retention_more = 1;
		return; /* the straddling chunk when the backlog is gone */
	}
	/* the chunk across the cutoff */
	if (mdb_txn_begin(db->env, NULL, 0, &txn) != 0)
		return;
	int64_t lo;
	rc = mdb_cursor_open(txn, db->spend_db, &cur);
	if (rc == 0) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		mdb_cursor_close(cur);
	}
	deleted = 0;
	if (rc != 0 || k.mv_size != 16 || get_u64be(k.mv_data) < (uint64_t)cut ||
	    v.mv_size < CHDR || (memcpy(&lo, v.mv_data, 8), lo >= cut) ||
	    chunk_trim(txn, db->spend_db, &k, &v, cut, &deleted) != 0) {
		mdb_txn_abort(txn);
		return;
	}
	if (mdb_txn_commit(txn) == 0) /* (a failed commit has freed the transaction) */
		b->deleted += deleted;
}

static void flush_work(uv_work_t *w)
{
	sg_authdb_t *db = w->data;
	batch_t *b = db->flushing;
	MDB_txn *txn = NULL;
	uint8_t kb[16];
	if (b->retention_before_us > 0)
		retention(db, b);
	MDB_cursor *cur = NULL;
	int rc = mdb_txn_begin(db->env, NULL, 0, &txn);
	/* one cursor for the batch: it stays at the end, so an append does not
	 * search the tree from its root as mdb_put's fresh cursor would */
	if (rc == 0 && (rc = mdb_cursor_open(txn, db->spend_db, &cur)) != 0)
		cur = NULL;

	for (size_t at = 0; rc == 0 && at < b->len;) {
		/* one chunk: records up to CHUNK_MAX bytes (at least one) */
		size_t end = at;
		int64_t t, lo = INT64_MAX, hi = INT64_MIN;
		const uint8_t *rec;
		uint16_t n;
		for (size_t q = end; next_rec(b->buf, b->len, &q, &t, &rec, &n); end = q) {
			if (q - at > CHUNK_MAX && end > at)
				break;
			lo = SG_MIN(lo, t);
			hi = SG_MAX(hi, t);
		}
		if (end == at)
			break; /* (the queue is ours: never damaged) */
		b->span_us = SG_MAX(b->span_us, hi - lo);
		put_u64be(kb, (uint64_t)hi);
		/* the same latest µs twice (another process before a restart): the
		 * next sequence number, never an overwrite */
		put_u64be(kb + 8, db->seq++);
		MDB_val k = {16, kb}, v = {CHDR + end - at, NULL};
		/* chunks come in time order: appended, no search and full pages */
		rc = mdb_cursor_put(cur, &k, &v, MDB_APPEND | MDB_RESERVE);
		while (rc == MDB_KEYEXIST) { /* the clock went back, or a restart's same µs */
			put_u64be(kb + 8, db->seq++);
			v = (MDB_val){CHDR + end - at, NULL};
			rc = mdb_cursor_put(cur, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
		}
		if (rc == 0) {
			memcpy(v.mv_data, &lo, 8);
			memcpy((char *)v.mv_data + CHDR, b->buf + at, end - at);
		}
		at = end;
	}
	if (cur)
		mdb_cursor_close(cur);
	/* the longest chunk so far bounds every report's scan (report_scan) */
	int64_t span = db->max_span_us; /* (this thread alone changes it) */
	if (rc == 0 && b->span_us > span) {
		char text[32];
		int n = snprintf(text, sizeof(text), "%" PRId64, b->span_us);
		MDB_val k = {7, "span_us"}, v = {(size_t)n, text};
		rc = mdb_put(txn, db->meta_db, &k, &v, 0);
		span = b->span_us;
	}
	for (size_t i = 0; rc == 0 && i < b->nwins; i++) {
		char text[96];
		int n = snprintf(text, sizeof(text), "%" PRId64 " %.17g", b->wins[i].start,
		                 b->wins[i].spent);
		MDB_val k = {strlen(b->wins[i].name), b->wins[i].name}, v = {(size_t)n, text};
		rc = mdb_put(txn, db->windows_db, &k, &v, 0);
	}
	if (rc == 0) {
		uv_mutex_lock(&db->commit_lock);
		rc = mdb_txn_commit(txn);
		b->committed = rc == 0;
		if (rc == 0)
			db->max_span_us = span;
		uv_mutex_unlock(&db->commit_lock);
	} else if (txn) {
		mdb_txn_abort(txn);
	}
	b->rc = rc;
}

static void batch_free(batch_t *b)
{
	for (size_t i = 0; i < b->nwins; i++)
		window_unref(b->wins[i].w);
	free(b->buf);
	free(b->wins);
	free(b);
}

static void flush_done(uv_work_t *w, int status)
{
	sg_authdb_t *db = w->data;
	batch_t *b = db->flushing;
	(void)status;
	db->flushing = NULL;
	if (b->retention_more) /* a backlog: the next batch deletes on */
		db->last_retention_s = now_s() - RETENTION_EVERY_S;
	if (b->rc != 0) {
		db->write_errors++;
		for (size_t i = 0; i < b->nwins; i++) /* written with the next batch */
			sg__authdb_window_dirty(db, b->wins[i].w);
		sg_log_limited(&db->err_log, SG_LOG_ERROR,
		               "auth store: writing %zu spend records failed: %s (kept; retried)",
		               b->nrecs, mdb_strerror(b->rc));
		/* the records go back in front of the queue for the next batch */
		if (db->nqueue + b->nrecs <= MAX_QUEUE) {
			char *q = realloc(b->buf, b->len + db->qlen + 1);
			if (q) {
				if (db->qlen)
					memcpy(q + b->len, db->queue, db->qlen);
				free(db->queue);
				db->queue = q;
				db->qlen += b->len;
				db->qcap = db->qlen + 1;
				db->nqueue += b->nrecs;
				b->buf = NULL;
				b->nrecs = 0;
			}
		}
		db->dropped += b->nrecs;
	} else {
		db->written += b->nrecs;
		db->retention_deleted += b->deleted;
		if (db->spare == NULL && b->cap <= SPARE_MAX) { /* the next queue's buffer */
			db->spare = b->buf;
			db->spare_cap = b->cap;
			b->buf = NULL;
		}
	}
	batch_free(b);
}

/* Take what is queued (and the changed windows) as one batch. */
static batch_t *take_batch(sg_authdb_t *db, int64_t now)
{
	int retention = db->cfg->retention_days > 0 &&
	                now - db->last_retention_s >= RETENTION_EVERY_S;
	if (db->nqueue == 0 && db->ndirty == 0 && !retention)
		return NULL;
	batch_t *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	if (db->ndirty && (b->wins = calloc(db->ndirty, sizeof(*b->wins))) == NULL) {
		free(b);
		return NULL;
	}
	for (size_t i = 0; i < db->ndirty; i++) {
		sg_window_t *w = db->dirty[i];
		memcpy(b->wins[i].name, w->name, sizeof(w->name));
		b->wins[i].start = w->start;
		b->wins[i].spent = w->spent;
		b->wins[i].w = w; /* the dirty list's reference moves to the batch */
		w->dirty = 0;
	}
	b->nwins = db->ndirty;
	db->ndirty = 0;
	b->buf = db->queue;
	b->len = db->qlen;
	b->cap = db->qcap;
	b->nrecs = db->nqueue;
	db->queue = db->spare; /* (NULL when the last batch's is still being written) */
	db->qcap = db->spare_cap;
	db->spare = NULL;
	db->spare_cap = db->qlen = db->nqueue = 0;
	if (retention) {
		db->last_retention_s = now;
		b->retention_before_us = (now - db->cfg->retention_days * 86400LL) * 1000000LL;
	}
	return b;
}

static void writer_main(void *arg)
{
	sg_authdb_t *db = arg;
	flush_work(&db->work);
	uv_async_send(&db->batch_in);
}

/* The writer's batch is written (or a wake-up that found none: async sends
 * coalesce, and this is the loop's only reader of writing). */
static void on_written(uv_async_t *a)
{
	sg_authdb_t *db = a->data;
	if (!db->writing)
		return;
	uv_thread_join(&db->writer);
	db->writing = 0;
	uv_unref((uv_handle_t *)&db->batch_in);
	flush_done(&db->work, 0);
	if (db->closed)
		uv_close((uv_handle_t *)&db->batch_in, NULL);
}

static void flush_tick(uv_timer_t *t)
{
	sg_authdb_t *db = t->data;
	if (db->flushing || db->closed)
		return;
	if ((db->flushing = take_batch(db, now_s())) == NULL)
		return;
	db->work.data = db;
	if (db->has_batch_in) {
		/* the loop lives on until the batch is in (sg__authdb_close) */
		uv_ref((uv_handle_t *)&db->batch_in);
		db->writing = 1;
		if (uv_thread_create(&db->writer, writer_main, db) == 0)
			return;
		db->writing = 0;
		uv_unref((uv_handle_t *)&db->batch_in);
	}
	if (uv_queue_work(db->loop, &db->work, flush_work, flush_done) != 0) {
		flush_work(&db->work); /* no thread pool: write here */
		flush_done(&db->work, 0);
	}
}

void sg__authdb_record(sg_authdb_t *db, const sg_spend_rec_t *r)
{
	/* encoded in place, at the queue's end: room for the largest record first */
	const size_t most = QHDR + V2_MAX;
	if (db->nqueue >= MAX_QUEUE) {
		db->dropped++;
		sg_log_limited(&db->err_log, SG_LOG_ERROR,
		               "auth store: %d spend records wait for the disk: dropping", MAX_QUEUE);
		return;
	}
	if (db->qlen + most > db->qcap) {
		size_t cap = SG_MAX(db->qcap * 2, (size_t)65536);
		char *q = realloc(db->queue, cap);
		if (q == NULL) {
			db->dropped++;
			return;
		}
		db->queue = q;
		db->qcap = cap;
	}
	size_t n = encode_rec(r, (uint8_t *)db->queue + db->qlen + QHDR);
	_Static_assert(V2_MAX <= REC_SIZE, "a record's size fits beside its layout bit");
	uint16_t n16 = (uint16_t)(n | REC_V2);
	memcpy(db->queue + db->qlen, &r->t_us, 8);
	memcpy(db->queue + db->qlen + 8, &n16, 2);
	db->qlen += QHDR + n;
	db->nqueue++;
	/* The next record's lines, fetched for writing while the next request
	 * runs: the queue moves on through memory last written a batch or two
	 * ago, and its stores would otherwise wait on the cache misses at the
	 * next serializing instruction (a reference count's locked decrement). */
	if (db->qlen + 128 <= db->qcap) {
		__builtin_prefetch(db->queue + db->qlen, 1);
		__builtin_prefetch(db->queue + db->qlen + 64, 1);
	}
}

/* --- open / close ----------------------------------------------------------------------- */

/* The layout of the spend records (chunks, above), marked in the "meta"
 * table when the store is made: a store whose mark is another, or that holds
 * spend records without one, was written by another version and is refused
 * rather than misread. A store of layout 1 is marked 2 when opened: its
 * records stay as they are (each record says its layout, REC_V2), new ones
 * are of layout 2, and a version that reads only layout 1 refuses it from
 * then on rather than misreading the new ones. */
#define LAYOUT "2"
#define LAYOUT_OLD "1"
#define LAYOUT_UNKNOWN (-30000) /* not one of LMDB's error codes */

static int is_mark(const MDB_val *v, const char *mark)
{
	return v->mv_size == strlen(mark) && memcmp(v->mv_data, mark, v->mv_size) == 0;
}

static int check_layout(sg_authdb_t *db, MDB_txn *txn)
{
	MDB_val k = {6, "layout"}, v, sk = {7, "span_us"}, sv;
	MDB_stat st;
	int rc = mdb_stat(txn, db->spend_db, &st), marked;
	if (rc != 0 || ((marked = mdb_get(txn, db->meta_db, &k, &v)) != 0 && marked != MDB_NOTFOUND))
		return rc ? rc : marked;
	if (marked == 0 && !is_mark(&v, LAYOUT) && !is_mark(&v, LAYOUT_OLD))
		return LAYOUT_UNKNOWN;
	if (marked != 0 && st.ms_entries != 0)
		return LAYOUT_UNKNOWN;
	if (marked != 0 || !is_mark(&v, LAYOUT)) {
		v = (MDB_val){strlen(LAYOUT), LAYOUT};
		if ((rc = mdb_put(txn, db->meta_db, &k, &v, 0)) != 0)
			return rc;
	}
	/* the longest chunk: unknown (a damaged or missing mark over records)
	 * means every report reads to the end */
	db->max_span_us = 0;
	if (mdb_get(txn, db->meta_db, &sk, &sv) == 0) {
		char text[32];
		char *end;
		size_t n = SG_MIN(sv.mv_size, sizeof(text) - 1);
		memcpy(text, sv.mv_data, n);
		text[n] = '\0';
		long long x = strtoll(text, &end, 10);
		db->max_span_us = end != text && *end == '\0' && x >= 0 ? (int64_t)x : INT64_MAX;
	} else if (st.ms_entries != 0) {
		db->max_span_us = INT64_MAX;
	}
	return 0;
}

int sg__authdb_open(sg_authdb_t **out, uv_loop_t *loop, const sg_auth_config_t *cfg, char *err,
                    size_t errlen)
{
	sg_authdb_t *db = calloc(1, sizeof(*db));
	MDB_txn *txn = NULL;
	int rc;

	*out = NULL;
	if (db == NULL)
		return SG_ENOMEM;
	db->loop = loop;
	db->cfg = cfg;
	if (getrandom(&db->seq, sizeof(db->seq), 0) != sizeof(db->seq))
		db->seq = sg_now_us();
	if (getrandom(&db->tag_key, sizeof(db->tag_key), 0) != sizeof(db->tag_key)) {
		snprintf(err, errlen, "auth: no random bytes from the kernel");
		free(db);
		return SG_EIO;
	}
	db->seq >>= 1; /* far from wrapping */
	sg__u64map_init(&db->keys);
	sg__u64map_init(&db->teams);
	if (uv_mutex_init(&db->commit_lock) != 0) {
		free(db);
		return SG_ENOMEM;
	}
	if (hmac_init(db, cfg->secret ? cfg->secret : "") != 0) {
		snprintf(err, errlen, "auth: cannot set up HMAC-SHA256 (OpenSSL)");
		goto fail;
	}
	if (mkdir(cfg->path, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "auth.path %s: cannot create: %s", cfg->path, strerror(errno));
		goto fail;
	}
	if ((rc = mdb_env_create(&db->env)) != 0 ||
	    (rc = mdb_env_set_mapsize(db->env, (size_t)cfg->map_size_mb << 20)) != 0 ||
	    (rc = mdb_env_set_maxdbs(db->env, 5)) != 0 ||
	    (rc = mdb_env_open(db->env, cfg->path, MDB_NOTLS, 0600)) != 0 ||
	    (rc = mdb_txn_begin(db->env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "keys", MDB_CREATE, &db->keys_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "teams", MDB_CREATE, &db->teams_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "windows", MDB_CREATE, &db->windows_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "spend", MDB_CREATE, &db->spend_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &db->meta_db)) != 0 ||
	    (rc = check_layout(db, txn)) != 0 ||
	    (rc = load_table(db, txn, 1)) != 0 || (rc = load_table(db, txn, 0)) != 0 ||
	    (rc = load_windows(db, txn)) != 0) {
		if (rc == LAYOUT_UNKNOWN)
			snprintf(err, errlen,
			         "auth.path %s: its spend records are not in the layout this semgate "
			         "reads (layouts " LAYOUT_OLD " and " LAYOUT "): a store written by another version; move "
			         "the directory aside",
			         cfg->path);
		else
			snprintf(err, errlen, "auth.path %s: cannot open the key and spend store: %s",
			         cfg->path, rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
		if (txn)
			mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		snprintf(err, errlen, "auth.path %s: %s", cfg->path, mdb_strerror(rc));
		goto fail;
	}
	uv_timer_init(loop, &db->timer);
	db->timer.data = db;
	uv_timer_start(&db->timer, flush_tick, (uint64_t)cfg->flush_ms, (uint64_t)cfg->flush_ms);
	uv_unref((uv_handle_t *)&db->timer);
	if (uv_async_init(loop, &db->batch_in, on_written) == 0) {
		db->batch_in.data = db;
		db->has_batch_in = 1;
		uv_unref((uv_handle_t *)&db->batch_in); /* referenced while a batch is written */
	}
	db->last_retention_s = now_s() - RETENTION_EVERY_S; /* the first batch deletes too */
	sg_log_info("auth store %s: %zu keys, %zu teams", cfg->path, db->keys.n, db->teams.n);
	*out = db;
	return 0;
fail:
	EVP_MD_CTX_free(db->hm_in);
	EVP_MD_CTX_free(db->hm_out);
	EVP_MD_CTX_free(db->hm_tmp);
	if (db->env)
		mdb_env_close(db->env);
	sg__u64map_free(&db->keys);
	sg__u64map_free(&db->teams);
	uv_mutex_destroy(&db->commit_lock);
	free(db);
	return SG_ESTORE;
}

void sg__authdb_close(sg_authdb_t *db)
{
	if (db == NULL || db->closed)
		return;
	db->closed = 1;
	uv_timer_stop(&db->timer);
	uv_close((uv_handle_t *)&db->timer, NULL);
	/* a batch being written keeps the handle (and the loop) until it is in */
	if (db->has_batch_in && !db->writing)
		uv_close((uv_handle_t *)&db->batch_in, NULL);
}

static void drop_table(sg_u64map_t *m)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->vals[i])
			sg__principal_unref(m->vals[i]);
	sg__u64map_free(m);
}

void sg__authdb_free(sg_authdb_t *db)
{
	if (db == NULL)
		return;
	/* the loop has finished: a batch in flight has completed; write the rest here */
	batch_t *b = take_batch(db, now_s());
	if (b) {
		db->flushing = b;
		db->work.data = db;
		flush_work(&db->work);
		flush_done(&db->work, 0);
	}
	free(db->queue);
	free(db->spare);
	for (size_t i = 0; i < db->ndirty; i++)
		window_unref(db->dirty[i]);
	free(db->dirty);
	drop_table(&db->keys);
	drop_table(&db->teams);
	mdb_env_close(db->env);
	EVP_MD_CTX_free(db->hm_in);
	EVP_MD_CTX_free(db->hm_out);
	EVP_MD_CTX_free(db->hm_tmp);
	uv_mutex_destroy(&db->commit_lock);
	free(db);
}

/* --- the admin API --------------------------------------------------------------------- */

json_t *sg__authdb_view(sg_authdb_t *db, sg_principal_t *p)
{
	json_t *o = json_deep_copy(p->doc);
	if (o == NULL)
		return NULL;
	sg__authdb_window(db, p, now_s());
	const sg_window_t *w = p->win;
	json_t *b = json_object();
	json_object_set_new(b, "spent_usd", json_real(w->spent));
	json_object_set_new(b, "reserved_usd", json_real(w->reserved));
	if (p->max_usd >= 0) {
		json_object_set_new(b, "max_usd", json_real(p->max_usd));
		json_object_set_new(b, "remaining_usd", json_real(SG_MAX(0.0, p->max_usd - w->spent)));
	}
	if (p->soft_usd >= 0)
		json_object_set_new(b, "soft_usd", json_real(p->soft_usd));
	if (p->period != SG_PERIOD_NONE) {
		json_object_set_new(b, "period_start", json_integer(w->start));
		json_object_set_new(b, "period_end", json_integer(sg__authdb_period_end(p, w->start)));
	}
	json_object_set_new(o, "spend", b);
	if (!p->is_team && p->old_until >= now_s())
		json_object_set_new(o, "previous_secret_valid_until", json_integer(p->old_until));
	return o;
}

/* Apply body (NULL: nothing) to a copy of base (null removes a field) and
 * check the result. */
static sg_principal_t *build(sg_authdb_t *db, int is_team, const char *id, json_t *base,
                             json_t *body, sg_buf_t *errors, int *bad)
{
	sg_principal_t *p = principal_new(is_team, id);
	json_t *doc = base ? json_deep_copy(base) : json_object();
	const char *k;
	json_t *v;

	*bad = 0;
	if (p == NULL || doc == NULL) {
		if (p)
			principal_free(p);
		json_decref(doc);
		return NULL;
	}
	json_object_foreach(body, k, v) {
		if (json_is_null(v))
			json_object_del(doc, k);
		else
			json_object_set(doc, k, v);
	}
	int64_t t = now_s();
	json_object_set_new(doc, "id", json_string(id));
	if (!json_object_get(doc, "created_at"))
		json_object_set_new(doc, "created_at", json_integer(t));
	json_object_set_new(doc, "updated_at", json_integer(t));
	if (!json_object_get(doc, "disabled"))
		json_object_set_new(doc, "disabled", json_false());
	p->doc = doc;
	*bad = parse_doc(db, is_team, doc, p, errors);
	char *text = json_dumps(doc, JSON_COMPACT);
	if (text == NULL || strlen(text) > MAX_DOC_BYTES) {
		if (errors)
			sg_buf_printf(errors, "the record is larger than %d bytes\n", MAX_DOC_BYTES);
		(*bad)++;
	}
	free(text);
	return p;
}

static const char KEY_ALPHA[] = "abcdefghijklmnopqrstuvwxyz0123456789";
static const char SECRET_ALPHA[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

static char *new_secret(sg_authdb_t *db, const char *id, uint8_t hash[32])
{
	char secret[SG_KEY_SECRET_LEN + 1];
	random_chars(secret, SG_KEY_SECRET_LEN, SECRET_ALPHA, sizeof(SECRET_ALPHA) - 1);
	hmac_secret(db, secret, SG_KEY_SECRET_LEN, hash);
	size_t n = 3 + SG_KEY_ID_LEN + 1 + SG_KEY_SECRET_LEN + 1;
	char *key = malloc(n);
	if (key)
		snprintf(key, n, "sg-%s-%s", id, secret);
	explicit_bzero(secret, sizeof(secret));
	return key;
}

int sg__authdb_create(sg_authdb_t *db, int is_team, json_t *body, json_t **view, char **key_out,
                      sg_buf_t *errors)
{
	char id[SG_KEY_ID_LEN + 1];
	int bad;

	*view = NULL;
	if (key_out)
		*key_out = NULL;
	if (check_input(is_team, body, errors) != 0)
		return SG_EINVAL;
	do
		random_chars(id, SG_KEY_ID_LEN, KEY_ALPHA, sizeof(KEY_ALPHA) - 1);
	while (sg__authdb_find(db, is_team, id, SG_KEY_ID_LEN));
	sg_principal_t *p = build(db, is_team, id, NULL, body, errors, &bad);
	if (p == NULL)
		return SG_ENOMEM;
	if (bad) {
		principal_free(p);
		return SG_EINVAL;
	}
	char *key = NULL;
	if (!is_team && (key = new_secret(db, id, p->hash)) == NULL) {
		principal_free(p);
		return SG_ENOMEM;
	}
	int rc = put_record(db, is_team, id, p);
	if (rc == 0 && (rc = table_put(db, p)) != 0)
		put_record(db, is_team, id, NULL);
	if (rc != 0) {
		principal_free(p);
		free(key);
		return rc;
	}
	sg__authdb_window(db, p, now_s());
	*view = sg__authdb_view(db, p);
	if (key_out)
		*key_out = key;
	else
		free(key);
	sg_log_info("auth: %s %s created", is_team ? "team" : "key", id);
	return 0;
}

/* Put p (unlisted, its secret set) in old's place, on disk then in memory;
 * p is freed if that fails. */
static int replace(sg_authdb_t *db, sg_principal_t *old, sg_principal_t *p, json_t **view)
{
	int rc = put_record(db, p->is_team, p->id, p);
	if (rc == 0 && (rc = table_put(db, p)) != 0)
		put_record(db, old->is_team, old->id, old); /* the memory table keeps old */
	if (rc != 0) {
		principal_free(p);
		return rc;
	}
	if (view)
		*view = sg__authdb_view(db, p);
	return 0;
}

/* old's record with body applied (no check of who may set what), its secrets
 * kept. */
static int update(sg_authdb_t *db, sg_principal_t *old, json_t *body, json_t **view,
                  sg_buf_t *errors)
{
	int bad;
	sg_principal_t *p = build(db, old->is_team, old->id, old->doc, body, errors, &bad);
	if (p == NULL)
		return SG_ENOMEM;
	if (bad) {
		principal_free(p);
		return SG_EINVAL;
	}
	memcpy(p->hash, old->hash, 32);
	memcpy(p->old_hash, old->old_hash, 32);
	p->old_until = old->old_until;
	return replace(db, old, p, view);
}

int sg__authdb_patch(sg_authdb_t *db, int is_team, const char *id, json_t *body, json_t **view,
                     sg_buf_t *errors)
{
	sg_principal_t *old = sg__authdb_find(db, is_team, id, strlen(id));

	*view = NULL;
	if (old == NULL)
		return SG_ENOTFOUND;
	if (check_input(is_team, body, errors) != 0)
		return SG_EINVAL;
	return update(db, old, body, view, errors);
}

int sg__authdb_set_disabled(sg_authdb_t *db, int is_team, const char *id, int disabled,
                            json_t **view)
{
	sg_principal_t *old = sg__authdb_find(db, is_team, id, strlen(id));
	*view = NULL;
	if (old == NULL)
		return SG_ENOTFOUND;
	json_t *body = json_pack("{s:b}", "disabled", disabled);
	int rc = body ? update(db, old, body, view, NULL) : SG_ENOMEM;
	json_decref(body);
	if (rc == 0)
		sg_log_info("auth: %s %s %s", is_team ? "team" : "key", id,
		            disabled ? "disabled" : "enabled");
	return rc;
}

int sg__authdb_rotate(sg_authdb_t *db, const char *id, int64_t grace_s, json_t **view,
                      char **key_out)
{
	sg_principal_t *old = sg__authdb_find(db, 0, id, strlen(id));
	int bad;

	*view = NULL;
	*key_out = NULL;
	if (old == NULL)
		return SG_ENOTFOUND;
	sg_principal_t *p = build(db, 0, id, old->doc, NULL, NULL, &bad); /* the record as it is */
	if (p == NULL)
		return SG_ENOMEM;
	char *key = new_secret(db, id, p->hash);
	if (key == NULL) {
		principal_free(p);
		return SG_ENOMEM;
	}
	memcpy(p->old_hash, old->hash, 32);
	p->old_until = grace_s > 0 ? now_s() + grace_s : 0;
	int rc = replace(db, old, p, view);
	if (rc != 0) {
		free(key);
		return rc;
	}
	*key_out = key;
	sg_log_info("auth: key %s rotated (the previous secret works for %" PRId64 " s more)", id,
	            grace_s > 0 ? grace_s : 0);
	return 0;
}

int sg__authdb_delete(sg_authdb_t *db, int is_team, const char *id)
{
	sg_principal_t *p = sg__authdb_find(db, is_team, id, strlen(id));
	if (p == NULL)
		return SG_ENOTFOUND;
	if (is_team) {
		for (size_t i = 0; i < db->keys.cap; i++) {
			sg_principal_t *k = db->keys.vals[i];
			if (k && strcmp(k->team, id) == 0)
				return SG_EEXIST;
		}
	}
	int rc = put_record(db, is_team, id, NULL);
	if (rc != 0)
		return rc;
	sg__u64map_del(is_team ? &db->teams : &db->keys, id_hash(id, SG_KEY_ID_LEN));
	db->changes++;
	sg__principal_unref(p);
	sg_log_info("auth: %s %s deleted", is_team ? "team" : "key", id);
	return 0;
}

static int cmp_principal(const void *a, const void *b)
{
	return strcmp((*(sg_principal_t *const *)a)->id, (*(sg_principal_t *const *)b)->id);
}

json_t *sg__authdb_list(sg_authdb_t *db, int is_team, const char *team, const char *after,
                        size_t limit)
{
	sg_u64map_t *m = is_team ? &db->teams : &db->keys;
	sg_principal_t **all = malloc((m->n + 1) * sizeof(*all));
	size_t n = 0;
	json_t *data = json_array(), *out = json_object();

	if (all == NULL || data == NULL || out == NULL) {
		free(all);
		json_decref(data);
		json_decref(out);
		return NULL;
	}
	for (size_t i = 0; i < m->cap; i++) {
		sg_principal_t *p = m->vals[i];
		if (p && (team == NULL || strcmp(p->team, team) == 0) &&
		    (after == NULL || strcmp(p->id, after) > 0))
			all[n++] = p;
	}
	qsort(all, n, sizeof(*all), cmp_principal);
	for (size_t i = 0; i < n && i < limit; i++)
		json_array_append_new(data, sg__authdb_view(db, all[i]));
	json_object_set_new(out, "object", json_string("list"));
	json_object_set_new(out, "data", data);
	json_object_set_new(out, "has_more", json_boolean(n > limit));
	if (n > limit)
		json_object_set_new(out, "next_after", json_string(all[limit - 1]->id));
	free(all);
	return out;
}

/* --- reports ------------------------------------------------------------------------- */

typedef struct group {
	char name[260];
	int64_t requests, prompt, completion, hits, unpriced;
	double cost, saved;
} group_t;

static int add_group(sg_u64map_t *m, const char *name, size_t len, const disk_rec_t *d)
{
	uint64_t h = sg_hash64(name, len, 7);
	group_t *g;
	/* linear probing on the hash for the rare collision of two names */
	for (;; h++) {
		g = sg__u64map_get(m, h);
		if (g == NULL || (strlen(g->name) == len && memcmp(g->name, name, len) == 0))
			break;
	}
	if (g == NULL) {
		if ((g = calloc(1, sizeof(*g))) == NULL || sg__u64map_put(m, h, g) != 0) {
			free(g);
			return SG_ENOMEM;
		}
		memcpy(g->name, name, len);
	}
	g->requests++;
	g->prompt += d->prompt;
	g->completion += d->completion;
	g->hits += d->cache != 0;
	g->unpriced += (d->flags & SG_SPEND_UNPRICED) != 0;
	g->cost += d->cost;
	g->saved += d->saved;
	return 0;
}

static int cmp_group(const void *a, const void *b)
{
	return strcmp((*(group_t *const *)a)->name, (*(group_t *const *)b)->name);
}

static int group_rec(sg_u64map_t *m, int by, int64_t t_us, const disk_rec_t *d,
                     const char *strs[NSTR], const size_t lens[NSTR])
{
	if (by == 3) {
		char day[16];
		struct tm tm;
		time_t tt = (time_t)(t_us / 1000000);
		localtime_r(&tt, &tm);
		strftime(day, sizeof(day), "%Y-%m-%d", &tm);
		return add_group(m, day, strlen(day), d);
	}
	int i = by == 0 ? 1 : by == 1 ? 2 : 3; /* key, team, model */
	return add_group(m, strs[i], lens[i], d);
}

static const char *const report_bys[] = {"key", "team", "model", "day"};

/* Whether a record's strings pass a report's filter. */
static int rec_wanted(char *const only[NSTR], const char *strs[NSTR], const size_t lens[NSTR])
{
	for (int i = 0; i < NSTR; i++)
		if (only[i] && (strlen(only[i]) != lens[i] || memcmp(only[i], strs[i], lens[i]) != 0))
			return 0;
	return 1;
}

/* A report under way: begun on the loop, its scan of the store on any
 * thread (the read transaction goes along: MDB_NOTLS), finished on the loop. */
struct sg_report {
	uv_work_t work;
	sg_authdb_t *db;
	int by;                 /* index in report_bys */
	int64_t from_s, to_s;
	int64_t span_us;        /* the store's longest chunk as of the snapshot */
	char *only[NSTR];       /* the filter, by record string (key, team, model): copies */
	sg_u64map_t groups;     /* name hash -> group_t */
	MDB_txn *txn;           /* the snapshot scanned */
	int rc;
	sg_report_cb cb;
	void *arg;
};

static void report_free(sg_report_t *r)
{
	for (int i = 0; i < NSTR; i++)
		free(r->only[i]);
	for (size_t i = 0; i < r->groups.cap; i++)
		free(r->groups.vals[i]);
	sg__u64map_free(&r->groups);
	if (r->txn)
		mdb_txn_abort(r->txn);
	free(r);
}

/* One record of a report's range and filter into its groups: 0, or
 * SG_ENOMEM. Records out of range, damaged or filtered out count for nothing. */
static int report_add(sg_report_t *r, int64_t t_us, const uint8_t *rec, uint16_t n)
{
	disk_rec_t d;
	const char *strs[NSTR];
	size_t lens[NSTR];
	char id[256];
	if (t_us < r->from_s * 1000000 || t_us >= r->to_s * 1000000 ||
	    decode_rec(rec, n, &d, strs, lens, id) != 0 || !rec_wanted(r->only, strs, lens))
		return 0;
	return group_rec(&r->groups, r->by, t_us, &d, strs, lens) != 0 ? SG_ENOMEM : 0;
}

/* On the loop: the snapshot, and the records not in it (queued, and the
 * batch being written until its commit is in the snapshot). */
static sg_report_t *report_begin(sg_authdb_t *db, const char *group_by, int64_t from_s,
                                 int64_t to_s, const sg_report_filter_t *filter, int *rc)
{
	int by = -1;
	for (int i = 0; i < 4; i++)
		if (strcmp(group_by, report_bys[i]) == 0)
			by = i;
	if (by < 0) {
		*rc = SG_EINVAL;
		return NULL;
	}
	sg_report_t *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		*rc = SG_ENOMEM;
		return NULL;
	}
	r->db = db;
	r->by = by;
	r->from_s = from_s;
	r->to_s = to_s;
	sg__u64map_init(&r->groups);
	const char *only[NSTR] = {NULL, filter ? filter->key : NULL, filter ? filter->team : NULL,
	                          filter ? filter->model : NULL, NULL};
	for (int i = 0; i < NSTR; i++) {
		if (only[i] && (r->only[i] = strdup(only[i])) == NULL) {
			report_free(r);
			*rc = SG_ENOMEM;
			return NULL;
		}
	}
	uv_mutex_lock(&db->commit_lock);
	int mrc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &r->txn);
	const batch_t *inflight = db->flushing && !db->flushing->committed ? db->flushing : NULL;
	r->span_us = db->max_span_us;
	uv_mutex_unlock(&db->commit_lock);
	if (mrc != 0) {
		r->txn = NULL;
		report_free(r);
		*rc = SG_ESTORE;
		return NULL;
	}
	const char *bufs[2] = {db->queue, inflight ? inflight->buf : NULL};
	size_t lens[2] = {db->qlen, inflight ? inflight->len : 0};
	for (int k = 0; k < 2; k++) {
		int64_t t_us;
		uint16_t n;
		const uint8_t *rec;
		for (size_t at = 0; next_rec(bufs[k], lens[k], &at, &t_us, &rec, &n);) {
			if (report_add(r, t_us, rec, n) != 0) {
				report_free(r);
				*rc = SG_ENOMEM;
				return NULL;
			}
		}
	}
	*rc = 0;
	return r;
}

/* Any thread: the records of the snapshot in [from, to): every chunk whose
 * latest record is not before from (a chunk is skipped, not the scan ended,
 * when its earliest is past to: after a clock step back one may follow). */
static void report_scan(sg_report_t *r)
{
	MDB_cursor *cur;
	MDB_val k, v;
	uint8_t kb[16];
	int64_t from_us = r->from_s * 1000000, to_us = r->to_s * 1000000;
	int rc;

	if ((rc = mdb_cursor_open(r->txn, r->db->spend_db, &cur)) != 0) {
		r->rc = SG_ESTORE;
		return;
	}
	/* past to + the longest chunk, every chunk starts after to */
	uint64_t stop = r->span_us > INT64_MAX - to_us ? UINT64_MAX : (uint64_t)(to_us + r->span_us);
	put_u64be(kb, (uint64_t)SG_MAX(from_us, 0)); /* (no record is before 1970) */
	memset(kb + 8, 0, 8);
	k = (MDB_val){16, kb};
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && r->rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		int64_t lo, t;
		const uint8_t *rec;
		uint16_t n;
		if (k.mv_size == 16 && get_u64be(k.mv_data) >= stop)
			break;
		if (k.mv_size != 16 || v.mv_size < CHDR)
			continue; /* a damaged chunk counts for nothing */
		memcpy(&lo, v.mv_data, 8);
		if (lo >= to_us)
			continue;
		const char *recs = (const char *)v.mv_data + CHDR;
		size_t len = v.mv_size - CHDR;
		for (size_t at = 0; r->rc == 0 && next_rec(recs, len, &at, &t, &rec, &n);)
			r->rc = report_add(r, t, rec, n);
	}
	if (rc != 0 && rc != MDB_NOTFOUND && r->rc == 0)
		r->rc = SG_ESTORE; /* a damaged file: an error, not a partial report */
	mdb_cursor_close(cur);
	mdb_txn_abort(r->txn);
	r->txn = NULL;
}

/* On the loop: the groups as JSON, by name. */
static json_t *report_finish(sg_report_t *r)
{
	group_t **all = malloc((r->groups.n + 1) * sizeof(*all));
	size_t n = 0;
	json_t *data = json_array();
	if (all == NULL || data == NULL) {
		free(all);
		json_decref(data);
		return NULL;
	}
	for (size_t i = 0; i < r->groups.cap; i++)
		if (r->groups.vals[i])
			all[n++] = r->groups.vals[i];
	qsort(all, n, sizeof(*all), cmp_group);
	for (size_t i = 0; i < n; i++) {
		group_t *g = all[i];
		json_array_append_new(
			data, json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:I, s:f, s:I}", report_bys[r->by],
		                        g->name, "requests", (json_int_t)g->requests, "prompt_tokens",
		                        (json_int_t)g->prompt, "completion_tokens",
		                        (json_int_t)g->completion, "total_tokens",
		                        (json_int_t)(g->prompt + g->completion), "cost_usd", g->cost,
		                        "cache_hits", (json_int_t)g->hits, "saved_usd", g->saved,
		                        "unpriced_requests", (json_int_t)g->unpriced));
	}
	free(all);
	json_t *out = json_pack("{s:s, s:I, s:I}", "group_by", report_bys[r->by], "from",
	                        (json_int_t)r->from_s, "to", (json_int_t)r->to_s);
	if (out == NULL) {
		json_decref(data);
		return NULL;
	}
	static const char *const names[NSTR] = {NULL, "key", "team", "model", NULL};
	for (int i = 0; i < NSTR; i++)
		if (r->only[i])
			json_object_set_new(out, names[i], json_string(r->only[i]));
	if (json_object_set_new(out, "data", data) != 0) {
		json_decref(out);
		return NULL;
	}
	return out;
}

int sg__authdb_report(sg_authdb_t *db, const char *group_by, int64_t from_s, int64_t to_s,
                      const sg_report_filter_t *filter, json_t **out)
{
	int rc;
	*out = NULL;
	sg_report_t *r = report_begin(db, group_by, from_s, to_s, filter, &rc);
	if (r == NULL)
		return rc;
	report_scan(r);
	if ((rc = r->rc) == 0 && (*out = report_finish(r)) == NULL)
		rc = SG_ENOMEM;
	report_free(r);
	return rc;
}

static void report_work(uv_work_t *w)
{
	report_scan(w->data);
}

static void report_done(uv_work_t *w, int status)
{
	sg_report_t *r = w->data;
	json_t *out = NULL;
	int rc = status ? SG_ECANCELED : r->rc;
	if (rc == 0 && (out = report_finish(r)) == NULL)
		rc = SG_ENOMEM;
	r->cb(r->arg, rc, out);
	report_free(r);
}

int sg__authdb_report_start(sg_authdb_t *db, const char *group_by, int64_t from_s, int64_t to_s,
                            const sg_report_filter_t *filter, sg_report_cb cb, void *arg)
{
	int rc;
	sg_report_t *r = report_begin(db, group_by, from_s, to_s, filter, &rc);
	if (r == NULL)
		return rc;
	r->cb = cb;
	r->arg = arg;
	r->work.data = r;
	if (uv_queue_work(db->loop, &r->work, report_work, report_done) != 0) {
		report_scan(r); /* no thread pool: here */
		report_done(&r->work, 0);
	}
	return 0;
}

json_t *sg__authdb_stats(sg_authdb_t *db)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "keys", (json_int_t)db->keys.n,
	                 "teams", (json_int_t)db->teams.n, "spend_records_written",
	                 (json_int_t)db->written, "spend_records_queued", (json_int_t)db->nqueue,
	                 "spend_records_dropped", (json_int_t)db->dropped, "write_errors",
	                 (json_int_t)db->write_errors, "retention_deleted",
	                 (json_int_t)db->retention_deleted);
}

int sg__principal_allows(const sg_principal_t *p, const char *model)
{
	if (p->models == NULL)
		return 1;
	for (size_t i = 0; i < p->nmodels; i++)
		if (fnmatch(p->models[i], model, 0) == 0)
			return 1;
	return 0;
}
