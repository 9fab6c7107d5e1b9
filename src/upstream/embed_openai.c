/* The `openai` embedder: an OpenAI-compatible /embeddings endpoint, one
 * transfer on the loop per prompt (include/semgate/embed.h's interface). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "semgate/buf.h"
#include "semgate/config.h"
#include "semgate/embed.h"
#include "semgate/upstream.h"
#include "server_int.h"

typedef struct openai_embedder {
	sg_embedder_t base;
	sg_upstream_t *upstream;   /* borrowed */
	const sg_embedder_config_t *cfg; /* borrowed */
	char url[1024];            /* base_url + "/embeddings" */
	sg_upstream_headers_t *headers;
	sg_embed_stats_t st;
} openai_embedder_t;

/* One prompt's transfer (req->impl). */
typedef struct call {
	openai_embedder_t *oe;
	sg_embed_req_t *req;
	sg_xfer_t *xfer;
	char *body;                /* the request body */
	sg_buf_t reply;
	long status;
} call_t;

static void call_free(call_t *c)
{
	free(c->body);
	sg_buf_free(&c->reply);
	free(c);
}

static int on_headers(void *ud, long status, const char *ctype, long retry_after_s)
{
	((call_t *)ud)->status = status;
	return 0;
}

static int on_data(void *ud, const char *p, size_t n)
{
	return sg_buf_append(&((call_t *)ud)->reply, p, n) ? SG_ETOOBIG : 0;
}

/* {"data":[{"embedding":[...]}]} into out, normalised; NULL or why not. */
static const char *parse(const sg_buf_t *b, int dim, float *out)
{
	json_t *root = json_loadb(b->data ? b->data : "", b->len, 0, NULL);
	json_t *v = json_object_get(json_array_get(json_object_get(root, "data"), 0), "embedding");
	const char *why = NULL;
	double norm = 0;
	size_t i;
	json_t *x;

	if (!json_is_array(v)) {
		why = "no data[0].embedding in the reply";
		goto out;
	}
	if (json_array_size(v) != (size_t)dim) {
		why = "the embedding has the wrong dimension (check cache.embedder.dim)";
		goto out;
	}
	json_array_foreach(v, i, x) {
		if (!json_is_number(x)) {
			why = "the embedding holds a non-number";
			goto out;
		}
		out[i] = (float)json_number_value(x);
		norm += (double)out[i] * out[i];
	}
	if (!(norm > 0) || !isfinite(norm)) {
		why = "the embedding is zero or not finite";
		goto out;
	}
	norm = sqrt(norm);
	for (i = 0; i < (size_t)dim; i++)
		out[i] = (float)(out[i] / norm);
out:
	json_decref(root);
	return why;
}

static void on_done(void *ud, int err)
{
	call_t *c = ud;
	openai_embedder_t *oe = c->oe;
	sg_embed_req_t *req = c->req;
	const char *why = NULL;
	char tmp[64];
	int status = 0;

	c->xfer = NULL;
	req->impl = NULL;
	if (err) {
		why = sg_strerror(err);
		status = err;
	} else if (c->status != 200) {
		snprintf(tmp, sizeof(tmp), "status %ld", c->status);
		why = tmp;
		status = SG_EUPSTREAM;
	} else if ((why = parse(&c->reply, oe->base.dim, req->out)) != NULL) {
		status = SG_EUPSTREAM;
	}
	if (status) {
		oe->st.failures++;
		sg_log_warn("openai embedder: %s", why);
	} else {
		oe->st.embedded++;
	}
	call_free(c);
	req->cb(req, status);
}

static const sg_xfer_cbs_t xfer_cbs = {on_headers, on_data, on_done};

static int oe_start(sg_embedder_t *e, sg_embed_req_t *req, const char *text, size_t len)
{
	openai_embedder_t *oe = (openai_embedder_t *)e;
	call_t *c = calloc(1, sizeof(*c));
	sg_xfer_req_t xr;
	int rc;

	if (c == NULL)
		return SG_ENOMEM;
	c->oe = oe;
	c->req = req;
	sg_buf_init(&c->reply, 64u << 20);
	json_t *body = json_pack("{s:s,s:s%}", "model", oe->cfg->model, "input", text ? text : "",
	                         len);
	c->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (c->body == NULL) {
		call_free(c);
		return SG_ENOMEM;
	}
	memset(&xr, 0, sizeof(xr));
	xr.url = oe->url;
	xr.headers = oe->headers;
	xr.body = c->body;
	xr.body_len = strlen(c->body);
	xr.connect_timeout_ms = oe->cfg->timeout_ms;
	xr.timeout_ms = oe->cfg->timeout_ms;
	if ((rc = sg_xfer_start(oe->upstream, &xr, &xfer_cbs, c, &c->xfer)) != 0) {
		oe->st.failures++;
		call_free(c);
		return rc;
	}
	req->impl = c;
	return SG_EMBED_PENDING;
}

static void oe_cancel(sg_embedder_t *e, sg_embed_req_t *req)
{
	call_t *c = req->impl;
	if (c == NULL)
		return;
	sg_xfer_cancel(c->xfer); /* no callback after this */
	req->impl = NULL;
	call_free(c);
}

static void oe_stats(const sg_embedder_t *e, sg_embed_stats_t *out)
{
	*out = ((const openai_embedder_t *)e)->st;
}

static void oe_free(sg_embedder_t *e)
{
	openai_embedder_t *oe = (openai_embedder_t *)e;
	sg_upstream_headers_free(oe->headers);
	free(oe);
}

static const sg_embedder_ops_t openai_ops = {
	"openai", oe_start, oe_cancel, oe_stats, NULL, oe_free,
};

void sg__embed_openai_id(const sg_embedder_config_t *ec, char *out, size_t n)
{
	snprintf(out, n, "openai:%s@%s:d%ld", ec->model, ec->base_url, ec->dim);
}

int sg__embed_openai_new(sg_embedder_t **out, sg_upstream_t *upstream,
                         const sg_embedder_config_t *ec)
{
	openai_embedder_t *oe = calloc(1, sizeof(*oe));
	char auth[1024];

	*out = NULL;
	if (oe == NULL)
		return SG_ENOMEM;
	oe->base.ops = &openai_ops;
	oe->base.dim = (int)ec->dim;
	sg__embed_openai_id(ec, oe->base.id, sizeof(oe->base.id));
	snprintf(oe->base.describe, sizeof(oe->base.describe), "openai %s at %s, %ld dimensions",
	         ec->model, ec->base_url, ec->dim);
	oe->upstream = upstream;
	oe->cfg = ec;
	snprintf(oe->url, sizeof(oe->url), "%s/embeddings", ec->base_url);
	if (ec->api_key)
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", ec->api_key);
	oe->headers = sg__json_headers(ec->api_key ? auth : NULL, NULL, 0);
	if (oe->headers == NULL) {
		free(oe);
		return SG_ENOMEM;
	}
	*out = &oe->base;
	return 0;
}
