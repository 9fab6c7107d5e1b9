/*
 * The call and its steps.
 *
 * A call is what one inference request is to the gateway: the parsed body,
 * the model group, the endpoint, the cache namespace, one usage record, the
 * outcome, and the steps' own state (struct sg_call, server_int.h). Its steps are a table of
 * interfaces run in order: each step's request callback continues
 * (sg__call_next), answers, or goes asynchronous and does one of the two
 * later. The last step forwards upstream and knows nothing of the others.
 * Whatever answers (a step, or the upstream through the last step), the
 * answer runs back through the response callbacks of every step before the
 * one that answered, latest first: head (add headers), reply (a complete
 * buffered body, before it is sent; may rewrite it), event (one event of a
 * stream; may rewrite it), end (the call is over; its usage is in
 * call->usage, its outcome in call->outcome). abort runs on every step when
 * the client goes away. So an observer (the cache's store today; spend,
 * limits and metrics next) sees cache hits, buffered replies and streams
 * alike. Every callback but request may be NULL. Loop thread only.
 */
#ifndef SEMGATE_CALL_H
#define SEMGATE_CALL_H

#include <stddef.h>
#include <stdint.h>

#include "fbuf_int.h"
#include "semgate/config.h"

typedef struct sg_req sg_req_t;

/** Token counts of a reply (0 when it said nothing). */
typedef struct sg_usage {
	long long prompt, completion, total;
	long long cached; /* of prompt, tokens the provider served from its prompt cache */
} sg_usage_t;

/** How a call was answered. */
enum sg_call_outcome {
	SG_CALL_PENDING,      /* not yet */
	SG_CALL_HIT,          /* from the cache */
	SG_CALL_UPSTREAM,     /* by the upstream, completely (a 2xx, or a stream with its end) */
	SG_CALL_FAILED,       /* an error answer, or a stream cut short */
};

/** The endpoints a call can be for. */
enum sg_call_kind { SG_CALL_CHAT, SG_CALL_COMPLETIONS, SG_CALL_EMBEDDINGS };

typedef struct sg_step {
	const char *name;
	/** Continue with sg__call_next(req), answer, or go asynchronous. */
	void (*request)(sg_req_t *req);
	/** The answer's head: status, whether it streams; append header lines to extra. */
	void (*head)(sg_req_t *req, int status, int stream, sg__fbuf_t *extra);
	/** A complete buffered 2xx reply (OpenAI's format) about to be sent; may add
	 * headers. To change the body, append the new one to out and return 1 (the
	 * steps before and the client get it); 0 leaves it as it is. */
	int (*reply)(sg_req_t *req, int status, const char *body, size_t len, sg__fbuf_t *extra,
	             sg_buf_t *out);
	/** One event of a streamed answer (a JSON object; data NULL: one was dropped).
	 * To change it, append the new event's data to out and return 1; 0 leaves it.
	 * To end the stream here, append an error event's data ({"error":{...}}) to
	 * out and return SG_CALL_STOP: the client gets it instead of this event,
	 * then the end of the stream; the upstream transfer is cancelled and the
	 * call ends as failed. */
	int (*event)(sg_req_t *req, const char *data, size_t n, sg_buf_t *out);
	/** The answer ended; ok: completely (a stream with its [DONE]). */
	void (*end)(sg_req_t *req, int ok);
	/** The client went away: release what the step holds. */
	void (*abort)(sg_req_t *req);
	/** The client's socket drained (back-pressure). */
	void (*writable)(sg_req_t *req);
} sg_step_t;

/* The call: defined in server_int.h, next to the steps' per-call state it holds. */
typedef struct sg_call sg_call_t;

/** The connection's call: made by its first request (or the auth check
 * before it), kept for the next ones, freed by sg__call_free. NULL: out of
 * memory. */
sg_call_t *sg__call_get(sg_req_t *req);
/** Start a call on req (root: a reference is taken) and run its first step. */
void sg__call_start(sg_req_t *req, const sg_model_t *model, void *root, enum sg_call_kind kind,
                    const char *path, int stream);
/** The running step continues: run the next one's request callback. */
void sg__call_next(sg_req_t *req);
/* The answering step reports its answer (see above). reply and event take
 * the body or event data by reference: on return it is what the steps made of
 * it (valid until the next reply or event of the call), to be sent as it is. */
void sg__call_head(sg_req_t *req, int status, int stream, sg__fbuf_t *extra);
void sg__call_reply(sg_req_t *req, int status, const char **body, size_t *len, sg__fbuf_t *extra);
#define SG_CALL_STOP 2
/** Returns 0, or SG_CALL_STOP: a step ends the stream; *data is its error event. */
int sg__call_event(sg_req_t *req, const char **data, size_t *n);
void sg__call_end(sg_req_t *req, int ok);
/** The client went away (every step's abort). */
void sg__call_abort(sg_req_t *req);
/** The client's socket drained. */
void sg__call_writable(sg_req_t *req);
/** Free the connection's call and the steps' state in it (the connection's end). */
void sg__call_free(sg_req_t *req);

/** The call's token estimates (c->gov.est_prompt, est_completion, body_bytes,
 * completions), made once, when the limits or spend step first needs them: a
 * call that is forwarded always has them by then; an exact hit waiting in
 * the cache needs none. */
void sg__call_estimate(sg_req_t *req);

/** When the call ended (sg_now_us): the clock is read by the first end or
 * abort callback that asks, the same time for the others. */
uint64_t sg__call_end_us(sg_req_t *req);

/** What a call is billed for (tokens the provider charged or, where no usage
 * came, an estimate: *estimated set): nothing for a cache hit or an upstream
 * error reply; the reported usage for an answer; for a stream cut short or a
 * client that left, the prompt estimate plus one token per content event
 * streamed. aborted: the client left (the abort callbacks). */
void sg__call_billable(const sg_req_t *req, int aborted, sg_usage_t *out, int *estimated);

/* The steps (gateway/auth.c, limits.c, spend.c, semcache.c, upstream/proxy.c). */
extern const sg_step_t sg__step_auth;
extern const sg_step_t sg__step_limits;
extern const sg_step_t sg__step_spend;
extern const sg_step_t sg__step_cache_probe;
extern const sg_step_t sg__step_cache;
extern const sg_step_t sg__step_upstream;

#endif
