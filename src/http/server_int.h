/* Private to src/: connections, requests and the response API that the
 * handlers use. */
#ifndef SEMGATE_SERVER_INT_H
#define SEMGATE_SERVER_INT_H

#include <time.h>

#include <llhttp.h>
#include <uv.h>

#include "semgate/buf.h"
#include "semgate/cache.h"
#include "semgate/cache_key.h"
#include "semgate/embed.h"
#include "semgate/provider.h"
#include "semgate/router.h"
#include "semgate/sse.h"
#include "semgate/stats.h"
#include "semgate/config.h"
#include "semgate/server.h"
#include "semgate/upstream.h"
#include "semgate/log.h"
#include "authdb.h"
#include "call.h"
#include "counter.h"
#include "client_errors.h"
#include "gateway.h"
#include "gen.h"
#include "u64map.h"

typedef struct sg_conn sg_conn_t;

/* A header of the current request: offsets into sg_req_t.hdrs. */
typedef struct sg_hdr {
	uint32_t name_off, name_len;   /* name (as sent) */
	uint32_t value_off, value_len; /* value */
} sg_hdr_t;

/* A reply's usage: the numbers of its `usage` object (prompt -1: none seen). */

/* Where the current attempt's transfer is (one setter: at_set_state() in proxy.c). */
enum sg_attempt_state {
	SG_AT_NONE,      /* no transfer: before the first attempt, between two, after the last */
	SG_AT_WAITING,   /* transfer started: no reply yet, or a reply being buffered */
	SG_AT_STREAMING, /* relaying the reply's events to the client */
	SG_AT_PAUSING,   /* streaming; the client's socket backed up: pause at the next delivery */
	SG_AT_PAUSED,    /* streaming; the transfer waits for the socket to drain */
	SG_AT__LAST
};

/* What the proxy keeps for one forwarded request, across its attempts. */
typedef struct sg_proxy {
	enum sg_attempt_state at;     /* the current attempt (one setter: at_set_state()) */
	sg_xfer_t *xfer;              /* attempt in flight, or NULL */
	const sg_model_t *model;      /* the group being tried (the call's or a fallback) */
	const sg_deployment_t *dep;   /* deployment of the current (or last) attempt */
	const sg_provider_t *prov;    /* its entry of the provider table (NULL before the first attempt) */
	sg_provider_stream_t *pstream; /* stream translation of the current attempt */
	sg_upstream_headers_t *hdrs;  /* headers built for this attempt (owned), or NULL */
	uint8_t *tried;               /* deployments tried this round, by seq (owned) */
	size_t ntried;                /* bytes in tried */
	size_t fallback_next;         /* next name in the fallback list being walked */
	int using_ctx;                /* walking context_fallbacks instead of fallbacks */
	int fallback_used;            /* a fallback model group answered */
	int attempts;                 /* attempts started */
	int rounds;                   /* passes over the whole chain */
	int had_attempt_this_round;   /* some deployment was usable this round */
	uint64_t start_us;            /* first attempt */
	uint64_t attempt_us;          /* current attempt */
	long retry_after_s;           /* Retry-After of the last reply (-1: none) */
	int last_err;                 /* last transport error (0: an HTTP reply) */
	char *upstream_body;          /* body built for this attempt (owned), or NULL */
	size_t upstream_body_len;     /* bytes in upstream_body */
	char url[2048];               /* upstream URL */
	long round_retry_after_s;     /* largest Retry-After seen this round (-1: none) */
	long status;                  /* upstream HTTP status */
	char content_type[128];       /* upstream Content-Type */
	sg_buf_t body;                /* buffered upstream body (non-streamed, or an error) */
	size_t held;                  /* of it, bytes counted in the server's held_bytes */
	sg_buf_t out;                 /* translated output */
	int saw_done;                 /* a "data: [DONE]" event went through */
	int stopped;                  /* a step ended the stream (SG_CALL_STOP) */
	sg_usage_t stream_usage;      /* the stream's last `usage` object (for tpm and the cache) */
	sg_sse_t sse;                 /* the stream's events (OpenAI's format) */
	sg_buf_t sse_out;             /* whole events to write to the client */
} sg_proxy_t;

/* What the cache did with a request. */
enum sg_rc_state {
	SG_RC_OFF,          /* not cacheable here (cache off, embeddings, ...) */
	SG_RC_BYPASS,       /* cacheable endpoint, but this request must not be served */
	SG_RC_MISS,         /* looked up, not found: store the answer */
	SG_RC_REFRESH,      /* Cache-Control: no-cache: skip lookup, store the answer */
	SG_RC_HIT_EXACT,    /* served from the cache, exact match */
	SG_RC_HIT_SEMANTIC, /* served from the cache, semantic match */
	SG_RC__LAST
};

/* The cache's part of a request (src/gateway/semcache.c). */
typedef struct sg_reqcache {
	enum sg_rc_state state;      /* one setter: rc_set_state() */
	int kind;                    /* enum sg_cache_kind */
	int no_cache;                /* Cache-Control: no-cache */
	int no_store;                /* Cache-Control: no-store */
	double threshold;            /* similarity needed for a hit */
	uint64_t t0;                 /* lookup start (µs) */
	sg_embed_req_t embed;        /* the embedding (embed.impl: in flight) */
	uv_work_t search;            /* vector search on the thread pool */
	int searching;               /* search is queued or running */
	int search_abandoned;        /* the client left while it ran */
	int search_rc;               /* its result */
	sg_cache_candidates_t cand;  /* its candidates */
	int include_usage;           /* stream_options.include_usage */
	int64_t ttl_s;               /* time to live of what is stored */
	sg_cache_key_t key;          /* scope + prompt */
	float *vec;                  /* embedding (dim floats), allocated once */
	int have_vec;                /* vec holds this request's embedding */
	int storable;                /* the streamed reply can be reassembled */
	sg_buf_t text;               /* reassembled streamed content */
	char finish_reason[32];      /* from the stream */
	char id[128];                /* from the stream */
	char smodel[128];            /* model reported by the stream */
	int64_t created;             /* from the stream */
	int semantic;                /* the probe found no exact hit: the cache step looks
	                              * for a semantic one */
	int stashed;                 /* stash holds the probe's exact hit, not served yet */
	sg_cache_hit_t stash;        /* (semcache.c: probe_request) */
	uint64_t found_us;           /* when the probe found it */
} sg_reqcache_t;

/* What the limits step holds for a call (one setter: lim_set_state() in limits.c). */
enum sg_lim_state {
	SG_LIM_NONE,        /* nothing: not limited, refused, or given back */
	SG_LIM_ASKING,      /* the counters' answer is awaited (a shared backend) */
	SG_LIM_ASKING_LEFT, /* ... and the client left: the answer is given back */
	SG_LIM_HELD,        /* the reservation is taken: settled at the call's end */
	SG_LIM__LAST
};

/* What the spend step holds for a call (one setter: sp_set_state() in spend.c). */
enum sg_sp_state {
	SG_SP_NONE,     /* nothing to record (the step did not run, refused, or recorded) */
	SG_SP_OPEN,     /* to be recorded when the call ends */
	SG_SP_RESERVED, /* ... and cost_reserved is held on the budgets' windows */
	SG_SP__LAST
};

/* The limits and spend steps' part of a call (limits.c, spend.c). What a
 * governed call reads and writes every time comes first, in a few cache
 * lines: the call is the connection's, and between two of its requests the
 * other connections' push it out of the nearer caches. */
#define SG_GOV_ITEMS 12 /* rpm, tpm, concurrency: key, team, key × model, team × model */
typedef struct sg_gov {
	size_t nitems;                /* counters taken (items) */
	enum sg_lim_state lim;        /* the limits step's hold */
	enum sg_sp_state sp;          /* the spend step's */
	uint8_t what[SG_GOV_ITEMS];   /* each one's kind: 0 rpm, 1 tpm, 2 concurrency */
	char scope[SG_GOV_ITEMS];     /* 'k' key, 't' team, 'm' key x model, 'n' team x model */
	int unpriced;                 /* the model has no price */
	int hits_tokens;              /* hits count toward tpm (auth.hits_count_tokens) */
	int estimated;                /* the four below are made (sg__call_estimate) */
	int64_t est_prompt;           /* prompt tokens reserved (an estimate) */
	int64_t est_completion;       /* completion tokens reserved (max_tokens or the default) */
	int64_t body_bytes;           /* the request's size (the budget's bound on prompt tokens) */
	int64_t completions;          /* completions billed: n or best_of, times a completions
	                               * request's prompts (1..1e6) */
	double cost_reserved;         /* USD reserved on the budgets of key and team */
	int64_t events;               /* content events streamed (an estimate if the client leaves) */
	size_t hdrs_len;              /* bytes in hdrs */
	struct sg_principal *held[2]; /* key and team, referenced while the counters' answer is
	                               * pending: the items point into them (names, hints), and
	                               * the call may let them go first (its client left) */
	struct sg_principal *text_of[2]; /* key and team, referenced from the reservation until
	                               * the next call (or the call's free): the answers'
	                               * rate-limit headers, written at their heads, copy
	                               * rl_text from them, and the auth step lets go of the
	                               * key at the call's end, before a hit's head */
	sg_ctr_item_t items[SG_GOV_ITEMS]; /* counters taken (names point into names) */
	char names[SG_GOV_ITEMS][160];
	char hdrs[1024];              /* header lines the spend step adds to every answer (budget
	                               * warnings) */
} sg_gov_t;

/* The key a connection's last request verified (auth.c): the next request
 * with the same key, compared whole in constant time, skips finding and
 * verifying it while no key or team changed since (sg__authdb_changes).
 * Expiry, a rotation's grace and disabled are still checked every time. */
typedef struct sg_key_memo {
	sg_principal_t *key;       /* a reference, or NULL: none */
	sg_principal_t *team;      /* its team (a reference), or NULL */
	uint64_t changes;          /* sg__authdb_changes() when they were found */
	int old;                   /* the secret was the key's previous one (see old_until) */
	size_t len;                /* bytes of token */
	char token[3 + SG_KEY_ID_LEN + 1 + 256]; /* the key as sent ("sg-<id>-<secret>");
	                                          * zeroed when the call is freed */
} sg_key_memo_t;

/* A call: what one inference request is to the gateway, and the steps'
 * state for it. Allocated by the first call on a connection and reused by
 * the next ones there (its buffers keep their capacity); freed with the
 * connection (the gateway's release callback). The HTTP request only points
 * to it. */
struct sg_call {
	const sg_model_t *model;           /* the model group asked for */
	void *root;                        /* the parsed body (json_t, a reference, dropped at end or abort) */
	enum sg_call_kind kind;            /* endpoint */
	const char *path;                  /* upstream path ("/chat/completions", ...) */
	int stream;                        /* the client asked for a stream */
	const sg_step_t *const *steps;     /* the chain, the upstream step last */
	size_t nsteps;                     /* entries in steps */
	size_t at;                         /* the step running (or that answered) */
	int streamed;                      /* the answer is a stream */
	enum sg_call_outcome outcome;      /* how it was answered (set by sg__call_end) */
	int status;                        /* the answer's HTTP status (its head) */
	char ns[129];                      /* the cache namespace ("": the default); a step
	                                    * before the cache (auth) may set it */
	sg_buf_t rewrite[2];               /* what steps' response callbacks rewrote */
	sg_usage_t usage;                  /* the one usage record */
	uint64_t end_us;                   /* when it ended (sg_now_us), read once for every
	                                    * step (sg__call_end_us; a buffered cache hit's:
	                                    * when the cache found it); 0: not yet */
	sg_principal_t *key;               /* auth: the caller's key (a reference), or NULL */
	sg_principal_t *team;              /* its team (a reference), or NULL */
	sg_key_memo_t key_memo;            /* auth: the last key verified on the connection */
	sg_gov_t gov;                      /* the limits and spend steps' state */
	sg_proxy_t proxy;                  /* the upstream step's state */
	sg_reqcache_t cache;               /* the cache step's state */
};

/* The exact hit the cache's probe found for the call and the cache step has
 * not served yet, or NULL. The limits and spend steps, between the two, read
 * it: such a call takes a request, but no upstream tokens, concurrency slot
 * or budget. */
static inline const sg_cache_hit_t *sg__call_stashed_hit(const sg_call_t *c)
{
	return c->cache.stashed ? &c->cache.stash : NULL;
}

/* Where a request is in its life. One setter: req_set_state() in server.c. */
enum sg_req_state {
	SG_REQ_NONE,      /* no request on the connection */
	SG_REQ_READING,   /* head or body still arriving */
	SG_REQ_HANDLING,  /* complete; a handler owns it */
	SG_REQ_STREAMING, /* a chunked response is being written */
	SG_REQ__LAST
};

/* The request being read or answered on a connection (pipelined requests
 * behind it wait, unparsed, in the connection's buffer). */
typedef struct sg_req {
	sg_conn_t *conn;          /* owner */
	enum sg_req_state state;  /* life stage */
	uint8_t method;           /* llhttp_method_t */
	uint8_t http_minor;       /* 0 or 1 (HTTP/1.x) */
	uint8_t keep_alive;       /* connection may be reused after this */
	uint8_t in_header_value;  /* llhttp is inside a value (vs a name) */
	uint8_t value_done;       /* the last header's value is complete */
	uint8_t expect_continue;  /* Expect: 100-continue was asked */
	sg_buf_t url;             /* request target */
	sg_buf_t hdrs;            /* header names and values, back to back */
	sg_hdr_t *hdr;            /* header index (cap: limits.max_headers) */
	size_t nhdr;              /* headers seen */
	size_t hdr_cap;           /* entries allocated in hdr */
	sg_buf_t body;            /* request body (cap: limits.max_body_bytes) */
	char id[65];              /* X-Request-Id */
	sg_gen_t *gen;            /* the config generation the request runs on: pinned
	                           * when it is routed, dropped when the next request on
	                           * the connection is routed or the connection ends */
	uint64_t start_us;        /* when the head was complete */
	sg_call_t *call;          /* the gateway's call (inference endpoints), or NULL */
	sg_principal_t *auth_key;  /* the key the handler verified for this request, and */
	sg_principal_t *auth_team; /* its team (borrowed, until its call has started) */
	const char *resp_hdrs;    /* header lines every answer to this request carries (a
	                           * handler's; reset for each request), or NULL */
	size_t resp_hdrs_len;
	/* more of them, written by the handler into the answer's head as it is
	 * made (so that they need no buffer of their own; reset for each
	 * request), before resp_hdrs; NULL: none */
	void (*resp_hdrs_put)(struct sg_req *req, struct sg__fbuf *head);
} sg_req_t;

/* What the front end calls: all it knows of what serves its requests. */
typedef struct sg_http_handler {
	void (*request)(sg_req_t *req);   /* a complete request: answer it (now or later) */
	void (*abort)(sg_req_t *req);     /* the client went away while it was answered */
	void (*writable)(sg_req_t *req);  /* the socket drained below the back-pressure mark */
	void (*release)(sg_req_t *req);   /* the connection is freed: drop what req holds */
	void (*drained)(void *app);       /* draining, and every connection has closed */
} sg_http_handler_t;

/* The HTTP/1.1 front end (server.c): listener, connections, parsing, limits. */
struct sg_server {
	uv_loop_t *loop;          /* borrowed */
	const sg_config_t *cfg;   /* the current configuration (its limits; sg__server_set_config) */
	const sg_http_handler_t *handler; /* who answers requests */
	void *app;                /* the handler's object (the gateway) */
	uv_tcp_t listener;        /* accepting socket */
	uv_timer_t drain_timer;   /* drain deadline */
	uv_timer_t date_timer;    /* refreshes the cached Date header */
	uv_idle_t spin;           /* busy polling: keeps the loop from sleeping */
	uint64_t spin_until_us;   /* when busy polling stops */
	llhttp_settings_t parser_settings; /* shared llhttp callbacks */
	sg_conn_t *conns;         /* all open connections */
	size_t nconns;            /* in conns, overflow ones excluded */
	int port;                 /* bound port */
	int draining;             /* sg_server_drain() ran */
	int drained;              /* ... and every connection closed (handler->drained ran) */
	uint64_t next_req_id;     /* request id counter */
	uint32_t id_seed;         /* random per process, in request ids */
	char date[64];            /* "Date: ...\r\n" for the current second */
	time_t date_sec;          /* the second date is for */
	char rbuf[65536];         /* shared read buffer: parsed in the read callback */
	int rbuf_busy;            /* handed to libuv for a read */
	uv_idle_t ready_idle;     /* drains `ready` from the loop */
	sg_conn_t *ready, *ready_tail; /* connections with pipelined requests to parse */
	size_t nready;            /* on that list */
	uv_timer_t sweep_timer;   /* slow requests and stalled writers, once a second */
	size_t held_bytes;        /* unsent output + buffered upstream replies, all clients */
	size_t noverflow;         /* connections beyond a limit (health only, then closed) */
	size_t max_conns;         /* limits.max_connections, or fewer if descriptors are short */
	size_t max_overflow;      /* limits.health_connections, or fewer likewise */
	sg_u64map_t clients;      /* peer address hash -> open connections (per-client cap) */
	uint64_t refused_connections; /* beyond a connection limit, or accept failed */
	uint64_t shed_requests;   /* answered 503 because of limits.max_held_bytes */
	uint64_t slow_clients;    /* closed for a slow request or for not reading */
	sg_log_limit_t shed_log;  /* rate limits for lines a client can cause */
	sg_log_limit_t slow_log;
	sg_log_limit_t refused_log;
};

/** Start a front end on cfg->listen_* handing requests to handler (app: its
 * object). As sg_server_new(): even on failure *out may be set. */
int sg__http_new(sg_server_t **out, uv_loop_t *loop, const sg_config_t *cfg,
                 const sg_http_handler_t *handler, void *app);
/** A reload's configuration (its limits apply from now on). */
void sg__server_set_config(sg_server_t *srv, const sg_config_t *cfg);
/** Free the front end once the loop has finished. */
void sg__http_free(sg_server_t *srv);
/** The handler's object of the front end a request came in on (the gateway). */
void *sg__req_app(const sg_req_t *req);
/** The gateway serving a request. */
static inline sg_gateway_t *sg__req_gateway(const sg_req_t *req)
{
	return (sg_gateway_t *)sg__req_app(req);
}

/* Response API for the handlers (server.c). Each of respond/respond_error/
 * stream_end ends the request; after it the handler must not touch req. */

/** Send a complete response. extra_headers: preformatted "Name: v\r\n" lines or NULL. */
void sg__respond(sg_req_t *req, int status, const char *content_type, const char *body,
                 size_t len, const char *extra_headers);
/** sg__respond() with a body the caller hands over (malloc'd): what cannot
 * be sent at once is queued without a copy; freed once written. */
void sg__respond_owned(sg_req_t *req, int status, const char *content_type, char *body,
                       size_t len, const char *extra_headers);
/** Send one of the catalogue's errors (client_errors.h) as OpenAI's
 * {"error":{"message","type","code"}} with the printf-style message. Cold, as
 * the two below: GCC moves the paths that end in one (refusals, their
 * message's arguments) out of the hot code of the functions they sit in. */
void sg__respond_error(sg_req_t *req, enum sg_client_error e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), cold));
/** The same with extra headers (preformatted "Name: v\r\n" lines). */
void sg__respond_error_h(sg_req_t *req, enum sg_client_error e, const char *extra,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5), cold));
/** The same with another HTTP status than the catalogue's (an upstream's). */
void sg__respond_error_status(sg_req_t *req, enum sg_client_error e, int status,
                              const char *extra, const char *fmt, ...)
	__attribute__((format(printf, 5, 6), cold));
/** Start a chunked (HTTP/1.1) or close-delimited (HTTP/1.0) response. */
void sg__stream_begin(sg_req_t *req, int status, const char *content_type,
                      const char *extra_headers);
/** Send a piece of a streamed response. Returns the bytes now queued on the
 * socket and not yet written (for backpressure), or a negative SG_E* code. */
long sg__stream_write(sg_req_t *req, const char *p, size_t n);
/** Finish a streamed response. */
void sg__stream_end(sg_req_t *req);

/** Whether the request must be refused before any work because it came on
 * a connection beyond a limit: if so it was answered with 503 and 1 is
 * returned. Health checks ask before this. */
int sg__req_refused(sg_req_t *req);
/** Whether new work must be shed because the process holds more than
 * limits.max_held_bytes for clients: if so it was answered with 503 and 1
 * is returned. Health checks and admin endpoints (/stats shows why) ask
 * before this. */
int sg__req_shed(sg_req_t *req);
/** Account bytes held for a client outside the connection's output (a
 * buffered upstream reply): +n when taken, -n when released. */
void sg__server_held(sg_server_t *srv, long delta);

/** Look up a request header (case-insensitive). Borrowed until the request ends. */
int sg__req_header(const sg_req_t *req, const char *name, sg_iovec_t *out);

/** The server of a request. */
sg_server_t *sg__req_server(const sg_req_t *req);

/* Route handlers (the table is src/gateway/routes.c): rest is what follows
 * a prefix route's path. Admin ones (admin.c), after the table's checks: */
int sg__admin_authorized(sg_req_t *req);
void sg__admin_stats(sg_req_t *req, sg_iovec_t rest);
void sg__admin_reload(sg_req_t *req, sg_iovec_t rest);
void sg__admin_cache_clear(sg_req_t *req, sg_iovec_t rest);
void sg__admin_cache_list(sg_req_t *req, sg_iovec_t rest);
void sg__admin_cache_entry(sg_req_t *req, sg_iovec_t rest);
/** A query parameter's value, %-decoded into out, or NULL when absent (or,
 * *bad set if bad is given, too long for cap or badly encoded). admin.c. */
const char *sg__query_param(const sg_req_t *req, const char *name, char *out, size_t cap,
                            int *bad);
/** Answer status with the JSON in b and a newline; b is freed. admin.c. */
void sg__respond_json(sg_req_t *req, int status, sg_buf_t *b);
/* Keys, teams and spend (govern.c). */
void sg__admin_keys(sg_req_t *req, sg_iovec_t rest);
void sg__admin_teams(sg_req_t *req, sg_iovec_t rest);
void sg__admin_spend(sg_req_t *req, sg_iovec_t rest);
/* The OpenAI endpoints and health (handler.c). */
void sg__route_chat(sg_req_t *req, sg_iovec_t rest);
void sg__route_completions(sg_req_t *req, sg_iovec_t rest);
void sg__route_embeddings(sg_req_t *req, sg_iovec_t rest);
void sg__route_models(sg_req_t *req, sg_iovec_t rest);
void sg__route_healthz(sg_req_t *req, sg_iovec_t rest);
void sg__route_readyz(sg_req_t *req, sg_iovec_t rest);

/** Keep the connection's memory alive past its close until a matching
 * sg__req_release() (work on the thread pool still refers to it). */
void sg__req_hold(sg_req_t *req);
/** Drop a hold; returns 1 if the connection is still open, 0 if it closed
 * meanwhile (its memory is then freed here or was already: do not touch req). */
int sg__req_release(sg_req_t *req);

/** Note activity: the loop busy-polls for limits.busy_poll_us from now. */
void sg__server_kick(sg_server_t *srv);

/** Route a complete request (routes.c); with sg__handle_abort and
 * sg__handle_writable, the gateway's handler of the front end (gateway.c). */
void sg__handle(sg_req_t *req);
/** The connection went away: release whatever the handler holds (routes.c). */
void sg__handle_abort(sg_req_t *req);
/** The socket drained below the backpressure mark (routes.c). */
void sg__handle_writable(sg_req_t *req);

/** Headers for a JSON POST upstream (proxy.c): Content-Type, no wait for
 * 100-continue, then auth (a "Name: value" line, or NULL) and the extra lines.
 * NULL on allocation failure; free with sg_upstream_headers_free(). */
sg_upstream_headers_t *sg__json_headers(const char *auth, const char *const *extra, size_t n);

/** The `openai` embedder (src/upstream/embed_openai.c), made on the server's upstream
 * client (ec borrowed for its life); its identity: sg__embed_openai_id(). */
int sg__embed_openai_new(sg_embedder_t **out, sg_upstream_t *upstream,
                         const sg_embedder_config_t *ec);

/** Run sg__proxy_retry(req) after ms (the connection's timer). */
void sg__req_retry_after(sg_req_t *req, uint64_t ms);
/** The retry timer fired (proxy.c). */
void sg__proxy_retry(sg_req_t *req);

/** auth.mode "keys": check the request's key: 0 with the key and its team
 * (borrowed), or -1 after answering 401/403. Before any call starts. auth.c. */
int sg__auth_check(sg_req_t *req, sg_principal_t **key, sg_principal_t **team);

/** Let go of the key and team a call's rate-limit headers were made from
 * (the next call on the connection, or its end). limits.c. */
void sg__gov_text_release(sg_gov_t *g);

/* Forwarding upstream is sg__step_upstream (proxy.c, call.h), the last step. */
/** Release proxy state; cancels a transfer in flight. */
void sg__proxy_abort(sg_req_t *req);
/** The same, and free the proxy's buffers (the connection's end). */
void sg__proxy_req_free(sg_req_t *req);
void sg__proxy_writable(sg_req_t *req);

/* The cache step is sg__step_cache (semcache.c, call.h). */
/** Release the request's cache state (connection teardown). */
void sg__cache_req_free(sg_req_t *req);

/** Bytes queued on a connection beyond which streaming upstreams pause. */
#define SG_STREAM_HIGH_WATER (1u << 20)

#endif
