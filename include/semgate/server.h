/* semgate: the gateway server.
 *
 * A request's path: accept (server.c) -> parse with llhttp (server.c) ->
 * route (handler.c) -> cache (cache/) -> upstream (proxy.c, upstream.c) ->
 * respond (server.c). Everything runs on one libuv loop.
 */
#ifndef SEMGATE_SERVER_H
#define SEMGATE_SERVER_H

#include <uv.h>

#include "semgate/buf.h"
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

/** The configuration file a reload reads (NULL: the built-in one, which
 * cannot be reloaded). Returns 0 or SG_ENOMEM. */
int sg_server_set_config_path(sg_server_t *srv, const char *path);

/**
 * Reload: read the configuration file again, validate all of it, and swap it
 * in as a new generation. New requests use it; requests and streams in
 * flight finish on the generation they started on; no connection is closed.
 * A deployment that is unchanged (same model group, provider, URL, upstream
 * model, API version, key variable and headers) keeps its health, cooldown
 * and rate windows. Options that cannot change at run time keep their value
 * and are reported. An invalid file changes nothing. Both outcomes are
 * logged; when report is not NULL a JSON object is appended to it:
 * {"reloaded":true,"generation":N,"models":M,"not_applied":["cache.path",...]}
 * or {"reloaded":false,"generation":N,"errors":["path: problem",...]}.
 * Returns 0, SG_EINVAL (invalid or no file), SG_EIO or SG_ENOMEM.
 * Loop thread only (SIGHUP and POST /admin/reload call it).
 */
int sg_server_reload(sg_server_t *srv, sg_buf_t *report);

/** Free what the server owns once the loop has finished. */
void sg_server_free(sg_server_t *srv);

#endif
