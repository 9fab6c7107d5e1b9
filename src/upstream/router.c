/* Routing: strategies, health, rate windows and circuit breaking. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/router.h"

#define EWMA_ALPHA 0.2      /* weight of the newest latency sample */
#define EXPLORE_PERMILLE 50 /* latency strategy: 5% of picks explore */
#define FAIL_RING 64        /* failure timestamps kept per deployment */

/* Runtime state of one deployment. */
typedef struct dep_state {
	unsigned refs;              /* routers sharing it (a reload keeps an unchanged
	                             * deployment's state: sg_router_adopt) */
	const sg_deployment_t *d;   /* its configuration (the newest router's) */
	const sg_model_t *m;        /* its model group */
	enum sg_circuit circuit;    /* one setter: set_circuit() */
	uint64_t cooldown_until_us; /* COOLING until then */
	int probe_busy;             /* PROBING: the probe is in flight */
	uint64_t fails[FAIL_RING];  /* times of recent failures (µs), a ring */
	size_t nfails;              /* failures recorded (ring index = nfails % FAIL_RING) */
	uint64_t in_flight;         /* attempts under way */
	double ewma_ms;             /* recent latency; < 0 before the first sample */
	uint64_t window_start_us;   /* start of the current rate minute */
	uint64_t window_requests;   /* requests begun in it */
	uint64_t window_tokens;     /* tokens used in it */
	uint64_t requests;          /* attempts since start */
	uint64_t errors;            /* failed attempts since start */
	uint64_t lat_sum_us;        /* for the mean latency */
	uint64_t lat_n;             /* samples in lat_sum_us */
} dep_state_t;

struct sg_router {
	dep_state_t **deps; /* by sg_deployment_t.seq; shared with other routers */
	size_t ndeps;       /* entries in deps */
	uint64_t *rr;       /* round-robin counters, by model index */
	const sg_config_t *cfg; /* borrowed */
	uint64_t rng;       /* xorshift state */
};

static uint64_t next_rand(sg_router_t *r)
{
	uint64_t x = r->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return r->rng = x;
}

static double uniform(sg_router_t *r)
{
	return (double)(next_rand(r) >> 11) / 9007199254740992.0;
}

static void set_circuit(dep_state_t *s, enum sg_circuit c)
{
	s->circuit = c;
}

sg_router_t *sg_router_new(const sg_config_t *cfg, uint64_t seed)
{
	sg_router_t *r = calloc(1, sizeof(*r));
	size_t n = 0;

	if (r == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->nmodels; i++)
		n += cfg->models[i].ndeployments;
	r->deps = calloc(n ? n : 1, sizeof(*r->deps));
	r->rr = calloc(cfg->nmodels ? cfg->nmodels : 1, sizeof(*r->rr));
	if (r->deps == NULL || r->rr == NULL) {
		sg_router_free(r);
		return NULL;
	}
	r->ndeps = n;
	r->cfg = cfg;
	r->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
	for (size_t i = 0; i < cfg->nmodels; i++) {
		for (size_t j = 0; j < cfg->models[i].ndeployments; j++) {
			const sg_deployment_t *d = &cfg->models[i].deployments[j];
			dep_state_t *s = calloc(1, sizeof(*s));
			if (s == NULL) {
				sg_router_free(r);
				return NULL;
			}
			s->refs = 1;
			s->d = d;
			s->m = &cfg->models[i];
			s->ewma_ms = -1;
			r->deps[d->seq] = s;
		}
	}
	return r;
}

static void state_unref(dep_state_t *s)
{
	if (s != NULL && --s->refs == 0)
		free(s);
}

void sg_router_free(sg_router_t *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; r->deps && i < r->ndeps; i++)
		state_unref(r->deps[i]);
	free(r->deps);
	free(r->rr);
	free(r);
}

static int str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* The same deployment in two configurations: same group name, provider,
 * endpoint, upstream model, API version, key variable and extra headers.
 * Weights, priorities, limits, prices and timeouts may differ. */
static int same_deployment(const dep_state_t *a, const dep_state_t *b)
{
	const sg_deployment_t *x = a->d, *y = b->d;
	if (!str_eq(a->m->name, b->m->name) || !str_eq(x->provider, y->provider) ||
	    !str_eq(x->base_url, y->base_url) || !str_eq(x->model, y->model) ||
	    !str_eq(x->api_version, y->api_version) || !str_eq(x->api_key_env, y->api_key_env) ||
	    x->nheaders != y->nheaders)
		return 0;
	for (size_t i = 0; i < x->nheaders; i++)
		if (!str_eq(x->headers[i], y->headers[i]))
			return 0;
	return 1;
}

void sg_router_adopt(sg_router_t *r, sg_router_t *prev)
{
	if (prev == NULL)
		return;
	uint8_t *taken = calloc(prev->ndeps ? prev->ndeps : 1, 1);
	if (taken == NULL)
		return; /* the new router starts fresh: correct, only forgetful */
	for (size_t i = 0; i < r->ndeps; i++) {
		dep_state_t *s = r->deps[i];
		for (size_t j = 0; j < prev->ndeps; j++) {
			dep_state_t *o = prev->deps[j];
			if (taken[j] || !same_deployment(s, o))
				continue;
			taken[j] = 1;
			o->refs++;
			o->d = s->d; /* the newest configuration's (same identity) */
			o->m = s->m;
			r->deps[i] = o;
			state_unref(s);
			break;
		}
	}
	free(taken);
}

static void roll_window(dep_state_t *s, uint64_t now_us)
{
	if (now_us - s->window_start_us >= 60000000u) {
		s->window_start_us = now_us;
		s->window_requests = 0;
		s->window_tokens = 0;
	}
}

enum sg_circuit sg_router_state(sg_router_t *r, const sg_deployment_t *d, uint64_t now_us)
{
	dep_state_t *s = r->deps[d->seq];
	if (s->circuit == SG_CIRCUIT_COOLING && now_us >= s->cooldown_until_us) {
		set_circuit(s, SG_CIRCUIT_PROBING);
		s->probe_busy = 0;
	}
	return s->circuit;
}

/* Usable now: healthy, or probing with the probe slot free, under its limits. */
static int usable(sg_router_t *r, dep_state_t *s, uint64_t now_us)
{
	enum sg_circuit c = sg_router_state(r, s->d, now_us);
	if (c == SG_CIRCUIT_COOLING || (c == SG_CIRCUIT_PROBING && s->probe_busy))
		return 0;
	roll_window(s, now_us);
	if (s->d->rpm && s->window_requests >= (uint64_t)s->d->rpm)
		return 0;
	if (s->d->tpm && s->window_tokens >= (uint64_t)s->d->tpm)
		return 0;
	return 1;
}

static double price(const dep_state_t *s)
{
	double in = s->d->input_per_mtok >= 0 ? s->d->input_per_mtok : s->m->input_per_mtok;
	double out = s->d->output_per_mtok >= 0 ? s->d->output_per_mtok : s->m->output_per_mtok;
	return in + out;
}

/* Share of its limits a deployment has used this minute (0 when unlimited). */
static double utilisation(const dep_state_t *s)
{
	double u = 0;
	if (s->d->rpm)
		u = (double)s->window_requests / (double)s->d->rpm;
	if (s->d->tpm)
		u = fmax(u, (double)s->window_tokens / (double)s->d->tpm);
	return u;
}

const sg_deployment_t *sg_router_pick(sg_router_t *r, const sg_model_t *m, const uint8_t *tried,
                                      uint64_t now_us)
{
	dep_state_t *cand[256];
	size_t n = 0;
	long best_prio = -1;

	/* Candidates: usable, untried, of the best priority present. */
	for (size_t i = 0; i < m->ndeployments && n < SG_ARRAY_SIZE(cand); i++) {
		dep_state_t *s = r->deps[m->deployments[i].seq];
		if ((tried && tried[s->d->seq]) || !usable(r, s, now_us))
			continue;
		if (best_prio < 0 || s->d->priority < best_prio) {
			best_prio = s->d->priority;
			n = 0;
		}
		if (s->d->priority == best_prio)
			cand[n++] = s;
	}
	if (n == 0)
		return NULL;
	/* A deployment being probed takes precedence: one request tests it. */
	for (size_t i = 0; i < n; i++)
		if (cand[i]->circuit == SG_CIRCUIT_PROBING)
			return cand[i]->d;
	if (n == 1)
		return cand[0]->d;

	dep_state_t *pick = cand[0];
	switch ((enum sg_strategy)m->strategy) {
	case SG_STRATEGY_ROUND_ROBIN:
		pick = cand[r->rr[m - r->cfg->models]++ % n];
		break;
	case SG_STRATEGY_LEAST_BUSY: {
		/* ties broken at random so equal deployments share the load */
		size_t ties = 0;
		for (size_t i = 0; i < n; i++) {
			if (cand[i]->in_flight < pick->in_flight) {
				pick = cand[i];
				ties = 1;
			} else if (cand[i]->in_flight == pick->in_flight && next_rand(r) % ++ties == 0) {
				pick = cand[i];
			}
		}
		break;
	}
	case SG_STRATEGY_LATENCY:
		/* Untried deployments first; then the lowest EWMA, exploring a little
		 * so that a recovered deployment's latency is ever measured again. */
		for (size_t i = 0; i < n; i++)
			if (cand[i]->ewma_ms < 0)
				return cand[i]->d;
		if (next_rand(r) % 1000 < EXPLORE_PERMILLE)
			return cand[next_rand(r) % n]->d;
		for (size_t i = 1; i < n; i++)
			if (cand[i]->ewma_ms < pick->ewma_ms)
				pick = cand[i];
		break;
	case SG_STRATEGY_COST:
		for (size_t i = 1; i < n; i++)
			if (price(cand[i]) < price(pick))
				pick = cand[i];
		break;
	case SG_STRATEGY_USAGE:
		for (size_t i = 1; i < n; i++)
			if (utilisation(cand[i]) < utilisation(pick))
				pick = cand[i];
		break;
	case SG_STRATEGY_WEIGHTED:
	default: {
		double total = 0, x;
		for (size_t i = 0; i < n; i++)
			total += cand[i]->d->weight;
		if (total <= 0)
			return cand[next_rand(r) % n]->d;
		x = uniform(r) * total;
		for (size_t i = 0; i < n; i++) {
			if (x < cand[i]->d->weight || i == n - 1) {
				pick = cand[i];
				break;
			}
			x -= cand[i]->d->weight;
		}
		break;
	}
	}
	return pick->d;
}

void sg_router_begin(sg_router_t *r, const sg_deployment_t *d, uint64_t now_us)
{
	dep_state_t *s = r->deps[d->seq];
	roll_window(s, now_us);
	s->window_requests++;
	s->in_flight++;
	s->requests++;
	if (s->circuit == SG_CIRCUIT_PROBING)
		s->probe_busy = 1;
}

/* Whether another deployment of s's group takes traffic: the last one is
 * never cooled down, which would only turn every request into a 503. */
static int others_healthy(sg_router_t *r, const dep_state_t *s, uint64_t now_us)
{
	for (size_t i = 0; i < s->m->ndeployments; i++) {
		const sg_deployment_t *d = &s->m->deployments[i];
		if (d != s->d && sg_router_state(r, d, now_us) != SG_CIRCUIT_COOLING)
			return 1;
	}
	return 0;
}

void sg_router_end(sg_router_t *r, const sg_deployment_t *d, enum sg_attempt how,
                   uint64_t latency_us, uint64_t tokens, uint64_t now_us)
{
	dep_state_t *s = r->deps[d->seq];
	const sg_model_t *m = s->m;

	if (s->in_flight)
		s->in_flight--;
	roll_window(s, now_us);
	s->window_tokens += tokens;
	if (how == SG_ATTEMPT_CANCELED) {
		if (s->circuit == SG_CIRCUIT_PROBING)
			s->probe_busy = 0; /* no verdict: probe again */
		return;
	}
	if (how == SG_ATTEMPT_OK) {
		double ms = (double)latency_us / 1000.0;
		s->ewma_ms = s->ewma_ms < 0 ? ms : EWMA_ALPHA * ms + (1 - EWMA_ALPHA) * s->ewma_ms;
		s->lat_sum_us += latency_us;
		s->lat_n++;
		if (s->circuit == SG_CIRCUIT_PROBING)
			set_circuit(s, SG_CIRCUIT_HEALTHY);
		return;
	}
	s->errors++;
	s->fails[s->nfails++ % FAIL_RING] = now_us;
	if (s->circuit == SG_CIRCUIT_PROBING) {
		set_circuit(s, SG_CIRCUIT_COOLING);
		s->cooldown_until_us = now_us + (uint64_t)m->cooldown_s * 1000000u;
		return;
	}
	/* Failures within the window reaching the threshold cool it down. */
	size_t recent = 0, have = SG_MIN(s->nfails, (size_t)FAIL_RING);
	uint64_t window = (uint64_t)m->circuit_window_s * 1000000u;
	for (size_t i = 0; i < have; i++)
		if (now_us - s->fails[i] <= window)
			recent++;
	if (s->circuit == SG_CIRCUIT_HEALTHY &&
	    recent >= (size_t)SG_MIN(m->circuit_failures, (long)FAIL_RING) && m->cooldown_s > 0 &&
	    others_healthy(r, s, now_us)) {
		set_circuit(s, SG_CIRCUIT_COOLING);
		s->cooldown_until_us = now_us + (uint64_t)m->cooldown_s * 1000000u;
	}
}

int sg_router_json(sg_router_t *r, uint64_t now_us, sg_buf_t *out)
{
	static const char *const names[] = {"healthy", "cooling", "probing"};
	for (size_t i = 0; i < r->ndeps; i++) {
		dep_state_t *s = r->deps[i];
		enum sg_circuit c = sg_router_state(r, s->d, now_us);
		if (i)
			sg_buf_puts(out, ",");
		sg_buf_json_str(out, s->d->id, strlen(s->d->id));
		sg_buf_printf(out,
		              ":{\"state\":\"%s\",\"requests\":%llu,\"errors\":%llu,\"in_flight\":%llu,"
		              "\"latency_ms_ewma\":%.3f,\"latency_ms_mean\":%.3f,"
		              "\"rpm_used\":%llu,\"tpm_used\":%llu,\"cooldown_remaining_ms\":%llu}",
		              names[c], (unsigned long long)s->requests, (unsigned long long)s->errors,
		              (unsigned long long)s->in_flight, s->ewma_ms < 0 ? 0.0 : s->ewma_ms,
		              s->lat_n ? (double)s->lat_sum_us / (double)s->lat_n / 1000.0 : 0.0,
		              (unsigned long long)s->window_requests,
		              (unsigned long long)s->window_tokens,
		              (unsigned long long)(c == SG_CIRCUIT_COOLING && s->cooldown_until_us > now_us
		                                       ? (s->cooldown_until_us - now_us) / 1000
		                                       : 0));
	}
	return 0;
}
