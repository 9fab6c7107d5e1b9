/* Admin endpoints: GET /stats and the /cache entry API. When admin_key_env
 * is set they need "Authorization: Bearer <key>". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "semgate/hash.h"
#include "server_int.h"

#define LIST_DEFAULT 50
#define LIST_MAX 1000

static int authorized(sg_req_t *req)
{
	const char *key = sg__req_gateway(req)->gen->cfg->admin_key;
	sg_iovec_t v;
	size_t n;

	if (key == NULL)
		return 1;
	n = strlen(key);
	if (sg__req_header(req, "Authorization", &v) != 0 || v.len != n + 7 ||
	    strncasecmp(v.base, "Bearer ", 7) != 0)
		return 0;
	/* constant-time compare: no timing hints about the key */
	return sg_ct_equal(v.base + 7, key, n);
}

const char *sg__query_param(const sg_req_t *req, const char *name, char *out, size_t cap,
                            int *bad)
{
	const char *q = memchr(req->url.data, '?', req->url.len);
	const char *end = req->url.data + req->url.len;
	size_t nlen = strlen(name);

	for (const char *p = q ? q + 1 : end; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if ((size_t)(stop - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
			size_t o = 0;
			for (const char *s = p + nlen + 1; s < stop; s++) {
				unsigned hi, lo;
				int c = (unsigned char)*s;
				if (c == '%') { /* RFC 3986: %XX; '+' is a plus (an RFC 3339 offset) */
					if (stop - s < 3 || sscanf(s + 1, "%1x%1x", &hi, &lo) != 2)
						goto bad;
					c = (int)(hi * 16 + lo);
					s += 2;
				}
				if (o + 1 >= cap || c == 0)
					goto bad;
				out[o++] = (char)c;
			}
			out[o] = '\0';
			return out;
		}
		p = stop + 1;
	}
	return NULL;
bad:
	if (bad)
		*bad = 1;
	return NULL;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (s == NULL || *s < '0' || *s > '9')
		return SG_EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end || errno)
		return SG_EINVAL;
	*out = v;
	return 0;
}

void sg__respond_json(sg_req_t *req, int status, sg_buf_t *b)
{
	if (sg_buf_puts(b, "\n") != 0) {
		sg_buf_free(b);
		sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
		return;
	}
	sg__respond(req, status, "application/json", b->data, b->len, NULL);
	sg_buf_free(b);
}

static void handle_stats(sg_req_t *req)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_server_t *srv = sg__req_server(req); /* the front end's figures */
	sg_buf_t b;

	sg_buf_init(&b, 0);
	sg_buf_puts(&b, "{\"object\":\"semgate.stats\",");
	sg_buf_printf(&b, "\"config\":{\"generation\":%llu,\"loaded_at_ms\":%lld,\"reloads\":%llu,"
	              "\"reload_failures\":%llu,\"file\":",
	              (unsigned long long)gw->gen->number, (long long)gw->gen->loaded_unix_ms,
	              (unsigned long long)gw->reloads, (unsigned long long)gw->reload_failures);
	if (gw->config_path)
		sg_buf_json_str(&b, gw->config_path, strlen(gw->config_path));
	else
		sg_buf_puts(&b, "null");
	sg_buf_puts(&b, "},");
	sg_buf_printf(&b, "\"auth\":{\"mode\":\"%s\",\"refused\":%llu,\"rate_limited\":%llu,"
	              "\"budget_refused\":%llu,\"counters\":%zu",
	              gw->gen->cfg->auth.keys ? "keys" : "off", (unsigned long long)gw->auth_refused,
	              (unsigned long long)gw->limited, (unsigned long long)gw->budget_refused,
	              gw->counters_local ? sg_counters_local_count(gw->counters_local) : (size_t)0);
	if (gw->authdb) {
		json_t *st = sg__authdb_stats(gw->authdb);
		char *t = st ? json_dumps(st, JSON_COMPACT) : NULL;
		if (t) {
			sg_buf_puts(&b, ",\"store\":");
			sg_buf_puts(&b, t);
		}
		free(t);
		json_decref(st);
	}
	sg_buf_puts(&b, "},");
	if (gw->cache) {
		sg_cache_stats_t cs;
		sg_cache_stats(gw->cache, &cs);
		sg_buf_printf(&b,
		              "\"cache\":{\"enabled\":true,\"entries\":%llu,\"bytes\":%llu,"
		              "\"file_bytes\":%llu,\"index_type\":\"%s\",\"hnsw_scopes\":%llu,"
		              "\"index_vectors\":%llu,\"unsaved_index_changes\":%llu,"
		              "\"checkpoint_in_progress\":%s,\"checkpoint_last_ms\":%llu,"
		              "\"scopes\":%llu,\"evicted\":%llu,\"expired\":%llu,\"threshold\":%.4f,"
		              "\"store_full\":%s,\"store_failures\":%llu,\"scope_collisions\":%llu},",
		              (unsigned long long)cs.entries, (unsigned long long)cs.bytes,
		              (unsigned long long)cs.file_bytes, cs.index_type,
		              (unsigned long long)cs.hnsw_scopes, (unsigned long long)cs.index_vectors,
		              (unsigned long long)cs.unsaved_changes,
		              cs.checkpoint_in_progress ? "true" : "false",
		              (unsigned long long)cs.checkpoint_last_ms, (unsigned long long)cs.scopes,
		              (unsigned long long)cs.evicted, (unsigned long long)cs.expired,
		              gw->gen->cfg->cache.threshold, cs.store_full ? "true" : "false",
		              (unsigned long long)cs.store_failures,
		              (unsigned long long)cs.scope_collisions);
	} else {
		sg_buf_puts(&b, "\"cache\":{\"enabled\":false},");
	}
	if (gw->embedder) {
		sg_embed_stats_t es;
		sg_embed_stats(gw->embedder, &es);
		sg_buf_printf(&b,
		              "\"embedder\":{\"kind\":\"%s\",\"dim\":%d,\"embedded\":%llu,"
		              "\"queue_full\":%llu,\"timeouts\":%llu,\"failures\":%llu,"
		              "\"batches\":%llu,\"mean_batch\":%.2f,\"busy_ms\":%.1f,"
		              "\"queue_depth\":%llu,\"queue_max\":%llu,\"id\":",
		              sg_embed_kind(gw->embedder), sg_embed_dim(gw->embedder),
		              (unsigned long long)es.embedded, (unsigned long long)es.queue_full,
		              (unsigned long long)es.timeouts, (unsigned long long)es.failures,
		              (unsigned long long)es.batches,
		              es.batches ? (double)es.embedded / (double)es.batches : 0.0,
		              (double)es.busy_us / 1000.0, (unsigned long long)es.queue_depth,
		              (unsigned long long)es.queue_max);
		sg_buf_json_str(&b, sg_embed_id(gw->embedder), strlen(sg_embed_id(gw->embedder)));
		sg_buf_puts(&b, "},");
	}
	sg_stats_json(gw->stats, &b);
	sg_buf_puts(&b, ",\"deployments\":{");
	sg_router_json(gw->gen->router, sg_now_us(), &b);
	sg_buf_printf(&b, "},\"connections\":%zu,\"upstream_in_flight\":%zu,"
	              "\"server\":{\"held_bytes\":%zu,\"refused_connections\":%llu,"
	              "\"shed_requests\":%llu,\"slow_clients_closed\":%llu,"
	              "\"upstream_sse_events_dropped\":%llu}}",
	              srv->nconns, gw->upstream ? sg_upstream_active(gw->upstream) : 0,
	              srv->held_bytes, (unsigned long long)srv->refused_connections,
	              (unsigned long long)srv->shed_requests,
	              (unsigned long long)srv->slow_clients,
	              (unsigned long long)gw->sse_events_dropped);
	sg__respond_json(req, 200, &b);
}

static void entry_json(sg_buf_t *b, const sg_entry_meta_t *m, int full)
{
	sg_buf_printf(b, "{\"id\":%llu,\"namespace\":", (unsigned long long)m->id);
	sg_buf_json_str(b, m->ns.base, m->ns.len);
	sg_buf_puts(b, ",\"model\":");
	sg_buf_json_str(b, m->model.base, m->model.len);
	sg_buf_puts(b, ",\"prompt\":");
	sg_buf_json_str(b, m->prompt.base, SG_MIN(m->prompt.len, full ? m->prompt.len : 200));
	sg_buf_printf(b,
	              ",\"created\":%lld,\"expires\":%lld,\"hits\":%llu,\"last_hit\":%lld,"
	              "\"prompt_tokens\":%u,\"completion_tokens\":%u,\"response_bytes\":%zu",
	              (long long)m->created_s, (long long)m->expires_s, (unsigned long long)m->hits,
	              (long long)m->last_hit_s, m->prompt_tokens, m->completion_tokens,
	              m->response.len);
	if (full) {
		sg_buf_puts(b, ",\"scope\":");
		sg_buf_append(b, m->scope_json.base, m->scope_json.len);
		sg_buf_puts(b, ",\"response\":");
		sg_buf_append(b, m->response.base, m->response.len);
	}
	sg_buf_puts(b, "}");
}

typedef struct list_ctx {
	sg_buf_t *b;      /* output */
	size_t n;         /* entries written */
	uint64_t last_id; /* for the next page */
} list_ctx_t;

static int list_one(void *ud, const sg_entry_meta_t *m, const float *vec)
{
	list_ctx_t *lc = ud;
	(void)vec;
	if (lc->n++)
		sg_buf_puts(lc->b, ",");
	entry_json(lc->b, m, 0);
	lc->last_id = m->id;
	return 0;
}

static void handle_list(sg_req_t *req, sg_cache_t *cache)
{
	char tmp[32];
	uint64_t after = 0, limit = LIST_DEFAULT;
	sg_buf_t b;

	const char *a = sg__query_param(req, "after", tmp, sizeof(tmp), NULL);
	if (a && parse_u64(a, &after))
		return sg__respond_error(req, SG_CE_INVALID_REQUEST,
		                         "'after' must be an entry id");
	const char *l = sg__query_param(req, "limit", tmp, sizeof(tmp), NULL);
	if (l && (parse_u64(l, &limit) || limit == 0 || limit > LIST_MAX))
		return sg__respond_error(req, SG_CE_INVALID_REQUEST,
		                         "'limit' must be in [1, %d]", LIST_MAX);
	sg_buf_init(&b, 0);
	sg_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
	list_ctx_t lc = {&b, 0, 0};
	int rc = sg_cache_list(cache, after, (size_t)limit, list_one, &lc);
	if (rc) {
		sg_buf_free(&b);
		return sg__respond_error(req, SG_CE_CACHE_ERROR, "listing failed: %s",
		                         sg_strerror(rc));
	}
	if (lc.n == limit)
		sg_buf_printf(&b, "],\"has_more\":true,\"next_after\":%llu}",
		              (unsigned long long)lc.last_id);
	else
		sg_buf_puts(&b, "],\"has_more\":false,\"next_after\":null}");
	sg__respond_json(req, 200, &b);
}

static void handle_entry(sg_req_t *req, sg_cache_t *cache, sg_iovec_t idtext)
{
	char tmp[32];
	uint64_t id;
	sg_entry_t e;
	sg_buf_t b;

	if (idtext.len == 0 || idtext.len >= sizeof(tmp))
		goto bad;
	memcpy(tmp, idtext.base, idtext.len);
	tmp[idtext.len] = '\0';
	if (parse_u64(tmp, &id))
		goto bad;
	if (req->method == HTTP_DELETE) {
		int rc = sg_cache_delete(cache, id);
		if (rc == SG_ENOTFOUND)
			return sg__respond_error(req, SG_CE_NOT_FOUND,
			                         "no cache entry %llu", (unsigned long long)id);
		if (rc)
			return sg__respond_error(req, SG_CE_CACHE_ERROR, "delete failed: %s",
			                         sg_strerror(rc));
		sg_buf_init(&b, 0);
		sg_buf_printf(&b, "{\"id\":%llu,\"deleted\":true}", (unsigned long long)id);
		return sg__respond_json(req, 200, &b);
	}
	int rc = sg_cache_get(cache, id, &e);
	if (rc == SG_ENOTFOUND)
		return sg__respond_error(req, SG_CE_NOT_FOUND,
		                         "no cache entry %llu", (unsigned long long)id);
	if (rc)
		return sg__respond_error(req, SG_CE_CACHE_ERROR, "read failed: %s",
		                         sg_strerror(rc));
	sg_buf_init(&b, 0);
	entry_json(&b, &e.m, 1);
	sg_entry_free(&e);
	return sg__respond_json(req, 200, &b);
bad:
	sg__respond_error(req, SG_CE_INVALID_REQUEST,
	                  "cache entry ids are positive integers");
}

static void handle_clear(sg_req_t *req, sg_cache_t *cache)
{
	char ns[160];
	size_t n = 0;
	sg_buf_t b;

	int bad = 0;
	const char *which = sg__query_param(req, "namespace", ns, sizeof(ns), &bad);
	if (bad) /* never "all" for a namespace that could not be read */
		return sg__respond_error(req, SG_CE_INVALID_REQUEST,
		                         "'namespace' is too long or badly %%-encoded");
	int rc = sg_cache_clear(cache, which, &n);
	if (rc)
		return sg__respond_error(req, SG_CE_CACHE_ERROR, "clear failed: %s",
		                         sg_strerror(rc));
	sg_buf_init(&b, 0);
	sg_buf_printf(&b, "{\"deleted\":%zu,\"namespace\":", n);
	if (which)
		sg_buf_json_str(&b, which, strlen(which));
	else
		sg_buf_puts(&b, "null");
	sg_buf_puts(&b, "}");
	sg__respond_json(req, 200, &b);
}

/* The admin routes (their table is src/gateway/routes.c, which has checked
 * the admin key, the method and that the cache is on). */
int sg__admin_authorized(sg_req_t *req) { return authorized(req); }
void sg__admin_stats(sg_req_t *req, sg_iovec_t rest) { handle_stats(req); }
/* POST /admin/reload: 200 with the report, or 400 with why nothing changed. */
void sg__admin_reload(sg_req_t *req, sg_iovec_t rest)
{
	sg_buf_t b;
	sg_buf_init(&b, 0);
	int rc = sg__gateway_reload(sg__req_gateway(req), &b);
	sg__respond_json(req, rc == 0 ? 200 : rc == SG_ENOMEM ? 503 : 400, &b);
}

void sg__admin_cache_clear(sg_req_t *req, sg_iovec_t rest)
{
	handle_clear(req, sg__req_gateway(req)->cache);
}
void sg__admin_cache_list(sg_req_t *req, sg_iovec_t rest)
{
	handle_list(req, sg__req_gateway(req)->cache);
}
void sg__admin_cache_entry(sg_req_t *req, sg_iovec_t rest)
{
	handle_entry(req, sg__req_gateway(req)->cache, rest);
}
