/* Forwarding to the upstream deployment: one libcurl transfer per request,
 * relayed as it arrives when streaming, buffered and checked otherwise. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "semgate/log.h"
#include "server_int.h"

static void proxy_reset(sg_proxy_t *px)
{
	free(px->upstream_body);
	px->upstream_body = NULL;
	px->xfer = NULL;
	px->streaming = 0;
	px->paused = 0;
	px->status = 0;
	px->content_type[0] = '\0';
	px->saw_done = 0;
	px->tail_len = 0;
	sg_buf_reset(&px->body);
}

/* X-Semgate-Upstream and the cache's headers. */
static void upstream_header(const sg_req_t *req, char *out, size_t n)
{
	int k = snprintf(out, n, "X-Semgate-Upstream: %s\r\n", req->proxy.dep->id);
	if (k > 0 && (size_t)k < n)
		sg__cache_headers(req, out + k, n - (size_t)k);
}

/* Remember whether "data: [DONE]" has gone by, across read boundaries. */
static void scan_done(sg_proxy_t *px, const char *p, size_t n)
{
	static const char marker[] = "data: [DONE]";
	char joint[sizeof(px->tail) * 2];
	size_t head = SG_MIN(n, sizeof(px->tail));

	if (px->saw_done)
		return;
	memcpy(joint, px->tail, px->tail_len);
	memcpy(joint + px->tail_len, p, head);
	if (memmem(joint, px->tail_len + head, marker, sizeof(marker) - 1) ||
	    memmem(p, n, marker, sizeof(marker) - 1)) {
		px->saw_done = 1;
		return;
	}
	if (n >= sizeof(px->tail)) {
		memcpy(px->tail, p + n - sizeof(px->tail), sizeof(px->tail));
		px->tail_len = sizeof(px->tail);
	} else {
		size_t keep = SG_MIN(px->tail_len, sizeof(px->tail) - n);
		memmove(px->tail, px->tail + px->tail_len - keep, keep);
		memcpy(px->tail + keep, p, n);
		px->tail_len = keep + n;
	}
}

static int on_headers(void *ud, long status, const char *ctype)
{
	sg_req_t *req = ud;
	sg_proxy_t *px = &req->proxy;
	char extra[512];

	px->status = status;
	snprintf(px->content_type, sizeof(px->content_type), "%s", ctype ? ctype : "");
	if (px->want_stream && status == 200 && ctype &&
	    strncasecmp(ctype, "text/event-stream", 17) == 0) {
		px->streaming = 1;
		upstream_header(req, extra, sizeof(extra));
		strncat(extra, "Cache-Control: no-cache\r\n", sizeof(extra) - strlen(extra) - 1);
		sg__stream_begin(req, 200, "text/event-stream", extra);
	}
	return 0;
}

static int on_data(void *ud, const char *p, size_t n)
{
	sg_req_t *req = ud;
	sg_proxy_t *px = &req->proxy;

	if (!px->streaming)
		return sg_buf_append(&px->body, p, n) ? SG_ETOOBIG : 0;
	scan_done(px, p, n);
	sg__cache_stream_data(req, p, n);
	long queued = sg__stream_write(req, p, n);
	if (queued < 0)
		return SG_ECANCELED;
	if ((unsigned long)queued > SG_STREAM_HIGH_WATER) {
		px->paused = 1;
		return SG_XFER_PAUSE;
	}
	return 0;
}

static void fail_upstream(sg_req_t *req, int err)
{
	const sg_proxy_t *px = &req->proxy;
	const sg_deployment_t *d = px->dep;

	switch (err) {
	case SG_ECONNECT:
		sg_log_warn("upstream %s: cannot connect to %s", d->id, px->url);
		sg__respond_error(req, 502, "upstream_error", "upstream_unreachable",
		                  "could not connect to the upstream for model deployment %s", d->id);
		break;
	case SG_ETIMEDOUT:
		sg_log_warn("upstream %s: timed out (%s)", d->id, px->url);
		sg__respond_error(req, 504, "upstream_error", "upstream_timeout",
		                  "the upstream did not answer within %ld ms", d->timeout_ms);
		break;
	case SG_ETOOBIG:
		sg__respond_error(req, 502, "upstream_error", "upstream_response_too_large",
		                  "the upstream reply exceeds %ld bytes",
		                  sg__req_server(req)->cfg->limits.max_response_bytes);
		break;
	default:
		sg_log_warn("upstream %s: %s", d->id, sg_strerror(err));
		sg__respond_error(req, 502, "upstream_error", "upstream_error",
		                  "the upstream transfer failed: %s", sg_strerror(err));
		break;
	}
}

/* The end of a streamed reply: a clean end only if the upstream's own
 * terminator came through; anything else is reported in-band. */
static void finish_stream(sg_req_t *req, int err)
{
	sg_proxy_t *px = &req->proxy;
	char ev[512];

	if (err == 0 && px->saw_done) {
		sg__cache_stream_end(req, 1);
		sg__stream_end(req);
		return;
	}
	const char *why = err ? sg_strerror(err) : "the upstream closed the stream without [DONE]";
	int sep = px->tail_len >= 2 && px->tail[px->tail_len - 1] == '\n' &&
	          px->tail[px->tail_len - 2] == '\n';
	sg_log_warn("upstream %s: stream interrupted: %s", px->dep->id, why);
	int n = snprintf(ev, sizeof(ev),
	                 "%sdata: {\"error\":{\"message\":\"upstream stream interrupted: %s\","
	                 "\"type\":\"upstream_error\",\"code\":\"upstream_stream_interrupted\"}}\n\n",
	                 sep ? "" : "\n\n", why);
	sg__stream_write(req, ev, (size_t)n);
	sg__stream_end(req);
}

/* The transfer is over. Whatever answers the client comes last: once the
 * response is out, the connection may already be parsing and forwarding the
 * next pipelined request through this same req, so nothing here touches req
 * or px after it. */
static void on_done(void *ud, int err)
{
	sg_req_t *req = ud;
	sg_proxy_t *px = &req->proxy;
	char extra[512];
	json_t *root;

	px->xfer = NULL;
	free(px->upstream_body);
	px->upstream_body = NULL;
	if (px->streaming) {
		finish_stream(req, err);
		return;
	}
	if (err) {
		fail_upstream(req, err);
		return;
	}
	upstream_header(req, extra, sizeof(extra));
	root = px->body.len ? json_loadb(px->body.data, px->body.len, 0, NULL) : NULL;
	if (px->status >= 200 && px->status < 300) {
		if (root == NULL) {
			sg_log_warn("upstream %s: status %ld with a body that is not JSON", px->dep->id,
			            px->status);
			sg__respond_error(req, 502, "upstream_error", "upstream_invalid_response",
			                  "the upstream answered %ld with a body that is not JSON",
			                  px->status);
			return;
		}
		uint64_t id = sg__cache_store_reply(req, px->body.data, px->body.len, root);
		json_decref(root);
		if (id) {
			size_t k = strlen(extra);
			snprintf(extra + k, sizeof(extra) - k, "X-Semgate-Cache-Id: %llu\r\n",
			         (unsigned long long)id);
		}
		sg__respond(req, (int)px->status, "application/json", px->body.data, px->body.len,
		            extra);
		return;
	}
	int has_error = json_is_object(root) && json_object_get(root, "error");
	json_decref(root);
	if (px->status >= 400 && px->status < 600) {
		if (has_error) {
			sg__respond(req, (int)px->status, "application/json", px->body.data,
			            px->body.len, extra);
			return;
		}
		sg__respond_error(req, (int)px->status, "upstream_error", "upstream_error",
		                  "the upstream answered %ld: %.200s", px->status,
		                  px->body.len ? px->body.data : "(empty body)");
		return;
	}
	sg__respond_error(req, 502, "upstream_error", "upstream_invalid_response",
	                  "the upstream answered with unexpected status %ld", px->status);
}

static const sg_xfer_cbs_t proxy_cbs = {on_headers, on_data, on_done};

void sg__proxy(sg_req_t *req, const sg_model_t *model, void *rootp, const char *path, int stream)
{
	sg_server_t *srv = sg__req_server(req);
	sg_proxy_t *px = &req->proxy;
	json_t *root = rootp;
	sg_xfer_req_t xr;
	int rc;

	proxy_reset(px);
	if (px->body.max == 0 || px->body.data == NULL)
		sg_buf_init(&px->body, (size_t)srv->cfg->limits.max_response_bytes);
	px->dep = &model->deployments[0];
	px->want_stream = stream;
	if ((size_t)snprintf(px->url, sizeof(px->url), "%s%s", px->dep->base_url, path) >=
	    sizeof(px->url)) {
		sg__respond_error(req, 500, "server_error", "config_error", "upstream URL too long");
		return;
	}
	xr.url = px->url;
	xr.headers = srv->dep_headers[px->dep->seq];
	xr.connect_timeout_ms = px->dep->connect_timeout_ms;
	xr.timeout_ms = px->dep->timeout_ms;
	xr.body = req->body.data;
	xr.body_len = req->body.len;
	if (strcmp(json_string_value(json_object_get(root, "model")), px->dep->model) != 0) {
		json_object_set_new(root, "model", json_string(px->dep->model));
		px->upstream_body = json_dumps(root, JSON_COMPACT);
		if (px->upstream_body == NULL) {
			sg__respond_error(req, 503, "server_error", "overloaded", "out of memory");
			return;
		}
		xr.body = px->upstream_body;
		xr.body_len = strlen(px->upstream_body);
	}
	rc = sg_xfer_start(srv->upstream, &xr, &proxy_cbs, req, &px->xfer);
	sg__server_kick(srv);
	if (rc) {
		proxy_reset(px);
		sg__respond_error(req, 503, "server_error", "overloaded",
		                  "cannot start the upstream transfer: %s", sg_strerror(rc));
	}
}

void sg__proxy_abort(sg_req_t *req)
{
	sg_proxy_t *px = &req->proxy;
	if (px->xfer)
		sg_xfer_cancel(px->xfer);
	proxy_reset(px);
}

void sg__proxy_writable(sg_req_t *req)
{
	sg_proxy_t *px = &req->proxy;
	if (px->paused && px->xfer) {
		px->paused = 0;
		sg_xfer_resume(px->xfer);
	}
}
