/* The call and its steps: see call.h. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "call.h"
#include "server_int.h"

/* Chains by endpoint: the cache for completions, then upstream. The cache's
 * exact lookup comes before the limits and the budget, so that a hit takes
 * only what a hit uses (a request; no upstream tokens, slot or budget). */
static const sg_step_t *const chain_cached[] = {&sg__step_auth, &sg__step_cache_probe,
                                                &sg__step_limits, &sg__step_spend,
                                                &sg__step_cache, &sg__step_upstream};
static const sg_step_t *const chain_direct[] = {&sg__step_auth, &sg__step_limits,
                                                &sg__step_spend, &sg__step_upstream};

/* The call's token estimates, for limits and budgets to reserve before it
 * is forwarded: prompt tokens as a quarter of the request's bytes (settled
 * with the real usage later); the completion's bound from
 * max_completion_tokens (or max_tokens), else auth.default_completion_tokens;
 * and how many completions it bills: n, or best_of when larger (generated and
 * billed even when not all are returned), times a completions request's
 * prompts. One pass over the body's members, not a lookup per name. Out of
 * line: with auth off it never runs (nor for an exact hit waiting in the
 * cache), and inlined its loop's registers would cost its caller. */
static __attribute__((noinline)) void estimate(sg_req_t *req)
{
	sg_call_t *c = req->call;
	const char *k;
	json_t *v, *mct = NULL, *mt = NULL, *n = NULL, *bo = NULL, *p = NULL;
	c->gov.body_bytes = (int64_t)req->body.len;
	c->gov.est_prompt = ((int64_t)req->body.len + 3) / 4;
	c->gov.est_completion = 0;
	c->gov.completions = 1;
	if (c->kind == SG_CALL_EMBEDDINGS)
		return;
	/* (the iterator itself, not json_object_foreach: that finds each key's
	 * iterator again from the key, two calls more a member) */
	for (void *it = json_object_iter(c->root); it; it = json_object_iter_next(c->root, it)) {
		k = json_object_iter_key(it);
		v = json_object_iter_value(it);
		/* (the first letters first: "model" and "messages" are in every body) */
		if (k[0] == 'n' && k[1] == '\0')
			n = v;
		else if (k[0] == 'm' && k[1] == 'a' && strcmp(k, "max_completion_tokens") == 0)
			mct = v;
		else if (k[0] == 'm' && k[1] == 'a' && strcmp(k, "max_tokens") == 0)
			mt = v;
		else if (k[0] == 'b' && strcmp(k, "best_of") == 0)
			bo = v;
		else if (k[0] == 'p' && strcmp(k, "prompt") == 0)
			p = v;
	}
	v = json_is_integer(mct) ? mct : mt;
	if (json_is_integer(v) && json_integer_value(v) > 0)
		c->gov.est_completion = SG_MIN(json_integer_value(v), (json_int_t)1000000000);
	else
		c->gov.est_completion = req->gen->cfg->auth.default_completion_tokens;
	int64_t m = json_is_integer(n) && json_integer_value(n) > 1 ? json_integer_value(n) : 1;
	if (json_is_integer(bo) && json_integer_value(bo) > m)
		m = json_integer_value(bo);
	m = SG_MIN(m, 1000000);
	/* prompts: an array of strings or of token arrays; an array of token ids
	 * is one prompt */
	json_t *p0 = json_array_get(p, 0);
	if (c->kind == SG_CALL_COMPLETIONS && json_array_size(p) > 1 &&
	    (json_is_string(p0) || json_is_array(p0)))
		m *= (int64_t)SG_MIN(json_array_size(p), (size_t)1000000);
	c->gov.completions = SG_MIN(m, 1000000);
}

void sg__call_estimate(sg_req_t *req)
{
	if (req->call->gov.estimated)
		return;
	req->call->gov.estimated = 1;
	estimate(req);
}

sg_call_t *sg__call_get(sg_req_t *req)
{
	if (req->call == NULL) {
		if ((req->call = calloc(1, sizeof(*req->call))) == NULL)
			return NULL;
		sg_buf_init(&req->call->rewrite[0], 0);
		sg_buf_init(&req->call->rewrite[1], 0);
	}
	return req->call;
}

void sg__call_start(sg_req_t *req, const sg_model_t *model, void *root, enum sg_call_kind kind,
                    const char *path, int stream)
{
	sg_call_t *c = sg__call_get(req);
	if (c == NULL) {
		sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
		return;
	}

	json_decref(c->root);
	c->model = model;
	c->root = json_incref(root);
	c->kind = kind;
	c->path = path;
	c->stream = stream;
	if (kind == SG_CALL_EMBEDDINGS) {
		c->steps = chain_direct;
		c->nsteps = SG_ARRAY_SIZE(chain_direct);
	} else {
		c->steps = chain_cached;
		c->nsteps = SG_ARRAY_SIZE(chain_cached);
	}
	c->at = 0;
	c->streamed = 0;
	c->outcome = SG_CALL_PENDING;
	c->status = 0;
	c->ns[0] = '\0';
	c->usage = (sg_usage_t){0, 0, 0, 0};
	c->end_us = 0;
	assert(c->key == NULL && c->team == NULL); /* the last call's auth step let go */
	c->gov.nitems = 0;
	sg__gov_text_release(&c->gov); /* the last call's answers are made */
	/* the last call's steps gave back what they held */
	assert(c->gov.lim == SG_LIM_NONE && c->gov.sp == SG_SP_NONE);
	c->gov.unpriced = 0;
	c->gov.hdrs_len = 0;
	c->gov.events = 0;
	c->gov.cost_reserved = 0;
	c->proxy.attempts = 0;
	c->gov.estimated = 0; /* (made when the limits or spend step first needs them) */
	c->steps[0]->request(req);
}

void sg__call_next(sg_req_t *req)
{
	sg_call_t *c = req->call;
	assert(c->at + 1 < c->nsteps); /* the last step never continues */
	c->steps[++c->at]->request(req);
}

/* The call is over: its parsed body goes now, not when the connection's next
 * call starts (an idle keep-alive connection holds no request's JSON). */
static void drop_body(sg_call_t *c)
{
	json_decref(c->root);
	c->root = NULL;
}

/* The response callbacks run on the steps before the one that answered, latest first. */
#define BEFORE(c, i) for (size_t i = (c)->at; i-- > 0;)

void sg__call_head(sg_req_t *req, int status, int stream, sg__fbuf_t *extra)
{
	sg_call_t *c = req->call;
	c->streamed = stream;
	c->status = status;
	BEFORE(c, i)
	if (c->steps[i]->head)
		c->steps[i]->head(req, status, stream, extra);
}

/* Each step sees what the one after it made: a rewrite goes to the scratch
 * buffer the current data is not in (two, used in turn). */
static sg_buf_t *scratch(sg_call_t *c, const char *cur)
{
	sg_buf_t *b = cur == c->rewrite[0].data && cur ? &c->rewrite[1] : &c->rewrite[0];
	sg_buf_reset(b);
	return b;
}

void sg__call_reply(sg_req_t *req, int status, const char **body, size_t *len, sg__fbuf_t *extra)
{
	sg_call_t *c = req->call;
	BEFORE(c, i)
	if (c->steps[i]->reply) {
		sg_buf_t *out = scratch(c, *body);
		if (c->steps[i]->reply(req, status, *body, *len, extra, out) == 1) {
			*body = out->data ? out->data : "";
			*len = out->len;
		}
	}
}

int sg__call_event(sg_req_t *req, const char **data, size_t *n)
{
	sg_call_t *c = req->call;
	BEFORE(c, i)
	if (c->steps[i]->event) {
		sg_buf_t *out = scratch(c, *data);
		int r = c->steps[i]->event(req, *data, *n, out);
		if (r == SG_CALL_STOP && out->len) {
			*data = out->data;
			*n = out->len;
			return SG_CALL_STOP; /* the steps before it see no more of the stream */
		}
		if (r == 1 && *data != NULL) {
			*data = out->data ? out->data : "";
			*n = out->len;
		}
	}
	return 0;
}

void sg__call_end(sg_req_t *req, int ok)
{
	sg_call_t *c = req->call;
	if (c->outcome == SG_CALL_PENDING)
		c->outcome = ok ? SG_CALL_UPSTREAM : SG_CALL_FAILED;
	BEFORE(c, i)
	if (c->steps[i]->end)
		c->steps[i]->end(req, ok);
	drop_body(c);
}

void sg__call_abort(sg_req_t *req)
{
	sg_call_t *c = req->call;
	if (c == NULL)
		return; /* no call on this connection yet */
	for (size_t i = c->nsteps; i-- > 0;)
		if (c->steps[i]->abort)
			c->steps[i]->abort(req);
	drop_body(c);
}

void sg__call_writable(sg_req_t *req)
{
	sg_call_t *c = req->call;
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nsteps; i++)
		if (c->steps[i]->writable)
			c->steps[i]->writable(req);
}

void sg__call_free(sg_req_t *req)
{
	if (req->call == NULL)
		return;
	sg__proxy_req_free(req);
	sg__cache_req_free(req);
	sg__principal_unref(req->call->key);
	sg__principal_unref(req->call->team);
	sg__principal_unref(req->call->key_memo.key);
	sg__principal_unref(req->call->key_memo.team);
	sg__gov_text_release(&req->call->gov);
	explicit_bzero(req->call->key_memo.token, sizeof(req->call->key_memo.token));
	json_decref(req->call->root);
	sg_buf_free(&req->call->rewrite[0]);
	sg_buf_free(&req->call->rewrite[1]);
	free(req->call);
	req->call = NULL;
}

uint64_t sg__call_end_us(sg_req_t *req)
{
	sg_call_t *c = req->call;
	if (c->end_us == 0)
		c->end_us = sg_now_us();
	return c->end_us;
}

void sg__call_billable(const sg_req_t *req, int aborted, sg_usage_t *out, int *estimated)
{
	const sg_call_t *c = req->call;
	*out = (sg_usage_t){0, 0, 0, 0};
	*estimated = 0;
	if (c->outcome == SG_CALL_HIT || (!aborted && c->status >= 300 && !c->streamed))
		return; /* the cache answered, or an error reply: nothing charged */
	if (c->usage.prompt > 0 || c->usage.completion > 0) {
		*out = c->usage;
		if (out->total < out->prompt + out->completion)
			out->total = out->prompt + out->completion;
		return;
	}
	if (c->proxy.attempts == 0)
		return; /* never reached an upstream */
	/* no usage came: the prompt estimate, one token per content event */
	out->prompt = c->gov.est_prompt;
	out->completion = c->gov.events;
	out->total = out->prompt + out->completion;
	*estimated = 1;
}
