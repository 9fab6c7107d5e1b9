/* The cache's two steps of a request: the probe (right after auth: the
 * controls, the key, the exact match, kept in the call while the limits and
 * spend steps run) and the cache step (serve that exact hit, or embed and
 * search, then either replay the stored answer or forward and store what
 * comes back). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "semgate/json_scan.h"
#include "semgate/log.h"
#include "fbuf_int.h"
#include "fsm.h"
#include "openai_wire.h"
#include "server_int.h"

static const char *const state_names[SG_RC__LAST] = {
	[SG_RC_OFF] = "off",        [SG_RC_BYPASS] = "bypass",
	[SG_RC_MISS] = "miss",      [SG_RC_REFRESH] = "refresh",
	[SG_RC_HIT_EXACT] = "hit-exact", [SG_RC_HIT_SEMANTIC] = "hit-semantic",
};

/* Each call starts off (cache_request); then the lookup decides once, after
 * the exact lookup or after the embedding and the search. */
static const uint32_t rc_next[SG_RC__LAST] = {
	[SG_RC_OFF] = SG_FSM_TO(SG_RC_OFF) | SG_FSM_TO(SG_RC_BYPASS) | SG_FSM_TO(SG_RC_MISS) |
	              SG_FSM_TO(SG_RC_REFRESH) | SG_FSM_TO(SG_RC_HIT_EXACT) |
	              SG_FSM_TO(SG_RC_HIT_SEMANTIC),
	[SG_RC_BYPASS] = SG_FSM_TO(SG_RC_OFF),
	[SG_RC_MISS] = SG_FSM_TO(SG_RC_OFF),
	[SG_RC_REFRESH] = SG_FSM_TO(SG_RC_OFF),
	[SG_RC_HIT_EXACT] = SG_FSM_TO(SG_RC_OFF),
	[SG_RC_HIT_SEMANTIC] = SG_FSM_TO(SG_RC_OFF),
};
static const sg_fsm_t rc_fsm = {"cache lookup", state_names, rc_next, SG_RC__LAST};

static void rc_set_state(sg_reqcache_t *rc, enum sg_rc_state s)
{
	sg_fsm_move(&rc_fsm, rc, rc->state, s);
	rc->state = s;
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* The call's namespace (a step before the cache, or the client's header, set it). */
static const char *ns_of(const sg_req_t *req)
{
	return req->call->ns[0] ? req->call->ns : "default";
}

/* --- request controls --------------------------------------------------------------- */

static int has_token(sg_iovec_t v, const char *tok)
{
	size_t n = strlen(tok);
	for (size_t i = 0; i + n <= v.len; i++) {
		if (strncasecmp(v.base + i, tok, n) != 0)
			continue;
		int before = i == 0 || v.base[i - 1] == ',' || v.base[i - 1] == ' ';
		int after = i + n == v.len || v.base[i + n] == ',' || v.base[i + n] == ' ' ||
		            v.base[i + n] == ';';
		if (before && after)
			return 1;
	}
	return 0;
}

/* Parse the X-Semgate-* controls. Returns an error message or NULL. */
static const char *parse_controls(sg_req_t *req, const sg_config_t *cfg, int *no_cache,
                                  double *threshold)
{
	sg_reqcache_t *rc = &req->call->cache;
	sg_iovec_t v;
	char tmp[64], *end;

	*no_cache = 0;
	if (sg__req_header(req, "Cache-Control", &v) == 0) {
		*no_cache = has_token(v, "no-cache");
		rc->no_store = has_token(v, "no-store");
	}
	/* Without trust, a client's namespace and threshold are not its to choose
	 * (a front that sets them, or keys that pin them, decide instead); nor is
	 * it when a step before the cache (a key's) set the namespace already. */
	int trusted = cfg->cache.trust_client_headers != 0;
	char *ns = req->call->ns;
	if (trusted && ns[0] == '\0' && sg__req_header(req, "X-Semgate-Namespace", &v) == 0) {
		if (v.len == 0 || v.len >= sizeof(req->call->ns))
			return "X-Semgate-Namespace must be 1 to 128 characters";
		for (size_t i = 0; i < v.len; i++) {
			char c = v.base[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			      c == '-' || c == '_' || c == '.' || c == ':' || c == '/'))
				return "X-Semgate-Namespace may only contain letters, digits and -_.:/";
		}
		memcpy(ns, v.base, v.len);
		ns[v.len] = '\0';
	}
	rc->ttl_s = cfg->cache.ttl_s;
	if (sg__req_header(req, "X-Semgate-TTL", &v) == 0) {
		if (v.len == 0 || v.len >= sizeof(tmp))
			return "X-Semgate-TTL must be a number of seconds";
		memcpy(tmp, v.base, v.len);
		tmp[v.len] = '\0';
		errno = 0;
		long long ttl = strtoll(tmp, &end, 10);
		if (*end || errno || ttl < 0 || ttl > 100LL * 365 * 86400)
			return "X-Semgate-TTL must be a whole number of seconds (0: never expires)";
		rc->ttl_s = (int64_t)ttl;
	}
	if (trusted && sg__req_header(req, "X-Semgate-Threshold", &v) == 0) {
		if (v.len == 0 || v.len >= sizeof(tmp))
			return "X-Semgate-Threshold must be a number in [0, 1]";
		memcpy(tmp, v.base, v.len);
		tmp[v.len] = '\0';
		errno = 0;
		double t = strtod(tmp, &end);
		if (*end || errno || !(t >= 0.0 && t <= 1.0))
			return "X-Semgate-Threshold must be a number in [0, 1]";
		*threshold = t < cfg->cache.min_threshold ? cfg->cache.min_threshold : t;
	}
	return NULL;
}

/* --- replay --------------------------------------------------------------------------- */

/* The hit's headers, without printf (about 2,000 instructions a call: a
 * twentieth of an exact hit's); the similarity keeps it, semantic hits only. */
static void hit_headers(const sg_reqcache_t *rc, const sg_cache_hit_t *hit, sg__fbuf_t *o)
{
	int64_t age = now_s() - hit->entry.m.created_s;
	sg__fbuf_str(o, "X-Semgate-Cache: ");
	sg__fbuf_str(o, state_names[rc->state]);
	sg__fbuf_str(o, "\r\nX-Semgate-Cache-Id: ");
	sg__fbuf_u64(o, hit->entry.m.id);
	sg__fbuf_str(o, "\r\nAge: ");
	sg__fbuf_u64(o, age > 0 ? (uint64_t)age : 0);
	sg__fbuf_str(o, "\r\n");
	if (rc->state == SG_RC_HIT_SEMANTIC) {
		char sim[48];
		int k = snprintf(sim, sizeof(sim), "X-Semgate-Similarity: %.4f\r\n", hit->similarity);
		if (k > 0 && (size_t)k < sizeof(sim))
			sg__fbuf_mem(o, sim, (size_t)k);
	}
}

/* One replayed event: choice (stolen; NULL: "choices":[]) or usage
 * (borrowed) with the stored reply's id, created and model, written by the one
 * chunk writer (lib/openai_wire.c). */
static int write_event(sg_req_t *req, const json_t *resp, const char *object, json_t *choice,
                       const json_t *usage)
{
	const json_t *id = json_object_get(resp, "id"), *created = json_object_get(resp, "created");
	const json_t *model = json_object_get(resp, "model");
	sg_buf_t ev;
	long q = 0;

	if (choice == NULL && usage == NULL)
		return SG_ENOMEM; /* the caller's json_pack failed */
	sg_buf_init(&ev, 0);
	int rc = sg__chunk_event(&ev, json_is_string(id) ? json_string_value(id) : "chatcmpl-semgate",
	                         object, json_is_integer(created) ? json_integer_value(created) : 0,
	                         json_is_string(model) ? json_string_value(model) : "", choice,
	                         usage);
	if (rc == 0) {
		/* the steps before see a replay as any stream: the event's JSON object */
		const char *d = ev.data + 6;
		size_t n = ev.len - 8;
		sg__call_event(req, &d, &n);
		if (d == ev.data + 6 && n == ev.len - 8) {
			q = sg__stream_write(req, ev.data, ev.len);
		} else { /* a step rewrote it */
			sg_buf_reset(&ev);
			if (sg_buf_append(&ev, "data: ", 6) || sg_buf_append(&ev, d, n) ||
			    sg_buf_append(&ev, "\n\n", 2))
				rc = SG_ENOMEM;
			else
				q = sg__stream_write(req, ev.data, ev.len);
		}
	}
	sg_buf_free(&ev);
	return rc ? rc : q < 0 ? (int)q : 0;
}

/* Send a stored chat.completion / text_completion as server-sent events. */
static void replay_stream(sg_req_t *req, const char *extra, sg_iovec_t body)
{
	sg_reqcache_t *rc = &req->call->cache;
	json_t *resp = sg_json_load(body.base, body.len, NULL);
	json_t *choices = json_object_get(resp, "choices");
	int chat = rc->kind == SG_CACHE_CHAT;
	const char *object = chat ? "chat.completion.chunk" : "text_completion";
	size_t i;
	json_t *ch;

	sg__stream_begin(req, 200, "text/event-stream", extra);
	json_array_foreach(choices, i, ch) {
		json_t *idx = json_object_get(ch, "index");
		json_t *choice, *delta;
		if (chat) {
			json_t *msg = json_object_get(ch, "message");
			/* first: the role */
			choice = json_pack("{s:O?,s:{s:s,s:s},s:n}", "index", idx, "delta", "role",
			                   "assistant", "content", "", "finish_reason");
			write_event(req, resp, object, choice, NULL);
			/* then the content and tool calls, as one delta */
			delta = json_object();
			if (json_is_string(json_object_get(msg, "content")))
				json_object_set(delta, "content", json_object_get(msg, "content"));
			json_t *tcs = json_object_get(msg, "tool_calls");
			if (json_is_array(tcs)) {
				json_t *out = json_array(), *tc;
				size_t j;
				json_array_foreach(tcs, j, tc) {
					json_t *copy = json_deep_copy(tc);
					json_object_set_new(copy, "index", json_integer((json_int_t)j));
					json_array_append_new(out, copy);
				}
				json_object_set_new(delta, "tool_calls", out);
			}
			if (json_object_get(msg, "refusal") && !json_is_null(json_object_get(msg, "refusal")))
				json_object_set(delta, "refusal", json_object_get(msg, "refusal"));
			choice = json_pack("{s:O?,s:o,s:n}", "index", idx, "delta", delta, "finish_reason");
			write_event(req, resp, object, choice, NULL);
			/* last: the finish reason */
			choice = json_pack("{s:O?,s:{},s:O?}", "index", idx, "delta", "finish_reason",
			                   json_object_get(ch, "finish_reason"));
			write_event(req, resp, object, choice, NULL);
		} else {
			choice = json_pack("{s:O?,s:O?,s:n,s:n}", "index", idx, "text",
			                   json_object_get(ch, "text"), "logprobs", "finish_reason");
			write_event(req, resp, object, choice, NULL);
			choice = json_pack("{s:O?,s:s,s:n,s:O?}", "index", idx, "text", "", "logprobs",
			                   "finish_reason", json_object_get(ch, "finish_reason"));
			write_event(req, resp, object, choice, NULL);
		}
	}
	if (rc->include_usage && json_object_get(resp, "usage"))
		write_event(req, resp, object, NULL, json_object_get(resp, "usage"));
	static const char done[] = "data: [DONE]\n\n";
	sg__stream_write(req, done, sizeof(done) - 1);
	json_decref(resp);
	sg__call_end(req, 1);
	sg__stream_end(req);
}

static void serve_hit(sg_req_t *req, sg_cache_hit_t *hit, int stream, uint64_t found_us)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_reqcache_t *rc = &req->call->cache;
	const sg_entry_meta_t *m = &hit->entry.m;
	char extra[512];

	sg__gateway_hit_counted(gw);

	double money = (double)m->prompt_tokens * req->call->model->input_per_mtok / 1e6 +
	               (double)m->completion_tokens * req->call->model->output_per_mtok / 1e6;
	sg_stats_count(gw->stats, req->call->model->name, ns_of(req),
	               rc->state == SG_RC_HIT_EXACT ? SG_STAT_HIT_EXACT : SG_STAT_HIT_SEMANTIC,
	               m->prompt_tokens, m->completion_tokens, money);
	sg__fbuf_t o;
	sg__fbuf_init(&o, extra, sizeof(extra));
	hit_headers(rc, hit, &o);
	/* A hit runs back through the steps before the cache like any answer;
	 * its usage is what it saved. */
	req->call->outcome = SG_CALL_HIT;
	req->call->usage = (sg_usage_t){m->prompt_tokens, m->completion_tokens,
	                               (long long)m->prompt_tokens + m->completion_tokens, 0};
	sg__call_head(req, 200, stream, &o);
	if (stream) {
		replay_stream(req, extra, m->response);
		return;
	}
	const char *body = m->response.base;
	size_t len = m->response.len;
	sg__call_reply(req, 200, &body, &len, &o); /* they may rewrite it */
	/* a buffered hit ends when the cache found it (a clock read less: the
	 * steps' settlement and the spend record's latency read the call's end) */
	req->call->end_us = found_us;
	sg__call_end(req, 1);
	sg__respond(req, 200, "application/json", body, len, extra);
}

/* --- the step ------------------------------------------------------------------------- */

/* A miss, a bypass or the cache off: the next step (upstream) answers. */
static void forward(sg_req_t *req)
{
	sg__call_next(req);
}

/* Search done: serve the hit or forward. */
static void after_search(sg_req_t *req)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_reqcache_t *rc = &req->call->cache;
	sg_cache_hit_t hit;
	float best;

	if (rc->search_rc == 0 &&
	    sg_cache_resolve(gw->cache, &rc->key, &rc->cand, (float)rc->threshold, now_s(), &hit,
	                     &best) == 0) {
		uint64_t now = sg_now_us();
		sg_stats_lookup_us(gw->stats, now - rc->t0);
		rc_set_state(rc, SG_RC_HIT_SEMANTIC);
		serve_hit(req, &hit, req->call->stream, now);
		sg_cache_hit_free(&hit);
		return;
	}
	if (!rc->no_cache)
		sg_stats_lookup_us(gw->stats, sg_now_us() - rc->t0);
	rc_set_state(rc, rc->no_cache ? SG_RC_REFRESH : SG_RC_MISS);
	sg_stats_count(gw->stats, req->call->model->name, ns_of(req),
	               rc->no_cache ? SG_STAT_REFRESH : SG_STAT_MISS, 0, 0, 0);
	sg_buf_reset(&rc->text);
	rc->finish_reason[0] = rc->id[0] = rc->smodel[0] = '\0';
	rc->created = 0;
	forward(req);
}

static void search_work(uv_work_t *w)
{
	sg_req_t *req = w->data;
	sg_reqcache_t *rc = &req->call->cache;

	sg_index_set_threads(1); /* one query: no OpenMP team on this worker */
	rc->search_rc = sg_cache_search(sg__req_gateway(req)->cache, rc->key.scope_hash, rc->vec,
	                                &rc->cand);
}

static void search_done(uv_work_t *w, int status)
{
	sg_req_t *req = w->data;
	sg_reqcache_t *rc = &req->call->cache;

	rc->searching = 0;
	if (rc->search_abandoned || status != 0) {
		/* the client left: the connection only waited for this */
		rc->search_abandoned = 0;
		sg__req_release(req);
		return;
	}
	if (!sg__req_release(req))
		return;
	if (rc->search_rc)
		sg_log_warn("%s: vector search failed: %s", req->id, sg_strerror(rc->search_rc));
	after_search(req);
}

/* Embedding done (or failed): search on the thread pool (a search can take
 * hundreds of µs; the loop serves other connections meanwhile). */
static void after_embed(sg_req_t *req)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_reqcache_t *rc = &req->call->cache;

	rc->search_rc = SG_ENOTFOUND;
	rc->cand.n = 0;
	if (rc->no_cache || !rc->have_vec)
		return after_search(req);
	rc->search.data = req;
	rc->search_abandoned = 0;
	if (uv_queue_work(gw->loop, &rc->search, search_work, search_done) != 0) {
		/* cannot queue: search here */
		search_work(&rc->search);
		return after_search(req);
	}
	rc->searching = 1;
	sg__req_hold(req);
}

static void embed_failed(sg_req_t *req, const char *why)
{
	sg_stats_embed_error(sg__req_gateway(req)->stats);
	sg_log_warn("%s: embedding failed (%s): the request skips the semantic lookup", req->id, why);
	req->call->cache.have_vec = 0;
}

/* --- embedding ---------------------------------------------------------------- */

/* The embedder finished later (on the loop). */
static void embed_done(sg_embed_req_t *er, int status)
{
	sg_req_t *req = er->data;
	sg_gateway_t *gw = sg__req_gateway(req);

	if (status == 0) {
		req->call->cache.have_vec = 1;
	} else if (status == SG_ETIMEDOUT || status == SG_EFULL) {
		sg_stats_embed_skip(gw->stats);
		sg_log_debug("%s: embedder busy (%s): no semantic lookup", req->id, sg_strerror(status));
	} else {
		embed_failed(req, sg_strerror(status));
	}
	after_embed(req);
}

/* Embed the prompt: in line (local, static), or later (model, openai). A busy
 * embedder (full queue) means no semantic lookup, never a failed request. */
static void embed(sg_req_t *req)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_reqcache_t *rc = &req->call->cache;
	int err;

	if (rc->vec == NULL)
		rc->vec = malloc(sizeof(float) * (size_t)sg_embed_dim(gw->embedder));
	if (rc->vec == NULL) {
		embed_failed(req, "out of memory");
		return after_embed(req);
	}
	rc->embed.data = req;
	rc->embed.out = rc->vec;
	rc->embed.cb = embed_done;
	err = sg_embed_start(gw->embedder, &rc->embed, rc->key.prompt.data, rc->key.prompt.len);
	if (err == SG_EMBED_PENDING)
		return; /* continues in embed_done */
	if (err == 0) {
		rc->have_vec = 1;
	} else if (err == SG_EFULL) {
		sg_stats_embed_skip(gw->stats);
		sg_log_debug("%s: embedder queue full: no semantic lookup", req->id);
	} else {
		embed_failed(req, sg_strerror(err));
	}
	after_embed(req);
}

/* The cache's first part, right after the auth step (the namespace is the
 * key's by then): the controls, the key and the exact lookup. An exact hit
 * waits in the call (rc->stash) while the limits and spend steps run, which
 * then know that the call takes no upstream tokens, no concurrency slot and
 * no budget (sg__call_stashed_hit); the cache step serves it. Everything else goes
 * on to the cache step, which looks for a semantic hit. */
static void probe_request(sg_req_t *req)
{
	const sg_call_t *call = req->call;
	const sg_model_t *model = call->model;
	int kind = call->kind == SG_CALL_CHAT ? SG_CACHE_CHAT : SG_CACHE_COMPLETIONS;
	sg_gateway_t *gw = sg__req_gateway(req);
	const sg_config_t *cfg = req->gen->cfg;
	sg_reqcache_t *rc = &req->call->cache;
	const char *problem;
	int err;

	rc_set_state(rc, SG_RC_OFF); /* a new call */
	rc->semantic = 0;
	rc->kind = kind;
	rc->no_store = 0;
	rc->have_vec = 0;
	rc->storable = 1;
	rc->threshold = model->cache_threshold >= 0 ? model->cache_threshold : cfg->cache.threshold;
	rc->include_usage = json_is_true(json_object_get(json_object_get(call->root, "stream_options"),
	                                                 "include_usage"));
	if (gw->cache == NULL || !model->cache_enabled)
		return sg__call_next(req);
	problem = parse_controls(req, cfg, &rc->no_cache, &rc->threshold);
	if (problem) {
		sg__call_end(req, 0);
		sg__respond_error(req, SG_CE_INVALID_CACHE_CONTROL, "%s", problem);
		return;
	}
	if (rc->key.prompt.max == 0)
		sg_cache_key_init(&rc->key);
	sg_cache_key_opts_t ko = {
		(enum sg_cache_embed_mode)cfg->cache.embed_mode,
		(int)cfg->cache.embed_turns, cfg->cache.max_temperature,
		sg_cache_hash_key(gw->cache)};
	err = sg_cache_key_build(&rc->key, call->root, (enum sg_cache_kind)kind, ns_of(req), model->name,
	                         &ko);
	if (gw->test_id_bits < 64) {
		/* SEMGATE_TEST_SCOPE_ID_BITS: ids that collide at will, for the test
		 * that no collision becomes a cross-scope hit */
		uint64_t mask = gw->test_id_bits ? (1ULL << gw->test_id_bits) - 1 : 0;
		rc->key.scope_hash &= mask;
		rc->key.exact_hash &= mask;
	}
	if (err == SG_ENOMEM) {
		sg__call_end(req, 0);
		sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
		return;
	}
	if (rc->key.bypass) { /* (counted by the cache step: a call refused before is none) */
		rc_set_state(rc, SG_RC_BYPASS);
		sg_log_debug("%s: cache bypass: %s", req->id, rc->key.bypass);
		return sg__call_next(req);
	}

	rc->t0 = sg_now_us();
	if (!rc->no_cache && sg_cache_lookup_exact(gw->cache, &rc->key, now_s(), &rc->stash) == 0) {
		rc->found_us = sg_now_us();
		sg_stats_lookup_us(gw->stats, rc->found_us - rc->t0);
		rc_set_state(rc, SG_RC_HIT_EXACT);
		rc->stashed = 1;
	} else {
		rc->semantic = 1;
	}
	sg__call_next(req);
}

/* An exact hit the probe found and nobody served: let go of it (the call
 * was refused after the probe, or its client left). */
static void drop_stash(sg_req_t *req)
{
	sg_reqcache_t *rc = &req->call->cache;
	if (!rc->stashed)
		return;
	rc->stashed = 0;
	sg_cache_hit_free(&rc->stash);
}

static void probe_end(sg_req_t *req, int ok)
{
	(void)ok;
	drop_stash(req);
}

static void cache_request(sg_req_t *req)
{
	sg_reqcache_t *rc = &req->call->cache;

	if (rc->stashed) { /* the probe's exact hit, admitted by the limits and spend steps */
		rc->stashed = 0;
		serve_hit(req, &rc->stash, req->call->stream, rc->found_us);
		sg_cache_hit_free(&rc->stash);
		return;
	}
	if (rc->state == SG_RC_BYPASS)
		sg_stats_count(sg__req_gateway(req)->stats, req->call->model->name, ns_of(req),
		               SG_STAT_BYPASS, 0, 0, 0);
	if (!rc->semantic)
		return forward(req); /* no cache for this call, or a bypass */
	rc->t0 = sg_now_us(); /* (the semantic lookup's time from here: the steps between
	                       * may have waited, e.g. for a shared counter backend) */
	embed(req);
}

static void cache_abort(sg_req_t *req)
{
	sg_reqcache_t *rc = &req->call->cache;
	if (rc->searching) {
		/* The worker may be running: its completion drops the hold. */
		rc->search_abandoned = 1;
		uv_cancel((uv_req_t *)&rc->search);
	}
	if (rc->embed.impl)
		sg_embed_cancel(sg__req_gateway(req)->embedder, &rc->embed);
}

/* X-Semgate-Cache on what the upstream answered. */
static void cache_head(sg_req_t *req, int status, int stream, sg__fbuf_t *o)
{
	const sg_reqcache_t *rc = &req->call->cache;
	if (rc->state == SG_RC_OFF)
		return;
	sg__fbuf_str(o, "X-Semgate-Cache: ");
	sg__fbuf_str(o, state_names[rc->state]);
	sg__fbuf_mem(o, "\r\n", 2);
}

static int wants_store(const sg_reqcache_t *rc)
{
	return (rc->state == SG_RC_MISS || rc->state == SG_RC_REFRESH) && !rc->no_store;
}

static uint64_t store(sg_req_t *req, const char *body, size_t len, long pt, long ct)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_reqcache_t *rc = &req->call->cache;
	uint64_t id = 0;

	int err = sg_cache_store(gw->cache, &rc->key, rc->have_vec ? rc->vec : NULL, ns_of(req),
	                         req->call->model->name, (sg_iovec_t){body, len},
	                         (uint32_t)(pt > 0 ? pt : 0), (uint32_t)(ct > 0 ? ct : 0), now_s(),
	                         rc->ttl_s, &id);
	if (err) {
		/* Every miss can fail the same way (a full store): one line per few. */
		sg_log_limited(&gw->store_log, SG_LOG_WARN, "%s: could not store the reply in the cache: %s%s",
		               req->id, sg_strerror(err),
		               err == SG_EFULL ? " (the store is at cache.map_size_mb: requests are "
		                                 "still served, nothing new is cached)" : "");
		return 0;
	}
	return id;
}

/* Whether a 2xx body is a chat completion (or text completion) that can be
 * replayed: every choice an object with a message object whose content is
 * text or null (or that has tool calls) / with a text. */
static int is_answer(const char *body, size_t len, int kind)
{
	json_t *root = sg_json_load(body, len, NULL);
	json_t *choices = json_object_get(root, "choices"), *ch;
	size_t i;
	int ok = json_is_object(root) && json_object_get(root, "error") == NULL &&
	         json_is_array(choices) && json_array_size(choices) > 0;
	json_array_foreach(choices, i, ch) {
		if (!ok)
			break;
		if (!json_is_object(ch)) {
			ok = 0;
		} else if (kind == SG_CACHE_CHAT) {
			json_t *m = json_object_get(ch, "message"), *c = json_object_get(m, "content");
			ok = json_is_object(m) && (json_is_string(c) || json_is_null(c) ||
			                           json_is_array(json_object_get(m, "tool_calls")));
		} else {
			ok = json_is_string(json_object_get(ch, "text"));
		}
	}
	json_decref(root);
	return ok;
}

/* A complete buffered reply: stored when the request wants that, the status
 * is 200 (only a 200 can be an answer worth keeping) and the body is a chat
 * or text completion (an object without `error`, every choice a message or a
 * text); X-Semgate-Cache-Id names the new entry. */
static int cache_reply(sg_req_t *req, int status, const char *body, size_t len, sg__fbuf_t *o,
                       sg_buf_t *out)
{
	if (!wants_store(&req->call->cache) || status != 200 ||
	    !is_answer(body, len, req->call->cache.kind))
		return 0; /* not an answer to replay */
	uint64_t id = store(req, body, len, (long)req->call->usage.prompt,
	                    (long)req->call->usage.completion);
	if (id) {
		sg__fbuf_str(o, "X-Semgate-Cache-Id: ");
		sg__fbuf_u64(o, id);
		sg__fbuf_mem(o, "\r\n", 2);
	}
	return 0; /* observed, not changed */
}

/* One SSE data line of a streamed reply, folded into the reassembly. */
static void fold_event(sg_reqcache_t *rc, const char *p, size_t n)
{
	json_t *ev, *ch, *delta, *v;

	if (n == 6 && memcmp(p, "[DONE]", 6) == 0)
		return;
	ev = sg_json_load(p, n, NULL);
	if (!json_is_object(ev)) {
		rc->storable = 0;
		json_decref(ev);
		return;
	}
	if (rc->id[0] == '\0' && json_is_string(json_object_get(ev, "id")))
		snprintf(rc->id, sizeof(rc->id), "%s", json_string_value(json_object_get(ev, "id")));
	if (rc->smodel[0] == '\0' && json_is_string(json_object_get(ev, "model")))
		snprintf(rc->smodel, sizeof(rc->smodel), "%s", json_string_value(json_object_get(ev, "model")));
	if (json_is_integer(json_object_get(ev, "created")))
		rc->created = (int64_t)json_integer_value(json_object_get(ev, "created"));
	if (json_object_get(ev, "error"))
		rc->storable = 0;
	ch = json_array_get(json_object_get(ev, "choices"), 0);
	if (ch) {
		if (json_integer_value(json_object_get(ch, "index")) != 0)
			rc->storable = 0; /* several choices: not reassembled */
		delta = rc->kind == SG_CACHE_CHAT ? json_object_get(ch, "delta") : ch;
		v = json_object_get(delta, rc->kind == SG_CACHE_CHAT ? "content" : "text");
		if (json_is_string(v) && sg_buf_append(&rc->text, json_string_value(v), json_string_length(v)))
			rc->storable = 0;
		if (json_object_get(delta, "tool_calls") || json_object_get(delta, "function_call"))
			rc->storable = 0; /* tool calls are not reassembled: not stored */
		v = json_object_get(ch, "finish_reason");
		if (json_is_string(v))
			snprintf(rc->finish_reason, sizeof(rc->finish_reason), "%s", json_string_value(v));
	}
	json_decref(ev);
}

/* One event of a stream relayed to the client, for reassembly (data NULL:
 * one was dropped, so what is reassembled is incomplete). */
static int cache_event(sg_req_t *req, const char *data, size_t n, sg_buf_t *out)
{
	sg_reqcache_t *rc = &req->call->cache;

	if (data == NULL)
		rc->storable = 0;
	if (!wants_store(rc) || !rc->storable)
		return 0;
	if (rc->text.max != 16u << 20)
		sg_buf_init(&rc->text, 16u << 20);
	fold_event(rc, data, n);
	return 0; /* observed, not changed */
}

/* The answer ended: a stream that completed (ok: its own [DONE], status
 * 200) is stored; the call's usage has what the stream reported (prompt -1:
 * it carried none). A buffered reply was stored by cache_reply(). */
static void cache_end(sg_req_t *req, int ok)
{
	sg_reqcache_t *rc = &req->call->cache;
	const sg_usage_t *usage = &req->call->usage;
	if (!req->call->streamed)
		return;
	long prompt_tokens = (long)usage->prompt, completion_tokens = (long)usage->completion;

	/* Only an answer that ended as it should: its own [DONE] event and a
	 * finish reason (a stream cut off upstream has neither, whatever bytes
	 * its content held). */
	if (!ok || !wants_store(rc) || !rc->storable || rc->text.len == 0 ||
	    rc->finish_reason[0] == '\0')
		return;
	int chat = rc->kind == SG_CACHE_CHAT;
	json_t *choice = chat ? json_pack("{s:i,s:{s:s,s:s%},s:s}", "index", 0, "message", "role",
	                                  "assistant", "content", rc->text.data, rc->text.len,
	                                  "finish_reason", rc->finish_reason)
	                      : json_pack("{s:i,s:s%,s:n,s:s}", "index", 0, "text", rc->text.data,
	                                  rc->text.len, "logprobs", "finish_reason",
	                                  rc->finish_reason);
	if (prompt_tokens < 0) {
		/* The stream carried no usage (the client did not ask for it): store an
		 * estimate, about four bytes a token, so that hits still count savings
		 * and replays can report usage. */
		prompt_tokens = (long)(rc->key.prompt.len + 3) / 4;
		completion_tokens = (long)(rc->text.len + 3) / 4;
	}
	json_t *u = json_pack("{s:i,s:i,s:i}", "prompt_tokens", (int)prompt_tokens,
	                          "completion_tokens", (int)completion_tokens, "total_tokens",
	                          (int)(prompt_tokens + completion_tokens));
	sg_buf_t body;
	sg_buf_init(&body, 0);
	/* the one completion writer (lib/openai_wire.c) */
	if (choice && u &&
	    sg__completion_object(&body, rc->id[0] ? rc->id : "semgate",
	                          chat ? "chat.completion" : "text_completion", rc->created,
	                          rc->smodel, json_pack("[o]", choice), u) == 0)
		store(req, body.data, body.len, prompt_tokens, completion_tokens);
	else if (!(choice && u)) {
		json_decref(choice);
		json_decref(u);
	}
	sg_buf_free(&body);
}

void sg__cache_req_free(sg_req_t *req)
{
	sg_reqcache_t *rc = &req->call->cache;
	drop_stash(req);
	if (rc->embed.impl) /* the connection goes: nothing may call back */
		sg_embed_cancel(sg__req_gateway(req)->embedder, &rc->embed);
	if (rc->key.prompt.max)
		sg_cache_key_free(&rc->key);
	free(rc->vec);
	sg_buf_free(&rc->text);
}

const sg_step_t sg__step_cache_probe = {
	.name = "cache probe",
	.request = probe_request,
	.end = probe_end,
	.abort = drop_stash,
};

const sg_step_t sg__step_cache = {
	.name = "cache",
	.request = cache_request,
	.head = cache_head,
	.reply = cache_reply,
	.event = cache_event,
	.end = cache_end,
	.abort = cache_abort,
};
