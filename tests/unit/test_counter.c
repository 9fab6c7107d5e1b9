/* Unit tests: the in-process rate-limit counters (src/gateway/counter.c).
 * Time is driven by hand: now_us is whatever each step says. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "counter.h"

#define S 1000000ull  /* µs per second */
#define MS 1000ull    /* µs per millisecond */

static int done_calls; /* the local backend must never call done */

static void done_cb(void *arg, int result)
{
	done_calls++;
}

static sg_ctr_item_t item(const char *name, int kind, double limit, double cost)
{
	return (sg_ctr_item_t){.name = name, .kind = (uint8_t)kind, .limit = limit, .cost = cost};
}

/* Settle and release by name (the item as reserved, its hash left to the backend). */
static void settle(sg_counters_t *c, const char *name, double limit, double delta, uint64_t now)
{
	sg_ctr_item_t it = item(name, SG_CTR_RATE, limit, 0);
	sg_ctr_settle(c, &it, delta, now);
}

static void release(sg_counters_t *c, const char *name, double cost)
{
	sg_ctr_item_t it = item(name, SG_CTR_CONC, 1, cost);
	sg_ctr_release(c, &it);
}

/* Reserve one item; its outputs in *out. */
static int take(sg_counters_t *c, const char *name, int kind, double limit, double cost,
                uint64_t now, sg_ctr_item_t *out)
{
	sg_ctr_item_t tmp;

	if (out == NULL)
		out = &tmp;
	*out = item(name, kind, limit, cost);
	/* Garbage in the outputs: reserve must fill every one. */
	out->remaining = -7;
	out->reset_us = out->retry_us = 12345;
	return sg_ctr_reserve(c, out, 1, now, done_cb, NULL);
}

/* What a RATE counter has left at now (a cost-0 reserve takes nothing). */
static double rate_left(sg_counters_t *c, const char *name, double limit, uint64_t now)
{
	sg_ctr_item_t it;
	take(c, name, SG_CTR_RATE, limit, 0, now, &it);
	return it.remaining;
}

/* 1. rpm 60, burst 1: a minute's allowance at once, then exactly one a second. */
static void test_rpm_full_burst(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it;
	int n = 0;

	for (int i = 0; i < 100; i++)
		n += take(c, "k:a:rpm", SG_CTR_RATE, 60, 1, 0, NULL) == 0;
	CHECK_MSG(n == 60, "admitted %d at t=0, want 60", n);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 60, 1, 0, &it) == 1);
	CHECK_MSG(it.retry_us == S, "retry_us %llu, want 1 s", (unsigned long long)it.retry_us);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 60, 1, S - 1, NULL) == 1);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 60, 1, S, NULL) == 0);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 60, 1, S, &it) == 1);
	CHECK(it.retry_us == S);

	/* Greedy client, 1 ms steps over [0, 60 s): C + L - 1 = 2L - 1 in the window. */
	uint64_t at[200];
	int got = 0;
	for (uint64_t t = 0; t < 60 * S; t += MS)
		while (got < 200 && take(c, "k:b:rpm", SG_CTR_RATE, 60, 1, t, NULL) == 0)
			at[got++] = t;
	CHECK_MSG(got == 119, "admitted %d in [0, 60 s), want 2L-1 = 119", got);
	for (int i = 60; i < got; i++)
		CHECK_MSG(at[i] == (uint64_t)(i - 59) * S, "admission %d at %llu us", i,
		          (unsigned long long)at[i]);
	/* Any closed 2 s window holds at most C + d/T = 62. */
	int most = 0;
	for (uint64_t s = 0; s < 60 * S; s += MS) {
		int in = 0;
		for (int i = 0; i < got; i++)
			in += at[i] >= s && at[i] <= s + 2 * S;
		most = in > most ? in : most;
	}
	CHECK_MSG(most == 62, "most in a 2 s window: %d, want C + 2 = 62", most);
	/* Idle for ten minutes: one minute's allowance, not ten. */
	n = 0;
	for (int i = 0; i < 100; i++)
		n += take(c, "k:a:rpm", SG_CTR_RATE, 60, 1, 600 * S, NULL) == 0;
	CHECK_MSG(n == 60, "admitted %d after a long idle, want 60", n);
	sg_ctr_free(c);
}

/* 2. burst 0.1, rpm 600: 60 at once, then one every 100 ms. */
static void test_rpm_small_burst(void)
{
	sg_counters_t *c = sg_counters_local_new(0.1);
	sg_ctr_item_t it;
	int n = 0;

	for (int i = 0; i < 100; i++)
		n += take(c, "k:a:rpm", SG_CTR_RATE, 600, 1, 0, NULL) == 0;
	CHECK_MSG(n == 60, "admitted %d at t=0, want 60", n);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 600, 1, 0, &it) == 1);
	CHECK(it.retry_us == 100 * MS);
	CHECK(it.reset_us == 6 * S);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 600, 1, 100 * MS - 1, NULL) == 1);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 600, 1, 100 * MS, NULL) == 0);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 600, 1, 100 * MS, NULL) == 1);
	CHECK(take(c, "k:a:rpm", SG_CTR_RATE, 600, 1, 200 * MS, NULL) == 0);

	n = 0;
	for (uint64_t t = 0; t < S; t += MS)
		while (n < 200 && take(c, "k:b:rpm", SG_CTR_RATE, 600, 1, t, NULL) == 0)
			n++;
	CHECK_MSG(n == 69, "admitted %d in [0, 1 s), want 60 + 9", n);
	sg_ctr_free(c);
}

/* 3. remaining and reset_us, step by step; a changed limit keeps the backlog. */
static void test_remaining_reset(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it;

	for (int i = 1; i <= 60; i++) {
		CHECK(take(c, "k", SG_CTR_RATE, 60, 1, 0, &it) == 0);
		CHECK_MSG(it.remaining == 60 - i && it.reset_us == (uint64_t)i * S &&
		                  it.retry_us == 0,
		          "take %d: remaining %g reset %llu retry %llu", i, it.remaining,
		          (unsigned long long)it.reset_us, (unsigned long long)it.retry_us);
	}
	CHECK(take(c, "k", SG_CTR_RATE, 60, 1, 0, &it) == 1);
	CHECK(it.remaining == 0 && it.reset_us == 60 * S && it.retry_us == S);
	/* 2.5 s later: 2.5 units back, floor 2 shown. */
	CHECK(take(c, "k", SG_CTR_RATE, 60, 0, 2500 * MS, &it) == 0);
	CHECK(it.remaining == 2 && it.reset_us == 57500 * MS && it.retry_us == 0);
	CHECK(take(c, "k", SG_CTR_RATE, 60, 1, 2500 * MS, &it) == 0);
	CHECK(it.remaining == 1 && it.reset_us == 58500 * MS);
	/* The admin doubles the limit: 58.5 s of backlog is 117 of 120 at 0.5 s each. */
	CHECK(take(c, "k", SG_CTR_RATE, 120, 0, 2500 * MS, &it) == 0);
	CHECK(it.remaining == 3 && it.reset_us == 58500 * MS);
	/* After reset_us it is full again. */
	CHECK(take(c, "k", SG_CTR_RATE, 60, 0, 61 * S, &it) == 0);
	CHECK(it.remaining == 60 && it.reset_us == 0);
	/* CONC has no reset. */
	CHECK(take(c, "c", SG_CTR_CONC, 3, 1, 0, &it) == 0);
	CHECK(it.remaining == 2 && it.reset_us == 0 && it.retry_us == 0);
	sg_ctr_free(c);
}

/* Limits of a billion and more: the rounding slack stays under a unit, so
 * nothing passes past the limit and remaining never shows more than it. */
static void test_huge_limits(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it;

	CHECK(take(c, "r", SG_CTR_RATE, 1e9, 1, 0, &it) == 0);
	CHECK_MSG(it.remaining == 1e9 - 1, "rpm 1e9 after one: remaining %.0f", it.remaining);
	CHECK(take(c, "t", SG_CTR_RATE, 1e12, 0, 0, &it) == 0);
	CHECK_MSG(it.remaining == 1e12, "tpm 1e12, empty: remaining %.0f", it.remaining);
	CHECK(take(c, "t", SG_CTR_RATE, 1e12, 48, 0, &it) == 0);
	CHECK_MSG(it.remaining == 1e12 - 48, "tpm 1e12 after 48: remaining %.0f", it.remaining);
	/* a whole minute's allowance taken: one token more does not fit */
	CHECK(take(c, "f", SG_CTR_RATE, 1e12, 1e12, 0, &it) == 0);
	CHECK(it.remaining == 0);
	CHECK(take(c, "f", SG_CTR_RATE, 1e12, 1, 0, &it) == 1 && it.retry_us > 0);
	CHECK(take(c, "f", SG_CTR_RATE, 1e12, 2e12, 0, &it) == 1 && it.retry_us == UINT64_MAX);
	/* the same for a concurrency limit */
	CHECK(take(c, "c", SG_CTR_CONC, 1e10, 1e10, 0, &it) == 0 && it.remaining == 0);
	CHECK(take(c, "c", SG_CTR_CONC, 1e10, 1, 0, &it) == 1);
	CHECK(take(c, "d", SG_CTR_CONC, 1e10, 1, 0, &it) == 0 && it.remaining == 1e10 - 1);
	sg_ctr_free(c);
}

/* 4. tokens: reserve, then settle the real count. */
static void test_tokens_settle(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it;
	const uint64_t T = 60 * MS; /* tpm 1000: 60 ms a token */

	CHECK(take(c, "k:t", SG_CTR_RATE, 1000, 800, 0, &it) == 0);
	CHECK(it.remaining == 200 && it.reset_us == 800 * T);
	CHECK(take(c, "k:t", SG_CTR_RATE, 1000, 300, 0, &it) == 1);
	CHECK_MSG(it.retry_us == 100 * T, "retry_us %llu, want 6 s",
	          (unsigned long long)it.retry_us);
	CHECK(it.remaining == 200);
	settle(c, "k:t", 1000, -500, 0);
	CHECK(take(c, "k:t", SG_CTR_RATE, 1000, 300, 0, &it) == 0);
	CHECK(it.remaining == 400);
	/* Never below empty. */
	settle(c, "k:t", 1000, -1e9, 0);
	CHECK(take(c, "k:t", SG_CTR_RATE, 1000, 0, 0, &it) == 0);
	CHECK(it.remaining == 1000 && it.reset_us == 0);
	CHECK(take(c, "k:t", SG_CTR_RATE, 1000, 1000, 0, NULL) == 0);
	CHECK(take(c, "k:t", SG_CTR_RATE, 1000, 1, 0, NULL) == 1);

	/* A settle drains first: 800 at 0; at 6 s, 700 left in the backlog; -500 -> 200. */
	settle(c, "k:u", 1000, 0, 0);
	CHECK(take(c, "k:u", SG_CTR_RATE, 1000, 800, 0, NULL) == 0);
	settle(c, "k:u", 1000, -500, 6 * S);
	CHECK(rate_left(c, "k:u", 1000, 6 * S) == 800);
	/* And an overrun beyond capacity refuses even cost 0 until it drains. */
	settle(c, "k:u", 1000, 1300, 6 * S); /* backlog 1500 tokens */
	CHECK(take(c, "k:u", SG_CTR_RATE, 1000, 0, 6 * S, &it) == 1);
	CHECK(it.remaining == 0 && it.retry_us == 500 * T && it.reset_us == 1500 * T);
	CHECK(take(c, "k:u", SG_CTR_RATE, 1000, 0, 6 * S + 500 * T, NULL) == 0);
	/* A late settle on an emptied counter starts from now, not from the old TAT. */
	CHECK(take(c, "k:w", SG_CTR_RATE, 1000, 100, 0, NULL) == 0);
	settle(c, "k:w", 1000, 200, 10 * S);
	CHECK(rate_left(c, "k:w", 1000, 10 * S) == 800);

	/* Giving back to an unknown counter makes none; adding to one makes it. */
	size_t before = sg_counters_local_count(c);
	settle(c, "k:none", 1000, -5, 0);
	CHECK(sg_counters_local_count(c) == before);
	settle(c, "k:new", 1000, 400, 0);
	CHECK(sg_counters_local_count(c) == before + 1);
	CHECK(rate_left(c, "k:new", 1000, 0) == 600);
	/* Settle is for RATE only: a CONC counter of that name is another counter. */
	CHECK(take(c, "k:new", SG_CTR_CONC, 1, 1, 0, NULL) == 0);
	settle(c, "k:new", 1000, -1e9, 0);
	CHECK(take(c, "k:new", SG_CTR_CONC, 1, 1, 0, NULL) == 1);
	sg_ctr_free(c);
}

/* 5. a cost beyond capacity can never fit; bad input is refused, never a crash. */
static void test_never_and_invalid(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it;
	char name[SG_CTR_NAME_MAX + 2];

	CHECK(take(c, "k", SG_CTR_RATE, 60, 61, 0, &it) == 1);
	CHECK(it.retry_us == UINT64_MAX && it.remaining == 60);
	CHECK(take(c, "k", SG_CTR_RATE, 60, 60, 0, &it) == 0);
	CHECK(it.remaining == 0);
	CHECK(take(c, "c", SG_CTR_CONC, 2, 3, 0, &it) == 1);
	CHECK(it.retry_us == UINT64_MAX);
	sg_ctr_free(c);

	c = sg_counters_local_new(0.1); /* tpm 1000: capacity 100 */
	CHECK(take(c, "t", SG_CTR_RATE, 1000, 101, 0, &it) == 1);
	CHECK(it.retry_us == UINT64_MAX);
	CHECK(take(c, "t", SG_CTR_RATE, 1000, 100, 0, NULL) == 0);

	memset(name, 'x', sizeof(name));
	name[SG_CTR_NAME_MAX] = '\0';
	CHECK(take(c, name, SG_CTR_RATE, 60, 1, 0, NULL) == 0); /* 191 bytes: fine */
	name[SG_CTR_NAME_MAX] = 'x';
	name[SG_CTR_NAME_MAX + 1] = '\0';
	struct {
		const char *name;
		int kind;
		double limit, cost;
	} bad[] = {
		{NULL, SG_CTR_RATE, 60, 1},    {name, SG_CTR_RATE, 60, 1},
		{"b", SG_CTR_RATE, 0, 1},      {"b", SG_CTR_RATE, -5, 1},
		{"b", SG_CTR_RATE, NAN, 1},    {"b", SG_CTR_RATE, INFINITY, 1},
		{"b", SG_CTR_RATE, 1e-320, 1}, {"b", SG_CTR_RATE, 60, NAN},
		{"b", SG_CTR_RATE, 60, -1},    {"b", SG_CTR_RATE, 60, INFINITY},
		{"b", SG_CTR_CONC, 0, 1},      {"b", SG_CTR_CONC, 2, NAN},
		{"b", 7, 60, 1},
	};
	size_t before = sg_counters_local_count(c);
	for (size_t i = 0; i < SG_ARRAY_SIZE(bad); i++) {
		int rc = take(c, bad[i].name, bad[i].kind, bad[i].limit, bad[i].cost, 0, &it);
		CHECK_MSG(rc == 1 && it.retry_us == UINT64_MAX && it.remaining == 0,
		          "bad item %zu: rc %d retry %llu", i, rc, (unsigned long long)it.retry_us);
	}
	CHECK(sg_counters_local_count(c) == before);
	/* Bad settles and releases are ignored. */
	settle(c, NULL, 60, 1, 0);
	settle(c, "t", NAN, -100, 0);
	settle(c, "t", 1000, NAN, 0);
	settle(c, "t", 1000, -INFINITY, 0);
	release(c, NULL, 1);
	release(c, "t", NAN);
	CHECK(rate_left(c, "t", 1000, 0) == 0);
	/* An absurd settle still drains, in time. */
	settle(c, "t", 1000, 1e300, 0);
	CHECK(take(c, "t", SG_CTR_RATE, 1000, 0, 0, &it) == 1);
	CHECK(it.reset_us < UINT64_MAX && it.retry_us < UINT64_MAX);
	sg_ctr_free(c);
	sg_ctr_free(NULL);
}

/* 6. all or nothing; every refused item's wait filled. */
static void test_all_or_nothing(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it[3];

	for (int i = 0; i < 10; i++)
		CHECK(take(c, "A", SG_CTR_RATE, 60, 1, 0, NULL) == 0);
	CHECK(take(c, "B", SG_CTR_CONC, 1, 1, 0, NULL) == 0);
	it[0] = item("A", SG_CTR_RATE, 60, 1);
	it[1] = item("B", SG_CTR_CONC, 1, 1);
	CHECK(sg_ctr_reserve(c, it, 2, 0, done_cb, NULL) == 2);
	CHECK(it[0].retry_us == 0 && it[0].remaining == 50);
	CHECK(it[1].retry_us == 0 && it[1].remaining == 0);
	CHECK(rate_left(c, "A", 60, 0) == 50); /* A untouched */

	/* Refused by the first of several; each says its own wait. */
	CHECK(take(c, "C", SG_CTR_RATE, 60, 60, 0, NULL) == 0);
	it[0] = item("A", SG_CTR_RATE, 60, 1);
	it[1] = item("C", SG_CTR_RATE, 60, 3);   /* 3 s away */
	it[2] = item("A", SG_CTR_RATE, 60, 100); /* never */
	CHECK(sg_ctr_reserve(c, it, 3, 0, done_cb, NULL) == 2);
	CHECK(it[0].retry_us == 0 && it[1].retry_us == 3 * S && it[2].retry_us == UINT64_MAX);
	CHECK(rate_left(c, "A", 60, 0) == 50);
	/* An invalid item anywhere refuses the lot. */
	it[0] = item("A", SG_CTR_RATE, 60, 1);
	it[1] = item("D", SG_CTR_RATE, -1, 1);
	CHECK(sg_ctr_reserve(c, it, 2, 0, done_cb, NULL) == 2);
	CHECK(rate_left(c, "A", 60, 0) == 50);
	/* All fit: all taken. */
	it[0] = item("A", SG_CTR_RATE, 60, 1);
	it[1] = item("E", SG_CTR_CONC, 5, 2);
	it[2] = item("C", SG_CTR_RATE, 60, 3);
	CHECK(sg_ctr_reserve(c, it, 3, 3 * S, done_cb, NULL) == 0);
	CHECK(it[0].remaining == 52 && it[1].remaining == 3 && it[2].remaining == 0);
	CHECK(sg_ctr_reserve(c, it, 0, 0, done_cb, NULL) == 0);
	sg_ctr_free(c);
}

/* 7. concurrency. */
static void test_conc(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it;

	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 0, &it) == 0 && it.remaining == 1);
	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 0, &it) == 0 && it.remaining == 0);
	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 0, &it) == 1);
	CHECK(it.retry_us == 0 && it.remaining == 0);
	release(c, "k:c", 1);
	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 0, NULL) == 0);
	/* Never below 0: releasing too much still leaves room for two only. */
	for (int i = 0; i < 5; i++)
		release(c, "k:c", 1);
	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 0, NULL) == 0);
	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 0, NULL) == 0);
	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 0, NULL) == 1);
	/* Time does not free slots; release of a RATE name or unknown name does nothing. */
	CHECK(take(c, "k:c", SG_CTR_CONC, 2, 1, 3600 * S, NULL) == 1);
	CHECK(take(c, "k:r", SG_CTR_RATE, 60, 60, 0, NULL) == 0);
	release(c, "k:r", 60);
	release(c, "k:nobody", 1);
	CHECK(rate_left(c, "k:r", 60, 0) == 0);
	CHECK(sg_counters_local_count(c) == 2);
	sg_ctr_free(c);
}

/* 8. sweep drops idle counters only. */
static void test_sweep(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);

	CHECK(take(c, "r:idle", SG_CTR_RATE, 60, 10, 0, NULL) == 0);  /* empty again at 10 s */
	CHECK(take(c, "r:busy", SG_CTR_RATE, 60, 30, 0, NULL) == 0);  /* at 30 s */
	CHECK(take(c, "c:held", SG_CTR_CONC, 1, 1, 0, NULL) == 0);
	CHECK(take(c, "c:freed", SG_CTR_CONC, 1, 1, 0, NULL) == 0);
	release(c, "c:freed", 1);
	CHECK(sg_counters_local_count(c) == 4);
	CHECK(sg_ctr_sweep(c, 10 * S - 1) == 1); /* only c:freed */
	CHECK(sg_ctr_sweep(c, 10 * S) == 1);     /* r:idle */
	CHECK(sg_counters_local_count(c) == 2);
	CHECK(rate_left(c, "r:busy", 60, 10 * S) == 40);
	CHECK(take(c, "c:held", SG_CTR_CONC, 1, 1, 10 * S, NULL) == 1);
	CHECK(sg_ctr_sweep(c, 3600 * S) == 1); /* r:busy drained, c:held still held */
	CHECK(sg_counters_local_count(c) == 1);
	CHECK(sg_ctr_sweep(c, 3600 * S) == 0);
	sg_ctr_free(c);
}

/* 9. many names, with real hashes and with forced collisions. */
static void many(int nnames, uint64_t mask)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	char name[64];
	sg_ctr_item_t it;
	int bad = 0;

	if (mask != UINT64_MAX)
		CHECK(sg__counters_local_hash_mask(c, mask) == 0);
	for (int i = 0; i < nnames; i++) {
		snprintf(name, sizeof(name), "k:%d:rpm", i);
		bad += take(c, name, SG_CTR_RATE, 60, 1 + i % 7, 0, NULL) != 0;
		snprintf(name, sizeof(name), "k:%d:conc", i);
		bad += take(c, name, SG_CTR_CONC, 10, 1 + i % 3, 0, NULL) != 0;
	}
	CHECK(bad == 0);
	CHECK(sg_counters_local_count(c) == 2 * (size_t)nnames);
	CHECK(sg__counters_local_hash_mask(c, 0) == SG_EINVAL);
	/* Free the even CONC counters and sweep them out of their chains. */
	for (int i = 0; i < nnames; i += 2) {
		snprintf(name, sizeof(name), "k:%d:conc", i);
		release(c, name, 1 + i % 3);
	}
	CHECK(sg_ctr_sweep(c, 0) == (size_t)(nnames + 1) / 2);
	for (int i = 0; i < nnames; i++) {
		snprintf(name, sizeof(name), "k:%d:rpm", i);
		take(c, name, SG_CTR_RATE, 60, 1, 0, &it);
		bad += it.remaining != 60 - (1 + i % 7) - 1;
		snprintf(name, sizeof(name), "k:%d:conc", i);
		take(c, name, SG_CTR_CONC, 10, 0, 0, &it);
		bad += it.remaining != (i % 2 ? 10 - (1 + i % 3) : 10);
	}
	CHECK_MSG(bad == 0, "%d names with the wrong state (mask %llx)", bad,
	          (unsigned long long)mask);
	CHECK(sg_counters_local_count(c) == 2 * (size_t)nnames);
	CHECK(sg_ctr_sweep(c, 3600 * S) == (size_t)nnames + (size_t)(nnames + 1) / 2);
	sg_ctr_free(c);
}

/* One name, both kinds, in one chain: two counters. */
static void test_same_name_kinds(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t it;

	CHECK(sg__counters_local_hash_mask(c, 0) == 0); /* every name hashes to 0 */
	CHECK(take(c, "x", SG_CTR_RATE, 60, 5, 0, NULL) == 0);
	CHECK(take(c, "x", SG_CTR_CONC, 2, 1, 0, NULL) == 0);
	CHECK(take(c, "y", SG_CTR_CONC, 2, 2, 0, NULL) == 0);
	CHECK(sg_counters_local_count(c) == 3);
	CHECK(rate_left(c, "x", 60, 0) == 55);
	CHECK(take(c, "x", SG_CTR_CONC, 2, 0, 0, &it) == 0 && it.remaining == 1);
	/* The chain is x/RATE, y, x/CONC: drop its middle, then its head. */
	release(c, "y", 2);
	CHECK(sg_ctr_sweep(c, 0) == 1);
	CHECK(rate_left(c, "x", 60, 0) == 55);
	CHECK(take(c, "x", SG_CTR_CONC, 2, 0, 0, &it) == 0 && it.remaining == 1);
	CHECK(sg_ctr_sweep(c, 5 * S) == 1);
	CHECK(sg_counters_local_count(c) == 1);
	CHECK(take(c, "x", SG_CTR_CONC, 2, 0, 0, &it) == 0 && it.remaining == 1);
	CHECK(take(c, "x", SG_CTR_RATE, 60, 0, 5 * S, &it) == 0 && it.remaining == 60);
	sg_ctr_free(c);
}

/* An item's precomputed hash (sg_ctr_hash) finds the counter its name
 * finds: reserve, settle and release through either see one counter. */
static void test_item_hash(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0);
	sg_ctr_item_t r = item("k:abc:tpm", SG_CTR_RATE, 600, 100);
	sg_ctr_item_t s = item("k:abc:conc", SG_CTR_CONC, 2, 1);
	r.hash = sg_ctr_hash(r.name, SG_CTR_RATE);
	s.hash = sg_ctr_hash(s.name, SG_CTR_CONC);
	CHECK(r.hash != 0 && s.hash != 0 && r.hash != sg_ctr_hash(r.name, SG_CTR_CONC));
	CHECK(sg_ctr_reserve(c, &r, 1, 0, done_cb, NULL) == 0 && r.remaining == 500);
	CHECK(rate_left(c, "k:abc:tpm", 600, 0) == 500);                  /* by name */
	sg_ctr_settle(c, &r, -50, 0);                                      /* by hash */
	CHECK(rate_left(c, "k:abc:tpm", 600, 0) == 550);
	settle(c, "k:abc:tpm", 600, -50, 0);                               /* by name */
	CHECK(sg_ctr_reserve(c, &r, 1, 0, done_cb, NULL) == 0 && r.remaining == 500);
	CHECK(sg_ctr_reserve(c, &s, 1, 0, done_cb, NULL) == 0 && s.remaining == 1);
	CHECK(take(c, "k:abc:conc", SG_CTR_CONC, 2, 1, 0, NULL) == 0);      /* the second slot */
	CHECK(sg_ctr_reserve(c, &s, 1, 0, done_cb, NULL) == 1);            /* full */
	sg_ctr_release(c, &s);
	CHECK(take(c, "k:abc:conc", SG_CTR_CONC, 2, 1, 0, NULL) == 0);
	CHECK(sg_counters_local_count(c) == 2);
	sg_ctr_free(c);
}

/* Hints: a caller's handle slot skips the lookup while it is valid, is
 * dropped once anything was swept (the counter it named may be freed: under
 * ASan a stale one would be a use after free), never matches another
 * backend's counters, and is never read for another kind. */
static void test_hints(void)
{
	sg_counters_t *c = sg_counters_local_new(1.0), *d = sg_counters_local_new(1.0);
	sg_ctr_hint_t h = {0}, hc = {0};
	sg_ctr_item_t r = item("k:h:rpm", SG_CTR_RATE, 60, 10);
	sg_ctr_item_t s = item("k:h:conc", SG_CTR_CONC, 1, 1);
	r.hint = &h;
	s.hint = &hc;
	CHECK(sg_ctr_reserve(c, &r, 1, 0, done_cb, NULL) == 0 && r.remaining == 50);
	CHECK(h.ptr != NULL && h.gen != 0);
	CHECK(sg_ctr_reserve(c, &r, 1, 0, done_cb, NULL) == 0 && r.remaining == 40); /* by hint */
	CHECK(rate_left(c, "k:h:rpm", 60, 0) == 40);                                 /* by name */
	sg_ctr_settle(c, &r, -5, 0);
	CHECK(rate_left(c, "k:h:rpm", 60, 0) == 45);
	/* the same slot offered for the other kind: looked up by name, a counter of its own */
	sg_ctr_item_t wrong = item("k:h:rpm", SG_CTR_CONC, 1, 1);
	sg_ctr_hint_t h2 = h;
	wrong.hint = &h2;
	CHECK(sg_ctr_reserve(c, &wrong, 1, 0, done_cb, NULL) == 0 && wrong.remaining == 0);
	CHECK(rate_left(c, "k:h:rpm", 60, 0) == 45);
	CHECK(sg_counters_local_count(c) == 2);
	/* another backend: the hint names none of its counters */
	sg_ctr_hint_t hd = h;
	r.hint = &hd;
	CHECK(sg_ctr_reserve(d, &r, 1, 0, done_cb, NULL) == 0 && r.remaining == 50);
	CHECK(hd.ptr != h.ptr && hd.gen != h.gen);
	CHECK(rate_left(c, "k:h:rpm", 60, 0) == 45);
	/* a slot, then a sweep that frees the counter: the old hint is not used */
	r.hint = &h;
	CHECK(sg_ctr_reserve(c, &s, 1, 0, done_cb, NULL) == 0);
	sg_ctr_release(c, &s);
	sg_ctr_release(c, &wrong);
	uint64_t before = h.gen;
	CHECK(sg_ctr_sweep(c, 3600 * S) == 3); /* all three idle: freed */
	CHECK(sg_counters_local_count(c) == 0);
	CHECK(sg_ctr_reserve(c, &r, 1, 3600 * S, done_cb, NULL) == 0 && r.remaining == 50);
	CHECK(h.gen != before && sg_counters_local_count(c) == 1);
	sg_ctr_settle(c, &r, -10, 3600 * S); /* through the new hint */
	CHECK(rate_left(c, "k:h:rpm", 60, 3600 * S) == 60);
	/* a slot taken, then a sweep that frees another counter while the call
	 * runs: the release and the settle go through stale hints, by name */
	CHECK(sg_ctr_reserve(c, &s, 1, 3600 * S, done_cb, NULL) == 0 && s.remaining == 0);
	CHECK(sg_ctr_reserve(c, &r, 1, 3600 * S, done_cb, NULL) == 0 && r.remaining == 50);
	CHECK(take(c, "k:other", SG_CTR_RATE, 60, 1, 3600 * S, NULL) == 0);
	before = h.gen;
	CHECK(sg_ctr_sweep(c, 3602 * S) == 1); /* k:other, idle again: freed */
	CHECK(sg_counters_local_count(c) == 2);
	sg_ctr_release(c, &s);
	sg_ctr_settle(c, &r, -10, 3602 * S);
	CHECK(take(c, "k:h:conc", SG_CTR_CONC, 1, 1, 3602 * S, NULL) == 0); /* the slot is back */
	CHECK(rate_left(c, "k:h:rpm", 60, 3602 * S) == 60);                 /* and the tokens */
	CHECK(h.gen != before); /* (found by name, and the hint made anew) */
	sg_ctr_free(c);
	sg_ctr_free(d);
}

int main(void)
{
	test_item_hash();
	CHECK(sg_counters_local_new(0) == NULL);
	CHECK(sg_counters_local_new(1.5) == NULL);
	CHECK(sg_counters_local_new(NAN) == NULL);
	test_rpm_full_burst();
	test_rpm_small_burst();
	test_remaining_reset();
	test_huge_limits();
	test_tokens_settle();
	test_never_and_invalid();
	test_all_or_nothing();
	test_conc();
	test_sweep();
	many(100000, UINT64_MAX);
	many(3000, 0x7); /* 8 hash values across 6000 counters: long chains */
	test_same_name_kinds();
	test_hints();
	CHECK(done_calls == 0);
	CHECK_DONE();
}
