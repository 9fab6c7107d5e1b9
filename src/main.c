/* semgate: command line, signals, the loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "semgate/config.h"
#include "semgate/log.h"
#include "semgate/server.h"

static const char usage[] =
	"usage: semgate [--config FILE]      run (without --config: the built-in default)\n"
	"       semgate --check FILE         validate a configuration and exit\n"
	"       semgate --print-default-config\n"
	"       semgate --version | --help\n";

/* What the signal handlers need. */
typedef struct app {
	sg_server_t *srv;   /* the server */
	uv_signal_t sigterm; /* graceful drain */
	uv_signal_t sigint;  /* graceful drain */
} app_t;

static void on_signal(uv_signal_t *s, int signum)
{
	app_t *app = s->data;
	sg_log_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	uv_close((uv_handle_t *)&app->sigterm, NULL);
	uv_close((uv_handle_t *)&app->sigint, NULL);
	sg_server_drain(app->srv);
}

static int check(const char *path)
{
	sg_config_t *cfg;
	sg_buf_t errors;
	int rc;

	sg_buf_init(&errors, 0);
	rc = sg_config_load(&cfg, path, &errors);
	if (rc == 0) {
		printf("configuration OK\n");
		sg_config_free(cfg);
	} else {
		fputs(errors.data ? errors.data : "invalid configuration\n", stdout);
	}
	sg_buf_free(&errors);
	return rc == 0 ? 0 : 1;
}

static int run(const char *path)
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

	uv_loop_init(&loop);
	rc = sg_server_new(&app.srv, &loop, cfg);
	if (rc) {
		uv_run(&loop, UV_RUN_DEFAULT);
		sg_server_free(app.srv);
		uv_loop_close(&loop);
		sg_config_free(cfg);
		return 1;
	}
	uv_signal_init(&loop, &app.sigterm);
	uv_signal_init(&loop, &app.sigint);
	app.sigterm.data = app.sigint.data = &app;
	uv_signal_start(&app.sigterm, on_signal, SIGTERM);
	uv_signal_start(&app.sigint, on_signal, SIGINT);

	sg_log_info("semgate %s listening on http://%s:%d (%zu model%s)", SEMGATE_VERSION,
	            cfg->listen_host, sg_server_port(app.srv), cfg->nmodels,
	            cfg->nmodels == 1 ? "" : "s");
	uv_run(&loop, UV_RUN_DEFAULT);
	sg_log_info("stopped");

	sg_server_free(app.srv);
	if (uv_loop_close(&loop) != 0)
		sg_log_warn("loop closed with handles still open");
	sg_config_free(cfg);
	return 0;
}

int main(int argc, char **argv)
{
	const char *config = NULL;

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
		if (strcmp(a, "--check") == 0 && i + 1 < argc)
			return check(argv[i + 1]);
		if ((strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) && i + 1 < argc) {
			config = argv[++i];
			continue;
		}
		fprintf(stderr, "semgate: unknown or incomplete option '%s'\n%s", a, usage);
		return 2;
	}
	return run(config);
}
