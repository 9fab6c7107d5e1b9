/* semgate: choosing a deployment for a request, and tracking each
 * deployment's health (in flight, latency, recent failures, rate windows,
 * circuit-breaker state).
 *
 * Per model group, a strategy picks among the deployments that are usable
 * now: not tried yet by this request, not cooling down after failures, under
 * their rpm/tpm limits, and of the best (lowest) priority among those.
 */
#ifndef SEMGATE_ROUTER_H
#define SEMGATE_ROUTER_H

#include <stdint.h>

#include "semgate/buf.h"
#include "semgate/config.h"

typedef struct sg_router sg_router_t;

/** A deployment's circuit state. */
enum sg_circuit {
	SG_CIRCUIT_HEALTHY, /* takes traffic */
	SG_CIRCUIT_COOLING, /* too many failures: no traffic until the cooldown ends */
	SG_CIRCUIT_PROBING, /* cooldown over: one request tests it */
	SG_CIRCUIT__LAST
};

/** Create routing state for every deployment of cfg (borrowed; must outlive it).
 * seed makes the random choices reproducible. NULL on allocation failure. */
sg_router_t *sg_router_new(const sg_config_t *cfg, uint64_t seed);
void sg_router_free(sg_router_t *r);

/**
 * Carry prev's state over to r (both made by sg_router_new) for every
 * deployment of r's configuration that prev's has too (same model group name,
 * provider, base URL, upstream model, API version, key variable and headers;
 * weights, limits, prices and timeouts may differ): its circuit, cooldown,
 * in-flight count, latency and rpm/tpm window are then one state shared by
 * both routers, so that attempts still running under prev count in r. The
 * shared state is freed with the last router holding it. Deployments new in
 * r start fresh. On allocation failure r keeps fresh state everywhere.
 */
void sg_router_adopt(sg_router_t *r, sg_router_t *prev);

/**
 * Pick a deployment of model m for a request that already tried the
 * deployments whose seq has tried[seq] != 0 (tried: one byte per deployment
 * of the config, may be NULL). now_us: monotonic time. Returns NULL when
 * none is usable. The caller reports the attempt with sg_router_begin() and
 * sg_router_end().
 */
const sg_deployment_t *sg_router_pick(sg_router_t *r, const sg_model_t *m,
                                      const uint8_t *tried, uint64_t now_us);

/** An attempt starts on d (counts in flight, rpm; takes the probe slot). */
void sg_router_begin(sg_router_t *r, const sg_deployment_t *d, uint64_t now_us);

/** How an attempt ended. */
enum sg_attempt {
	SG_ATTEMPT_OK,        /* a usable answer (2xx, or a 4xx that is the caller's fault) */
	SG_ATTEMPT_FAILED,    /* connect error, timeout, 5xx, 429: counts against the circuit */
	SG_ATTEMPT_CANCELED,  /* the client went away: no verdict on the deployment */
	SG_ATTEMPT__LAST
};

/** The attempt on d ended after latency_us; tokens used (for tpm), or 0. */
void sg_router_end(sg_router_t *r, const sg_deployment_t *d, enum sg_attempt how,
                   uint64_t latency_us, uint64_t tokens, uint64_t now_us);

/** A deployment's circuit state now (cooling turns to probing when due). */
enum sg_circuit sg_router_state(sg_router_t *r, const sg_deployment_t *d, uint64_t now_us);

/** Append per-deployment health as a JSON object's members (no braces):
 *  "model/0":{"state","requests","errors","in_flight","latency_ms_ewma",...}. */
int sg_router_json(sg_router_t *r, uint64_t now_us, sg_buf_t *out);

#endif
