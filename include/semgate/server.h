/* semgate: the gateway server.
 *
 * A request's path: accept (server.c) -> parse with llhttp (server.c) ->
 * route (handler.c) -> cache (cache/) -> upstream (proxy.c, upstream.c) ->
 * respond (server.c). Everything runs on one libuv loop.
 */
#ifndef SEMGATE_SERVER_H
#define SEMGATE_SERVER_H

#include <uv.h>

#include "semgate/cache.h"
#include "semgate/config.h"
#include "semgate/embed.h"

typedef struct sg_server sg_server_t;

/**
 * Create a server for cfg on loop: binds and listens on cfg->listen_*.
 * cfg is borrowed and must outlive the server. Errors: SG_EIO (bind/listen,
 * with the reason logged), SG_EINVAL (listen address), SG_ENOMEM. Even on
 * failure *out may be set: run the loop to completion (to let handles
 * close), then sg_server_free() it. cache (NULL: caching off) and embedder
 * are borrowed and must outlive the server.
 */
int sg_server_new(sg_server_t **out, uv_loop_t *loop, const sg_config_t *cfg,
                  sg_cache_t *cache, sg_embedder_t *embedder);

/** The port actually bound (useful when the config asked for port 0). */
int sg_server_port(const sg_server_t *srv);

/**
 * Begin a graceful drain: stop accepting, finish in-flight requests and
 * streams for at most limits.drain_timeout_ms, then close everything. The
 * loop ends once all handles are closed. Safe to call more than once.
 */
void sg_server_drain(sg_server_t *srv);

/** Free what the server owns once the loop has finished. */
void sg_server_free(sg_server_t *srv);

#endif
