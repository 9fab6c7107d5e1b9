/* semgate: upstream HTTP transfers on libcurl's multi interface, driven by
 * the libuv loop (curl's docs/examples/multi-uv.c pattern). No thread ever
 * blocks on the network; connections to upstreams are kept alive and reused
 * across transfers.
 */
#ifndef SEMGATE_UPSTREAM_H
#define SEMGATE_UPSTREAM_H

#include <stddef.h>

#include <uv.h>

#include "semgate/common.h"

typedef struct sg_upstream sg_upstream_t;
typedef struct sg_xfer sg_xfer_t;
typedef struct sg_upstream_headers sg_upstream_headers_t;

/** Returned by on_data to pause the transfer until sg_xfer_resume(). */
#define SG_XFER_PAUSE 1

/**
 * What a transfer reports. All three run on the loop thread; none runs after
 * sg_xfer_cancel(). `ud` is the pointer given to sg_xfer_start().
 */
typedef struct sg_xfer_cbs {
	/** Status and headers are in: called once, before the first on_data.
	 * content_type is borrowed for the call (NULL when absent); retry_after_s
	 * is the Retry-After header in seconds (-1 when absent).
	 * Return 0 to go on, anything else to abort (on_done gets SG_ECANCELED). */
	int (*on_headers)(void *ud, long status, const char *content_type, long retry_after_s);
	/** A piece of the body. Return 0 to go on, SG_XFER_PAUSE to pause,
	 * a negative SG_E* code to abort with it. */
	int (*on_data)(void *ud, const char *p, size_t n);
	/** The transfer ended: 0, or SG_ECONNECT, SG_ETIMEDOUT, SG_EUPSTREAM, or the
	 * code on_data aborted with. Called exactly once; the xfer is gone after. */
	void (*on_done)(void *ud, int err);
} sg_xfer_cbs_t;

/** One request to send. Everything is borrowed until on_done or cancel. */
typedef struct sg_xfer_req {
	const char *url;                      /* absolute http(s) URL */
	const sg_upstream_headers_t *headers; /* from sg_upstream_headers_new() */
	const char *body;                     /* POST body, or NULL for GET */
	size_t body_len;                      /* bytes in body */
	long connect_timeout_ms;              /* connect budget */
	long timeout_ms;                      /* whole-transfer budget */
} sg_xfer_req_t;

/** Create the transfer engine on loop. Caller closes it with sg_upstream_close(). */
int sg_upstream_new(sg_upstream_t **out, uv_loop_t *loop);

/** Cancel every transfer (no callbacks) and release the engine; its libuv
 * handles are closed, so run the loop afterwards to let them go. */
void sg_upstream_close(sg_upstream_t *u);

/** Number of transfers in flight. */
size_t sg_upstream_active(const sg_upstream_t *u);

/** Build a reusable header list from "Name: value" strings (copied).
 * Freed with sg_upstream_headers_free(). NULL on allocation failure. */
sg_upstream_headers_t *sg_upstream_headers_new(const char *const *lines, size_t n);
void sg_upstream_headers_free(sg_upstream_headers_t *h);

/** Start a transfer. On success *out identifies it until on_done or cancel. */
int sg_xfer_start(sg_upstream_t *u, const sg_xfer_req_t *req, const sg_xfer_cbs_t *cbs,
                  void *ud, sg_xfer_t **out);

/** Stop a transfer: no callback runs afterwards, and it is released. */
void sg_xfer_cancel(sg_xfer_t *x);

/** Resume a transfer paused by on_data returning SG_XFER_PAUSE. on_data may
 * run from within this call. */
void sg_xfer_resume(sg_xfer_t *x);

#endif
