/* semgate: command line, signals, the loop. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "semgate/config.h"
#include "semgate/embed.h"
#include "semgate/encoder.h"
#include "semgate/log.h"
#include "semgate/server.h"
#include "distill.h"
#include "pull_model.h"

static const char usage[] =
	"usage: semgate [--config FILE]      run (without --config: the built-in default)\n"
	"       semgate --check FILE         validate a configuration (and its embedding model) and exit\n"
	"       semgate --pull-model NAME[@REV] [--to DIR] [--hub URL] [--force]\n"
	"                                    download an embedding model from the Hugging Face hub\n"
	"       semgate --distill-static MODEL_DIR OUT [--dim N] [--sif A] [--force]\n"
	"                                    distill the `static` embedder's table from a model\n"
	"       semgate --config FILE --rebuild-cache   drop a cache made by another embedder\n"
	"       semgate --print-default-config\n"
	"       semgate --version | --help\n";

/* What the signal handlers need. */
typedef struct app {
	sg_server_t *srv;   /* the server */
	sg_cache_t *cache;  /* the semantic cache, or NULL when off */
	sg_embedder_t *embedder; /* the in-process embedder, or NULL (openai, or no cache) */
	uv_signal_t sigterm; /* graceful drain */
	uv_signal_t sigint;  /* graceful drain */
	uv_signal_t sighup;  /* reload the configuration file */
} app_t;

static void on_hup(uv_signal_t *s, int signum)
{
	app_t *app = s->data;
	sg_server_reload(app->srv, NULL); /* logs what happened */
}

static void on_signal(uv_signal_t *s, int signum)
{
	app_t *app = s->data;
	sg_log_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	uv_close((uv_handle_t *)&app->sigterm, NULL);
	uv_close((uv_handle_t *)&app->sigint, NULL);
	uv_close((uv_handle_t *)&app->sighup, NULL);
	sg_server_drain(app->srv);
}

static int check(const char *path)
{
	sg_config_t *cfg = NULL;
	sg_buf_t errors;
	int rc;

	sg_buf_init(&errors, 0);
	rc = sg_config_load(&cfg, path, &errors);
	if (rc == 0 && cfg->cache.enabled) {
		char err[1200], desc[512];
		rc = sg_embed_check(&cfg->cache.embedder, err, sizeof(err), desc, sizeof(desc));
		if (rc)
			printf("%s\n", err);
		else
			printf("embedder: %s\n", desc);
	}
	if (rc == 0) {
		printf("configuration OK\n");
		sg_config_free(cfg);
	} else if (cfg) {
		sg_config_free(cfg);
	} else {
		fputs(errors.data ? errors.data : "invalid configuration\n", stdout);
	}
	sg_buf_free(&errors);
	return rc == 0 ? 0 : 1;
}

/*
 * A test hook, not a setting: with SEMGATE_TEST_CHECKPOINT_HOLD=FILE in the
 * environment, an index checkpoint waits after serialising for as long as
 * FILE exists, so that a test can watch the gateway answer while a save is
 * in progress (tests/integration/test_cache_persist.py). Runs on the cache's
 * saver thread.
 */
static int hold_checkpoint(void *ud, int stage)
{
	const char *path = ud;
	while (stage == SG_CACHE_CKPT_SERIALISED && access(path, F_OK) == 0)
		usleep(10000);
	return 0;
}

static int open_cache(sg_config_t *cfg, app_t *app, uv_loop_t *loop)
{
	const sg_cache_config_t *cc = &cfg->cache;
	char err[1024] = "";
	int rc;

	char remote_id[1024];
	const char *id;
	int dim = (int)cc->embedder.dim;

	if (strcmp(cc->embedder.provider, "openai") != 0) {
		uint64_t t0 = sg_now_us();
		rc = sg_embed_new(&app->embedder, loop, &cc->embedder, err, sizeof(err));
		if (rc) {
			sg_log_error("%s", err);
			return rc;
		}
		id = sg_embed_id(app->embedder);
		dim = sg_embed_dim(app->embedder);
		sg_log_info("embedder: %s (loaded in %.1f ms)", app->embedder->describe,
		            (double)(sg_now_us() - t0) / 1000.0);
	} else {
		/* the server creates it: it needs the upstream client */
		sg__embed_openai_id(&cc->embedder, remote_id, sizeof(remote_id));
		id = remote_id;
	}
	sg_cache_opts_t co = {
		.path = cc->path,
		.embedder_id = id,
		.dim = dim,
		.index_type = strcmp(cc->index, "hnsw") == 0 ? SG_INDEX_HNSW : SG_INDEX_FLAT,
		.auto_hnsw = strcmp(cc->index, "auto") == 0,
		.hnsw_min_entries = (size_t)cc->hnsw_min_entries,
		.index_opts = {(int)cc->hnsw_m, (int)cc->hnsw_ef_search, 0.25},
		.max_entries = (uint64_t)cc->max_entries,
		.max_bytes = (uint64_t)cc->max_bytes,
		.map_size = 0,
		.max_map_size = (size_t)cc->map_size_mb << 20,
		.rebuild = (int)cc->rebuild,
		.verify = (int)cc->verify,
		.verify_hits = (int)cc->verifier,
		/* the in-process sentence model judges which differing words matter:
		 * the verifier keeps to what such models blur (bench/QUALITY.md) */
		.verify_structure_only = strcmp(cc->embedder.provider, "model") == 0,
	};
	const char *hold = getenv("SEMGATE_TEST_CHECKPOINT_HOLD");
	if (hold && *hold) {
		co.ckpt_hook = hold_checkpoint;
		co.ckpt_hook_ud = (void *)hold;
		sg_log_warn("SEMGATE_TEST_CHECKPOINT_HOLD: index checkpoints wait while %s exists "
		            "(a test hook)", hold);
	}
	uint64_t t0 = sg_now_us();
	rc = sg_cache_open(&app->cache, &co, (int64_t)time(NULL), err, sizeof(err));
	if (rc) {
		sg_log_error("cache: %s", err[0] ? err : sg_strerror(rc));
		return rc;
	}
	sg_index_set_threads(1); /* loading is done: searches run on the loop alone */
	sg_cache_stats_t st;
	sg_cache_stats(app->cache, &st);
	sg_log_info("cache at %s: %llu entries in %llu scopes (%s index, embedder %s), loaded in %.1f ms",
	            cc->path, (unsigned long long)st.entries, (unsigned long long)st.scopes,
	            st.index_type, co.embedder_id, (double)(sg_now_us() - t0) / 1000.0);
	return 0;
}

/* Stop the embedder's threads, close its handles, free it. */
static void close_embedder(app_t *app, uv_loop_t *loop)
{
	if (app->embedder == NULL)
		return;
	sg_embed_close(app->embedder);
	uv_run(loop, UV_RUN_NOWAIT); /* its close callbacks */
	sg_embed_free(app->embedder);
	app->embedder = NULL;
}

/* Whether host is a loopback address (only this machine can connect). */
static int is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return strcmp(host, "localhost") == 0;
}

static int run(const char *path, int rebuild)
{
	uv_loop_t loop;
	sg_config_t *cfg;
	sg_buf_t errors;
	app_t app = {0};
	int rc;

	sg_buf_init(&errors, 0);
	if (path)
		rc = sg_config_load(&cfg, path, &errors);
	else
		rc = sg_config_parse(&cfg, sg_config_default_json(), strlen(sg_config_default_json()),
		                     &errors);
	if (rc) {
		fprintf(stderr, "semgate: invalid configuration %s:\n%s", path ? path : "(built-in)",
		        errors.data ? errors.data : sg_strerror(rc));
		sg_buf_free(&errors);
		return 1;
	}
	sg_buf_free(&errors);
	sg_log_set_level(cfg->log_level);
	for (size_t i = 0; i < cfg->nmodels; i++)
		for (size_t j = 0; j < cfg->models[i].ndeployments; j++) {
			const sg_deployment_t *d = &cfg->models[i].deployments[j];
			if (d->api_key_env && d->api_key == NULL)
				sg_log_warn("%s: environment variable %s is not set: no API key is sent",
				            d->id, d->api_key_env);
		}

	if (cfg->admin_key == NULL && !is_loopback(cfg->listen_host))
		sg_log_warn("WARNING: admin endpoints are open to anyone who can reach %s:%d: "
		            "/stats, every stored prompt and answer under /cache/entries, and "
		            "DELETE /cache. Set admin_key_env, or listen on 127.0.0.1",
		            cfg->listen_host, cfg->listen_port);

	if (rebuild)
		cfg->cache.rebuild = 1;
	uv_loop_init(&loop);
	if (cfg->cache.enabled && open_cache(cfg, &app, &loop) != 0) {
		close_embedder(&app, &loop);
		uv_loop_close(&loop);
		sg_config_free(cfg);
		return 1;
	}

	rc = sg_server_new(&app.srv, &loop, cfg, app.cache, app.embedder);
	if (rc) {
		uv_run(&loop, UV_RUN_DEFAULT);
		sg_server_free(app.srv);
		close_embedder(&app, &loop);
		uv_loop_close(&loop);
		sg_cache_close(app.cache);
		sg_config_free(cfg);
		return 1;
	}
	uv_signal_init(&loop, &app.sigterm);
	uv_signal_init(&loop, &app.sigint);
	app.sigterm.data = app.sigint.data = &app;
	uv_signal_start(&app.sigterm, on_signal, SIGTERM);
	uv_signal_start(&app.sigint, on_signal, SIGINT);
	if (path && sg_server_set_config_path(app.srv, path) != 0)
		sg_log_warn("out of memory: SIGHUP and POST /admin/reload will not reload");
	uv_signal_init(&loop, &app.sighup);
	app.sighup.data = &app;
	uv_signal_start(&app.sighup, on_hup, SIGHUP);
	uv_unref((uv_handle_t *)&app.sighup); /* it must not keep a drained loop running */

	sg_log_info("semgate %s listening on http://%s:%d (%zu model%s)", SEMGATE_VERSION,
	            cfg->listen_host, sg_server_port(app.srv), cfg->nmodels,
	            cfg->nmodels == 1 ? "" : "s");
	uv_run(&loop, UV_RUN_DEFAULT);
	sg_log_info("stopped");

	sg_server_free(app.srv);
	close_embedder(&app, &loop);
	if (uv_loop_close(&loop) != 0)
		sg_log_warn("loop closed with handles still open");
	sg_cache_close(app.cache);
	sg_config_free(cfg);
	return 0;
}

int main(int argc, char **argv)
{
	const char *config = NULL;
	int rebuild = 0;

	sg_encoder_fix_blas(argv); /* may execute us again, with OpenBLAS's right kernels */
	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			printf("semgate %s\n", SEMGATE_VERSION);
			return 0;
		}
		if (strcmp(a, "--print-default-config") == 0) {
			fputs(sg_config_default_json(), stdout);
			return 0;
		}
		if (strcmp(a, "--distill-static") == 0)
			return sg_distill_main(argc - i - 1, argv + i + 1);
		if (strcmp(a, "--pull-model") == 0)
			return sg_pull_model_main(argc - i - 1, argv + i + 1);
		if (strcmp(a, "--check") == 0 && i + 1 < argc)
			return check(argv[i + 1]);
		if (strcmp(a, "--rebuild-cache") == 0) {
			rebuild = 1;
			continue;
		}
		if ((strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) && i + 1 < argc) {
			config = argv[++i];
			continue;
		}
		fprintf(stderr, "semgate: unknown or incomplete option '%s'\n%s", a, usage);
		return 2;
	}
	return run(config, rebuild);
}
