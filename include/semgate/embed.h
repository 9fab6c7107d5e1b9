/* semgate: the embedder interface. One interface for every way of turning a
 * prompt into a vector, so that the cache never knows which one it has:
 *
 *   local   the lexical hashing embedder (cache/embed_local.c): microseconds,
 *           in line on the loop
 *   static  a static token-embedding table distilled from a model
 *           (cache/embed_static.c): microseconds, in line
 *   model   a BERT-family transformer (cache/model.c) run by a pool of
 *           embedding threads with batching (cache/embed_model.c)
 *   openai  an OpenAI-compatible /embeddings endpoint (src/upstream/embed_openai.c),
 *           a transfer on the loop
 *
 * Calls are made on the loop thread. sg_embed_start() either finishes at
 * once (returns 0; the vector is in req->out) or later (returns
 * SG_EINPROGRESS... see below), calling req->cb on the loop thread exactly once
 * unless the request is cancelled first. The request struct belongs to the
 * caller (like uv_req_t) and must stay put until its callback ran or
 * sg_embed_cancel() returned; after sg_embed_cancel() nothing touches it.
 */
#ifndef SEMGATE_EMBED_H
#define SEMGATE_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "semgate/common.h"

typedef struct sg_embedder sg_embedder_t;
typedef struct sg_embed_req sg_embed_req_t;

/**
 * Completion. status: 0 (the vector is in req->out), SG_EFULL (the queue was
 * full), SG_ETIMEDOUT (not embedded within the embedder's timeout), or another
 * SG_E* failure. Either way the caller goes on without a vector.
 */
typedef void (*sg_embed_cb)(sg_embed_req_t *req, int status);

struct sg_embed_req {
	void *data;        /* the caller's */
	float *out;        /* the caller's: room for sg_embed_dim() floats */
	sg_embed_cb cb;    /* called on the loop thread when the result is ready */
	void *impl;        /* private to the embedder */
};

/** What a `started later` embed returns. */
#define SG_EMBED_PENDING 1

/** Counters, for /stats. All since start. */
typedef struct sg_embed_stats {
	uint64_t embedded;      /* texts embedded */
	uint64_t queue_full;    /* refused: the queue was full */
	uint64_t timeouts;      /* given up: waited longer than the timeout */
	uint64_t failures;      /* other errors */
	uint64_t batches;       /* batches run (model) */
	uint64_t busy_us;       /* time spent embedding, all threads */
	uint64_t queue_depth;   /* waiting now */
	uint64_t queue_max;     /* the most ever waiting */
} sg_embed_stats_t;

/** The table behind an embedder: one per kind. */
typedef struct sg_embedder_ops {
	const char *kind; /* "local", "static", "model", "openai" */
	int (*start)(sg_embedder_t *e, sg_embed_req_t *req, const char *text, size_t len);
	void (*cancel)(sg_embedder_t *e, sg_embed_req_t *req);
	void (*stats)(const sg_embedder_t *e, sg_embed_stats_t *out);
	/* stop threads and close loop handles; the loop must run once more */
	void (*close)(sg_embedder_t *e);
	void (*free)(sg_embedder_t *e);
} sg_embedder_ops_t;

/** The common head of every embedder. */
struct sg_embedder {
	const sg_embedder_ops_t *ops;
	int dim;            /* vector size */
	char id[512];       /* identity stored with the cache (changes with any
	                     * setting that changes the vectors) */
	char describe[256]; /* one line for the log */
};

/**
 * Embed len bytes of text into req->out (req->out, req->cb, req->data set by
 * the caller). Returns 0 (done, vector in req->out, no callback),
 * SG_EMBED_PENDING (req->cb will be called), or SG_E* (failed now, no
 * callback; SG_EFULL: the queue is full; SG_ETOOBIG: the text is too long to
 * embed).
 */
static inline int sg_embed_start(sg_embedder_t *e, sg_embed_req_t *req, const char *text,
                                 size_t len)
{
	return e->ops->start(e, req, text, len);
}

/** Cancel a pending request: its callback will not run. No-op once done. */
static inline void sg_embed_cancel(sg_embedder_t *e, sg_embed_req_t *req)
{
	if (e->ops->cancel)
		e->ops->cancel(e, req);
}

static inline int sg_embed_dim(const sg_embedder_t *e) { return e->dim; }
static inline const char *sg_embed_id(const sg_embedder_t *e) { return e->id; }
static inline const char *sg_embed_kind(const sg_embedder_t *e) { return e->ops->kind; }

/** Counters (zeros where a kind has none). */
void sg_embed_stats(const sg_embedder_t *e, sg_embed_stats_t *out);

/** Stop threads and close handles (pending requests are cancelled without
 * callbacks); run the loop once more before sg_embed_free(). NULL: no-op. */
void sg_embed_close(sg_embedder_t *e);

/** Free. NULL is a no-op. */
void sg_embed_free(sg_embedder_t *e);

/* --- the in-process kinds --------------------------------------------------- */

struct uv_loop_s;
struct sg_embedder_config;

/**
 * Create a local, static or model embedder from its configuration (the
 * `openai` kind lives with the upstream code: src/upstream/embed_openai.c). loop is
 * where completions are delivered (used by `model`). Errors: SG_E* with a
 * message in err naming the setting or file.
 */
int sg_embed_new(sg_embedder_t **out, struct uv_loop_s *loop,
                 const struct sg_embedder_config *cfg, char *err, size_t errlen);

/**
 * The identity of the `openai` kind's vectors for cfg (src/upstream/embed_openai.c,
 * which makes that embedder with the server's upstream client): needed to
 * open the cache before the server exists.
 */
void sg__embed_openai_id(const struct sg_embedder_config *cfg, char *out, size_t n);

/**
 * Check that an embedder configuration would load (its model files read and
 * validated; no threads started), for `semgate --check`. 0, or SG_E* with the
 * message in err; on success desc gets the one-line description.
 */
int sg_embed_check(const struct sg_embedder_config *cfg, char *err, size_t errlen, char *desc,
                   size_t desclen);

#endif
