/* Forwarding: choose a deployment (router.c), translate for its provider
 * (provider_*.c), send it with libcurl, relay or buffer the reply, and on a
 * failure that another attempt can fix, try again: another deployment of the
 * group first, then the group's fallback models, then, after a backoff with
 * jitter (or the upstream's Retry-After), the whole chain again, within the
 * model's attempt count and time budget. A streamed reply is retried only
 * until its first byte reached the client.
 *
 * Every path ends in exactly one response. Once it is out the connection may
 * already be handling the next pipelined request through this same req, so
 * nothing touches req or px after responding.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "semgate/json_scan.h"
#include "semgate/log.h"
#include "semgate/sse.h"
#include "fbuf_int.h"
#include "fsm.h"
#include "openai_wire.h"
#include "server_int.h"


/* What an attempt allocates for its transfer. */
/* The attempt's provider translates (Anthropic, Gemini), rather than relaying
 * OpenAI's wire format as it is (OpenAI, Azure). */
static int translating(const sg_proxy_t *px)
{
	return px->prov != NULL && !px->prov->passthrough;
}

/* An attempt: none -> waiting (transfer started) -> streaming <-> pausing ->
 * paused -> streaming ...; any -> none when it ends, fails or is canceled. */
static const char *const at_state_names[SG_AT__LAST] = {"none", "waiting", "streaming",
                                                        "pausing", "paused"};
static const uint32_t at_next[SG_AT__LAST] = {
	[SG_AT_NONE] = SG_FSM_TO(SG_AT_NONE) | SG_FSM_TO(SG_AT_WAITING),
	[SG_AT_WAITING] = SG_FSM_TO(SG_AT_NONE) | SG_FSM_TO(SG_AT_STREAMING),
	[SG_AT_STREAMING] = SG_FSM_TO(SG_AT_NONE) | SG_FSM_TO(SG_AT_PAUSING),
	[SG_AT_PAUSING] = SG_FSM_TO(SG_AT_NONE) | SG_FSM_TO(SG_AT_PAUSED) |
	                  SG_FSM_TO(SG_AT_STREAMING),
	[SG_AT_PAUSED] = SG_FSM_TO(SG_AT_NONE) | SG_FSM_TO(SG_AT_STREAMING),
};
static const sg_fsm_t at_fsm = {"upstream attempt", at_state_names, at_next, SG_AT__LAST};

static void at_set_state(sg_proxy_t *px, enum sg_attempt_state s)
{
	sg_fsm_move(&at_fsm, px, px->at, s);
	px->at = s;
}

/* The attempt relays a stream (paused or not). */
static int streaming(const sg_proxy_t *px)
{
	return px->at >= SG_AT_STREAMING;
}

static void attempt_free(sg_proxy_t *px)
{
	free(px->upstream_body);
	px->upstream_body = NULL;
	sg_upstream_headers_free(px->hdrs);
	px->hdrs = NULL;
	if (px->pstream)
		px->prov->stream_free(px->pstream);
	px->pstream = NULL;
}

/* The buffered reply no longer counts toward limits.max_held_bytes (it was
 * handed to the connection, which counts what it cannot send at once, or it
 * is being dropped). */
static void body_unhold(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;
	if (px->held) {
		sg__server_held(sg__req_server(req), -(long)px->held);
		px->held = 0;
	}
}

/* State of one attempt, cleared before the next. */
static void attempt_reset(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;
	body_unhold(req);
	attempt_free(px);
	px->xfer = NULL;
	at_set_state(px, SG_AT_NONE);
	px->status = 0;
	px->retry_after_s = -1;
	px->content_type[0] = '\0';
	px->saw_done = 0;
	px->stopped = 0;
	px->stream_usage = (sg_usage_t){-1, 0, 0, 0};
	sg_sse_reset(&px->sse);
	sg_buf_reset(&px->sse_out);
	sg_buf_reset(&px->body);
	sg_buf_reset(&px->out);
}

/* The request is over: drop what it holds. The body buffers stay valid (a
 * response may still be written from them); the next request resets them. */
/* A stream's buffers grow with its largest event (a hostile upstream can
 * send megabytes in one): a connection that goes back to idle keeps none
 * of that. */
#define KEEP_STREAM_BUF (64u << 10)

static void stream_bufs_trim(sg_proxy_t *px)
{
	if (px->sse.line.cap > KEEP_STREAM_BUF || px->sse.data.cap > KEEP_STREAM_BUF)
		sg_sse_free(&px->sse); /* caps stay: sg_buf_free keeps max */
	if (px->sse_out.cap > KEEP_STREAM_BUF)
		sg_buf_free(&px->sse_out);
	if (px->out.cap > KEEP_STREAM_BUF)
		sg_buf_free(&px->out);
}

static void proxy_release(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;
	body_unhold(req);
	attempt_free(px);
	stream_bufs_trim(px);
}

/* X-Semgate-Upstream/-Attempts/-Fallback, then the head callbacks of the
 * steps before this one (the cache's X-Semgate-Cache). */
static void upstream_headers(sg_req_t *req, int status, int stream, sg__fbuf_t *op, char *out,
                             size_t n)
{
	const sg_proxy_t *px = &req->call->proxy;
	sg__fbuf_t o;
	sg__fbuf_init(&o, out, n);
	sg__fbuf_str(&o, "X-Semgate-Upstream: ");
	sg__fbuf_str(&o, px->dep->id);
	sg__fbuf_str(&o, "\r\nX-Semgate-Attempts: ");
	sg__fbuf_u64(&o, (uint64_t)px->attempts);
	sg__fbuf_mem(&o, "\r\n", 2);
	if (px->fallback_used) {
		sg__fbuf_str(&o, "X-Semgate-Fallback: ");
		sg__fbuf_str(&o, px->model->name);
		sg__fbuf_mem(&o, "\r\n", 2);
	}
	sg__call_head(req, status, stream, &o);
	if (op)
		*op = o;
}

static int relay_flush(sg_req_t *req);

/* Append one event of data d (lines joined by '\n') as "data:" lines. */
static int put_event(sg_buf_t *o, const char *d, size_t n)
{
	for (;;) {
		const char *nl = memchr(d, '\n', n);
		size_t k = nl ? (size_t)(nl - d) : n;
		if (sg_buf_append(o, "data: ", 6) || sg_buf_append(o, d, k) ||
		    sg_buf_append(o, "\n", 1))
			return SG_ENOMEM;
		if (!nl)
			break;
		d += k + 1;
		n -= k + 1;
	}
	return sg_buf_append(o, "\n", 1) ? SG_ENOMEM : 0;
}

/* A reply's usage: the numbers in its top-level `usage` object (0 when
 * absent). Returns 1 when u is an object it read, else 0. */
static int read_usage(const sg_json_field_t *u, sg_usage_t *out)
{
	sg_json_field_t f[4] = {{"prompt_tokens", 0, {0}}, {"completion_tokens", 0, {0}},
				{"total_tokens", 0, {0}}, {"prompt_tokens_details", 0, {0}}};
	long long *v[3] = {&out->prompt, &out->completion, &out->total};

	memset(out, 0, sizeof(*out));
	if (!u->found || u->value.len == 0 || u->value.base[0] != '{' ||
	    sg_json_scan(u->value.base, u->value.len, f, 4) != 0)
		return 0;
	for (int i = 0; i < 3; i++)
		if (f[i].found && sg_json_integer(f[i].value, v[i]) != 0)
			*v[i] = 0;
	/* OpenAI's prompt cache: prompt_tokens_details.cached_tokens (priced apart) */
	sg_json_field_t d[1] = {{"cached_tokens", 0, {0}}};
	if (f[3].found && f[3].value.len && f[3].value.base[0] == '{' &&
	    sg_json_scan(f[3].value.base, f[3].value.len, d, 1) == 0 && d[0].found &&
	    (sg_json_integer(d[0].value, &out->cached) != 0 || out->cached < 0 ||
	     out->cached > out->prompt))
		out->cached = 0;
	return 1;
}

/* One event of the upstream's stream (OpenAI's format, as sent or as
 * translated): a JSON object is relayed and shown to the cache; [DONE] ends
 * the stream; anything else is dropped and counted, so that the client
 * always gets valid SSE. Events after [DONE] are ignored. */
static int on_event(void *ud, enum sg_sse_kind kind, const char *d, size_t n)
{
	sg_req_t *req = ud;
	sg_proxy_t *px = &req->call->proxy;

	if (px->saw_done || px->stopped)
		return 0;
	if (kind == SG_SSE_COMMENT) {
		/* keep-alives keep clients with read timeouts waiting: pass them on */
		if (sg_buf_append(&px->sse_out, ":", 1) || sg_buf_append(&px->sse_out, d, n) ||
		    sg_buf_append(&px->sse_out, "\n\n", 2))
			return SG_ENOMEM;
		return 0;
	}
	if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
		px->saw_done = 1;
		return sg_buf_append(&px->sse_out, "data: [DONE]\n\n", 14) ? SG_ENOMEM : 0;
	}
	/* The one place a stream's usage is read (the last `usage` object wins):
	 * for the router (tpm, the usage strategy) and the cache alike. */
	sg_json_field_t f[1] = {{"usage", 0, {0}}};
	sg_usage_t use;
	size_t i = 0;
	while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r'))
		i++;
	if (i == n || d[i] != '{' || sg_json_scan(d, n, f, 1) != 0) {
		sg_gateway_t *gw = sg__req_gateway(req);
		char shown[64];
		size_t k = 0;
		/* what the upstream sent, printable only: it goes into the log */
		for (; k < n && k < sizeof(shown) - 1; k++)
			shown[k] = d[k] >= 0x20 && d[k] < 0x7f ? d[k] : '?';
		shown[k] = '\0';
		gw->sse_events_dropped++;
		const char *dropped = NULL;
		size_t zero = 0;
		sg__call_event(req, &dropped, &zero);
		sg_log_limited(&gw->sse_log, SG_LOG_WARN, "upstream %s: dropped a stream event that "
		               "is not a JSON object (%zu bytes: %s)", px->dep->id, n, shown);
		return 0;
	}
	if (read_usage(&f[0], &use))
		px->stream_usage = use;
	if (sg__call_event(req, &d, &n) == SG_CALL_STOP) { /* the steps before may rewrite it */
		/* a step ends the stream (a budget crossed): its error event goes out
		 * last and the transfer stops here */
		px->stopped = 1;
		int rc = put_event(&px->sse_out, d, n);
		return rc ? rc : SG_ECANCELED;
	}
	return put_event(&px->sse_out, d, n);
}

/* Relay stream bytes (already in OpenAI's format) to the client, whole
 * events only. The bytes are always consumed; when the socket is backed up
 * the transfer pauses at its next delivery (curl re-delivers what a pausing
 * callback returns, so pausing here would send these bytes twice). */
static int relay(sg_req_t *req, const char *p, size_t n)
{
	sg_proxy_t *px = &req->call->proxy;

	if (n == 0)
		return 0;
	sg_buf_reset(&px->sse_out);
	int rc = sg_sse_feed(&px->sse, p, n, on_event, req);
	int wrc = relay_flush(req); /* the events before a failure are the client's */
	if (rc)
		return rc; /* an event beyond limits.max_response_bytes, or no memory */
	return wrc;
}

/* Write what on_event() prepared. */
static int relay_flush(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;
	if (px->sse_out.len == 0)
		return 0;
	long queued = sg__stream_write(req, px->sse_out.data, px->sse_out.len);
	sg_buf_reset(&px->sse_out);
	if (queued < 0)
		return SG_ECANCELED;
	if ((unsigned long)queued > SG_STREAM_HIGH_WATER && px->at == SG_AT_STREAMING)
		at_set_state(px, SG_AT_PAUSING);
	return 0;
}

static int on_headers(void *ud, long status, const char *ctype, long retry_after_s)
{
	sg_req_t *req = ud;
	sg_proxy_t *px = &req->call->proxy;
	char extra[768];
	sg__fbuf_t o;

	px->status = status;
	px->retry_after_s = retry_after_s;
	if (retry_after_s > px->round_retry_after_s)
		px->round_retry_after_s = retry_after_s;
	sg__fbuf_init(&o, px->content_type, sizeof(px->content_type));
	sg__fbuf_str(&o, ctype ? ctype : "");
	if (req->call->stream && status >= 200 && status < 300 && ctype &&
	    strncasecmp(ctype, "text/event-stream", 17) == 0) {
		if (translating(px)) {
			px->pstream = px->prov->stream_new(px->model->name);
			if (px->pstream == NULL)
				return SG_ENOMEM;
		}
		at_set_state(px, SG_AT_STREAMING);
		sg_sse_reset(&px->sse);
		upstream_headers(req, (int)status, 1, NULL, extra, sizeof(extra));
		strncat(extra, "Cache-Control: no-cache\r\n", sizeof(extra) - strlen(extra) - 1);
		sg__stream_begin(req, (int)status, "text/event-stream", extra);
	}
	return 0;
}

static int on_data(void *ud, const char *p, size_t n)
{
	sg_req_t *req = ud;
	sg_proxy_t *px = &req->call->proxy;

	if (!streaming(px)) {
		if (sg_buf_append(&px->body, p, n))
			return SG_ETOOBIG;
		px->held += n;
		sg__server_held(sg__req_server(req), (long)n);
		return 0;
	}
	if (px->at == SG_AT_PAUSING) {
		/* nothing of this delivery is consumed: curl hands it over again on resume */
		at_set_state(px, SG_AT_PAUSED);
		return SG_XFER_PAUSE;
	}
	if (px->pstream == NULL)
		return relay(req, p, n);
	sg_buf_reset(&px->out);
	int rc = px->prov->stream_feed(px->pstream, p, n, &px->out);
	int r2 = relay(req, px->out.data, px->out.len);
	return rc < 0 ? rc : r2;
}

static void respond_transport_error(sg_req_t *req, int err)
{
	const sg_proxy_t *px = &req->call->proxy;
	const sg_deployment_t *d = px->dep;
	const char *s = px->attempts == 1 ? "" : "s";
	char extra[768];

	upstream_headers(req, err == SG_ETIMEDOUT ? 504 : 502, 0, NULL, extra, sizeof(extra));
	sg__call_end(req, 0);
	switch (err) {
	case SG_ECONNECT:
		sg__respond_error_h(req, SG_CE_UPSTREAM_UNREACHABLE, extra,
		                    "could not connect to the upstream for model deployment %s "
		                    "(%d attempt%s)", d->id, px->attempts, s);
		break;
	case SG_ETIMEDOUT:
		sg__respond_error_h(req, SG_CE_UPSTREAM_TIMEOUT, extra,
		                    "the upstream did not answer within %ld ms (%d attempt%s)",
		                    d->timeout_ms, px->attempts, s);
		break;
	case SG_ETOOBIG:
		sg__respond_error_h(req, SG_CE_UPSTREAM_TOO_LARGE, extra,
		                    "the upstream reply exceeds %ld bytes",
		                    req->gen->cfg->limits.max_response_bytes);
		break;
	default:
		sg__respond_error_h(req, SG_CE_UPSTREAM_ERROR, extra,
		                    "the upstream transfer failed: %s (%d attempt%s)", sg_strerror(err),
		                    px->attempts, s);
		break;
	}
}

/* An upstream error reply, passed through (translated for other providers;
 * wrapped in OpenAI's shape when it is not JSON). */
static void respond_upstream_error(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;
	char extra[768];
	int status = (int)px->status;

	upstream_headers(req, status, 0, NULL, extra, sizeof(extra));
	sg__call_end(req, 0);
	if (translating(px)) {
		sg_buf_reset(&px->out);
		px->prov->error(px->body.data ? px->body.data : "", px->body.len, &status, &px->out);
		sg__respond(req, status, "application/json", px->out.data, px->out.len, extra);
		return;
	}
	json_t *root = px->body.len ? json_loadb(px->body.data, px->body.len, 0, NULL) : NULL;
	int has_error = json_is_object(root) && json_object_get(root, "error");
	json_decref(root);
	if (has_error) {
		sg__respond(req, status, "application/json", px->body.data, px->body.len, extra);
		return;
	}
	sg__respond_error_status(req, SG_CE_UPSTREAM_ERROR, status, extra,
	                    "the upstream answered %d: %.200s", status,
	                    px->body.len ? px->body.data : "(empty body)");
}

/* Out of attempts, time or deployments: answer with the last failure. */
static void give_up(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;

	proxy_release(req);
	if (px->dep == NULL) {
		sg__call_end(req, 0);
		sg__respond_error(req, SG_CE_NO_HEALTHY_UPSTREAM,
		                  "no deployment of model '%s' can take requests now (all cooling "
		                  "down after failures or at their rate limits)", req->call->model->name);
		return;
	}
	sg_log_warn("%s: giving up on model %s after %d attempt(s)", req->id, req->call->model->name,
	            px->attempts);
	if (px->last_err)
		respond_transport_error(req, px->last_err);
	else
		respond_upstream_error(req);
}

/* A status that another attempt (elsewhere, or later) can fix. */
static int retryable(long status)
{
	return status == 408 || status == 429 || status == 401 || status == 403 || status >= 500;
}

static int context_window_error(const sg_proxy_t *px)
{
	static const char *const marks[] = {"context_length_exceeded", "maximum context length",
	                                    "prompt is too long", "context window"};
	if (px->status != 400 || px->body.len == 0)
		return 0;
	for (size_t i = 0; i < SG_ARRAY_SIZE(marks); i++)
		if (memmem(px->body.data, px->body.len, marks[i], strlen(marks[i])))
			return 1;
	return 0;
}

static const sg_model_t *next_fallback(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;
	const sg_config_t *cfg = req->gen->cfg;
	char **names = px->using_ctx ? req->call->model->context_fallbacks : req->call->model->fallbacks;
	size_t n = px->using_ctx ? req->call->model->ncontext_fallbacks : req->call->model->nfallbacks;

	while (px->fallback_next < n) {
		const char *name = names[px->fallback_next++];
		const sg_model_t *m = sg_config_find_model(cfg, name, strlen(name));
		if (m)
			return m;
	}
	return NULL;
}

static const sg_xfer_cbs_t proxy_cbs;

sg_upstream_headers_t *sg__json_headers(const char *auth, const char *const *extra, size_t n)
{
	const char *lines[SG_MAX_DEPLOYMENT_HEADERS + 3];
	size_t k = 0;

	lines[k++] = "Content-Type: application/json";
	lines[k++] = "Expect:"; /* never wait for 100-continue upstream */
	if (auth)
		lines[k++] = auth;
	for (size_t i = 0; i < n && k < SG_ARRAY_SIZE(lines); i++)
		lines[k++] = extra[i];
	return sg_upstream_headers_new(lines, k);
}

/* Build this attempt's body, URL and headers for dep. Returns 0, SG_EINVAL
 * (a request the provider cannot express; why in err) or SG_ENOMEM. */
static int prepare(sg_req_t *req, const sg_deployment_t *dep, sg_xfer_req_t *xr, char *err,
                   size_t errlen)
{
	sg_proxy_t *px = &req->call->proxy;
	json_t *root = req->call->root;
	const char *asked = json_string_value(json_object_get(root, "model"));

	sg_provider_deployment_t pd = {dep->base_url, dep->model, dep->api_key, dep->api_version};

	px->prov = dep->prov;
	xr->connect_timeout_ms = dep->connect_timeout_ms;
	xr->timeout_ms = dep->timeout_ms;
	if (!px->prov->passthrough) {
		sg_provider_target_t target;
		const char *extra[SG_ARRAY_SIZE(target.headers)];
		sg_buf_t body;

		memset(&target, 0, sizeof(target));
		sg_buf_init(&body, 0);
		int rc = px->prov->request(root, &pd, req->call->stream, &body, &target, err, errlen);
		if (rc) {
			sg_buf_free(&body);
			return rc;
		}
		snprintf(px->url, sizeof(px->url), "%s", target.url);
		for (int i = 0; i < target.nheaders; i++)
			extra[i] = target.headers[i];
		px->hdrs = sg__json_headers(NULL, extra, (size_t)target.nheaders);
		px->upstream_body = sg_buf_steal(&body, &px->upstream_body_len);
		if (px->hdrs == NULL || px->upstream_body == NULL)
			return SG_ENOMEM;
		xr->url = px->url;
		xr->headers = px->hdrs;
		xr->body = px->upstream_body;
		xr->body_len = px->upstream_body_len;
		return 0;
	}
	px->prov->url(&pd, req->call->path, px->url, sizeof(px->url));
	xr->url = px->url;
	xr->headers = req->gen->dep_headers[dep->seq];
	xr->body = req->body.data;
	xr->body_len = req->body.len;
	if (asked == NULL || strcmp(asked, dep->model) != 0) {
		/* The upstream knows the model by its own name. */
		json_t *copy = json_copy(root);
		if (copy)
			json_object_set_new(copy, "model", json_string(dep->model));
		px->upstream_body = copy ? json_dumps(copy, JSON_COMPACT) : NULL;
		json_decref(copy);
		if (px->upstream_body == NULL)
			return SG_ENOMEM;
		xr->body = px->upstream_body;
		xr->body_len = strlen(px->upstream_body);
	}
	return 0;
}

/* Start the next attempt, wait before it, or give up. */
static void attempt(sg_req_t *req)
{
	sg_server_t *srv = sg__req_server(req);
	sg_proxy_t *px = &req->call->proxy;
	const sg_model_t *origin = req->call->model;
	const sg_deployment_t *dep;
	sg_xfer_req_t xr;
	uint64_t now;

	for (;;) {
		now = sg_now_us();
		if (px->attempts >= origin->max_attempts ||
		    (px->attempts > 0 && now - px->start_us >= (uint64_t)origin->budget_ms * 1000u))
			return give_up(req);
		dep = sg_router_pick(req->gen->router, px->model, px->tried, now);
		if (dep)
			break;
		const sg_model_t *next = next_fallback(req);
		if (next) {
			px->model = next;
			px->fallback_used = 1;
			continue;
		}
		/* The whole chain was tried (or nothing in it is usable now). */
		if (!px->had_attempt_this_round)
			return give_up(req);
		long elapsed_ms = (long)((now - px->start_us) / 1000u);
		long remaining_ms = origin->budget_ms - elapsed_ms;
		long delay = origin->backoff_ms << SG_MIN(px->rounds, 16);
		delay = SG_MIN(delay, origin->max_backoff_ms);
		delay = delay / 2 + (long)(sg_now_us() % (uint64_t)(delay / 2 + 1)); /* jitter */
		/* Retry-After in seconds, compared before any multiplication: a huge
		 * value must end the request, not overflow into a short wait. */
		if (px->round_retry_after_s > 0) {
			if (px->round_retry_after_s >= remaining_ms / 1000 + 1)
				return give_up(req);
			delay = SG_MAX(delay, px->round_retry_after_s * 1000);
		}
		if (delay >= remaining_ms)
			return give_up(req);
		px->rounds++;
		px->had_attempt_this_round = 0;
		px->round_retry_after_s = -1;
		px->fallback_next = 0;
		px->fallback_used = 0;
		memset(px->tried, 0, px->ntried);
		/* Start over where this request belongs: after a context-window error
		 * that is the context-fallback chain, not the model that refused it. */
		px->model = origin;
		if (px->using_ctx) {
			const sg_model_t *m = next_fallback(req);
			if (m == NULL)
				return give_up(req);
			px->model = m;
			px->fallback_used = 1;
		}
		sg__req_retry_after(req, (uint64_t)delay);
		return;
	}
	attempt_reset(req);
	px->dep = dep;
	px->tried[dep->seq] = 1;
	px->had_attempt_this_round = 1;
	px->attempts++;
	px->attempt_us = now;
	char why[256] = "";
	int prc = prepare(req, dep, &xr, why, sizeof(why));
	if (prc) {
		proxy_release(req);
		sg__call_end(req, 0);
		if (prc == SG_ENOMEM)
			sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
		else
			sg__respond_error(req, SG_CE_UNSUPPORTED_FOR_PROVIDER,
			                  "%s: %s", dep->provider, why[0] ? why : "request not supported");
		return;
	}
	sg_router_begin(req->gen->router, dep, now);
	at_set_state(px, SG_AT_WAITING);
	int rc = sg_xfer_start(sg__req_gateway(req)->upstream, &xr, &proxy_cbs, req, &px->xfer);
	if (rc) {
		at_set_state(px, SG_AT_NONE);
		sg_router_end(req->gen->router, dep, SG_ATTEMPT_CANCELED, 0, 0, now);
		proxy_release(req);
		sg__call_end(req, 0);
		sg__respond_error(req, SG_CE_OVERLOADED,
		                  "cannot start the upstream transfer: %s", sg_strerror(rc));
		return;
	}
	sg__server_kick(srv);
}

void sg__proxy_retry(sg_req_t *req)
{
	attempt(req);
}

/* The end of a streamed reply: a clean end only if the upstream's own
 * terminator came through as an event of its own; anything else is
 * reported in-band. */
static void finish_stream(sg_req_t *req, int err, uint64_t now)
{
	sg_proxy_t *px = &req->call->proxy;

	if (err == 0 && px->pstream) {
		sg_buf_reset(&px->out);
		if (px->prov->stream_end(px->pstream, &px->out) == 0)
			relay(req, px->out.data, px->out.len);
	}
	if (err == 0 && !px->saw_done) {
		/* "data: [DONE]\n" without its blank line, at the very end */
		sg_buf_reset(&px->sse_out);
		sg_sse_finish(&px->sse, on_event, req);
		relay_flush(req);
	}
	/* Every event is in: the stream's tokens count toward the deployment's
	 * tpm as a buffered reply's do (deliver()). */
	sg_router_end(req->gen->router, px->dep, err ? SG_ATTEMPT_FAILED : SG_ATTEMPT_OK,
	              now - px->attempt_us,
	              px->stream_usage.total > 0 ? (uint64_t)px->stream_usage.total : 0, now);
	req->call->usage = px->stream_usage;
	if (err == 0 && px->saw_done) {
		sg__call_end(req, px->status == 200);
		proxy_release(req);
		sg__stream_end(req);
		return;
	}
	sg__call_end(req, 0);
	if (px->stopped) { /* a step ended it: its error event is already out */
		proxy_release(req);
		sg__stream_end(req);
		return;
	}
	const char *why = err ? sg_strerror(err) : "the upstream closed the stream before its end";
	sg_log_warn("upstream %s: stream interrupted: %s", px->dep->id, why);
	/* The client has whole events only: the error event needs no separator. */
	char msg[256];
	sg_buf_t ev;
	snprintf(msg, sizeof(msg), "upstream stream interrupted: %s", why);
	sg_buf_init(&ev, 0);
	int rc = sg__chunk_error(&ev, msg, "upstream_error", "upstream_stream_interrupted");
	proxy_release(req);
	if (rc == 0)
		sg__stream_write(req, ev.data, ev.len);
	sg_buf_free(&ev);
	sg__stream_end(req);
}

/* A complete 2xx reply: check (translate), account, store in the cache, answer. */
static void deliver(sg_req_t *req, uint64_t now)
{
	sg_proxy_t *px = &req->call->proxy;
	sg_router_t *router = req->gen->router;
	char extra[768];
	const char *body = px->body.data;
	size_t len = px->body.len;

	if (translating(px)) {
		sg_buf_reset(&px->out);
		if (px->prov->response(body ? body : "", len, px->model->name, &px->out) != 0) {
			sg_router_end(router, px->dep, SG_ATTEMPT_OK, now - px->attempt_us, 0, now);
			sg_log_warn("upstream %s: a %s reply semgate cannot read", px->dep->id,
			            px->dep->provider);
			proxy_release(req);
			sg__call_end(req, 0);
			sg__respond_error(req, SG_CE_UPSTREAM_INVALID_RESPONSE,
			                  "the upstream's reply is not a valid %s response",
			                  req->call->proxy.dep->provider);
			return;
		}
		body = px->out.data;
		len = px->out.len;
	}
	/*
	 * One scan serves the check, the token count (tpm) and the cache; no tree
	 * is built (a jansson parse of the reply cost more than the rest of the
	 * request: see semgate/json_scan.h).
	 */
	sg_json_field_t f[1] = {{"usage", 0, {0}}};
	size_t i = 0;
	while (body && i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' ||
	                           body[i] == '\n'))
		i++;
	/* every OpenAI reply is an object: an array is not an answer either */
	int valid = body != NULL && i < len && body[i] == '{' && sg_json_scan(body, len, f, 1) == 0;
	sg_usage_t use = {0, 0, 0, 0};
	if (valid) /* a failed scan may have filled fields: count nothing from it */
		read_usage(&f[0], &use);
	sg_router_end(router, px->dep, SG_ATTEMPT_OK, now - px->attempt_us,
		      use.total > 0 ? (uint64_t)use.total : 0, now);
	if (!valid) {
		sg_log_warn("upstream %s: status %ld with a body that is not a JSON object",
		            px->dep->id, px->status);
		long status = px->status;
		proxy_release(req);
		sg__call_end(req, 0);
		sg__respond_error(req, SG_CE_UPSTREAM_INVALID_RESPONSE,
		                  "the upstream answered %ld with a body that is not a JSON object",
		                  status);
		return;
	}
	int status = (int)px->status;
	sg__fbuf_t o;
	req->call->usage = use;
	upstream_headers(req, status, 0, &o, extra, sizeof(extra));
	/* the steps before see the reply (the cache stores it) and its end */
	sg__call_reply(req, status, &body, &len, &o); /* they may rewrite it */
	sg__call_end(req, 1);
	/* The reply goes to the connection as it is: held once, not twice (the
	 * buffer and a queued copy), and the connection keeps no buffer sized
	 * for its largest reply. */
	char *owned;
	if (body == px->body.data)
		owned = sg_buf_steal(&px->body, NULL);
	else if (body == px->out.data)
		owned = sg_buf_steal(&px->out, NULL);
	else if ((owned = malloc(len + 1)) != NULL) /* a step rewrote it */
		memcpy(owned, body, len);
	if (owned == NULL) {
		proxy_release(req);
		sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
		return;
	}
	proxy_release(req);
	sg__respond_owned(req, status, "application/json", owned, len, extra);
}

static void on_done(void *ud, int err)
{
	sg_req_t *req = ud;
	sg_proxy_t *px = &req->call->proxy;
	uint64_t now = sg_now_us();
	int failed = err != 0 || retryable(px->status);

	px->xfer = NULL;
	int was_streaming = streaming(px);
	at_set_state(px, SG_AT_NONE);
	if (was_streaming) {
		finish_stream(req, err, now);
		return;
	}
	if (!failed && px->status >= 200 && px->status < 300)
		return deliver(req, now);
	sg_router_end(req->gen->router, px->dep, failed ? SG_ATTEMPT_FAILED : SG_ATTEMPT_OK,
	              now - px->attempt_us, 0, now);

	if (err || retryable(px->status)) {
		px->last_err = err;
		if (err)
			sg_log_warn("upstream %s: attempt %d: %s", px->dep->id, px->attempts,
			            sg_strerror(err));
		else
			sg_log_warn("upstream %s: attempt %d: status %ld", px->dep->id, px->attempts,
			            px->status);
		if (err == SG_ETOOBIG) { /* another attempt would get the same reply */
			proxy_release(req);
			return respond_transport_error(req, err);
		}
		return attempt(req);
	}
	px->last_err = 0;
	if (context_window_error(px) && req->call->model->ncontext_fallbacks && !px->using_ctx) {
		px->using_ctx = 1;
		px->fallback_next = 0;
		const sg_model_t *next = next_fallback(req);
		if (next) {
			sg_log_info("%s: context window exceeded on %s: trying %s", req->id, px->dep->id,
			            next->name);
			px->model = next;
			px->fallback_used = 1;
			memset(px->tried, 0, px->ntried);
			return attempt(req);
		}
	}
	if (px->status >= 400 && px->status < 600) {
		proxy_release(req);
		respond_upstream_error(req);
		return;
	}
	proxy_release(req);
	sg__call_end(req, 0);
	sg__respond_error(req, SG_CE_UPSTREAM_INVALID_RESPONSE,
	                  "the upstream answered with unexpected status %ld", req->call->proxy.status);
}

static const sg_xfer_cbs_t proxy_cbs = {on_headers, on_data, on_done};

static void proxy_start(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;

	proxy_release(req);
	attempt_reset(req);
	if (px->body.max == 0) {
		sg_buf_init(&px->body, (size_t)req->gen->cfg->limits.max_response_bytes);
		sg_buf_init(&px->out, 0);
		sg_buf_init(&px->sse_out, 0);
		/* an event may be as large as a whole buffered reply */
		sg_sse_init(&px->sse, (size_t)req->gen->cfg->limits.max_response_bytes);
	}
	px->body.max = (size_t)req->gen->cfg->limits.max_response_bytes; /* a reload may change it */
	size_t ndeps = req->gen->ndeps ? req->gen->ndeps : 1; /* the generation's, which a reload changes */
	if (px->tried == NULL || px->ntried < ndeps) {
		uint8_t *t = realloc(px->tried, ndeps);
		if (t == NULL) {
			sg__call_end(req, 0);
			sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
			return;
		}
		px->tried = t;
		px->ntried = ndeps;
	}
	memset(px->tried, 0, px->ntried);
	px->model = req->call->model;
	px->dep = NULL;
	px->fallback_next = 0;
	px->using_ctx = 0;
	px->fallback_used = 0;
	px->attempts = 0;
	px->rounds = 0;
	px->round_retry_after_s = -1;
	px->had_attempt_this_round = 0;
	px->last_err = 0;
	px->start_us = sg_now_us();
	attempt(req);
}

void sg__proxy_abort(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;

	if (px->xfer) {
		sg_xfer_cancel(px->xfer);
		px->xfer = NULL; /* the pool hands the handle to the next transfer */
		at_set_state(px, SG_AT_NONE);
		uint64_t now = sg_now_us();
		sg_router_end(req->gen->router, px->dep, SG_ATTEMPT_CANCELED, now - px->attempt_us, 0, now);
	}
	proxy_release(req);
}

void sg__proxy_req_free(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;

	sg__proxy_abort(req);
	sg_buf_free(&px->body);
	sg_buf_free(&px->out);
	sg_buf_free(&px->sse_out);
	sg_sse_free(&px->sse);
	free(px->tried);
	px->tried = NULL;
	px->ntried = 0;
}

void sg__proxy_writable(sg_req_t *req)
{
	sg_proxy_t *px = &req->call->proxy;
	if (px->at == SG_AT_PAUSING) {
		at_set_state(px, SG_AT_STREAMING); /* drained before the next delivery */
	} else if (px->at == SG_AT_PAUSED && px->xfer) {
		at_set_state(px, SG_AT_STREAMING);
		sg_xfer_resume(px->xfer);
	}
}

/* The last step: forward the call upstream. */
static void upstream_request(sg_req_t *req)
{
	proxy_start(req);
}

const sg_step_t sg__step_upstream = {
	.name = "upstream",
	.request = upstream_request,
	.abort = sg__proxy_abort,
	.writable = sg__proxy_writable,
};
