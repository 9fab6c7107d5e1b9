/* The embedder interface (include/semgate/embed.h): the `local` kind's
 * adapter and the dispatch to the others. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "semgate/config.h"
#include "semgate/embed.h"
#include "semgate/encoder.h"
#include "embed_int.h"

/* --- local: in line on the loop ------------------------------------------- */

typedef struct local_embedder {
	sg_embedder_t base;
	sg_embed_local_t *impl;
	uint64_t embedded, failures;
} local_embedder_t;

static int local_start(sg_embedder_t *e, sg_embed_req_t *req, const char *text, size_t len)
{
	local_embedder_t *le = (local_embedder_t *)e;
	int rc = sg_embed_local_embed(le->impl, text, len, req->out);
	if (rc == 0)
		le->embedded++;
	else
		le->failures++;
	return rc;
}

static void local_stats(const sg_embedder_t *e, sg_embed_stats_t *out)
{
	const local_embedder_t *le = (const local_embedder_t *)e;
	memset(out, 0, sizeof(*out));
	out->embedded = le->embedded;
	out->failures = le->failures;
}

static void local_free(sg_embedder_t *e)
{
	local_embedder_t *le = (local_embedder_t *)e;
	sg_embed_local_free(le->impl);
	free(le);
}

static const sg_embedder_ops_t local_ops = {
	"local", local_start, NULL, local_stats, NULL, local_free,
};

static int local_new(sg_embedder_t **out, const sg_embedder_config_t *cfg, char *err,
                     size_t errlen)
{
	local_embedder_t *le = calloc(1, sizeof(*le));
	sg_embed_local_opts_t o = {0};
	int rc;

	if (le == NULL)
		return SG_ENOMEM;
	o.dim = (int)cfg->dim;
	if ((rc = sg_embed_local_new(&le->impl, &o)) != 0) {
		snprintf(err, errlen, "local embedder: %s", sg_strerror(rc));
		free(le);
		return rc;
	}
	le->base.ops = &local_ops;
	le->base.dim = sg_embed_local_dim(le->impl);
	snprintf(le->base.id, sizeof(le->base.id), "%s", sg_embed_local_id(le->impl));
	snprintf(le->base.describe, sizeof(le->base.describe), "local (lexical), %d dimensions",
	         le->base.dim);
	*out = &le->base;
	return 0;
}

/* --- where model files are ------------------------------------------------ */

/*
 * A relative model path is looked up from the current directory first, then
 * from the directory above the executable's (build/semgate finds the
 * repository's models/ wherever it is started from).
 */
static const char *resolve(const char *path, char *buf, size_t n)
{
	struct stat sb;
	char exe[PATH_MAX];
	ssize_t k;

	if (path[0] == '/' || stat(path, &sb) == 0)
		return path;
	if ((k = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) <= 0)
		return path;
	exe[k] = '\0';
	for (int up = 1; up <= 2; up++) {
		char *slash = strrchr(exe, '/');
		if (slash == NULL)
			break;
		*slash = '\0';
		snprintf(buf, n, "%s/%s", exe, path);
		if (stat(buf, &sb) == 0)
			return buf;
	}
	return path;
}

int sg_embed_new(sg_embedder_t **out, struct uv_loop_s *loop, const sg_embedder_config_t *cfg,
                 char *err, size_t errlen)
{
	char buf[PATH_MAX + 256];

	*out = NULL;
	if (strcmp(cfg->provider, "local") == 0)
		return local_new(out, cfg, err, errlen);
	if (strcmp(cfg->provider, "model") == 0) {
		const char *dir = resolve(cfg->model_path, buf, sizeof(buf));
		char why[1024];
		int rc = sg__embed_model_new(out, loop, cfg, dir, why, sizeof(why));
		if (rc)
			snprintf(err, errlen, "cache.embedder (model): %s%s", why,
			         rc == SG_EIO ? " (bash .ci/setup installs the default model; "
			                        "semgate --pull-model fetches others)"
			                      : "");
		return rc;
	}
	if (strcmp(cfg->provider, "static") == 0) {
		const char *path = resolve(cfg->static_path, buf, sizeof(buf));
		char why[1024];
		int rc = sg__embed_static_new(out, path, why, sizeof(why));
		if (rc)
			snprintf(err, errlen, "cache.embedder (static): %s", why);
		return rc;
	}
	snprintf(err, errlen, "cache.embedder: provider \"%s\" is not an in-process embedder",
	         cfg->provider);
	return SG_EINVAL;
}

int sg_embed_check(const sg_embedder_config_t *cfg, char *err, size_t errlen, char *desc,
                   size_t desclen)
{
	char buf[PATH_MAX + 256];

	if (strcmp(cfg->provider, "openai") == 0) {
		snprintf(desc, desclen, "openai %s at %s (not contacted)", cfg->model, cfg->base_url);
		return 0;
	}
	if (strcmp(cfg->provider, "model") == 0) {
		sg_encoder_t *m;
		sg_encoder_opts_t o = {(int)cfg->max_tokens, cfg->prefix, 1};
		char why[1024];
		int rc = sg_encoder_load(&m, resolve(cfg->model_path, buf, sizeof(buf)), &o, why,
		                         sizeof(why));
		if (rc) {
			snprintf(err, errlen, "cache.embedder (model): %s", why);
			return rc;
		}
		snprintf(desc, desclen, "model %s", sg_encoder_describe(m));
		sg_encoder_free(m);
		return 0;
	}
	sg_embedder_t *e;
	int rc = sg_embed_new(&e, NULL, cfg, err, errlen);
	if (rc == 0) {
		snprintf(desc, desclen, "%s", e->describe);
		sg_embed_free(e);
	}
	return rc;
}

void sg_embed_stats(const sg_embedder_t *e, sg_embed_stats_t *out)
{
	memset(out, 0, sizeof(*out));
	if (e && e->ops->stats)
		e->ops->stats(e, out);
}

void sg_embed_close(sg_embedder_t *e)
{
	if (e && e->ops->close)
		e->ops->close(e);
}

void sg_embed_free(sg_embedder_t *e)
{
	if (e)
		e->ops->free(e);
}
