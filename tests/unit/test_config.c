/* Unit tests: configuration parsing and validation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "semgate/config.h"

static int parse(const char *json, sg_config_t **cfg, sg_buf_t *errors)
{
	sg_buf_init(errors, 0);
	return sg_config_parse(cfg, json, strlen(json), errors);
}

static void test_default_config(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	const char *j = sg_config_default_json();
	CHECK(parse(j, &cfg, &e) == 0);
	CHECK(cfg != NULL);
	if (cfg) {
		CHECK_STR(cfg->listen_host, "127.0.0.1");
		CHECK(cfg->listen_port == 8080);
		CHECK(cfg->nmodels == 1);
		CHECK_STR(cfg->models[0].name, "gpt-4o-mini");
		CHECK(cfg->cache.threshold > 0.969 && cfg->cache.threshold < 0.971);
		CHECK(cfg->limits.max_body_bytes == 1 << 20);
	}
	sg_config_free(cfg);
	sg_buf_free(&e);
}

static void test_minimal_and_defaults(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	setenv("SG_TEST_KEY", "sk-test", 1);
	CHECK(parse("{\"models\":[{\"name\":\"m\",\"deployments\":[{\"base_url\":"
	            "\"http://h:1/v1/\",\"api_key_env\":\"SG_TEST_KEY\"},"
	            "{\"base_url\":\"https://x\",\"model\":\"other\",\"headers\":{\"X-A\":\"1\"}}]}]}",
	            &cfg, &e) == 0);
	if (cfg) {
		sg_deployment_t *d = &cfg->models[0].deployments[0];
		CHECK_STR(d->base_url, "http://h:1/v1"); /* trailing slash dropped */
		CHECK_STR(d->model, "m");                 /* defaults to the group name */
		CHECK_STR(d->provider, "openai");
		CHECK_STR(d->api_key, "sk-test");
		CHECK_STR(d->id, "m/0");
		CHECK(d->seq == 0);
		d = &cfg->models[0].deployments[1];
		CHECK_STR(d->model, "other");
		CHECK(d->api_key == NULL);
		CHECK(d->nheaders == 1);
		CHECK_STR(d->headers[0], "X-A: 1");
		CHECK(d->seq == 1);
		CHECK(sg_config_find_model(cfg, "m", 1) == &cfg->models[0]);
		CHECK(sg_config_find_model(cfg, "mm", 2) == NULL);
		CHECK(sg_config_find_model(cfg, "", 0) == NULL);
	}
	sg_config_free(cfg);
	sg_buf_free(&e);
}

/* cache.threshold's default follows the embedder: 0.97 for the model one
 * (the default provider), 0.95 for the others; a given threshold stands. */
static void test_threshold_default_by_embedder(void)
{
	static const struct {
		const char *cache;
		double want;
	} cases[] = {
		{"{}", SG_MODEL_DEFAULT_THRESHOLD},
		{"{\"embedder\":{\"provider\":\"model\"}}", SG_MODEL_DEFAULT_THRESHOLD},
		{"{\"embedder\":{\"provider\":\"local\"}}", SG_DEFAULT_THRESHOLD},
		{"{\"embedder\":{\"provider\":\"static\"}}", SG_DEFAULT_THRESHOLD},
		{"{\"threshold\":0.9}", 0.9},
		{"{\"threshold\":0.95,\"embedder\":{\"provider\":\"model\"}}", 0.95},
		{"{\"threshold\":0.8,\"embedder\":{\"provider\":\"local\"}}", 0.8},
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(cases); i++) {
		char j[512];
		sg_config_t *cfg = NULL;
		sg_buf_t e;
		snprintf(j, sizeof(j),
		         "{\"models\":[{\"name\":\"m\",\"deployments\":[{\"base_url\":"
		         "\"http://h:1/v1\"}]}],\"cache\":%s}",
		         cases[i].cache);
		int rc = parse(j, &cfg, &e);
		CHECK_MSG(rc == 0, "%s", j);
		if (cfg)
			CHECK_MSG(fabs(cfg->cache.threshold - cases[i].want) < 1e-9,
			          "cache %s: threshold %g, want %g", cases[i].cache, cfg->cache.threshold,
			          cases[i].want);
		sg_config_free(cfg);
		sg_buf_free(&e);
	}
}

static void test_errors_name_paths(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	CHECK(parse("{\"listen\":\"nope\",\"limits\":{\"max_body_bytes\":0,\"x\":1},"
	            "\"cache\":{\"threshold\":1.5},\"log_level\":\"loud\","
	            "\"models\":[{\"name\":\"m\",\"deployments\":[{\"base_url\":\"ftp://x\","
	            "\"provider\":\"acme\",\"headers\":{\"Bad\\nName\":\"v\"}}]},"
	            "{\"name\":\"m\",\"deployments\":[]},7]}",
	            &cfg, &e) == SG_EINVAL);
	CHECK(cfg == NULL);
	CHECK_CONTAINS(e.data, "listen: ");
	CHECK_CONTAINS(e.data, "limits.max_body_bytes: must be in");
	CHECK_CONTAINS(e.data, "limits.x: unknown option");
	CHECK_CONTAINS(e.data, "cache.threshold: must be in [0, 1]");
	CHECK_CONTAINS(e.data, "log_level: must be one of");
	CHECK_CONTAINS(e.data, "models[0].deployments[0].base_url: must be an http(s) URL");
	CHECK_CONTAINS(e.data, "models[0].deployments[0].provider: unknown provider");
	CHECK_CONTAINS(e.data, "models[0].deployments[0].headers.Bad\nName: invalid header");
	CHECK_CONTAINS(e.data, "models[1].name: duplicate model name");
	CHECK_CONTAINS(e.data, "models[1].deployments: must be a non-empty array");
	CHECK_CONTAINS(e.data, "models[2]: must be an object");
	sg_buf_free(&e);
}

static void test_bad_json_and_types(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	CHECK(parse("{\"models\": [", &cfg, &e) == SG_EINVAL);
	CHECK_CONTAINS(e.data, "line 1, column");
	CHECK_CONTAINS(e.data, "invalid JSON");
	sg_buf_free(&e);
	CHECK(parse("[]", &cfg, &e) == SG_EINVAL);
	CHECK_CONTAINS(e.data, "must be a JSON object");
	sg_buf_free(&e);
	CHECK(parse("{}", &cfg, &e) == SG_EINVAL);
	CHECK_CONTAINS(e.data, "models: is required");
	sg_buf_free(&e);
	CHECK(parse("{\"models\":[{\"deployments\":[{}]}],\"limits\":{\"max_headers\":\"9\"}}",
	            &cfg, &e) == SG_EINVAL);
	CHECK_CONTAINS(e.data, "models[0].name: is required");
	CHECK_CONTAINS(e.data, "models[0].deployments[0].base_url: is required");
	CHECK_CONTAINS(e.data, "limits.max_headers: must be an integer");
	sg_buf_free(&e);
	CHECK(parse("{\"a\":1,\"a\":2}", &cfg, &e) == SG_EINVAL); /* duplicate keys */
	sg_buf_free(&e);
}

static void test_listen_forms(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	CHECK(parse("{\"listen\":\"[::1]:0\",\"models\":[{\"name\":\"m\",\"deployments\":"
	            "[{\"base_url\":\"http://h\"}]}]}", &cfg, &e) == 0);
	if (cfg) {
		CHECK_STR(cfg->listen_host, "::1");
		CHECK(cfg->listen_port == 0);
	}
	sg_config_free(cfg);
	sg_buf_free(&e);
	CHECK(parse("{\"listen\":\"h:70000\",\"models\":[{\"name\":\"m\",\"deployments\":"
	            "[{\"base_url\":\"http://h\"}]}]}", &cfg, &e) == SG_EINVAL);
	CHECK_CONTAINS(e.data, "listen: port must be");
	sg_buf_free(&e);
}

/* Issue 9, defect 6: a nameless model once a model has fallbacks crashed
 * the fallback check (sg_config_find_model on a NULL name). */
static void test_nameless_model_with_fallbacks(void)
{
	sg_config_t *cfg = NULL;
	sg_buf_t e;
	CHECK(parse("{\"models\":[{\"deployments\":[{\"base_url\":\"http://h\"}]},"
	            "{\"name\":\"b\",\"fallbacks\":[\"a\"],\"deployments\":"
	            "[{\"base_url\":\"http://h\"}]}]}", &cfg, &e) == SG_EINVAL);
	CHECK(cfg == NULL);
	CHECK_CONTAINS(e.data, "models[0].name");
	CHECK_CONTAINS(e.data, "no model named \"a\"");
	sg_buf_free(&e);
}

/* Issue 9, defect 4: admin_key_env naming an unset or empty variable is an
 * error, not admin endpoints open to anyone. */
static void test_admin_key_env_unset(void)
{
	sg_config_t *cfg = NULL;
	sg_buf_t e;
	const char *j = "{\"admin_key_env\":\"SG_TEST_ADMIN\",\"models\":[{\"name\":\"m\","
	                "\"deployments\":[{\"base_url\":\"http://h\"}]}]}";
	unsetenv("SG_TEST_ADMIN");
	CHECK(parse(j, &cfg, &e) == SG_EINVAL);
	CHECK_CONTAINS(e.data, "admin_key_env: the environment variable \"SG_TEST_ADMIN\" is unset");
	sg_buf_free(&e);
	setenv("SG_TEST_ADMIN", "", 1);
	CHECK(parse(j, &cfg, &e) == SG_EINVAL);
	sg_buf_free(&e);
	setenv("SG_TEST_ADMIN", "k", 1);
	CHECK(parse(j, &cfg, &e) == 0);
	if (cfg)
		CHECK_STR(cfg->admin_key, "k");
	sg_config_free(cfg);
	sg_buf_free(&e);
	unsetenv("SG_TEST_ADMIN");
}

static void test_load_missing_file(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	sg_buf_init(&e, 0);
	CHECK(sg_config_load(&cfg, "/nonexistent/semgate.json", &e) == SG_EIO);
	CHECK_CONTAINS(e.data, "cannot open");
	sg_buf_free(&e);
}

/* A reload keeps what cannot change at run time and names it; the rest changes. */
static void test_keep_fixed(void)
{
	sg_config_t *a, *b;
	sg_buf_t e, kept;
	CHECK(parse("{\"listen\":\"127.0.0.1:1000\",\"models\":[{\"name\":\"m\",\"deployments\":"
	            "[{\"base_url\":\"http://a\"}]}],\"cache\":{\"path\":\"/p1\",\"threshold\":0.9,"
	            "\"embedder\":{\"provider\":\"local\",\"dim\":64}}}", &a, &e) == 0);
	sg_buf_free(&e);
	CHECK(parse("{\"listen\":\"127.0.0.1:2000\",\"models\":[{\"name\":\"n\",\"deployments\":"
	            "[{\"base_url\":\"http://b\"}]}],\"limits\":{\"max_connections\":5,"
	            "\"max_body_bytes\":4096},\"cache\":{\"path\":\"/p2\",\"threshold\":0.8,"
	            "\"index\":\"flat\",\"embedder\":{\"provider\":\"local\",\"dim\":128}}}",
	            &b, &e) == 0);
	sg_buf_free(&e);
	sg_buf_init(&kept, 0);
	if (a && b) {
		CHECK(sg_config_keep_fixed(a, b, &kept) == 0);
		CHECK_STR(kept.data, "listen\nlimits.max_connections\ncache.path\ncache.index\n"
		                     "cache.embedder.dim\n");
		CHECK(b->listen_port == 1000);
		CHECK(b->limits.max_connections == a->limits.max_connections);
		CHECK_STR(b->cache.path, "/p1");
		CHECK_STR(b->cache.index, "auto");
		CHECK(b->cache.embedder.dim == 64);
		/* what may change did */
		CHECK(b->limits.max_body_bytes == 4096);
		CHECK(b->cache.threshold > 0.79 && b->cache.threshold < 0.81);
		CHECK_STR(b->models[0].name, "n");
		/* the same file again: nothing to report */
		sg_buf_reset(&kept);
		CHECK(sg_config_keep_fixed(a, b, &kept) == 0);
		CHECK(kept.len == 0);
	}
	sg_buf_free(&kept);
	sg_config_free(a);
	sg_config_free(b);
}

/* A reload that asks for another embedder keeps the running one (FIXED), and a
 * default threshold follows the one kept; a threshold the file gives stands. */
static void test_reload_threshold_follows_kept_embedder(void)
{
	static const char *const fmt =
		"{\"models\":[{\"name\":\"m\",\"deployments\":[{\"base_url\":\"http://a\"}]}],"
		"\"cache\":{%s\"embedder\":{\"provider\":\"%s\"}}}";
	static const struct {
		const char *old_p, *new_p, *new_t;
		double want;
	} cases[] = {
		{"model", "static", "", SG_MODEL_DEFAULT_THRESHOLD},
		{"static", "model", "", SG_DEFAULT_THRESHOLD},
		{"local", "model", "", SG_DEFAULT_THRESHOLD},
		{"model", "static", "\"threshold\":0.9,", 0.9},
		{"model", "model", "\"threshold\":0.93,", 0.93},
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(cases); i++) {
		char ja[512], jb[512];
		sg_config_t *a = NULL, *b = NULL;
		sg_buf_t e, kept;
		snprintf(ja, sizeof(ja), fmt, "", cases[i].old_p);
		snprintf(jb, sizeof(jb), fmt, cases[i].new_t, cases[i].new_p);
		int ra = parse(ja, &a, &e);
		sg_buf_free(&e);
		int rb = parse(jb, &b, &e);
		sg_buf_free(&e);
		CHECK(ra == 0 && rb == 0);
		sg_buf_init(&kept, 0);
		if (a && b) {
			CHECK(sg_config_keep_fixed(a, b, &kept) == 0);
			CHECK_STR(b->cache.embedder.provider, cases[i].old_p);
			CHECK_MSG(fabs(b->cache.threshold - cases[i].want) < 1e-9,
			          "%s -> %s %s: threshold %g, want %g", cases[i].old_p, cases[i].new_p,
			          cases[i].new_t, b->cache.threshold, cases[i].want);
		}
		sg_buf_free(&kept);
		sg_config_free(a);
		sg_config_free(b);
	}
}

/* auth, budget, prices: defaults, the rules between them, and LiteLLM's price file. */
static void test_auth_and_prices(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	const char *m = "\"models\":[{\"name\":\"m\",\"deployments\":[{\"base_url\":\"http://a\","
	                "\"model\":\"gpt-x\"}]},{\"name\":\"p\",\"input_per_mtok\":3,"
	                "\"deployments\":[{\"base_url\":\"http://a\"}]}]";
	char j[2048];

	/* defaults: off, nothing priced but what says so */
	snprintf(j, sizeof(j), "{%s}", m);
	CHECK(parse(j, &cfg, &e) == 0);
	if (cfg) {
		CHECK(!cfg->auth.keys);
		CHECK(!cfg->auth.record_spend);
		CHECK(cfg->auth.burst == 1.0);
		CHECK(cfg->auth.default_completion_tokens == 1024);
		CHECK(!cfg->auth.admit_unpriced);
		CHECK(!cfg->models[0].priced);
		CHECK(cfg->models[0].input_per_mtok == 0);
		CHECK(cfg->models[1].priced);
		CHECK(cfg->models[1].input_per_mtok == 3 && cfg->models[1].output_per_mtok == 0);
		CHECK(cfg->models[1].cached_input_per_mtok == 3); /* unset: the input price */
	}
	sg_config_free(cfg);
	sg_buf_free(&e);

	/* keys mode needs a secret of 16 bytes and an admin key */
	unsetenv("SG_T_SECRET");
	snprintf(j, sizeof(j), "{\"auth\":{\"mode\":\"keys\"},%s}", m);
	CHECK(parse(j, &cfg, &e) == SG_EINVAL);
	CHECK(e.data && strstr(e.data, "auth.secret_env: is required"));
	CHECK(e.data && strstr(e.data, "auth.mode: \"keys\" needs admin_key_env"));
	sg_buf_free(&e);
	setenv("SG_T_SECRET", "short", 1);
	setenv("SG_T_ADMIN", "adm", 1);
	snprintf(j, sizeof(j), "{\"admin_key_env\":\"SG_T_ADMIN\",\"auth\":{\"mode\":\"keys\","
	         "\"secret_env\":\"SG_T_SECRET\"},%s}", m);
	CHECK(parse(j, &cfg, &e) == SG_EINVAL);
	CHECK(e.data && strstr(e.data, "shorter than 16 bytes"));
	sg_buf_free(&e);
	setenv("SG_T_SECRET", "0123456789abcdef", 1);
	CHECK(parse(j, &cfg, &e) == 0);
	if (cfg) {
		CHECK(cfg->auth.keys);
		CHECK(cfg->auth.record_spend); /* always with keys */
		CHECK_STR(cfg->auth.secret, "0123456789abcdef");
	}
	sg_config_free(cfg);
	sg_buf_free(&e);

	/* bad values name their paths */
	snprintf(j, sizeof(j), "{\"auth\":{\"burst\":2,\"nope\":1},\"budget\":{\"unpriced\":\"x\","
	         "\"timezone\":\"../etc\"},%s}", m);
	CHECK(parse(j, &cfg, &e) == SG_EINVAL);
	CHECK(e.data && strstr(e.data, "auth.burst: must be in"));
	CHECK(e.data && strstr(e.data, "auth.nope: unknown option"));
	CHECK(e.data && strstr(e.data, "budget.unpriced: must be one of"));
	CHECK(e.data && strstr(e.data, "budget.timezone:"));
	sg_buf_free(&e);

	/* LiteLLM's price file: by the deployment's model, per token -> per million */
	char path[] = "/tmp/sg-prices-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fputs("{\"sample_spec\":{\"input_cost_per_token\":\"x\"},\"gpt-x\":{\"input_cost_per_token\":"
	      "2.5e-06,\"output_cost_per_token\":1e-05,\"cache_read_input_token_cost\":1.25e-06,"
	      "\"litellm_provider\":\"openai\",\"mode\":\"chat\"},\"p\":{\"input_cost_per_token\":1,"
	      "\"output_cost_per_token\":1}}",
	      f);
	fclose(f);
	snprintf(j, sizeof(j), "{\"prices_file\":\"%s\",%s}", path, m);
	CHECK(parse(j, &cfg, &e) == 0);
	if (cfg) {
		CHECK(cfg->models[0].priced);
		CHECK(fabs(cfg->models[0].input_per_mtok - 2.5) < 1e-9);
		CHECK(fabs(cfg->models[0].output_per_mtok - 10) < 1e-9);
		CHECK(fabs(cfg->models[0].cached_input_per_mtok - 1.25) < 1e-9);
		CHECK(cfg->models[1].input_per_mtok == 3); /* its own price wins over the file's */
	}
	sg_config_free(cfg);
	sg_buf_free(&e);
	f = fopen(path, "w");
	fputs("{not json", f);
	fclose(f);
	CHECK(parse(j, &cfg, &e) == SG_EINVAL);
	CHECK(e.data && strstr(e.data, "prices_file: "));
	sg_buf_free(&e);
	unlink(path);
}

int main(void)
{
	test_auth_and_prices();
	test_default_config();
	test_minimal_and_defaults();
	test_threshold_default_by_embedder();
	test_errors_name_paths();
	test_bad_json_and_types();
	test_listen_forms();
	test_load_missing_file();
	test_keep_fixed();
	test_reload_threshold_follows_kept_embedder();
	test_nameless_model_with_fallbacks();
	test_admin_key_env_unset();
	CHECK_DONE();
}
