/* Unit tests: routing strategies, priorities, rate limits, circuit breaking. */
#include <stdlib.h>

#include "check.h"
#include "semgate/router.h"

static sg_config_t *config(const char *model_extra, const char *deps)
{
	char json[4096];
	sg_config_t *cfg = NULL;
	sg_buf_t e;
	snprintf(json, sizeof(json),
	         "{\"models\":[{\"name\":\"m\"%s,\"deployments\":[%s]},"
	         "{\"name\":\"other\",\"deployments\":[{\"base_url\":\"http://o\"}]}],"
	         "\"cache\":{\"enabled\":false}}",
	         model_extra, deps);
	sg_buf_init(&e, 0);
	if (sg_config_parse(&cfg, json, strlen(json), &e) != 0)
		fprintf(stderr, "config: %s\n", e.data);
	sg_buf_free(&e);
	return cfg;
}

#define D3 "{\"base_url\":\"http://a\"},{\"base_url\":\"http://b\"},{\"base_url\":\"http://c\"}"

/* Pick n times (each attempt ends at once, ok); count by deployment index. */
static void spread(sg_router_t *r, const sg_model_t *m, int n, int *count, uint64_t now)
{
	for (int i = 0; i < n; i++) {
		const sg_deployment_t *d = sg_router_pick(r, m, NULL, now);
		if (d == NULL)
			continue;
		count[d - m->deployments]++;
		sg_router_begin(r, d, now);
		sg_router_end(r, d, SG_ATTEMPT_OK, 1000, 10, now);
	}
}

static void test_weighted(void)
{
	sg_config_t *cfg = config("", "{\"base_url\":\"http://a\",\"weight\":1},"
	                              "{\"base_url\":\"http://b\",\"weight\":3},"
	                              "{\"base_url\":\"http://c\",\"weight\":0}");
	sg_router_t *r = sg_router_new(cfg, 42);
	int count[3] = {0};
	spread(r, &cfg->models[0], 40000, count, 1);
	CHECK(count[2] == 0);
	CHECK(count[0] > 9000 && count[0] < 11000);   /* ~25% */
	CHECK(count[1] > 29000 && count[1] < 31000);  /* ~75% */
	sg_router_free(r);
	sg_config_free(cfg);
}

static void test_round_robin_and_priority(void)
{
	sg_config_t *cfg = config(",\"strategy\":\"round-robin\"",
	                          "{\"base_url\":\"http://a\"},{\"base_url\":\"http://b\"},"
	                          "{\"base_url\":\"http://c\",\"priority\":1}");
	sg_router_t *r = sg_router_new(cfg, 1);
	const sg_model_t *m = &cfg->models[0];
	int count[3] = {0};
	spread(r, m, 100, count, 1);
	CHECK(count[0] == 50 && count[1] == 50 && count[2] == 0);
	/* the priority-1 deployment serves once the others are tried */
	uint8_t tried[8] = {0};
	tried[m->deployments[0].seq] = tried[m->deployments[1].seq] = 1;
	CHECK(sg_router_pick(r, m, tried, 1) == &m->deployments[2]);
	tried[m->deployments[2].seq] = 1;
	CHECK(sg_router_pick(r, m, tried, 1) == NULL);
	sg_router_free(r);
	sg_config_free(cfg);
}

static void test_least_busy(void)
{
	sg_config_t *cfg = config(",\"strategy\":\"least-busy\"", D3);
	sg_router_t *r = sg_router_new(cfg, 7);
	const sg_model_t *m = &cfg->models[0];
	/* b and c busy: a is chosen */
	sg_router_begin(r, &m->deployments[1], 1);
	sg_router_begin(r, &m->deployments[2], 1);
	for (int i = 0; i < 20; i++)
		CHECK(sg_router_pick(r, m, NULL, 1) == &m->deployments[0]);
	/* requests in flight spread evenly */
	int count[3] = {0};
	for (int i = 0; i < 30; i++) {
		const sg_deployment_t *d = sg_router_pick(r, m, NULL, 1);
		count[d - m->deployments]++;
		sg_router_begin(r, d, 1);
	}
	/* in flight now: a count[0], b and c one more than they were given */
	int fa = count[0], fb = count[1] + 1, fc = count[2] + 1;
	CHECK(fa + fb + fc == 32);
	CHECK(abs(fa - fb) <= 1 && abs(fb - fc) <= 1 && abs(fa - fc) <= 1);
	sg_router_free(r);
	sg_config_free(cfg);
}

static void test_latency(void)
{
	sg_config_t *cfg = config(",\"strategy\":\"latency\"", D3);
	sg_router_t *r = sg_router_new(cfg, 9);
	const sg_model_t *m = &cfg->models[0];
	const uint64_t lat[3] = {50000, 5000, 20000}; /* µs: b is fastest */
	int count[3] = {0};
	for (int i = 0; i < 2000; i++) {
		const sg_deployment_t *d = sg_router_pick(r, m, NULL, 1);
		size_t k = (size_t)(d - m->deployments);
		count[k]++;
		sg_router_begin(r, d, 1);
		sg_router_end(r, d, SG_ATTEMPT_OK, lat[k], 0, 1);
	}
	CHECK(count[1] > 1800);              /* mostly the fastest */
	CHECK(count[0] > 5 && count[2] > 5); /* but the others are still measured */
	sg_router_free(r);
	sg_config_free(cfg);
}

static void test_cost_and_usage(void)
{
	sg_config_t *cfg = config(",\"strategy\":\"cost\",\"input_per_mtok\":1,\"output_per_mtok\":2",
	                          "{\"base_url\":\"http://a\"},"
	                          "{\"base_url\":\"http://b\",\"input_per_mtok\":0.1,\"output_per_mtok\":0.2},"
	                          "{\"base_url\":\"http://c\",\"input_per_mtok\":0.5}");
	sg_router_t *r = sg_router_new(cfg, 3);
	const sg_model_t *m = &cfg->models[0];
	CHECK(sg_router_pick(r, m, NULL, 1) == &m->deployments[1]);
	sg_router_free(r);
	sg_config_free(cfg);

	cfg = config(",\"strategy\":\"usage\"", "{\"base_url\":\"http://a\",\"rpm\":10},"
	                                        "{\"base_url\":\"http://b\",\"rpm\":20}");
	r = sg_router_new(cfg, 3);
	m = &cfg->models[0];
	int count[2] = {0};
	spread(r, m, 40, count, 1000);
	CHECK(count[0] == 10 && count[1] == 20); /* each up to its limit, then none */
	CHECK(sg_router_pick(r, m, NULL, 1000) == NULL);
	/* a new minute: both usable again */
	CHECK(sg_router_pick(r, m, NULL, 1000 + 60000000u) != NULL);
	sg_router_free(r);
	sg_config_free(cfg);
}

static void test_circuit(void)
{
	sg_config_t *cfg = config(",\"circuit_failures\":3,\"circuit_window_s\":10,\"cooldown_s\":5",
	                          "{\"base_url\":\"http://a\"},{\"base_url\":\"http://b\",\"weight\":0.0001}");
	sg_router_t *r = sg_router_new(cfg, 5);
	const sg_model_t *m = &cfg->models[0];
	const sg_deployment_t *a = &m->deployments[0];
	uint64_t t = 1000000;
	for (int i = 0; i < 3; i++) {
		sg_router_begin(r, a, t);
		sg_router_end(r, a, SG_ATTEMPT_FAILED, 100, 0, t);
	}
	CHECK(sg_router_state(r, a, t) == SG_CIRCUIT_COOLING);
	for (int i = 0; i < 50; i++)
		CHECK(sg_router_pick(r, m, NULL, t) == &m->deployments[1]);
	/* after the cooldown exactly one probe goes to a */
	t += 5000001;
	CHECK(sg_router_state(r, a, t) == SG_CIRCUIT_PROBING);
	CHECK(sg_router_pick(r, m, NULL, t) == a);
	sg_router_begin(r, a, t);
	CHECK(sg_router_pick(r, m, NULL, t) == &m->deployments[1]);
	/* the probe fails: cooling again */
	sg_router_end(r, a, SG_ATTEMPT_FAILED, 100, 0, t);
	CHECK(sg_router_state(r, a, t) == SG_CIRCUIT_COOLING);
	t += 5000001;
	CHECK(sg_router_pick(r, m, NULL, t) == a);
	sg_router_begin(r, a, t);
	sg_router_end(r, a, SG_ATTEMPT_OK, 100, 0, t);
	CHECK(sg_router_state(r, a, t) == SG_CIRCUIT_HEALTHY);
	/* failures spread beyond the window do not trip it */
	for (int i = 0; i < 6; i++) {
		t += 11000000;
		sg_router_begin(r, a, t);
		sg_router_end(r, a, SG_ATTEMPT_FAILED, 100, 0, t);
	}
	CHECK(sg_router_state(r, a, t) == SG_CIRCUIT_HEALTHY);
	sg_buf_t j;
	sg_buf_init(&j, 0);
	CHECK(sg_router_json(r, t, &j) == 0);
	CHECK_CONTAINS(j.data, "\"m/0\":{\"state\":\"healthy\"");
	sg_buf_free(&j);
	sg_router_free(r);
	sg_config_free(cfg);
}

static void test_last_deployment_never_cools(void)
{
	sg_config_t *cfg = config(",\"circuit_failures\":2", "{\"base_url\":\"http://a\"}");
	sg_router_t *r = sg_router_new(cfg, 5);
	const sg_deployment_t *a = &cfg->models[0].deployments[0];
	for (int i = 0; i < 10; i++) {
		sg_router_begin(r, a, 1);
		sg_router_end(r, a, SG_ATTEMPT_FAILED, 100, 0, 1);
	}
	/* cooling the only deployment would turn every request into a 503 */
	CHECK(sg_router_state(r, a, 1) == SG_CIRCUIT_HEALTHY);
	CHECK(sg_router_pick(r, &cfg->models[0], NULL, 1) == a);
	sg_router_free(r);
	sg_config_free(cfg);
}

/* A reload: the new router keeps an unchanged deployment's circuit, window
 * and in-flight count (shared, so an attempt that began under the old router
 * ends in both), keyed by identity, not position; a changed one starts fresh. */
static void test_adopt(void)
{
	sg_config_t *c1 = config(",\"circuit_failures\":2,\"cooldown_s\":60",
	                         "{\"base_url\":\"http://a\",\"rpm\":5},{\"base_url\":\"http://b\"}");
	/* b moved to the front, a's rpm changed (not part of its identity), c is new */
	sg_config_t *c2 = config(",\"circuit_failures\":2,\"cooldown_s\":60",
	                         "{\"base_url\":\"http://b\"},{\"base_url\":\"http://a\",\"rpm\":3},"
	                         "{\"base_url\":\"http://c\"}");
	sg_router_t *r1 = sg_router_new(c1, 1), *r2 = sg_router_new(c2, 1);
	const sg_deployment_t *a1 = &c1->models[0].deployments[0], *b1 = &c1->models[0].deployments[1];
	const sg_deployment_t *b2 = &c2->models[0].deployments[0], *a2 = &c2->models[0].deployments[1];
	const sg_deployment_t *x2 = &c2->models[0].deployments[2];
	uint64_t t = 1000000;

	for (int i = 0; i < 2; i++) {
		sg_router_begin(r1, b1, t);
		sg_router_end(r1, b1, SG_ATTEMPT_FAILED, 100, 0, t);
	}
	CHECK(sg_router_state(r1, b1, t) == SG_CIRCUIT_COOLING);
	sg_router_begin(r1, a1, t); /* in flight across the reload */
	sg_router_begin(r1, a1, t);
	sg_router_end(r1, a1, SG_ATTEMPT_OK, 100, 0, t);
	sg_router_adopt(r2, r1);
	CHECK(sg_router_state(r2, b2, t) == SG_CIRCUIT_COOLING);
	CHECK(sg_router_state(r2, x2, t) == SG_CIRCUIT_HEALTHY);
	sg_router_free(r1); /* the old generation goes; its states live on in r2 */
	sg_buf_t j;
	sg_buf_init(&j, 0);
	CHECK(sg_router_json(r2, t, &j) == 0);
	CHECK_CONTAINS(j.data, "\"m/1\":{\"state\":\"healthy\",\"requests\":2");
	CHECK_CONTAINS(j.data, "\"in_flight\":1");
	/* the window carried over: 2 of a's new rpm of 3 are used */
	sg_router_begin(r2, a2, t);
	CHECK(sg_router_pick(r2, &c2->models[0], (const uint8_t *)"\1\0\1", t) == NULL);
	sg_buf_free(&j);
	sg_router_free(r2);
	sg_config_free(c1);
	sg_config_free(c2);
}

static void test_config_checks(void)
{
	sg_config_t *cfg;
	sg_buf_t e;
	const char *bad = "{\"models\":[{\"name\":\"m\",\"fallbacks\":[\"m\",\"nope\"],"
	                  "\"strategy\":\"fastest\",\"deployments\":[{\"base_url\":\"http://a\","
	                  "\"provider\":\"acme\",\"weight\":-1}]}]}";
	sg_buf_init(&e, 0);
	CHECK(sg_config_parse(&cfg, bad, strlen(bad), &e) == SG_EINVAL);
	CHECK_CONTAINS(e.data, "models[0].fallbacks[0]: a model cannot fall back to itself");
	CHECK_CONTAINS(e.data, "models[0].fallbacks[1]: no model named \"nope\"");
	CHECK_CONTAINS(e.data, "models[0].strategy: must be one of");
	CHECK_CONTAINS(e.data, "models[0].deployments[0].provider: unknown provider");
	CHECK_CONTAINS(e.data, "models[0].deployments[0].weight: must be in");
	sg_buf_free(&e);
}

int main(void)
{
	test_weighted();
	test_round_robin_and_priority();
	test_least_busy();
	test_latency();
	test_cost_and_usage();
	test_circuit();
	test_last_deployment_never_cools();
	test_adopt();
	test_config_checks();
	CHECK_DONE();
}
