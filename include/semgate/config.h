/* semgate: configuration.
 *
 * One JSON file, read with jansson and validated once at start-up against a
 * table of options (name, type, range, default). Every error names the JSON
 * path of the offending value (`models[0].deployments[0].base_url: ...`).
 * Secrets never live in the file: it names environment variables
 * (`api_key_env`), which are resolved here, once.
 */
#ifndef SEMGATE_CONFIG_H
#define SEMGATE_CONFIG_H

#include <stddef.h>

#include "semgate/buf.h"

enum sg_log_level { SG_LOG_ERROR, SG_LOG_WARN, SG_LOG_INFO, SG_LOG_DEBUG };

/** cache.threshold when the config gives none: the model embedder's (see
 * config.c), and everyone else's. */
#define SG_MODEL_DEFAULT_THRESHOLD 0.97
#define SG_DEFAULT_THRESHOLD 0.95

/** One upstream deployment of a model group. */
#define SG_MAX_DEPLOYMENT_HEADERS 64

typedef struct sg_deployment {
	size_t seq;             /* position among all deployments of the config */
	char *id;               /* "<model name>/<index>", for X-Semgate-Upstream */
	char *provider;         /* "openai", "azure", "anthropic", "gemini" */
	const struct sg_provider *prov; /* its entry of the provider table (resolved at load) */
	char *base_url;         /* e.g. "http://127.0.0.1:9000/v1", no trailing '/' */
	char *api_key_env;      /* environment variable holding the key, or NULL */
	char *api_key;          /* its value at start-up, or NULL when unset */
	char *model;            /* model name sent upstream */
	char **headers;         /* extra request headers, "Name: value" */
	size_t nheaders;        /* entries in headers */
	long connect_timeout_ms; /* TCP/TLS connect budget */
	long timeout_ms;        /* whole-transfer budget */
	char *api_version;      /* azure: api-version; anthropic: anthropic-version */
	double weight;          /* share under the "weighted" strategy */
	long priority;          /* lower first: higher ones are fallbacks within the group */
	long rpm;               /* requests per minute allowed (0: no limit) */
	long tpm;               /* tokens per minute allowed (0: no limit) */
	double input_per_mtok;  /* price per million prompt tokens (< 0: the model's) */
	double output_per_mtok; /* price per million completion tokens (< 0: the model's) */
} sg_deployment_t;

/** How a model group picks a deployment. */
enum sg_strategy {
	SG_STRATEGY_WEIGHTED,    /* random, by weight */
	SG_STRATEGY_ROUND_ROBIN, /* in turn */
	SG_STRATEGY_LEAST_BUSY,  /* fewest requests in flight */
	SG_STRATEGY_LATENCY,     /* lowest recent latency (EWMA), with some exploration */
	SG_STRATEGY_COST,        /* cheapest */
	SG_STRATEGY_USAGE,       /* most headroom under rpm/tpm */
	SG_STRATEGY__LAST
};

/** A model group: what a request's `model` names. */
typedef struct sg_model {
	char *name;                   /* the name clients use */
	long cache_enabled;           /* cache this model's requests (bool) */
	double cache_threshold;       /* similarity for a hit; < 0: cache.threshold */
	double input_per_mtok;        /* price of a million prompt tokens (0 when unpriced) */
	double output_per_mtok;       /* price of a million completion tokens */
	double cached_input_per_mtok; /* price of a million cached prompt tokens */
	int priced;                   /* a price was configured or found in prices_file */
	double reach_input_per_mtok;  /* the dearest input price of any deployment of any group
	                               * that may answer its calls (it and, transitively, its
	                               * fallbacks and context fallbacks): a budget's bound */
	double reach_output_per_mtok; /* and the dearest output price */
	int reach_unpriced;           /* one of those groups has no price */
	sg_deployment_t *deployments; /* at least one */
	size_t ndeployments;          /* entries in deployments */
	int strategy;                 /* enum sg_strategy */
	char *strategy_name;          /* as configured */
	char **fallbacks;             /* model names to try when this group is exhausted */
	size_t nfallbacks;            /* entries in fallbacks */
	char **context_fallbacks;     /* model names for context-window errors */
	size_t ncontext_fallbacks;    /* entries in context_fallbacks */
	long max_attempts;            /* attempts per request, across deployments and fallbacks */
	long budget_ms;               /* total time for all attempts */
	long backoff_ms;              /* first retry delay (doubles, with jitter) */
	long max_backoff_ms;          /* longest retry delay */
	long circuit_failures;        /* failures within circuit_window_s that cool a deployment */
	long circuit_window_s;        /* window for counting failures */
	long cooldown_s;              /* how long a failing deployment gets no traffic */
} sg_model_t;

/** Front-end limits; each one is a clean HTTP error when hit. */
typedef struct sg_limits {
	long max_body_bytes;     /* request body cap (413) */
	long max_header_bytes;   /* all header names + values (431) */
	long max_headers;        /* header count (431) */
	long max_url_bytes;      /* request target length (414) */
	long request_timeout_ms; /* whole request must arrive within (408) */
	long idle_timeout_ms;    /* keep-alive connection idle before close */
	long max_connections;    /* open connections before 503 */
	long drain_timeout_ms;   /* grace period for in-flight work on SIGTERM */
	long max_response_bytes; /* buffered upstream reply cap (502) */
	long busy_poll_us;       /* poll without sleeping this long after activity */
	long max_client_backlog_bytes; /* a connection's unsent output above this: read
	                                * and parse no more of its requests */
	long max_held_bytes;     /* bytes held for clients, all connections (unsent
	                          * replies + buffered upstream replies): above it new
	                          * requests are shed with 503; 0: no cap */
	long max_connections_per_client; /* open connections from one address (0: no cap) */
	long min_request_bytes_per_s; /* a request arriving slower (after a grace) gets 408 */
	long health_connections; /* beyond max_connections, this many more may still
	                          * ask /healthz and /readyz */
} sg_limits_t;

/** How prompts are embedded. */
typedef struct sg_embedder_config {
	char *provider;      /* "model", "static", "local" or "openai" */
	long dim;            /* vector dimension (local, openai; model and static
	                      * take theirs from the model) */
	char *model_path;    /* model: directory of a BERT-family model */
	char *static_path;   /* static: the distilled table (a directory made by
	                      * semgate --distill-static) */
	char *prefix;        /* model: text put before every prompt ("" none; unset:
	                      * the model's own query prompt) */
	long max_tokens;     /* model: tokens embedded per prompt (0: the model's) */
	long threads;        /* model: embedding threads (0: cores - 1, at least 1) */
	long blas_threads;   /* model: OpenBLAS threads per sgemm (0: fit the cores) */
	long max_batch;      /* model: texts embedded together at most */
	long batch_wait_us;  /* model: how long a thread waits for a batch to fill */
	long queue_max;      /* model: texts waiting at most (beyond: no semantic lookup) */
	char *base_url;      /* openai: e.g. "http://127.0.0.1:11434/v1" */
	char *model;         /* openai: embedding model name */
	char *api_key_env;   /* openai: env var holding the key */
	char *api_key;       /* its value, or NULL */
	long timeout_ms;     /* openai: whole-call budget */
} sg_embedder_config_t;

typedef struct sg_cache_config {
	long enabled;            /* the cache is on (bool) */
	char *path;              /* directory of the LMDB environment */
	double threshold;        /* cosine similarity for a semantic hit */
	int threshold_given;     /* the file set it (else the embedder's default) */
	long ttl_s;              /* default time to live; 0: forever */
	long max_entries;        /* LRU cap on entries; 0: none */
	long max_bytes;          /* LRU cap on stored bytes; 0: none */
	long map_size_mb;        /* LMDB map size cap */
	char *index;             /* "auto", "flat" or "hnsw" */
	long hnsw_min_entries;   /* auto: scopes this large use HNSW */
	long hnsw_m;             /* HNSW links per node */
	long hnsw_ef_search;     /* HNSW search breadth */
	char *embed;             /* "last_user", "last_message" or "last_turns" */
	int embed_mode;          /* enum sg_cache_embed_mode (resolved at load) */
	long embed_turns;        /* turns embedded for "last_turns" */
	double max_temperature;  /* requests above it bypass the cache */
	long checkpoint_interval_s; /* how often changed indexes are saved */
	long rebuild;            /* drop incompatible data at start (bool) */
	long verify;             /* check every page of the store at start (bool) */
	long verifier;           /* second look at semantic matches' texts (bool) */
	long trust_client_headers; /* X-Semgate-Namespace / -Threshold from clients count (bool) */
	double min_threshold;    /* X-Semgate-Threshold below this is raised to it */
	sg_embedder_config_t embedder; /* the embedding provider */
} sg_cache_config_t;

/** Virtual keys, rate limits, budgets and spend (src/gateway/auth.c, limits.c, spend.c). */
typedef struct sg_auth_config {
	char *mode;                /* "off" or "keys" */
	int keys;                  /* mode is "keys" (resolved at load) */
	char *secret_env;          /* env var with the server secret keys are hashed with */
	char *secret;              /* its value, or NULL */
	char *path;                /* directory of the LMDB environment of keys, teams, spend */
	long map_size_mb;          /* its map size cap */
	double burst;              /* rate limits: capacity as a fraction of a minute's allowance */
	long default_completion_tokens; /* tokens reserved for a completion without max_tokens */
	long hits_count_tokens;    /* cache hits count toward tpm too (bool) */
	char *unpriced;            /* "refuse" or "admit": a budgeted call that cannot be priced */
	int admit_unpriced;        /* resolved */
	long stop_streams;         /* end a stream that crosses a hard budget (bool) */
	char *timezone;            /* budget periods are aligned to this zone's calendar */
	long record_spend;         /* keep spend records (always when mode is "keys") (bool) */
	long retention_days;       /* spend records older than this are deleted (0: never) */
	long flush_ms;             /* spend records are written in batches this often */
	char *prices_file;         /* LiteLLM's model_prices_and_context_window.json, or NULL */
} sg_auth_config_t;

typedef struct sg_config {
	char *listen_host;        /* address to bind */
	int listen_port;          /* port to bind (0: any free port) */
	int log_level;            /* enum sg_log_level */
	sg_limits_t limits;       /* front-end limits */
	sg_model_t *models;       /* model groups */
	size_t nmodels;           /* entries in models */
	sg_cache_config_t cache;  /* semantic cache */
	char *admin_key_env;      /* env var with the admin bearer key, or NULL */
	char *admin_key;          /* its value, or NULL */
	sg_auth_config_t auth;    /* keys, limits, budgets, spend */
} sg_config_t;

/**
 * Parse and validate a configuration from JSON text.
 * On success *out is a new config the caller frees with sg_config_free().
 * On failure returns SG_EINVAL and appends one line per problem to errors
 * ("path: message\n"); *out is NULL. SG_ENOMEM on allocation failure.
 */
int sg_config_parse(sg_config_t **out, const char *json, size_t len, sg_buf_t *errors);

/** Like sg_config_parse() on the contents of a file (SG_EIO if unreadable). */
int sg_config_load(sg_config_t **out, const char *path, sg_buf_t *errors);

/** The configuration compiled into the binary (see src/default_config.json). */
const char *sg_config_default_json(void);

/** Find a model group by name; NULL if none. Borrowed from cfg. */
const sg_model_t *sg_config_find_model(const sg_config_t *cfg, const char *name, size_t len);

/**
 * For a reload: every option that cannot change at run time (the listen
 * address, the cache's storage and index, the embedder, the connection caps:
 * the FIXED rows of src/config.c's tables) takes old's value in cfg, and
 * the JSON path of each one that differed is appended to changed, one per
 * line ("cache.path\n"). Returns 0 or SG_ENOMEM.
 */
int sg_config_keep_fixed(const sg_config_t *old, sg_config_t *cfg, sg_buf_t *changed);

/** Free a configuration and everything it owns; NULL is fine. */
void sg_config_free(sg_config_t *cfg);

#endif
