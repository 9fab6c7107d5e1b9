/* Config generations: see gen.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "gen.h"
#include "server_int.h"

static void gen_free(sg_gen_t *g)
{
	for (size_t i = 0; g->dep_headers && i < g->ndeps; i++)
		sg_upstream_headers_free(g->dep_headers[i]);
	free(g->dep_headers);
	sg_router_free(g->router);
	if (g->owns_cfg)
		sg_config_free(g->cfg);
	free(g);
}

int sg__gen_new(sg_gen_t **out, sg_config_t *cfg, int owns_cfg, sg_gen_t *prev,
                uint64_t number, uint64_t seed)
{
	sg_gen_t *g = calloc(1, sizeof(*g));
	struct timeval tv;

	*out = NULL;
	if (g == NULL) {
		if (owns_cfg)
			sg_config_free(cfg);
		return SG_ENOMEM;
	}
	g->refs = 1;
	g->number = number;
	gettimeofday(&tv, NULL);
	g->loaded_unix_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
	g->cfg = cfg;
	g->owns_cfg = owns_cfg;
	if ((g->router = sg_router_new(cfg, seed)) == NULL)
		goto oom;
	if (prev)
		sg_router_adopt(g->router, prev->router);

	/* One prebuilt upstream header list per deployment. */
	for (size_t i = 0; i < cfg->nmodels; i++)
		g->ndeps += cfg->models[i].ndeployments;
	g->dep_headers = calloc(g->ndeps ? g->ndeps : 1, sizeof(*g->dep_headers));
	if (g->dep_headers == NULL)
		goto oom;
	for (size_t i = 0; i < cfg->nmodels; i++) {
		for (size_t j = 0; j < cfg->models[i].ndeployments; j++) {
			const sg_deployment_t *d = &cfg->models[i].deployments[j];
			char auth[1024];
			int with_key = d->api_key && d->prov->passthrough; /* others: per request */
			if (with_key)
				d->prov->auth(d->api_key, auth, sizeof(auth));
			g->dep_headers[d->seq] = sg__json_headers(with_key ? auth : NULL,
			                                          (const char *const *)d->headers,
			                                          d->nheaders);
			if (g->dep_headers[d->seq] == NULL)
				goto oom;
		}
	}
	*out = g;
	return 0;
oom:
	gen_free(g);
	return SG_ENOMEM;
}

sg_gen_t *sg__gen_ref(sg_gen_t *g)
{
	g->refs++;
	return g;
}

void sg__gen_unref(sg_gen_t *g)
{
	if (g != NULL && --g->refs == 0)
		gen_free(g);
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

int sg_server_reload(sg_server_t *srv, sg_buf_t *report)
{
	sg_config_t *cfg = NULL;
	sg_buf_t errors, kept;
	sg_gen_t *g = NULL;
	int rc;

	sg_buf_init(&errors, 0);
	sg_buf_init(&kept, 0);
	if (srv->config_path == NULL) {
		sg_buf_puts(&errors, "semgate runs on its built-in configuration (no --config file): "
		                     "there is nothing to reload\n");
		rc = SG_EINVAL;
	} else if ((rc = sg_config_load(&cfg, srv->config_path, &errors)) == 0 &&
	           (rc = sg_config_keep_fixed(srv->cfg, cfg, &kept)) == 0) {
		rc = sg__gen_new(&g, cfg, 1, srv->gen, srv->gen->number + 1,
		                 sg_now_us() ^ srv->id_seed ^ srv->gen->number);
		cfg = NULL; /* the generation has it, or freed it */
	}
	sg_config_free(cfg);
	if (rc) {
		if (errors.len == 0)
			sg_buf_printf(&errors, "%s\n", sg_strerror(rc));
		srv->reload_failures++;
		sg_log_error("reload of %s refused, the configuration in use is unchanged "
		             "(generation %llu): %.*s",
		             srv->config_path ? srv->config_path : "(built-in)",
		             (unsigned long long)srv->gen->number,
		             (int)(errors.len ? errors.len - 1 : 0), errors.data ? errors.data : "");
		if (report) {
			sg_buf_printf(report, "{\"reloaded\":false,\"generation\":%llu,\"errors\":",
			              (unsigned long long)srv->gen->number);
			json_lines(report, errors.data ? errors.data : "", errors.len);
			sg_buf_puts(report, "}\n");
		}
		sg_buf_free(&errors);
		sg_buf_free(&kept);
		return rc;
	}
	/* the swap: new requests take g; the old one lives while requests pin it */
	sg_gen_t *old = srv->gen;
	srv->gen = g;
	srv->cfg = g->cfg;
	sg__gen_unref(old);
	srv->reloads++;
	sg_log_set_level(g->cfg->log_level);
	sg_log_info("configuration %s reloaded: generation %llu, %zu model%s",
	            srv->config_path, (unsigned long long)g->number, g->cfg->nmodels,
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

int sg_server_set_config_path(sg_server_t *srv, const char *path)
{
	char *p = path ? strdup(path) : NULL;
	if (path && p == NULL)
		return SG_ENOMEM;
	free(srv->config_path);
	srv->config_path = p;
	return 0;
}
