/*
 * Rate-limit counters: requests per minute, tokens per minute and concurrent
 * requests, per key, per team and per key x model, behind one interface
 * (check-and-reserve, settle, release) so that a shared backend (Redis) can
 * replace the in-process one. That is why reserve may answer later.
 *
 * A counter is named by the caller ("k:abc123:rpm") and made on first use;
 * the name and its kind together identify it. Loop thread only: no backend
 * locks anything.
 *
 * RATE counters are GCRA (the generic cell rate algorithm) with costs. Each
 * keeps a theoretical arrival time TAT (µs). For a limit L per minute:
 *   T = 60e6 / L              µs per unit (the emission interval)
 *   C = max(1, L * burst)     units of capacity
 *   level(now) = max(TAT, now) - now          µs of backlog
 *   fits:   level + cost*T <= C*T             (within 1e-9*C*T, for rounding)
 *   take:   TAT = max(TAT, now) + cost*T
 *   remaining = floor((C*T - level) / T),  reset_us = level   (after the call)
 *   refused: retry_us = level + cost*T - C*T,  UINT64_MAX when cost > C
 * This is GCRA with tolerance tau = (C - 1)*T: with burst 1.0 a client idle
 * for a minute may use one minute's allowance at once, and after that is
 * admitted at exactly the rate. So in any 60 s window [t, t+60 s) at most
 * C + L - 1 pass, 2L - 1 with burst 1.0, while over any short interval d at
 * most C + d/T pass -- a fixed one-minute window lets 2L through within a few
 * ms at its edge. A settle moves TAT by delta*T but never below now (empty).
 * The limit is taken from each call, so an admin's change applies at once
 * while the backlog (TAT) stays. A backlog beyond C*T (settled overrun)
 * refuses even cost 0 until it drains.
 *
 * CONC counters hold `used` units: fits when used + cost <= limit; take adds
 * cost, release subtracts it (never below 0); remaining = limit - used.
 */
#ifndef SEMGATE_COUNTER_H
#define SEMGATE_COUNTER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

enum sg_ctr_kind { SG_CTR_RATE, SG_CTR_CONC };

#define SG_CTR_NAME_MAX 191 /* bytes of a counter name, without the NUL */
#define SG_CTR_PENDING (-1) /* reserve answers later, through its done callback */

/** A backend's handle to one counter, kept by the caller from call to call
 * (one per counter name and kind, zeroed to start) so that the backend can
 * skip finding the counter by its name. Only backends read or write it; a
 * stale one costs a lookup, never a wrong counter. In-process: the counter,
 * valid while the backend has dropped none since (gen). */
typedef struct sg_ctr_hint {
	void *ptr;    /* the backend's handle (in-process: its counter), or NULL */
	uint64_t gen; /* the backend's generation when ptr was taken (0: never) */
} sg_ctr_hint_t;

/** One counter a request takes from. The caller owns it (and its name). */
typedef struct sg_ctr_item {
	/* in */
	const char *name; /* counter id, <= SG_CTR_NAME_MAX bytes; borrowed, copied if kept */
	uint8_t kind;     /* enum sg_ctr_kind */
	double limit;     /* RATE: units per minute; CONC: units at once; > 0, finite */
	double cost;      /* units to take now (1 request, N tokens, 1 slot); >= 0, finite */
	uint64_t hash;    /* sg_ctr_hash(name, kind), made once with the name; 0: the backend
	                   * hashes the name itself (a wrong one finds the wrong counter) */
	sg_ctr_hint_t *hint; /* the caller's handle slot for this name and kind; NULL: none */
	/* out (filled by reserve for every item, admitted or not) */
	double remaining; /* units still available right after this call (>= 0, floor) */
	uint64_t reset_us; /* RATE: µs until the counter is completely full again; CONC: 0 */
	uint64_t retry_us; /* refused by this item: µs until cost would fit (UINT64_MAX: never;
	                    * CONC: 0, unknown: when a slot is released); else 0 */
} sg_ctr_item_t;

/** A pending reserve's answer: result as reserve would have returned it. */
typedef void (*sg_ctr_done_cb)(void *arg, int result);

typedef struct sg_counters sg_counters_t;

typedef struct sg_counters_ops {
	/* All or nothing: every item is checked against the counters as they were
	 * before the call, then every item's cost is taken, or none. Returns 0 (all
	 * taken), i+1 (refused: items[i] is the first that did not fit; nothing
	 * taken; retry_us filled for every item, so callers can print the longest
	 * wait), or SG_CTR_PENDING (the backend answers later through done(arg,
	 * result), with the items filled in then; the caller keeps items and their
	 * names alive until then). An invalid item (NULL or too long a name, bad
	 * kind, limit <= 0, cost < 0, NaN or infinite) is refused with retry_us
	 * UINT64_MAX. Two items with the same name and kind in one call are not
	 * expected: each would be checked alone, both taken. */
	int (*reserve)(sg_counters_t *c, sg_ctr_item_t *items, size_t n, uint64_t now_us,
	               sg_ctr_done_cb done, void *arg);
	/* RATE: the real cost of a reserved item was known later: add delta units
	 * (negative gives back; the counter never goes below empty). Reads the
	 * item's name, hash and limit, and reads and refreshes *hint. */
	void (*settle)(sg_counters_t *c, const sg_ctr_item_t *it, double delta, uint64_t now_us);
	/* CONC: give back the item's cost, the slots reserve took (never below 0).
	 * Reads the item's name, hash and cost, and reads and refreshes *hint. */
	void (*release)(sg_counters_t *c, const sg_ctr_item_t *it);
	/* Forget counters back to idle (full RATE, zero CONC); returns how many were
	 * dropped. Called from a timer; forgetting an idle counter changes nothing. */
	size_t (*sweep)(sg_counters_t *c, uint64_t now_us);
	/* Free the backend and every counter. Nothing may be pending. */
	void (*free)(sg_counters_t *c);
} sg_counters_ops_t;

/** A backend: embeds this as its first member. */
struct sg_counters {
	const sg_counters_ops_t *ops; /* the backend's functions */
};

/**
 * The in-process backend. It always answers reserve at once and never calls
 * done. burst: RATE capacity as a fraction of the per-minute limit, in (0, 1]
 * (1.0: a minute's allowance at once). NULL when burst is out of range or
 * memory is short. Caller frees with sg_ctr_free().
 *
 * Memory: a counter that cannot be made (out of memory) refuses its item with
 * retry_us 1000 (try again in a millisecond), taking nothing; a settle that
 * cannot make its counter is lost (an undercount, never a crash).
 */
sg_counters_t *sg_counters_local_new(double burst);
/** Counters held by a local backend (for tests and /stats). */
size_t sg_counters_local_count(const sg_counters_t *c);
/** Test hook: keep only `mask`'s bits of every name hash, to force collisions.
 * Only while the backend holds no counter (SG_EINVAL otherwise). */
int sg__counters_local_hash_mask(sg_counters_t *c, uint64_t mask);

/** A test backend standing in for a shared one: reserve answers through done
 * after delay_ms on loop (counting then in inner, which it owns); settle,
 * release, sweep go straight to inner. counter_deferred.c. */
sg_counters_t *sg__counters_deferred_new(uv_loop_t *loop, sg_counters_t *inner,
                                         uint64_t delay_ms);

/** A counter name's hash, for sg_ctr_item_t.hash (the same for every backend). */
uint64_t sg_ctr_hash(const char *name, int kind);

/** The ops, called through c (the same arguments and rules as above). */
static inline int sg_ctr_reserve(sg_counters_t *c, sg_ctr_item_t *items, size_t n,
                                 uint64_t now_us, sg_ctr_done_cb done, void *arg)
{
	return c->ops->reserve(c, items, n, now_us, done, arg);
}

static inline void sg_ctr_settle(sg_counters_t *c, const sg_ctr_item_t *it, double delta,
                                 uint64_t now_us)
{
	c->ops->settle(c, it, delta, now_us);
}

static inline void sg_ctr_release(sg_counters_t *c, const sg_ctr_item_t *it)
{
	c->ops->release(c, it);
}

static inline size_t sg_ctr_sweep(sg_counters_t *c, uint64_t now_us)
{
	return c->ops->sweep(c, now_us);
}

/** Free a backend; NULL is fine. */
static inline void sg_ctr_free(sg_counters_t *c)
{
	if (c != NULL)
		c->ops->free(c);
}

#endif
