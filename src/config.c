/* Configuration: parse, validate against option tables, resolve secrets. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "semgate/cache_key.h"
#include "semgate/config.h"
#include "semgate/provider.h"
#include "default_config.h" /* generated from default_config.json */

#define SG_CONFIG_MAX_FILE (4u << 20)

enum opt_type { OPT_INT, OPT_NUM, OPT_STR, OPT_ANYSTR, OPT_BOOL, OPT_ENUM };
/* OPT_STR: a non-empty string; OPT_ANYSTR: any string, "" included */

/* One scalar option of an object: where it goes and what it may be. */
typedef struct opt {
	const char *name;  /* JSON key */
	enum opt_type type; /* JSON type expected */
	size_t off;        /* offset of the field in its struct */
	double min, max;   /* inclusive range (numbers) */
	double def_num;    /* default for numbers */
	const char *def_str; /* default for strings (NULL: none) */
	int required;      /* missing is an error */
	const char *choices; /* OPT_ENUM: "a|b|c" */
	int fixed;         /* FIXED: a reload keeps the running value (and says so); LIVE: may change */
} opt_t;

enum { LIVE = 0, FIXED = 1 };

/* Where validation is: the JSON path and the error sink. */
typedef struct ctx {
	sg_buf_t *errors; /* lines "path: message" */
	int nerrors;      /* problems found */
	int oom;          /* an allocation failed */
	size_t ndeployments; /* deployments seen so far, for sg_deployment_t.seq */
} ctx_t;

static void err(ctx_t *c, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void err(ctx_t *c, const char *path, const char *fmt, ...)
{
	va_list ap;
	c->nerrors++;
	if (c->errors == NULL)
		return;
	sg_buf_printf(c->errors, "%s: ", path);
	va_start(ap, fmt);
	sg_buf_vprintf(c->errors, fmt, ap);
	va_end(ap);
	sg_buf_puts(c->errors, "\n");
}

/* snprintf for JSON paths; a path too long for its buffer is cut, which is
 * fine for a message. */
static void pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void pathf(char *out, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, n, fmt, ap);
	va_end(ap);
}

static char *xstrdup(ctx_t *c, const char *s)
{
	char *p = s ? strdup(s) : NULL;
	if (s && !p)
		c->oom = 1;
	return p;
}

static void join(char *out, size_t n, const char *path, const char *key)
{
	pathf(out, n, "%s%s%s", path, *path ? "." : "", key);
}

/* Whether s is one of the '|'-separated words in choices. */
static int in_choices(const char *choices, const char *s)
{
	size_t n = strlen(s);
	for (const char *p = choices; *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, s, n) == 0)
			return 1;
		if (bar == NULL)
			break;
		p = bar + 1;
	}
	return 0;
}

static const opt_t *find_opt(const opt_t *opts, size_t nopts, const char *key)
{
	for (size_t i = 0; i < nopts; i++)
		if (strcmp(opts[i].name, key) == 0)
			return &opts[i];
	return NULL;
}

static int is_extra(const char *key, const char *const *extra)
{
	for (; extra && *extra; extra++)
		if (strcmp(*extra, key) == 0)
			return 1;
	return 0;
}

/*
 * Apply a table of scalar options to obj (which may be NULL: defaults only)
 * and reject keys that are neither in the table nor in `extra` (the keys the
 * caller handles itself).
 */
static void apply_opts(ctx_t *c, const char *path, json_t *obj, void *base,
                       const opt_t *opts, size_t nopts, const char *const *extra)
{
	char p[256];
	const char *key;
	json_t *v;

	if (obj) {
		json_object_foreach(obj, key, v) {
			if (!find_opt(opts, nopts, key) && !is_extra(key, extra)) {
				join(p, sizeof(p), path, key);
				err(c, p, "unknown option");
			}
		}
	}
	for (size_t i = 0; i < nopts; i++) {
		const opt_t *o = &opts[i];
		char *field = (char *)base + o->off;
		v = obj ? json_object_get(obj, o->name) : NULL;
		join(p, sizeof(p), path, o->name);
		if (v == NULL || json_is_null(v)) {
			if (o->required)
				err(c, p, "is required");
			if (o->type == OPT_INT || o->type == OPT_BOOL)
				*(long *)field = (long)o->def_num;
			else if (o->type == OPT_NUM)
				*(double *)field = o->def_num;
			else
				*(char **)field = xstrdup(c, o->def_str);
			continue;
		}
		switch (o->type) {
		case OPT_INT:
			if (!json_is_integer(v)) {
				err(c, p, "must be an integer");
				break;
			}
			if (json_integer_value(v) < o->min || json_integer_value(v) > o->max) {
				err(c, p, "must be in [%.0f, %.0f]", o->min, o->max);
				break;
			}
			*(long *)field = (long)json_integer_value(v);
			break;
		case OPT_NUM:
			if (!json_is_number(v)) {
				err(c, p, "must be a number");
				break;
			}
			if (json_number_value(v) < o->min || json_number_value(v) > o->max) {
				err(c, p, "must be in [%g, %g]", o->min, o->max);
				break;
			}
			*(double *)field = json_number_value(v);
			break;
		case OPT_BOOL:
			if (!json_is_boolean(v)) {
				err(c, p, "must be true or false");
				break;
			}
			*(long *)field = json_is_true(v);
			break;
		case OPT_ENUM:
			if (!json_is_string(v) || !in_choices(o->choices, json_string_value(v))) {
				err(c, p, "must be one of %s", o->choices);
				break;
			}
			*(char **)field = xstrdup(c, json_string_value(v));
			break;
		case OPT_STR:
		case OPT_ANYSTR:
			if (!json_is_string(v)) {
				err(c, p, "must be a string");
				break;
			}
			if ((o->type == OPT_STR && json_string_length(v) == 0) ||
			    strlen(json_string_value(v)) != json_string_length(v)) {
				err(c, p, "must be a non-empty string without NUL bytes");
				break;
			}
			*(char **)field = xstrdup(c, json_string_value(v));
			break;
		}
	}
}

#define MS_DAY 86400000.0
static const opt_t limits_opts[] = {
	{"max_body_bytes", OPT_INT, offsetof(sg_limits_t, max_body_bytes), 1, 1 << 30, 1 << 20, NULL, 0, NULL, LIVE},
	{"max_header_bytes", OPT_INT, offsetof(sg_limits_t, max_header_bytes), 256, 1 << 20, 16384, NULL, 0, NULL, LIVE},
	{"max_headers", OPT_INT, offsetof(sg_limits_t, max_headers), 1, 10000, 100, NULL, 0, NULL, LIVE},
	{"max_url_bytes", OPT_INT, offsetof(sg_limits_t, max_url_bytes), 16, 1 << 20, 8192, NULL, 0, NULL, LIVE},
	{"request_timeout_ms", OPT_INT, offsetof(sg_limits_t, request_timeout_ms), 1, MS_DAY, 30000, NULL, 0, NULL, LIVE},
	{"idle_timeout_ms", OPT_INT, offsetof(sg_limits_t, idle_timeout_ms), 1, MS_DAY, 60000, NULL, 0, NULL, LIVE},
	{"max_connections", OPT_INT, offsetof(sg_limits_t, max_connections), 1, 1000000, 10000, NULL, 0, NULL, FIXED},
	{"drain_timeout_ms", OPT_INT, offsetof(sg_limits_t, drain_timeout_ms), 0, MS_DAY, 10000, NULL, 0, NULL, LIVE},
	{"max_response_bytes", OPT_INT, offsetof(sg_limits_t, max_response_bytes), 1024, 1 << 30, 16 << 20, NULL, 0, NULL, LIVE},
	{"busy_poll_us", OPT_INT, offsetof(sg_limits_t, busy_poll_us), 0, 10000, 100, NULL, 0, NULL, LIVE},
	{"max_client_backlog_bytes", OPT_INT, offsetof(sg_limits_t, max_client_backlog_bytes), 4096, 1 << 30, 1 << 20, NULL, 0, NULL, LIVE},
	{"max_held_bytes", OPT_INT, offsetof(sg_limits_t, max_held_bytes), 0, 1e12, 256.0 * 1024 * 1024, NULL, 0, NULL, LIVE},
	{"max_connections_per_client", OPT_INT, offsetof(sg_limits_t, max_connections_per_client), 0, 1000000, 0, NULL, 0, NULL, LIVE},
	{"min_request_bytes_per_s", OPT_INT, offsetof(sg_limits_t, min_request_bytes_per_s), 0, 1 << 30, 1024, NULL, 0, NULL, LIVE},
	{"health_connections", OPT_INT, offsetof(sg_limits_t, health_connections), 0, 100000, 64, NULL, 0, NULL, FIXED},
};

/* cache.threshold when the file gives none: it follows the embedder. */
static double default_threshold(const char *provider)
{
	return provider && strcmp(provider, "model") == 0 ? SG_MODEL_DEFAULT_THRESHOLD
	                                                 : SG_DEFAULT_THRESHOLD;
}

#define C(f) offsetof(sg_cache_config_t, f)
static const opt_t cache_opts[] = {
	{"enabled", OPT_BOOL, C(enabled), 0, 1, 1, NULL, 0, NULL, FIXED},
	{"path", OPT_STR, C(path), 0, 0, 0, "./semgate-data", 0, NULL, FIXED},
	{"threshold", OPT_NUM, C(threshold), 0, 1, SG_DEFAULT_THRESHOLD, NULL, 0, NULL, LIVE},
	{"ttl_s", OPT_INT, C(ttl_s), 0, 100 * 365 * 86400.0, 7 * 86400, NULL, 0, NULL, LIVE},
	{"max_entries", OPT_INT, C(max_entries), 0, 1e12, 1000000, NULL, 0, NULL, FIXED},
	{"max_bytes", OPT_INT, C(max_bytes), 0, 1e15, 1024.0 * 1024 * 1024, NULL, 0, NULL, FIXED},
	{"map_size_mb", OPT_INT, C(map_size_mb), 16, 1 << 24, 16384, NULL, 0, NULL, FIXED},
	{"index", OPT_ENUM, C(index), 0, 0, 0, "auto", 0, "auto|flat|hnsw", FIXED},
	{"hnsw_min_entries", OPT_INT, C(hnsw_min_entries), 2, 1e9, 512, NULL, 0, NULL, FIXED},
	{"hnsw_m", OPT_INT, C(hnsw_m), 4, 128, 32, NULL, 0, NULL, FIXED},
	{"hnsw_ef_search", OPT_INT, C(hnsw_ef_search), 1, 4096, 64, NULL, 0, NULL, FIXED},
	{"embed", OPT_ENUM, C(embed), 0, 0, 0, "last_user", 0, "last_user|last_message|last_turns", LIVE},
	{"embed_turns", OPT_INT, C(embed_turns), 1, 64, 2, NULL, 0, NULL, LIVE},
	{"max_temperature", OPT_NUM, C(max_temperature), 0, 2, 1.0, NULL, 0, NULL, LIVE},
	{"checkpoint_interval_s", OPT_INT, C(checkpoint_interval_s), 1, 86400, 60, NULL, 0, NULL, LIVE},
	{"rebuild", OPT_BOOL, C(rebuild), 0, 1, 0, NULL, 0, NULL, LIVE}, /* a start-up action (as --rebuild-cache) */
	{"verify", OPT_BOOL, C(verify), 0, 1, 1, NULL, 0, NULL, FIXED},
	{"verifier", OPT_BOOL, C(verifier), 0, 1, 1, NULL, 0, NULL, FIXED},
	{"trust_client_headers", OPT_BOOL, C(trust_client_headers), 0, 1, 1, NULL, 0, NULL, LIVE},
	{"min_threshold", OPT_NUM, C(min_threshold), 0, 1, 0, NULL, 0, NULL, LIVE},
};
#undef C

#define E(f) offsetof(sg_embedder_config_t, f)
static const opt_t embedder_opts[] = {
	{"provider", OPT_ENUM, E(provider), 0, 0, 0, "model", 0, "model|static|local|openai", FIXED},
	{"dim", OPT_INT, E(dim), 16, 4096, 128, NULL, 0, NULL, FIXED},
	{"model_path", OPT_STR, E(model_path), 0, 0, 0, "models/all-minilm-l6-v2", 0, NULL, FIXED},
	{"static_path", OPT_STR, E(static_path), 0, 0, 0, "models/static-minilm", 0, NULL, FIXED},
	{"prefix", OPT_ANYSTR, E(prefix), 0, 0, 0, NULL, 0, NULL, FIXED},
	{"max_tokens", OPT_INT, E(max_tokens), 0, 8192, 0, NULL, 0, NULL, FIXED},
	{"threads", OPT_INT, E(threads), 0, 64, 0, NULL, 0, NULL, FIXED},
	{"blas_threads", OPT_INT, E(blas_threads), 0, 64, 0, NULL, 0, NULL, FIXED},
	{"max_batch", OPT_INT, E(max_batch), 1, 256, 32, NULL, 0, NULL, FIXED},
	{"batch_wait_us", OPT_INT, E(batch_wait_us), 0, 1000000, 500, NULL, 0, NULL, FIXED},
	{"queue_max", OPT_INT, E(queue_max), 1, 1000000, 1024, NULL, 0, NULL, FIXED},
	{"base_url", OPT_STR, E(base_url), 0, 0, 0, NULL, 0, NULL, FIXED},
	{"model", OPT_STR, E(model), 0, 0, 0, NULL, 0, NULL, FIXED},
	{"api_key_env", OPT_STR, E(api_key_env), 0, 0, 0, NULL, 0, NULL, FIXED},
	{"timeout_ms", OPT_INT, E(timeout_ms), 1, 600000, 2000, NULL, 0, NULL, FIXED},
};
#undef E

static const opt_t deployment_opts[] = {
	{"provider", OPT_STR, offsetof(sg_deployment_t, provider), 0, 0, 0, "openai", 0, NULL, LIVE},
	{"base_url", OPT_STR, offsetof(sg_deployment_t, base_url), 0, 0, 0, NULL, 1, NULL, LIVE},
	{"api_key_env", OPT_STR, offsetof(sg_deployment_t, api_key_env), 0, 0, 0, NULL, 0, NULL, LIVE},
	{"model", OPT_STR, offsetof(sg_deployment_t, model), 0, 0, 0, NULL, 0, NULL, LIVE},
	{"connect_timeout_ms", OPT_INT, offsetof(sg_deployment_t, connect_timeout_ms), 1, MS_DAY, 5000, NULL, 0, NULL, LIVE},
	{"timeout_ms", OPT_INT, offsetof(sg_deployment_t, timeout_ms), 1, MS_DAY, 600000, NULL, 0, NULL, LIVE},
	{"api_version", OPT_STR, offsetof(sg_deployment_t, api_version), 0, 0, 0, NULL, 0, NULL, LIVE},
	{"weight", OPT_NUM, offsetof(sg_deployment_t, weight), 0, 1e6, 1, NULL, 0, NULL, LIVE},
	{"priority", OPT_INT, offsetof(sg_deployment_t, priority), 0, 1000, 0, NULL, 0, NULL, LIVE},
	{"rpm", OPT_INT, offsetof(sg_deployment_t, rpm), 0, 1e9, 0, NULL, 0, NULL, LIVE},
	{"tpm", OPT_INT, offsetof(sg_deployment_t, tpm), 0, 1e12, 0, NULL, 0, NULL, LIVE},
	{"input_per_mtok", OPT_NUM, offsetof(sg_deployment_t, input_per_mtok), 0, 1e6, -1, NULL, 0, NULL, LIVE},
	{"output_per_mtok", OPT_NUM, offsetof(sg_deployment_t, output_per_mtok), 0, 1e6, -1, NULL, 0, NULL, LIVE},
};

static const opt_t model_opts[] = {
	{"name", OPT_STR, offsetof(sg_model_t, name), 0, 0, 0, NULL, 1, NULL, LIVE},
	{"cache", OPT_BOOL, offsetof(sg_model_t, cache_enabled), 0, 1, 1, NULL, 0, NULL, LIVE},
	{"cache_threshold", OPT_NUM, offsetof(sg_model_t, cache_threshold), 0, 1, -1, NULL, 0, NULL, LIVE},
	{"input_per_mtok", OPT_NUM, offsetof(sg_model_t, input_per_mtok), 0, 1e6, -1, NULL, 0, NULL, LIVE},
	{"output_per_mtok", OPT_NUM, offsetof(sg_model_t, output_per_mtok), 0, 1e6, -1, NULL, 0, NULL, LIVE},
	{"cached_input_per_mtok", OPT_NUM, offsetof(sg_model_t, cached_input_per_mtok), 0, 1e6, -1, NULL, 0, NULL, LIVE},
	{"strategy", OPT_ENUM, offsetof(sg_model_t, strategy_name), 0, 0, 0, "weighted", 0,
	 "weighted|round-robin|least-busy|latency|cost|usage", LIVE},
	{"max_attempts", OPT_INT, offsetof(sg_model_t, max_attempts), 1, 20, 3, NULL, 0, NULL, LIVE},
	{"budget_ms", OPT_INT, offsetof(sg_model_t, budget_ms), 1, MS_DAY, 120000, NULL, 0, NULL, LIVE},
	{"backoff_ms", OPT_INT, offsetof(sg_model_t, backoff_ms), 0, 600000, 100, NULL, 0, NULL, LIVE},
	{"max_backoff_ms", OPT_INT, offsetof(sg_model_t, max_backoff_ms), 0, 600000, 5000, NULL, 0, NULL, LIVE},
	{"circuit_failures", OPT_INT, offsetof(sg_model_t, circuit_failures), 1, 1000000, 5, NULL, 0, NULL, LIVE},
	{"circuit_window_s", OPT_INT, offsetof(sg_model_t, circuit_window_s), 1, 86400, 30, NULL, 0, NULL, LIVE},
	{"cooldown_s", OPT_INT, offsetof(sg_model_t, cooldown_s), 0, 86400, 30, NULL, 0, NULL, LIVE},
};

#define A(f) offsetof(sg_auth_config_t, f)
static const opt_t auth_opts[] = {
	{"mode", OPT_ENUM, A(mode), 0, 0, 0, "off", 0, "off|keys", FIXED},
	{"secret_env", OPT_STR, A(secret_env), 0, 0, 0, NULL, 0, NULL, FIXED},
	{"path", OPT_STR, A(path), 0, 0, 0, "./semgate-auth", 0, NULL, FIXED},
	{"map_size_mb", OPT_INT, A(map_size_mb), 16, 1 << 24, 16384, NULL, 0, NULL, FIXED},
	{"burst", OPT_NUM, A(burst), 0.001, 1, 1, NULL, 0, NULL, FIXED},
	{"default_completion_tokens", OPT_INT, A(default_completion_tokens), 0, 1e9, 1024, NULL, 0, NULL, LIVE},
	{"hits_count_tokens", OPT_BOOL, A(hits_count_tokens), 0, 1, 0, NULL, 0, NULL, LIVE},
	{"record_spend", OPT_BOOL, A(record_spend), 0, 1, 0, NULL, 0, NULL, FIXED},
	{"retention_days", OPT_INT, A(retention_days), 0, 100000, 90, NULL, 0, NULL, FIXED},
	{"flush_ms", OPT_INT, A(flush_ms), 1, 60000, 200, NULL, 0, NULL, FIXED},
};
static const opt_t budget_opts[] = {
	{"timezone", OPT_STR, A(timezone), 0, 0, 0, "UTC", 0, NULL, FIXED},
	{"unpriced", OPT_ENUM, A(unpriced), 0, 0, 0, "refuse", 0, "refuse|admit", LIVE},
	{"stop_streams", OPT_BOOL, A(stop_streams), 0, 1, 0, NULL, 0, NULL, LIVE},
};
#undef A

/* Top-level string options live in a scratch struct until checked. */
typedef struct top_opts {
	char *listen;        /* "host:port" */
	char *log_level;     /* error|warn|info|debug */
	char *admin_key_env; /* env var name */
	char *prices_file;   /* LiteLLM's price file */
} top_opts_t;

static const opt_t top_opts[] = {
	{"listen", OPT_STR, offsetof(top_opts_t, listen), 0, 0, 0, "127.0.0.1:8080", 0, NULL, FIXED},
	{"log_level", OPT_STR, offsetof(top_opts_t, log_level), 0, 0, 0, "info", 0, NULL, LIVE},
	{"admin_key_env", OPT_STR, offsetof(top_opts_t, admin_key_env), 0, 0, 0, NULL, 0, NULL, LIVE},
	{"prices_file", OPT_STR, offsetof(top_opts_t, prices_file), 0, 0, 0, NULL, 0, NULL, LIVE},
};

static char *env_value(ctx_t *c, const char *name)
{
	const char *v = name ? getenv(name) : NULL;
	return v && *v ? xstrdup(c, v) : NULL;
}

static void parse_listen(ctx_t *c, sg_config_t *cfg, const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (colon == NULL || colon == s) {
		err(c, "listen", "must be \"host:port\" (e.g. \"127.0.0.1:8080\")");
		return;
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535) {
		err(c, "listen", "port must be a number in [0, 65535]");
		return;
	}
	/* Accept "[::1]:8080" for IPv6. */
	if (s[0] == '[' && colon[-1] == ']')
		cfg->listen_host = strndup(s + 1, (size_t)(colon - s - 2));
	else
		cfg->listen_host = strndup(s, (size_t)(colon - s));
	if (cfg->listen_host == NULL)
		c->oom = 1;
	cfg->listen_port = (int)port;
}

static int parse_log_level(const char *s)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	for (size_t i = 0; i < SG_ARRAY_SIZE(names); i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

static void parse_headers(ctx_t *c, const char *path, json_t *obj, sg_deployment_t *d)
{
	char p[256];
	const char *key;
	json_t *v;

	if (!json_is_object(obj)) {
		err(c, path, "must be an object of header names to string values");
		return;
	}
	d->headers = calloc(json_object_size(obj) + 1, sizeof(char *));
	if (d->headers == NULL) {
		c->oom = 1;
		return;
	}
	if (json_object_size(obj) > SG_MAX_DEPLOYMENT_HEADERS) {
		err(c, path, "at most %d headers", SG_MAX_DEPLOYMENT_HEADERS);
		return;
	}
	json_object_foreach(obj, key, v) {
		pathf(p, sizeof(p), "%s.%s", path, key);
		if (!json_is_string(v)) {
			err(c, p, "must be a string");
			continue;
		}
		/* Header injection guard: no CR/LF/NUL, a token for the name. */
		if (*key == '\0' || strpbrk(key, " \t\r\n:") ||
		    strpbrk(json_string_value(v), "\r\n") ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			err(c, p, "invalid header name or value");
			continue;
		}
		size_t n = strlen(key) + json_string_length(v) + 3;
		char *h = malloc(n);
		if (h == NULL) {
			c->oom = 1;
			return;
		}
		snprintf(h, n, "%s: %s", key, json_string_value(v));
		d->headers[d->nheaders++] = h;
	}
}

static int valid_base_url(const char *u)
{
	return (strncmp(u, "http://", 7) == 0 && u[7]) || (strncmp(u, "https://", 8) == 0 && u[8]);
}

static void parse_deployment(ctx_t *c, const char *path, json_t *obj, sg_model_t *m, size_t idx)
{
	static const char *const extra[] = {"headers", NULL};
	sg_deployment_t *d = &m->deployments[idx];
	char p[256];

	if (!json_is_object(obj)) {
		err(c, path, "must be an object");
		return;
	}
	apply_opts(c, path, obj, d, deployment_opts, SG_ARRAY_SIZE(deployment_opts), extra);
	if (d->provider && (d->prov = sg_provider_find(d->provider)) == NULL) {
		pathf(p, sizeof(p), "%s.provider", path);
		err(c, p, "unknown provider \"%s\" (supported: openai, azure, anthropic, gemini)",
		    d->provider);
	}
	if (d->base_url) {
		size_t n = strlen(d->base_url);
		while (n > 0 && d->base_url[n - 1] == '/')
			d->base_url[--n] = '\0';
		if (!valid_base_url(d->base_url)) {
			pathf(p, sizeof(p), "%s.base_url", path);
			err(c, p, "must be an http(s) URL");
		}
	}
	if (json_object_get(obj, "headers")) {
		pathf(p, sizeof(p), "%s.headers", path);
		parse_headers(c, p, json_object_get(obj, "headers"), d);
	}
	if (d->model == NULL && m->name)
		d->model = xstrdup(c, m->name);
	d->api_key = env_value(c, d->api_key_env);
	char id[512];
	pathf(id, sizeof(id), "%s/%zu", m->name ? m->name : "?", idx);
	d->id = xstrdup(c, id);
}

/* A list of model names; each must name another model group (checked later). */
static void parse_names(ctx_t *c, const char *path, json_t *arr, char ***out, size_t *n)
{
	char p[256];
	size_t i;
	json_t *v;

	if (arr == NULL)
		return;
	if (!json_is_array(arr)) {
		err(c, path, "must be an array of model names");
		return;
	}
	*out = calloc(json_array_size(arr) + 1, sizeof(char *));
	if (*out == NULL) {
		c->oom = 1;
		return;
	}
	json_array_foreach(arr, i, v) {
		pathf(p, sizeof(p), "%s[%zu]", path, i);
		if (!json_is_string(v) || json_string_length(v) == 0) {
			err(c, p, "must be a model name");
			continue;
		}
		(*out)[(*n)++] = xstrdup(c, json_string_value(v));
	}
}

static int strategy_of(const char *s)
{
	static const char *const names[] = {"weighted", "round-robin", "least-busy", "latency",
	                                    "cost", "usage"};
	for (size_t i = 0; s && i < SG_ARRAY_SIZE(names); i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return SG_STRATEGY_WEIGHTED;
}

/* Fallback names must name other model groups. */
static void check_fallbacks(ctx_t *c, sg_config_t *cfg)
{
	char p[256];
	for (size_t i = 0; i < cfg->nmodels; i++) {
		sg_model_t *m = &cfg->models[i];
		for (int k = 0; k < 2; k++) {
			char **names = k ? m->context_fallbacks : m->fallbacks;
			size_t n = k ? m->ncontext_fallbacks : m->nfallbacks;
			for (size_t j = 0; j < n; j++) {
				if (names[j] == NULL)
					continue;
				pathf(p, sizeof(p), "models[%zu].%s[%zu]", i,
				      k ? "context_fallbacks" : "fallbacks", j);
				if (m->name && strcmp(names[j], m->name) == 0)
					err(c, p, "a model cannot fall back to itself");
				else if (!sg_config_find_model(cfg, names[j], strlen(names[j])))
					err(c, p, "no model named \"%s\"", names[j]);
			}
		}
	}
}

static void parse_models(ctx_t *c, sg_config_t *cfg, json_t *arr)
{
	static const char *const extra[] = {"deployments", "fallbacks", "context_fallbacks", NULL};
	char p[256], dp[256];

	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		err(c, "models", "must be a non-empty array");
		return;
	}
	cfg->models = calloc(json_array_size(arr), sizeof(sg_model_t));
	if (cfg->models == NULL) {
		c->oom = 1;
		return;
	}
	for (size_t i = 0; i < json_array_size(arr); i++) {
		json_t *mo = json_array_get(arr, i);
		sg_model_t *m = &cfg->models[cfg->nmodels++];
		pathf(p, sizeof(p), "models[%zu]", i);
		if (!json_is_object(mo)) {
			err(c, p, "must be an object");
			continue;
		}
		apply_opts(c, p, mo, m, model_opts, SG_ARRAY_SIZE(model_opts), extra);
		m->strategy = strategy_of(m->strategy_name);
		pathf(dp, sizeof(dp), "%s.fallbacks", p);
		parse_names(c, dp, json_object_get(mo, "fallbacks"), &m->fallbacks, &m->nfallbacks);
		pathf(dp, sizeof(dp), "%s.context_fallbacks", p);
		parse_names(c, dp, json_object_get(mo, "context_fallbacks"), &m->context_fallbacks,
		            &m->ncontext_fallbacks);
		for (size_t j = 0; m->name && j + 1 < cfg->nmodels; j++) {
			if (cfg->models[j].name && strcmp(cfg->models[j].name, m->name) == 0) {
				pathf(dp, sizeof(dp), "%s.name", p);
				err(c, dp, "duplicate model name \"%s\"", m->name);
			}
		}
		json_t *deps = json_object_get(mo, "deployments");
		pathf(dp, sizeof(dp), "%s.deployments", p);
		if (!json_is_array(deps) || json_array_size(deps) == 0) {
			err(c, dp, "must be a non-empty array");
			continue;
		}
		m->deployments = calloc(json_array_size(deps), sizeof(sg_deployment_t));
		if (m->deployments == NULL) {
			c->oom = 1;
			return;
		}
		for (size_t j = 0; j < json_array_size(deps); j++) {
			m->deployments[j].seq = c->ndeployments++;
			m->ndeployments++;
			pathf(dp, sizeof(dp), "%s.deployments[%zu]", p, j);
			parse_deployment(c, dp, json_array_get(deps, j), m, j);
		}
	}
}

/* The auth, budget and spend options ("auth" and "budget" objects). */
static void parse_auth(ctx_t *c, sg_config_t *cfg, json_t *root)
{
	sg_auth_config_t *a = &cfg->auth;
	json_t *auth = json_object_get(root, "auth"), *budget = json_object_get(root, "budget");

	if (auth && !json_is_object(auth))
		err(c, "auth", "must be an object");
	if (budget && !json_is_object(budget))
		err(c, "budget", "must be an object");
	apply_opts(c, "auth", json_is_object(auth) ? auth : NULL, a, auth_opts,
	           SG_ARRAY_SIZE(auth_opts), NULL);
	apply_opts(c, "budget", json_is_object(budget) ? budget : NULL, a, budget_opts,
	           SG_ARRAY_SIZE(budget_opts), NULL);
	a->keys = a->mode && strcmp(a->mode, "keys") == 0;
	a->admit_unpriced = a->unpriced && strcmp(a->unpriced, "admit") == 0;
	a->secret = env_value(c, a->secret_env);
	if (a->keys && a->secret_env == NULL)
		err(c, "auth.secret_env", "is required when auth.mode is \"keys\" (the environment "
		    "variable holding the secret that keys are hashed with)");
	else if (a->secret_env && a->secret == NULL && !c->oom)
		err(c, "auth.secret_env", "the environment variable \"%s\" is unset or empty",
		    a->secret_env);
	else if (a->secret && strlen(a->secret) < 16)
		err(c, "auth.secret_env", "the secret in \"%s\" is shorter than 16 bytes",
		    a->secret_env);
	if (a->keys)
		a->record_spend = 1;
	if (a->keys && cfg->admin_key_env == NULL)
		err(c, "auth.mode", "\"keys\" needs admin_key_env: without an admin key anyone "
		    "could create keys");
	if (a->timezone && (strlen(a->timezone) > 64 || strstr(a->timezone, "..") ||
	                    strspn(a->timezone, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                        "0123456789/_+-:") != strlen(a->timezone)))
		err(c, "budget.timezone", "must be a time zone name such as \"UTC\" or \"Europe/Paris\"");
	else if (a->timezone && strcmp(a->timezone, "UTC") != 0) {
		char zf[128];
		snprintf(zf, sizeof(zf), "/usr/share/zoneinfo/%s", a->timezone);
		if (access(zf, R_OK) != 0)
			err(c, "budget.timezone", "unknown time zone \"%s\" (no %s)", a->timezone, zf);
	}
}

/* A LiteLLM price entry for name, or NULL. */
static json_t *litellm_entry(json_t *prices, const char *provider, const char *name)
{
	char k[512];
	json_t *e = json_object_get(prices, name);
	if (!json_is_object(e) && provider) {
		pathf(k, sizeof(k), "%s/%s", provider, name);
		e = json_object_get(prices, k);
	}
	return json_is_object(e) && json_is_number(json_object_get(e, "input_cost_per_token")) &&
	               json_is_number(json_object_get(e, "output_cost_per_token"))
	               ? e
	               : NULL;
}

/* Each model group's prices: its own, else LiteLLM's file's for its name or
 * a deployment's model, else none (priced = 0: a budget cannot price it). */
static void resolve_prices(ctx_t *c, sg_config_t *cfg)
{
	json_t *prices = NULL;
	if (cfg->auth.prices_file) {
		json_error_t je;
		prices = json_load_file(cfg->auth.prices_file, JSON_REJECT_DUPLICATES, &je);
		if (!json_is_object(prices))
			err(c, "prices_file", "%s: %s", cfg->auth.prices_file,
			    prices ? "must be a JSON object of model names" : je.text);
	}
	for (size_t i = 0; i < cfg->nmodels; i++) {
		sg_model_t *m = &cfg->models[i];
		json_t *e = NULL;
		if (m->input_per_mtok < 0 && m->output_per_mtok < 0 && json_is_object(prices)) {
			e = m->name ? litellm_entry(prices, NULL, m->name) : NULL;
			for (size_t j = 0; e == NULL && j < m->ndeployments; j++)
				if (m->deployments[j].model)
					e = litellm_entry(prices, m->deployments[j].provider,
					                  m->deployments[j].model);
		}
		if (e) {
			double in = json_number_value(json_object_get(e, "input_cost_per_token"));
			double out = json_number_value(json_object_get(e, "output_cost_per_token"));
			json_t *cr = json_object_get(e, "cache_read_input_token_cost");
			if (in >= 0 && out >= 0) {
				m->input_per_mtok = in * 1e6;
				m->output_per_mtok = out * 1e6;
				if (m->cached_input_per_mtok < 0 && json_is_number(cr) &&
				    json_number_value(cr) >= 0)
					m->cached_input_per_mtok = json_number_value(cr) * 1e6;
			}
		}
		m->priced = m->input_per_mtok >= 0 || m->output_per_mtok >= 0;
		if (m->input_per_mtok < 0)
			m->input_per_mtok = 0;
		if (m->output_per_mtok < 0)
			m->output_per_mtok = 0;
		if (m->cached_input_per_mtok < 0)
			m->cached_input_per_mtok = m->input_per_mtok;
	}
	json_decref(prices);
}

/* The groups that may answer a call: its own and, transitively, its
 * fallbacks and context fallbacks (at most 64). */
static size_t reachable(const sg_config_t *cfg, const sg_model_t *m, const sg_model_t **out,
                        size_t cap)
{
	size_t n = 0;
	out[n++] = m;
	for (size_t at = 0; at < n; at++) {
		const sg_model_t *g = out[at];
		for (int k = 0; k < 2; k++) {
			char **names = k ? g->context_fallbacks : g->fallbacks;
			size_t nn = k ? g->ncontext_fallbacks : g->nfallbacks;
			for (size_t j = 0; j < nn; j++) {
				const sg_model_t *f = sg_config_find_model(cfg, names[j], strlen(names[j]));
				int seen = f == NULL;
				for (size_t q = 0; q < n && !seen; q++)
					seen = out[q] == f;
				if (!seen && n < cap)
					out[n++] = f;
			}
		}
	}
	return n;
}

/* Each group's reach_* prices (config.h): what a budget reserves for its
 * calls, found once here rather than on every call. After resolve_prices. */
static void reach_prices(sg_config_t *cfg)
{
	for (size_t i = 0; i < cfg->nmodels; i++) {
		sg_model_t *m = &cfg->models[i];
		const sg_model_t *ms[64];
		size_t n = reachable(cfg, m, ms, SG_ARRAY_SIZE(ms));
		double in = 0, out = 0;
		int unpriced = 0;
		for (size_t r = 0; r < n; r++) {
			const sg_model_t *g = ms[r];
			unpriced |= !g->priced;
			in = SG_MAX(in, g->input_per_mtok);
			out = SG_MAX(out, g->output_per_mtok);
			for (size_t j = 0; j < g->ndeployments; j++) {
				in = SG_MAX(in, g->deployments[j].input_per_mtok);
				out = SG_MAX(out, g->deployments[j].output_per_mtok);
			}
		}
		m->reach_input_per_mtok = in;
		m->reach_output_per_mtok = out;
		m->reach_unpriced = unpriced;
	}
}

int sg_config_parse(sg_config_t **out, const char *json, size_t len, sg_buf_t *errors)
{
	static const char *const extra[] = {"limits", "models", "cache", "auth", "budget", NULL};
	ctx_t c = {errors, 0, 0, 0};
	top_opts_t top = {0};
	json_error_t jerr;
	sg_config_t *cfg;
	json_t *root;

	*out = NULL;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		char where[64];
		pathf(where, sizeof(where), "line %d, column %d", jerr.line, jerr.column);
		err(&c, where, "invalid JSON: %s", jerr.text);
		return SG_EINVAL;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL) {
		json_decref(root);
		return SG_ENOMEM;
	}
	if (!json_is_object(root)) {
		err(&c, "(root)", "must be a JSON object");
		goto out;
	}
	apply_opts(&c, "", root, &top, top_opts, SG_ARRAY_SIZE(top_opts), extra);
	if (top.listen)
		parse_listen(&c, cfg, top.listen);
	if (top.log_level && (cfg->log_level = parse_log_level(top.log_level)) < 0)
		err(&c, "log_level", "must be one of \"error\", \"warn\", \"info\", \"debug\"");
	cfg->admin_key_env = top.admin_key_env;
	top.admin_key_env = NULL;
	cfg->admin_key = env_value(&c, cfg->admin_key_env);
	/* Naming a key that is not there must not leave every admin endpoint open. */
	if (cfg->admin_key_env && cfg->admin_key == NULL && !c.oom)
		err(&c, "admin_key_env",
		    "the environment variable \"%s\" is unset or empty: admin endpoints would be "
		    "open to anyone (set it, or remove admin_key_env to run without admin auth)",
		    cfg->admin_key_env);

	json_t *limits = json_object_get(root, "limits");
	if (limits && !json_is_object(limits))
		err(&c, "limits", "must be an object");
	apply_opts(&c, "limits", json_is_object(limits) ? limits : NULL, &cfg->limits,
	           limits_opts, SG_ARRAY_SIZE(limits_opts), NULL);

	static const char *const cache_extra[] = {"embedder", NULL};
	json_t *cache = json_object_get(root, "cache");
	if (cache && !json_is_object(cache))
		err(&c, "cache", "must be an object");
	cache = json_is_object(cache) ? cache : NULL;
	apply_opts(&c, "cache", cache, &cfg->cache, cache_opts, SG_ARRAY_SIZE(cache_opts),
	           cache_extra);
	/* resolved once here, not compared per request */
	cfg->cache.embed_mode = cfg->cache.embed == NULL ? SG_EMBED_LAST_USER
	                        : strcmp(cfg->cache.embed, "last_message") == 0 ? SG_EMBED_LAST_MESSAGE
	                        : strcmp(cfg->cache.embed, "last_turns") == 0   ? SG_EMBED_LAST_TURNS
	                                                                        : SG_EMBED_LAST_USER;
	json_t *emb = cache ? json_object_get(cache, "embedder") : NULL;
	if (emb && !json_is_object(emb))
		err(&c, "cache.embedder", "must be an object");
	sg_embedder_config_t *ec = &cfg->cache.embedder;
	apply_opts(&c, "cache.embedder", json_is_object(emb) ? emb : NULL, ec, embedder_opts,
	           SG_ARRAY_SIZE(embedder_opts), NULL);
	/* The model embedder's default threshold: its cosines run higher, and its
	 * verifier weighs structure only (main.c), so 0.97 is where it keeps
	 * precision >= 0.90 on both dev sets (bench/QUALITY.md) */
	cfg->cache.threshold_given = json_is_object(cache) && json_object_get(cache, "threshold");
	if (!cfg->cache.threshold_given)
		cfg->cache.threshold = default_threshold(ec->provider);
	if (ec->provider && strcmp(ec->provider, "openai") == 0) {
		if (ec->base_url == NULL || !valid_base_url(ec->base_url))
			err(&c, "cache.embedder.base_url", "is required for provider \"openai\" (an http(s) URL)");
		if (ec->model == NULL)
			err(&c, "cache.embedder.model", "is required for provider \"openai\"");
		if (ec->base_url) {
			size_t n = strlen(ec->base_url);
			while (n > 0 && ec->base_url[n - 1] == '/')
				ec->base_url[--n] = '\0';
		}
		ec->api_key = env_value(&c, ec->api_key_env);
	}

	if (json_object_get(root, "models") == NULL)
		err(&c, "models", "is required");
	else
		parse_models(&c, cfg, json_object_get(root, "models"));
	if (!c.oom)
		check_fallbacks(&c, cfg);
	cfg->auth.prices_file = top.prices_file;
	top.prices_file = NULL;
	parse_auth(&c, cfg, root);
	if (!c.oom && cfg->nmodels)
		resolve_prices(&c, cfg);
	if (!c.oom && !c.nerrors)
		reach_prices(cfg); /* (every fallback names a group: checked above) */

out:
	free(top.prices_file);
	free(top.listen);
	free(top.log_level);
	free(top.admin_key_env);
	json_decref(root);
	if (c.oom || c.nerrors) {
		sg_config_free(cfg);
		return c.oom ? SG_ENOMEM : SG_EINVAL;
	}
	*out = cfg;
	return 0;
}

int sg_config_load(sg_config_t **out, const char *path, sg_buf_t *errors)
{
	sg_buf_t text;
	char chunk[8192];
	size_t n;
	int rc = 0;
	FILE *f;

	*out = NULL;
	f = fopen(path, "rb");
	if (f == NULL) {
		if (errors)
			sg_buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
		return SG_EIO;
	}
	sg_buf_init(&text, SG_CONFIG_MAX_FILE);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if ((rc = sg_buf_append(&text, chunk, n)) != 0)
			break;
	}
	if (rc == 0 && ferror(f))
		rc = SG_EIO;
	fclose(f);
	if (rc) {
		if (errors)
			sg_buf_printf(errors, "%s: cannot read: %s\n", path,
			              rc == SG_ETOOBIG ? "larger than 4 MiB" : sg_strerror(rc));
		sg_buf_free(&text);
		return rc;
	}
	rc = sg_config_parse(out, text.data ? text.data : "", text.len, errors);
	sg_buf_free(&text);
	return rc;
}

const char *sg_config_default_json(void)
{
	return sg_default_config_json;
}

const sg_model_t *sg_config_find_model(const sg_config_t *cfg, const char *name, size_t len)
{
	for (size_t i = 0; i < cfg->nmodels; i++) {
		const char *n = cfg->models[i].name;
		/* a nameless group (an error being reported) matches nothing */
		if (n && strncmp(n, name, len) == 0 && n[len] == '\0')
			return &cfg->models[i];
	}
	return NULL;
}

static void free_deployment(sg_deployment_t *d)
{
	free(d->id);
	free(d->provider);
	free(d->base_url);
	free(d->api_key_env);
	free(d->api_key);
	free(d->model);
	free(d->api_version);
	for (size_t i = 0; i < d->nheaders; i++)
		free(d->headers[i]);
	free(d->headers);
}

/* One table's FIXED options: where cfg differs from old, note the path and
 * put old's value back. */
static int keep_fixed(const char *path, const void *old, void *cur, const opt_t *opts,
                      size_t nopts, sg_buf_t *changed)
{
	for (size_t i = 0; i < nopts; i++) {
		const opt_t *o = &opts[i];
		const char *a = (const char *)old + o->off;
		char *b = (char *)cur + o->off;
		int same;

		if (!o->fixed)
			continue;
		switch (o->type) {
		case OPT_INT:
		case OPT_BOOL:
			same = *(const long *)a == *(long *)b;
			if (!same)
				*(long *)b = *(const long *)a;
			break;
		case OPT_NUM:
			same = *(const double *)a == *(double *)b;
			if (!same)
				*(double *)b = *(const double *)a;
			break;
		default: {
			const char *x = *(char *const *)a, *y = *(char **)b;
			same = x == y || (x && y && strcmp(x, y) == 0);
			if (!same) {
				char *dup = x ? strdup(x) : NULL;
				if (x && !dup)
					return SG_ENOMEM;
				free(*(char **)b);
				*(char **)b = dup;
			}
			break;
		}
		}
		if (!same && sg_buf_printf(changed, "%s%s%s\n", path, *path ? "." : "", o->name) != 0)
			return SG_ENOMEM;
	}
	return 0;
}

int sg_config_keep_fixed(const sg_config_t *old, sg_config_t *cfg, sg_buf_t *changed)
{
	int rc;

	if (old->listen_port != cfg->listen_port || strcmp(old->listen_host, cfg->listen_host) != 0) {
		char *h = strdup(old->listen_host);
		if (h == NULL)
			return SG_ENOMEM;
		free(cfg->listen_host);
		cfg->listen_host = h;
		cfg->listen_port = old->listen_port;
		if (sg_buf_puts(changed, "listen\n") != 0)
			return SG_ENOMEM;
	}
	if ((rc = keep_fixed("limits", &old->limits, &cfg->limits, limits_opts,
	                     SG_ARRAY_SIZE(limits_opts), changed)) != 0 ||
	    (rc = keep_fixed("cache", &old->cache, &cfg->cache, cache_opts,
	                     SG_ARRAY_SIZE(cache_opts), changed)) != 0 ||
	    (rc = keep_fixed("auth", &old->auth, &cfg->auth, auth_opts, SG_ARRAY_SIZE(auth_opts),
	                     changed)) != 0 ||
	    (rc = keep_fixed("budget", &old->auth, &cfg->auth, budget_opts,
	                     SG_ARRAY_SIZE(budget_opts), changed)) != 0)
		return rc;
	/* the secret goes with its variable (a new one would orphan every key's hash) */
	cfg->auth.keys = old->auth.keys;
	if (cfg->auth.keys && cfg->admin_key == NULL) {
		/* keys stay on: so does an admin key, or anyone could mint keys */
		char *e = strdup(old->admin_key_env), *k = strdup(old->admin_key);
		if (e == NULL || k == NULL) {
			free(e);
			free(k);
			return SG_ENOMEM;
		}
		free(cfg->admin_key_env);
		cfg->admin_key_env = e;
		cfg->admin_key = k;
		if (sg_buf_puts(changed, "admin_key_env\n") != 0)
			return SG_ENOMEM;
	}
	if (cfg->auth.secret != old->auth.secret &&
	    !(cfg->auth.secret && old->auth.secret && strcmp(cfg->auth.secret, old->auth.secret) == 0)) {
		char *s = old->auth.secret ? strdup(old->auth.secret) : NULL;
		if (old->auth.secret && !s)
			return SG_ENOMEM;
		free(cfg->auth.secret);
		cfg->auth.secret = s;
	}
	size_t before = changed->len;
	if ((rc = keep_fixed("cache.embedder", &old->cache.embedder, &cfg->cache.embedder,
	                     embedder_opts, SG_ARRAY_SIZE(embedder_opts), changed)) != 0)
		return rc;
	if (changed->len != before || (old->cache.embedder.api_key != cfg->cache.embedder.api_key &&
	                                !(old->cache.embedder.api_key && cfg->cache.embedder.api_key &&
	                                  strcmp(old->cache.embedder.api_key,
	                                         cfg->cache.embedder.api_key) == 0))) {
		/* the key goes with its variable: the embedder in use keeps both */
		char *k = old->cache.embedder.api_key ? strdup(old->cache.embedder.api_key) : NULL;
		if (old->cache.embedder.api_key && !k)
			return SG_ENOMEM;
		free(cfg->cache.embedder.api_key);
		cfg->cache.embedder.api_key = k;
	}
	/* a default threshold follows the embedder kept, not the one the file asked for */
	if (!cfg->cache.threshold_given)
		cfg->cache.threshold = default_threshold(cfg->cache.embedder.provider);
	return 0;
}

void sg_config_free(sg_config_t *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->nmodels; i++) {
		sg_model_t *m = &cfg->models[i];
		for (size_t j = 0; j < m->ndeployments; j++)
			free_deployment(&m->deployments[j]);
		free(m->deployments);
		free(m->name);
		free(m->strategy_name);
		for (size_t j = 0; j < m->nfallbacks; j++)
			free(m->fallbacks[j]);
		free(m->fallbacks);
		for (size_t j = 0; j < m->ncontext_fallbacks; j++)
			free(m->context_fallbacks[j]);
		free(m->context_fallbacks);
	}
	free(cfg->models);
	free(cfg->listen_host);
	free(cfg->cache.path);
	free(cfg->cache.index);
	free(cfg->cache.embed);
	free(cfg->cache.embedder.provider);
	free(cfg->cache.embedder.base_url);
	free(cfg->cache.embedder.model);
	free(cfg->cache.embedder.model_path);
	free(cfg->cache.embedder.static_path);
	free(cfg->cache.embedder.prefix);
	free(cfg->cache.embedder.api_key_env);
	free(cfg->cache.embedder.api_key);
	free(cfg->admin_key_env);
	free(cfg->admin_key);
	free(cfg->auth.mode);
	free(cfg->auth.secret_env);
	free(cfg->auth.secret);
	free(cfg->auth.path);
	free(cfg->auth.unpriced);
	free(cfg->auth.timezone);
	free(cfg->auth.prices_file);
	free(cfg);
}
