/* The gateway: services apart from the front end (gateway.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway.h"
#include "server_int.h"

#define HITS_FLUSH_MS 20 /* hit counters reach the store this soon after a hit */

static void noop_close(uv_handle_t *h)
{
	(void)h;
}

static void sync_work(uv_work_t *w)
{
	sg_gateway_t *gw = w->data;
	gw->sync_rc = sg_cache_sync(gw->cache);
}

static void sync_done(uv_work_t *w, int status)
{
	sg_gateway_t *gw = w->data;
	gw->syncing = 0;
	if (status == 0 && gw->sync_rc)
		sg_log_warn("cache: fsync failed: %s", sg_strerror(gw->sync_rc));
}

/* Hit counters go to the store in small writes: see sg_cache_flush_hits(). */
static void on_hits_flush(uv_timer_t *t)
{
	sg_gateway_t *gw = t->data;
	sg_cache_flush_hits(gw->cache);
}

void sg__gateway_hit_counted(sg_gateway_t *gw)
{
	/* one shot, armed by the first hit after a flush: an idle gateway sleeps */
	if (gw->cache && !gw->closed && !uv_is_active((uv_handle_t *)&gw->hits_timer))
		uv_timer_start(&gw->hits_timer, on_hits_flush, HITS_FLUSH_MS, 0);
}

static void on_maintenance(uv_timer_t *t)
{
	sg_gateway_t *gw = t->data;
	int64_t now = (int64_t)time(NULL);
	int checkpoint = now - gw->last_checkpoint_s >= gw->gen->cfg->cache.checkpoint_interval_s;
	int rc = sg_cache_maintain(gw->cache, now, checkpoint);
	if (rc)
		sg_log_warn("cache maintenance: %s", sg_strerror(rc));
	if (checkpoint)
		gw->last_checkpoint_s = now;
	/* Committed data survives a crash of the process as it is; the fsync
	 * guards against power loss, on a thread of its own. */
	if (!gw->syncing && !gw->closed) {
		gw->sync_work.data = gw;
		if (uv_queue_work(gw->loop, &gw->sync_work, sync_work, sync_done) == 0)
			gw->syncing = 1;
	}
}

/* Idle rate-limit counters go (a key unused for a minute holds no memory). */
static void on_gov_sweep(uv_timer_t *t)
{
	sg_gateway_t *gw = t->data;
	sg_ctr_sweep(gw->counters, sg_now_us());
}

int sg__gateway_new(sg_gateway_t **out, uv_loop_t *loop, const sg_config_t *cfg,
                    sg_cache_t *cache, sg_embedder_t *embedder)
{
	sg_gateway_t *gw = calloc(1, sizeof(*gw));
	int rc;

	*out = NULL;
	if (gw == NULL)
		return SG_ENOMEM;
	gw->loop = loop;
	gw->cache = cache;
	gw->embedder = embedder;
	gw->seed = (uint32_t)(sg_now_us() ^ ((uint64_t)uv_os_getpid() << 16));
	gw->test_id_bits = 64;
	const char *bits = getenv("SEMGATE_TEST_SCOPE_ID_BITS");
	if (bits && *bits) {
		gw->test_id_bits = SG_MIN(64, SG_MAX(0, atoi(bits)));
		sg_log_warn("SEMGATE_TEST_SCOPE_ID_BITS: cache ids cut to %d bits, so that they "
		            "collide (a test hook)", gw->test_id_bits);
	}
	if ((gw->stats = sg_stats_new()) == NULL) {
		free(gw);
		return SG_ENOMEM;
	}
	/* generation 1: the configuration main loaded (borrowed: it outlives us) */
	if ((rc = sg__gen_new(&gw->gen, (sg_config_t *)cfg, 0, NULL, 1, sg_now_us() ^ gw->seed)) != 0 ||
	    (rc = sg_upstream_new(&gw->upstream, loop)) != 0)
		goto fail;
	if (cache && embedder == NULL) {
		/* the openai embedder: a transfer on this gateway's upstream client */
		if ((rc = sg__embed_openai_new(&gw->owned_embedder, gw->upstream,
		                               &cfg->cache.embedder)) != 0)
			goto fail;
		gw->embedder = gw->owned_embedder;
	}
	if (cfg->auth.keys || cfg->auth.record_spend) {
		char err[512];
		/* budget periods follow this zone's calendar (the logs stay in UTC) */
		setenv("TZ", cfg->auth.timezone ? cfg->auth.timezone : "UTC", 1);
		tzset();
		if ((rc = sg__authdb_open(&gw->authdb, loop, &cfg->auth, err, sizeof(err))) != 0) {
			sg_log_error("%s", err);
			goto fail;
		}
	}
	if (cfg->auth.keys) {
		if ((gw->counters = gw->counters_local = sg_counters_local_new(cfg->auth.burst)) == NULL) {
			rc = SG_ENOMEM;
			goto fail;
		}
		const char *d = getenv("SEMGATE_TEST_DEFERRED_COUNTERS_MS");
		if (d && *d) { /* a test hook: counters that answer later, as a shared one would */
			sg_counters_t *w = sg__counters_deferred_new(loop, gw->counters, strtoull(d, NULL, 10));
			if (w == NULL) {
				rc = SG_ENOMEM;
				goto fail;
			}
			gw->counters = w;
			sg_log_warn("SEMGATE_TEST_DEFERRED_COUNTERS_MS: rate-limit counters answer after "
			            "%s ms (a test hook)", d);
		}
		uv_timer_init(loop, &gw->gov_timer);
		gw->gov_timer.data = gw;
		uv_timer_start(&gw->gov_timer, on_gov_sweep, 10000, 10000);
		uv_unref((uv_handle_t *)&gw->gov_timer);
	}
	if (cache) {
		gw->last_checkpoint_s = (int64_t)time(NULL);
		uv_timer_init(loop, &gw->maint_timer);
		gw->maint_timer.data = gw;
		uv_timer_start(&gw->maint_timer, on_maintenance, 1000, 1000);
		uv_timer_init(loop, &gw->hits_timer);
		gw->hits_timer.data = gw;
	}
	*out = gw;
	return 0;
fail:
	sg__authdb_close(gw->authdb);
	if (gw->upstream)
		sg_upstream_close(gw->upstream); /* its handles close as the loop runs */
	gw->upstream = NULL;
	gw->closed = 1;
	*out = gw; /* the caller runs the loop, then frees it */
	return rc;
}

void sg__gateway_close(sg_gateway_t *gw)
{
	if (gw == NULL || gw->closed)
		return;
	gw->closed = 1;
	if (gw->cache) {
		uv_timer_stop(&gw->maint_timer);
		uv_close((uv_handle_t *)&gw->maint_timer, noop_close);
		uv_timer_stop(&gw->hits_timer);
		uv_close((uv_handle_t *)&gw->hits_timer, noop_close);
	}
	if (gw->counters) {
		uv_timer_stop(&gw->gov_timer);
		uv_close((uv_handle_t *)&gw->gov_timer, noop_close);
	}
	sg__authdb_close(gw->authdb);
	sg_upstream_close(gw->upstream);
	gw->upstream = NULL;
}

void sg__gateway_free(sg_gateway_t *gw)
{
	if (gw == NULL)
		return;
	sg__gen_unref(gw->gen);
	sg__authdb_free(gw->authdb); /* writes the spend still queued */
	sg_ctr_free(gw->counters);
	free(gw->config_path);
	sg_embed_free(gw->owned_embedder);
	sg_stats_free(gw->stats);
	free(gw);
}

/* Append the lines of text (each ending in '\n') as a JSON array. */
static void json_lines(sg_buf_t *out, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	sg_buf_puts(out, "[");
	for (int first = 1; p < end; first = 0) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (!first)
			sg_buf_puts(out, ",");
		sg_buf_json_str(out, p, n);
		p += n + 1;
	}
	sg_buf_puts(out, "]");
}

int sg__gateway_reload(sg_gateway_t *gw, sg_buf_t *report)
{
	sg_config_t *cfg = NULL;
	sg_buf_t errors, kept;
	sg_gen_t *g = NULL;
	int rc;

	sg_buf_init(&errors, 0);
	sg_buf_init(&kept, 0);
	if (gw->config_path == NULL) {
		sg_buf_puts(&errors, "semgate runs on its built-in configuration (no --config file): "
		                     "there is nothing to reload\n");
		rc = SG_EINVAL;
	} else if ((rc = sg_config_load(&cfg, gw->config_path, &errors)) == 0 &&
	           (rc = sg_config_keep_fixed(gw->gen->cfg, cfg, &kept)) == 0) {
		rc = sg__gen_new(&g, cfg, 1, gw->gen, gw->gen->number + 1,
		                 sg_now_us() ^ gw->seed ^ gw->gen->number);
		cfg = NULL; /* the generation has it, or freed it */
	}
	sg_config_free(cfg);
	if (rc) {
		if (errors.len == 0)
			sg_buf_printf(&errors, "%s\n", sg_strerror(rc));
		gw->reload_failures++;
		sg_log_error("reload of %s refused, the configuration in use is unchanged "
		             "(generation %llu): %.*s",
		             gw->config_path ? gw->config_path : "(built-in)",
		             (unsigned long long)gw->gen->number,
		             (int)(errors.len ? errors.len - 1 : 0), errors.data ? errors.data : "");
		if (report) {
			sg_buf_printf(report, "{\"reloaded\":false,\"generation\":%llu,\"errors\":",
			              (unsigned long long)gw->gen->number);
			json_lines(report, errors.data ? errors.data : "", errors.len);
			sg_buf_puts(report, "}\n");
		}
		sg_buf_free(&errors);
		sg_buf_free(&kept);
		return rc;
	}
	/* the swap: new requests take g; the old one lives while requests pin it */
	sg_gen_t *old = gw->gen;
	gw->gen = g;
	if (gw->http)
		sg__server_set_config(gw->http, g->cfg); /* its limits */
	sg__gen_unref(old);
	gw->reloads++;
	sg_log_set_level(g->cfg->log_level);
	sg_log_info("configuration %s reloaded: generation %llu, %zu model%s",
	            gw->config_path, (unsigned long long)g->number, g->cfg->nmodels,
	            g->cfg->nmodels == 1 ? "" : "s");
	if (kept.len)
		sg_log_warn("reload: these options cannot change while semgate runs and keep their "
		            "value until a restart: %.*s", (int)kept.len - 1, kept.data);
	if (report) {
		sg_buf_printf(report, "{\"reloaded\":true,\"generation\":%llu,\"models\":%zu,"
		              "\"not_applied\":", (unsigned long long)g->number, g->cfg->nmodels);
		json_lines(report, kept.data ? kept.data : "", kept.len);
		sg_buf_puts(report, "}\n");
	}
	sg_buf_free(&errors);
	sg_buf_free(&kept);
	return 0;
}


int sg__gateway_set_config_path(sg_gateway_t *gw, const char *path)
{
	char *p = path ? strdup(path) : NULL;
	if (path && p == NULL)
		return SG_ENOMEM;
	free(gw->config_path);
	gw->config_path = p;
	return 0;
}

/* --- the front end's handler -------------------------------------------------- */

/* The connection is freed: drop what its last request still holds. */
static void gw_release(sg_req_t *req)
{
	sg__call_free(req); /* the steps' state with it */
	sg__gen_unref(req->gen); /* after everything that may still read it */
	req->gen = NULL;
}

static void gw_drained(void *app)
{
	sg__gateway_close(app);
}

static const sg_http_handler_t gateway_handler = {
	.request = sg__handle,
	.abort = sg__handle_abort,
	.writable = sg__handle_writable,
	.release = gw_release,
	.drained = gw_drained,
};

/* --- semgate/server.h: a gateway with one front end --------------------------- */

int sg_server_new(sg_server_t **out, uv_loop_t *loop, const sg_config_t *cfg,
                  sg_cache_t *cache, sg_embedder_t *embedder)
{
	sg_gateway_t *gw = NULL;
	sg_server_t *srv = NULL;
	int rc;

	*out = NULL;
	if ((rc = sg__gateway_new(&gw, loop, cfg, cache, embedder)) != 0) {
		sg__gateway_free(gw); /* none of its own handles were started */
		return rc;
	}
	rc = sg__http_new(&srv, loop, cfg, &gateway_handler, gw);
	if (srv == NULL) {
		sg__gateway_close(gw); /* out of memory at start: the process ends */
		return rc;
	}
	gw->http = srv;
	if (rc)
		sg__gateway_close(gw); /* nothing will be served: the caller runs the loop, then frees */
	*out = srv;
	return rc;
}

int sg_server_set_config_path(sg_server_t *srv, const char *path)
{
	return sg__gateway_set_config_path(srv->app, path);
}

int sg_server_reload(sg_server_t *srv, sg_buf_t *report)
{
	return sg__gateway_reload(srv->app, report);
}

void sg_server_free(sg_server_t *srv)
{
	if (srv == NULL)
		return;
	sg_gateway_t *gw = srv->app;
	sg__http_free(srv);
	sg__gateway_free(gw);
}
