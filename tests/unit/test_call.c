/* Unit tests: the call's step chain (src/gateway/call.c). The response
 * callbacks run on the steps before the one that answered, latest first; a
 * step's rewrite of a reply or an event is what the steps before it and the
 * client get; end records the outcome. Fake steps, no server. */
#include <stdlib.h>

#include <jansson.h>

#include "check.h"
#include "server_int.h"

static char seen[8][64];  /* what each observer saw, by step index */
static int order[8], norder; /* which steps' callbacks ran, in order */

static void note(int i)
{
	if (norder < 8)
		order[norder++] = i;
}

/* Step 0 and 1 observe; step 2 wraps in [], step 3 in (); step 4 answers. */
static int observe(sg_req_t *req, int i, const char *d, size_t n)
{
	note(i);
	snprintf(seen[i], sizeof(seen[i]), "%.*s", d ? (int)n : 4, d ? d : "NULL");
	return 0;
}

static int wrap(sg_req_t *req, int i, const char *d, size_t n, sg_buf_t *out, const char *lr)
{
	note(i);
	if (d == NULL)
		return 0;
	sg_buf_append(out, lr, 1);
	sg_buf_append(out, d, n);
	sg_buf_append(out, lr + 1, 1);
	return 1;
}

#define OBSERVER(i)                                                                      \
	static int ev##i(sg_req_t *req, const char *d, size_t n, sg_buf_t *out)          \
	{                                                                                \
		return observe(req, i, d, n);                                            \
	}                                                                                \
	static int rp##i(sg_req_t *req, int st, const char *d, size_t n, sg__fbuf_t *x,  \
	                 sg_buf_t *out)                                                  \
	{                                                                                \
		return observe(req, i, d, n);                                            \
	}
OBSERVER(0)
OBSERVER(1)

static int ev2(sg_req_t *req, const char *d, size_t n, sg_buf_t *out)
{
	return wrap(req, 2, d, n, out, "[]");
}
static int rp2(sg_req_t *req, int st, const char *d, size_t n, sg__fbuf_t *x, sg_buf_t *out)
{
	return wrap(req, 2, d, n, out, "[]");
}
static int ev3(sg_req_t *req, const char *d, size_t n, sg_buf_t *out)
{
	return wrap(req, 3, d, n, out, "()");
}
static int rp3(sg_req_t *req, int st, const char *d, size_t n, sg__fbuf_t *x, sg_buf_t *out)
{
	return wrap(req, 3, d, n, out, "()");
}

static int ended[8];
static void end0(sg_req_t *req, int ok) { ended[0] = ok ? 1 : -1; }
static void head1(sg_req_t *req, int status, int stream, sg__fbuf_t *x)
{
	sg__fbuf_str(x, "X-One: 1\r\n");
}
static void nop(sg_req_t *req) {}

static const sg_step_t s0 = {.name = "obs0", .request = nop, .reply = rp0, .event = ev0,
                             .end = end0};
static const sg_step_t s1 = {.name = "obs1", .request = nop, .head = head1, .reply = rp1,
                             .event = ev1};
static const sg_step_t s2 = {.name = "wrap[]", .request = nop, .reply = rp2, .event = ev2};
static const sg_step_t s3 = {.name = "wrap()", .request = nop, .reply = rp3, .event = ev3};
static const sg_step_t s4 = {.name = "answers", .request = nop};
static const sg_step_t *const chain[] = {&s0, &s1, &s2, &s3, &s4};

static void reset(sg_req_t *req, size_t at)
{
	memset(seen, 0, sizeof(seen));
	norder = 0;
	req->call->at = at;
}

int main(void)
{
	sg_req_t req;
	memset(&req, 0, sizeof(req));
	req.call = calloc(1, sizeof(*req.call));
	sg_buf_init(&req.call->rewrite[0], 0); /* as sg__call_start() does */
	sg_buf_init(&req.call->rewrite[1], 0);
	req.call->steps = chain;
	req.call->nsteps = SG_ARRAY_SIZE(chain);

	/* the last step answers: 3 wraps, 2 wraps that, 1 and 0 see both wraps */
	reset(&req, 4);
	const char *d = "x";
	size_t n = 1;
	sg__call_event(&req, &d, &n);
	CHECK(n == 5 && memcmp(d, "[(x)]", 5) == 0);
	CHECK_STR(seen[1], "[(x)]");
	CHECK_STR(seen[0], "[(x)]");
	CHECK(norder == 4 && order[0] == 3 && order[1] == 2 && order[2] == 1 && order[3] == 0);
	/* again: the rewrite buffers are reused, the result is the same */
	d = "yz";
	n = 2;
	sg__call_event(&req, &d, &n);
	CHECK(n == 6 && memcmp(d, "[(yz)]", 6) == 0);

	/* a dropped event (NULL) reaches every step and stays NULL */
	reset(&req, 4);
	d = NULL;
	n = 0;
	sg__call_event(&req, &d, &n);
	CHECK(d == NULL);
	CHECK_STR(seen[0], "NULL");

	/* step 2 answers: only 1 and 0 run, nothing rewrites */
	reset(&req, 2);
	d = "hit";
	n = 3;
	sg__call_event(&req, &d, &n);
	CHECK(n == 3 && memcmp(d, "hit", 3) == 0);
	CHECK(norder == 2 && order[0] == 1 && order[1] == 0);

	/* replies the same way; head lets a step add headers */
	reset(&req, 4);
	char extra[64];
	sg__fbuf_t o;
	sg__fbuf_init(&o, extra, sizeof(extra));
	sg__call_head(&req, 200, 0, &o);
	CHECK_STR(extra, "X-One: 1\r\n");
	CHECK(req.call->status == 200 && req.call->streamed == 0);
	d = "{}";
	n = 2;
	sg__call_reply(&req, 200, &d, &n, &o);
	CHECK(n == 6 && memcmp(d, "[({})]", 6) == 0);
	CHECK_STR(seen[0], "[({})]");

	/* end: the outcome, and the steps' end callbacks */
	req.call->outcome = SG_CALL_PENDING;
	sg__call_end(&req, 1);
	CHECK(req.call->outcome == SG_CALL_UPSTREAM && ended[0] == 1);
	req.call->outcome = SG_CALL_PENDING;
	sg__call_end(&req, 0);
	CHECK(req.call->outcome == SG_CALL_FAILED && ended[0] == -1);
	req.call->outcome = SG_CALL_HIT; /* set by the cache before its end */
	sg__call_end(&req, 1);
	CHECK(req.call->outcome == SG_CALL_HIT);

	/* the call lets go of the parsed body when it ends or is aborted, not when
	 * the connection's next call starts */
	json_t *body = json_object();
	req.call->root = json_incref(body);
	sg__call_end(&req, 1);
	CHECK(req.call->root == NULL && body->refcount == 1);
	req.call->root = json_incref(body);
	sg__call_abort(&req);
	CHECK(req.call->root == NULL && body->refcount == 1);
	json_decref(body);

	sg_buf_free(&req.call->rewrite[0]);
	sg_buf_free(&req.call->rewrite[1]);
	free(req.call);
	CHECK_DONE();
}
