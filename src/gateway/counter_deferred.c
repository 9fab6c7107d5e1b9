/*
 * A counter backend that answers reserve later, on the loop: it stands in for
 * a shared one (Redis) whose answer takes a round trip, so that the limits
 * step's asynchronous path is exercised by the tests
 * (SEMGATE_TEST_DEFERRED_COUNTERS_MS). It wraps another backend, which does
 * the counting; settle, release and sweep go straight through.
 */
#include <stdlib.h>

#include "counter.h"
#include "semgate/common.h"

typedef struct deferred {
	sg_counters_t base;   /* first: the interface */
	sg_counters_t *inner; /* does the counting (owned) */
	uv_loop_t *loop;
	uint64_t delay_ms;
	size_t pending;       /* answers not yet given */
	int freeing;          /* free() ran with answers pending: the last one frees */
} deferred_t;

typedef struct answer {
	uv_timer_t timer;
	deferred_t *d;
	sg_ctr_item_t *items;
	size_t n;
	sg_ctr_done_cb done;
	void *arg;
} answer_t;

static void maybe_free(deferred_t *d)
{
	if (d->freeing && d->pending == 0) {
		sg_ctr_free(d->inner);
		free(d);
	}
}

static void answer_closed(uv_handle_t *h)
{
	answer_t *a = h->data;
	deferred_t *d = a->d;
	free(a);
	d->pending--;
	maybe_free(d);
}

static void answer_now(uv_timer_t *t)
{
	answer_t *a = t->data;
	/* counted when the answer arrives, as a shared backend counts when the
	 * request reaches it */
	int r = sg_ctr_reserve(a->d->inner, a->items, a->n, sg_now_us(), NULL, NULL);
	if (!a->d->freeing)
		a->done(a->arg, r);
	uv_close((uv_handle_t *)&a->timer, answer_closed);
}

static int deferred_reserve(sg_counters_t *c, sg_ctr_item_t *items, size_t n, uint64_t now_us,
                            sg_ctr_done_cb done, void *arg)
{
	deferred_t *d = (deferred_t *)c;
	answer_t *a = done ? calloc(1, sizeof(*a)) : NULL;
	if (a == NULL) /* no callback to call, or no memory: answer at once */
		return sg_ctr_reserve(d->inner, items, n, now_us, NULL, NULL);
	*a = (answer_t){.d = d, .items = items, .n = n, .done = done, .arg = arg};
	uv_timer_init(d->loop, &a->timer);
	a->timer.data = a;
	uv_timer_start(&a->timer, answer_now, d->delay_ms, 0);
	d->pending++;
	return SG_CTR_PENDING;
}

static void deferred_settle(sg_counters_t *c, const sg_ctr_item_t *it, double delta,
                            uint64_t now_us)
{
	sg_ctr_settle(((deferred_t *)c)->inner, it, delta, now_us);
}

static void deferred_release(sg_counters_t *c, const sg_ctr_item_t *it)
{
	sg_ctr_release(((deferred_t *)c)->inner, it);
}

static size_t deferred_sweep(sg_counters_t *c, uint64_t now_us)
{
	return sg_ctr_sweep(((deferred_t *)c)->inner, now_us);
}

static void deferred_free(sg_counters_t *c)
{
	deferred_t *d = (deferred_t *)c;
	d->freeing = 1;
	maybe_free(d);
}

static const sg_counters_ops_t deferred_ops = {deferred_reserve, deferred_settle,
                                               deferred_release, deferred_sweep, deferred_free};

sg_counters_t *sg__counters_deferred_new(uv_loop_t *loop, sg_counters_t *inner,
                                         uint64_t delay_ms)
{
	deferred_t *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	d->base.ops = &deferred_ops;
	d->inner = inner;
	d->loop = loop;
	d->delay_ms = delay_ms;
	return &d->base;
}
