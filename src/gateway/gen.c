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

