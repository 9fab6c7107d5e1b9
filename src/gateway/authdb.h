/*
 * Keys, teams, budget windows and spend records: the governance store.
 *
 * One LMDB environment of its own (auth.path), apart from the cache's, so
 * that a cache eviction, DELETE /cache or a rebuilt cache never touches a key
 * or a cent of spend. Four databases:
 *
 *   keys     public id -> JSON record (the admin view, plus the secret's HMAC)
 *   teams    team id   -> JSON record
 *   windows  "k:<id>" / "t:<id>" -> the budget window {start, spent}
 *   spend    8-byte big-endian time (µs) + 8-byte sequence -> one call's record
 *
 * Keys and teams live in memory too (loaded at open): the request path reads
 * only memory. Admin changes are written (and synced) before they are
 * answered and apply to the next request. Spend records and budget windows
 * are queued in memory and written in batches on the thread pool every
 * auth.flush_ms (so a kill -9 loses at most that much spend; a clean stop
 * writes everything). Retention deletes records older than
 * auth.retention_days on the same thread.
 *
 * Secrets: a key is "sg-<id>-<secret>". Only the id is ever stored, logged
 * or shown again; the secret is kept as HMAC-SHA256(server secret, secret),
 * compared in constant time (sg_ct_equal). Loop thread only, except where
 * said.
 */
#ifndef SEMGATE_AUTHDB_H
#define SEMGATE_AUTHDB_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "semgate/buf.h"
#include "semgate/config.h"
#include "counter.h"

#define SG_KEY_ID_LEN 12     /* public id: [a-z0-9] */
#define SG_KEY_SECRET_LEN 32 /* secret: [A-Za-z0-9] */
#define SG_NS_MAX 128        /* a namespace's bytes */

enum sg_period { SG_PERIOD_NONE, SG_PERIOD_DAILY, SG_PERIOD_WEEKLY, SG_PERIOD_MONTHLY,
                 SG_PERIOD_SECONDS };

/** rpm, tpm, concurrent requests (0: no limit). */
typedef struct sg_limitset {
	long rpm, tpm, max_concurrent;
} sg_limitset_t;

/** A key × model limit. */
typedef struct sg_model_limit {
	char *model;
	sg_limitset_t lim;
} sg_model_limit_t;

/** A budget window: what a key or team spent in its current period. Shared
 * by every version of the record (an admin change makes a new version; calls
 * in flight settle on the same window), refcounted. */
typedef struct sg_window {
	int refs;
	int64_t start;            /* start of the current period (Unix seconds) */
	int64_t end;              /* its end (INT64_MAX: none), computed with start */
	int period;               /* the period start and end were computed for */
	int64_t period_s;
	double spent;             /* USD spent in it (settled calls) */
	double reserved;          /* USD reserved by calls in flight */
	int inflight;             /* calls holding a reservation */
	int soft_noted;           /* the soft limit's log line was written this period */
	int dirty;                /* changed since the last batch */
	char name[SG_KEY_ID_LEN + 3]; /* "k:<id>" or "t:<id>" */
} sg_window_t;

/** The parts of the rate-limit headers (limits.c) that only a limit fixes,
 * made with a key's or team's own items (sg_own_items_t) so that answers copy
 * them instead of formatting them each time. Loop thread. */
typedef struct sg_rl_text {
	uint8_t nlines, npolicy;  /* bytes of each */
	uint8_t nname;            /* of policy, the quoted name's ("\"key-rpm\"") */
	char lines[96];           /* "x-ratelimit-limit-requests: <limit>\r\n
	                           * x-ratelimit-remaining-requests: " (or -tokens) */
	char policy[48];          /* "\"key-rpm\";q=<limit>;w=60" (or team-, -tpm) */
} sg_rl_text_t;

/** A key's or team's own rate limits as the counter items a call takes
 * (limits.c): made by its first call, then copied by every call (a few
 * moves, not an item filled field by field). A record's limits never change:
 * an admin change makes a new record, with its own. Loop thread. */
typedef struct sg_own_items {
	uint8_t made;             /* 0: not yet */
	uint8_t n;                /* items: one per limit set, in rpm, tpm, conc order */
	int8_t tpm;               /* the tpm item's index (its cost is the call's tokens), -1: none */
	uint8_t what[3];          /* each item's kind (limits.c: 0 rpm, 1 tpm, 2 concurrency) */
	sg_ctr_item_t items[3];   /* cost 1, but the tpm item's */
} sg_own_items_t;

/** A key or a team, as the request path reads it. Refcounted: a call holds
 * its key and team until it ends, whatever the admin API does meanwhile. */
typedef struct sg_principal {
	int refs;                 /* the table's (while listed) + calls' */
	int is_team;
	char id[SG_KEY_ID_LEN + 1];
	json_t *doc;              /* the admin view, as stored (no secret) */
	char team[SG_KEY_ID_LEN + 1]; /* a key's team id, or "" */
	char **models;            /* allowed model names or fnmatch patterns; NULL: all */
	size_t nmodels;
	int64_t expires_at;       /* Unix seconds; 0: never */
	int disabled;
	sg_limitset_t lim;
	sg_model_limit_t *mlim;   /* key × model limits */
	size_t nmlim;
	double max_usd, soft_usd; /* budget (< 0: none) */
	int period;               /* enum sg_period */
	int64_t period_s;         /* SG_PERIOD_SECONDS: its length */
	char ns[SG_NS_MAX + 1];   /* the cache namespace it is confined to ("": none set) */
	char own_ns[SG_KEY_ID_LEN + 6]; /* "key-<id>" / "team-<id>": the default one */
	uint8_t hash[32];         /* HMAC of the secret (keys) */
	uint8_t old_hash[32];     /* of the secret before a rotation */
	int64_t old_until;        /* ... accepted until then (Unix seconds; 0: not at all) */
	sg_window_t *win;         /* the budget window (persisted with the spend batches) */
	uint64_t seen_tag;        /* SipHash (a random key per process) of the last secret that
	                           * verified, so the next request with it costs a short
	                           * keyed hash instead of an HMAC (0: none yet) */
	int seen_old;             /* that secret was the previous one (valid until old_until) */
	char ctr[3][SG_KEY_ID_LEN + 8]; /* its counters' names: "k:<id>:rpm", ":tpm", ":conc"
	                                 * ("t:" for a team), made once, not per request */
	uint64_t ctr_hash[3];           /* and their sg_ctr_hash */
	sg_ctr_hint_t ctr_hint[3];      /* and the counters' handles (loop thread) */
	sg_rl_text_t rl_text[2];        /* its rpm and tpm limits' header text (made with own) */
	sg_own_items_t own;             /* its limits as counter items (limits.c) */
} sg_principal_t;

/** One call's spend record. Strings are copied when queued (at most 255
 * bytes of each); their lengths come with them, so nothing is measured. */
typedef struct sg_spend_rec {
	int64_t t_us;             /* when the call ended (Unix µs) */
	sg_iovec_t request_id, key, team, model, deployment; /* {NULL, 0}: empty */
	int64_t prompt, completion;
	double cost;              /* USD paid (0 for a hit) */
	double saved;             /* USD a hit saved */
	uint32_t latency_ms;
	uint16_t status;
	uint8_t cache;            /* 0 none/miss, 1 exact hit, 2 semantic hit */
	uint8_t flags;            /* SG_SPEND_* */
} sg_spend_rec_t;

#define SG_SPEND_UNPRICED 1  /* the model has no price: cost is 0 but not "free" */
#define SG_SPEND_ESTIMATED 2 /* usage was estimated (the client left, or no usage came) */

typedef struct sg_authdb sg_authdb_t;

/** Open (or create) the store in cfg->path and load keys, teams and windows.
 * cfg is borrowed for the store's life (its FIXED auth options). */
int sg__authdb_open(sg_authdb_t **out, uv_loop_t *loop, const sg_auth_config_t *cfg,
                    char *err, size_t errlen);
/** Write what is queued and stop the timer (the loop then closes it). */
void sg__authdb_close(sg_authdb_t *db);
/** Free once the loop has closed the timer. */
void sg__authdb_free(sg_authdb_t *db);

/** A key or team by id (borrowed; sg__principal_ref to keep it). */
sg_principal_t *sg__authdb_find(sg_authdb_t *db, int is_team, const char *id, size_t len);
/** Whether secret matches the key's (or its previous one, within the grace). */
int sg__authdb_verify(sg_authdb_t *db, sg_principal_t *key, const char *secret, size_t len,
                      int64_t now_s);
/** How many times a key or team was added, replaced or deleted so far: what
 * sg__authdb_find and sg__authdb_verify answered holds while it is the same
 * (every admin change makes a new record; only time moves expiry and a
 * rotation's grace). */
uint64_t sg__authdb_changes(const sg_authdb_t *db);
/** HMAC-SHA256(server secret, msg): what a secret is stored as (for tests). */
void sg__authdb_hmac(sg_authdb_t *db, const char *msg, size_t n, uint8_t out[32]);
void sg__principal_ref(sg_principal_t *p);
void sg__principal_unref(sg_principal_t *p);

/** sg__authdb_window's work when the period may have changed. */
void sg__authdb_window_roll(sg_authdb_t *db, sg_principal_t *p, int64_t now_s);
/** Roll p's budget window to the period holding now_s (spent 0 in a new one).
 * Inline: every call looks twice, and the period rarely changed. */
static inline void sg__authdb_window(sg_authdb_t *db, sg_principal_t *p, int64_t now_s)
{
	const sg_window_t *w = p->win;
	if (!(now_s >= w->start && now_s < w->end && w->period == p->period &&
	      w->period_s == p->period_s))
		sg__authdb_window_roll(db, p, now_s);
}
/** Start of the period holding t (Unix seconds; 0 for none). */
int64_t sg__authdb_period_start(const sg_principal_t *p, int64_t t);
/** End of the period that started at start (Unix seconds; INT64_MAX: none). */
int64_t sg__authdb_period_end(const sg_principal_t *p, int64_t start);
/** Mark a window changed (written with the next batch). */
void sg__authdb_window_dirty(sg_authdb_t *db, sg_window_t *w);
/** Whether model may be used under p's list of models. */
int sg__principal_allows(const sg_principal_t *p, const char *model);
/** A time given as Unix seconds or RFC 3339 text (0, or -1 if it is neither). */
int sg__parse_time_arg(const char *s, int64_t *out);
/** Queue a call's record (written within auth.flush_ms). */
void sg__authdb_record(sg_authdb_t *db, const sg_spend_rec_t *rec);
/** Test hook: in encoded as a stored record, then decoded into out (its
 * strings copied into text, 5 x 256 bytes). The stored size, or -1. */
int sg__authdb_rec_codec(const sg_spend_rec_t *in, sg_spend_rec_t *out, char *text);

/* The admin API (src/admin/govern.c). Bodies are validated whole first: on
 * SG_EINVAL nothing changed and errors has one line per problem. SG_ENOTFOUND:
 * no such id; SG_EEXIST (teams): still referenced; SG_EIO: the write failed. */
int sg__authdb_create(sg_authdb_t *db, int is_team, json_t *body, json_t **view,
                      char **key_out, sg_buf_t *errors);
int sg__authdb_patch(sg_authdb_t *db, int is_team, const char *id, json_t *body,
                     json_t **view, sg_buf_t *errors);
int sg__authdb_delete(sg_authdb_t *db, int is_team, const char *id);
int sg__authdb_set_disabled(sg_authdb_t *db, int is_team, const char *id, int disabled,
                            json_t **view);
/** A new secret for a key; the old one keeps working for grace_s seconds. */
int sg__authdb_rotate(sg_authdb_t *db, const char *id, int64_t grace_s, json_t **view,
                      char **key_out);
/** The admin view of one key or team, with its current spend and budget. */
json_t *sg__authdb_view(sg_authdb_t *db, sg_principal_t *p);
/** Whether id[0..len) is a public id: SG_KEY_ID_LEN characters of a-z, 0-9. */
int sg__authdb_id_ok(const char *id, size_t len);
/** A page of keys (team: only its keys, NULL all) or teams, by id after `after`. */
json_t *sg__authdb_list(sg_authdb_t *db, int is_team, const char *team, const char *after,
                        size_t limit);
/** Which records a report reads besides its range: only those of this key
 * (public id), team and model, each when set (NULL: any). */
typedef struct sg_report_filter {
	const char *key, *team, *model;
} sg_report_filter_t;
/** Spend grouped by "key", "team", "model" or "day" over [from_s, to_s), of
 * the records filter lets through (NULL: all). */
int sg__authdb_report(sg_authdb_t *db, const char *group_by, int64_t from_s, int64_t to_s,
                      const sg_report_filter_t *filter, json_t **out);
/** The same off the loop: the store is read on the thread pool, then
 * cb(arg, rc, report) runs on the loop (the report is the callee's). Returns
 * SG_EINVAL (a bad group_by) or another error at once, cb not called. */
typedef struct sg_report sg_report_t;
typedef void (*sg_report_cb)(void *arg, int rc, json_t *report);
int sg__authdb_report_start(sg_authdb_t *db, const char *group_by, int64_t from_s, int64_t to_s,
                            const sg_report_filter_t *filter, sg_report_cb cb, void *arg);
/** Figures for /stats. */
json_t *sg__authdb_stats(sg_authdb_t *db);

#endif
