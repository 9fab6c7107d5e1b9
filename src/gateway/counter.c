/* The in-process rate-limit counters (counter.h): name -> counter in a hash map. */
#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "counter.h"
#include "semgate/common.h"
#include "semgate/hash.h"
#include "u64map.h"

/* Rounding slack, relative to a counter's capacity: float sums of costs and
 * elapsed times may land a hair past the exact boundary. Relative to
 * capacity (not T) so that it stays far below a µs: a wait of exactly
 * retry_us then always fits, and whole-µs schedules fit exactly when they should.
 * Never half a unit or more (slack_of): with a limit of a billion or more, a
 * billionth of the capacity would be a whole unit, admitted past the limit
 * and shown as more remaining than the limit itself. */
#define EPS 1e-9
/* A settle far beyond any real cost must still leave a counter that drains
 * (and can be swept): no backlog beyond ~30 years. */
#define LEVEL_MAX 1e15
#define NOMEM_RETRY_US 1000

/* One counter. RATE keeps its TAT as at_us + level, the backlog as of at_us:
 * a TAT in absolute µs held in a double would lose the fractions of a µs
 * that short emission intervals (high tpm) need, while a backlog stays small. */
typedef struct ctr {
	struct ctr *next; /* the next counter whose name hashes alike */
	uint64_t at_us;   /* RATE: when level was last brought up to date */
	double level;     /* RATE: backlog in µs at at_us (TAT - at_us, >= 0); CONC: units used */
	uint8_t kind;     /* enum sg_ctr_kind */
	uint8_t len;      /* bytes of name */
	char name[];      /* a NUL-terminated copy */
} ctr_t;

typedef struct local {
	sg_counters_t base; /* first: the interface */
	sg_u64map_t map;    /* name hash -> chain of ctr_t */
	size_t count;       /* counters in all chains */
	double burst;       /* RATE capacity as a fraction of the per-minute limit */
	uint64_t hash_mask; /* all ones; fewer bits in tests, to force collisions */
	uint64_t gen;       /* the hints made now carry this; a new one once a counter is
	                     * freed, from one sequence for every backend of the process, so
	                     * that no hint from another backend or an earlier time matches */
} local_t;

/* The one piece of state shared by every backend of the process (the
 * exception to "no globals"): generations must never repeat across backends,
 * or a hint kept from a freed backend could match a new one at the same
 * address. Atomic, since backends may be made on any thread. (0: a zeroed
 * hint, never valid.) */
static _Atomic uint64_t next_gen = 1;

/* Bytes of name, or SIZE_MAX for NULL or too long a name. Bounded: the name
 * comes from the caller and is read no further than a valid one could go. */
static size_t name_len(const char *name)
{
	if (name == NULL)
		return SIZE_MAX;
	size_t n = strnlen(name, SG_CTR_NAME_MAX + 1);
	return n <= SG_CTR_NAME_MAX ? n : SIZE_MAX;
}

/* Whether limit makes a usable counter: positive, and for RATE a finite T. */
static int limit_ok(int kind, double limit)
{
	return limit > 0 && isfinite(limit) && (kind == SG_CTR_CONC || isfinite(60e6 / limit));
}

/* µs to a whole count, rounded up, saturating (retries may be "forever").
 * Truncated, then up by one if that dropped a fraction: fewer instructions
 * than ceil()'s (the conversions are exact: below 2^53 every whole count is
 * a double, from there every double is whole). */
static uint64_t to_us(double x)
{
	if (!(x > 0))
		return 0;
	if (x >= 1.8e19)
		return UINT64_MAX;
	uint64_t u = (uint64_t)x;
	return u + ((double)u < x);
}

/* floor(x) if x > 0, else 0: a count left. Truncated (fewer instructions
 * than floor()'s); from 2^52 on every double is whole. */
static double whole_left(double x)
{
	if (!(x > 0))
		return 0;
	return x < 0x1p52 ? (double)(int64_t)x : x;
}

uint64_t sg_ctr_hash(const char *name, int kind)
{
	return sg_hash64(name, strlen(name), (uint64_t)kind);
}

/* The counter (name, kind) found by its name, made when create is set (NULL:
 * absent, or it could not be made); *hint set to it. hash: the item's
 * (sg_ctr_hash), or 0 to hash name here. Out of line: get()'s hint is the
 * common case, and this one's registers and calls would cost it on every call. */
static __attribute__((noinline)) ctr_t *lookup(local_t *l, const char *name, size_t len,
                                               uint64_t hash, int kind, sg_ctr_hint_t *hint,
                                               uint64_t now, int create)
{
	uint64_t key = (hash ? hash : sg_hash64(name, len, (uint64_t)kind)) & l->hash_mask;
	ctr_t *head = sg__u64map_get(&l->map, key), *k;

	for (k = head; k != NULL; k = k->next)
		if (k->kind == kind && k->len == len && memcmp(k->name, name, len) == 0)
			break;
	if (k == NULL && create) {
		if ((k = malloc(sizeof(*k) + len + 1)) == NULL)
			return NULL;
		*k = (ctr_t){.at_us = now, .kind = (uint8_t)kind, .len = (uint8_t)len};
		memcpy(k->name, name, len);
		k->name[len] = '\0';
		/* Behind an existing head the map needs no change, so nothing can fail. */
		if (head != NULL) {
			k->next = head->next;
			head->next = k;
		} else if (sg__u64map_put(&l->map, key, k) != 0) {
			free(k);
			return NULL;
		}
		l->count++;
	}
	if (k != NULL && hint != NULL)
		*hint = (sg_ctr_hint_t){k, l->gen};
	return k;
}

/* The counter (name, kind), brought up to date at now; made when create is
 * set. NULL when absent, when it could not be made, or when name is NULL or
 * too long. hash: the item's (sg_ctr_hash), or 0 to hash name here. hint:
 * the caller's handle slot (NULL: none), read first and kept up to date. A
 * valid hint was made by a lookup of this name, which checked it: only a
 * lookup measures the name. */
static inline ctr_t *get(local_t *l, const char *name, uint64_t hash, int kind,
                         sg_ctr_hint_t *hint, uint64_t now, int create)
{
	ctr_t *k;
	size_t len;

	if (hint != NULL && hint->gen == l->gen && hint->ptr != NULL &&
	    ((ctr_t *)hint->ptr)->kind == kind)
		k = hint->ptr; /* nothing freed since it was made: still this name's counter */
	else if ((len = name_len(name)) == SIZE_MAX ||
	         (k = lookup(l, name, len, hash, kind, hint, now, create)) == NULL)
		return NULL;
	/* A clock that steps back leaves the backlog as it is, rather than growing it. */
	if (kind == SG_CTR_RATE && now > k->at_us) {
		double lv = k->level - (double)(now - k->at_us);
		k->level = lv > 0 ? lv : 0; /* (fmax is a call into libm) */
		k->at_us = now;
	}
	return k;
}

/* The rounding slack of a capacity of cap, where a unit is unit: EPS of the
 * capacity, less than half a unit. */
static inline double slack_of(double cap, double unit)
{
	double s = EPS * cap, most = 0.5 * unit;
	return s < most ? s : most; /* (fmin is a call into libm) */
}

/* A RATE counter's shape under a limit: T, the capacity C*T and its rounding
 * slack, in µs. */
typedef struct shape {
	double t, cap, slack;
} shape_t;

static shape_t rate_shape(const local_t *l, double limit)
{
	double t = 60e6 / limit, c = limit * l->burst;
	double cap = (c > 1 ? c : 1) * t; /* (fmax is a call into libm) */

	return (shape_t){t, cap, slack_of(cap, t)};
}

/* Fill it->remaining and it->reset_us from k as it is now (sh: RATE's shape). */
static void fill(sg_ctr_item_t *it, const ctr_t *k, shape_t sh)
{
	if (it->kind == SG_CTR_CONC) {
		it->remaining = whole_left(it->limit - k->level + slack_of(it->limit, 1));
		it->reset_us = 0;
		return;
	}
	it->remaining = whole_left((sh.cap - k->level + sh.slack) / sh.t);
	it->reset_us = to_us(k->level - sh.slack);
}

/* Whether it fits in k; sets retry_us, taking nothing (the other outputs:
 * fill). sh: RATE's shape. */
static int check(sg_ctr_item_t *it, const ctr_t *k, shape_t sh)
{
	double cap = sh.cap, t = sh.t, over;

	it->retry_us = 0;
	if (it->kind == SG_CTR_CONC) {
		double most = it->limit + slack_of(it->limit, 1);
		if (k->level + it->cost <= most)
			return 1;
		/* When a slot comes back is not for a counter to know: 0, unknown. */
		it->retry_us = it->cost > most ? UINT64_MAX : 0;
		return 0;
	}
	over = k->level + it->cost * t - cap; /* µs of backlog past capacity */
	if (over <= sh.slack)
		return 1;
	it->retry_us = it->cost * t > cap + sh.slack ? UINT64_MAX : to_us(over - sh.slack);
	return 0;
}

/* The outputs of an item that has no counter: invalid, or none could be
 * made. (Cold, as refused(): out of the reserve's common path.) */
static __attribute__((cold)) void no_counter(sg_ctr_item_t *it, int valid)
{
	it->remaining = 0;
	it->reset_us = 0;
	/* (the name is measured again only here, on this rare path) */
	valid = valid && name_len(it->name) != SIZE_MAX;
	it->retry_us = valid ? NOMEM_RETRY_US : UINT64_MAX;
}

/* A reserve keeps the counters and shapes its first pass found, for the
 * second, for this many items (more are looked up again). */
#define KEPT 16

/* A refused reserve's answer: every item's outputs as its counter stands
 * (the first KEPT; found, shapes: the first pass's), and first. */
static __attribute__((cold)) int refused(sg_ctr_item_t *items, size_t n, ctr_t *const *found,
                                         const shape_t *shapes, size_t first)
{
	for (size_t i = 0; i < n && i < KEPT; i++)
		if (found[i] != NULL)
			fill(&items[i], found[i], shapes[i]);
	return (int)first;
}

static int local_reserve(sg_counters_t *c, sg_ctr_item_t *items, size_t n, uint64_t now_us,
                         sg_ctr_done_cb done, void *arg)
{
	local_t *l = (local_t *)c;
	size_t first = 0, i;
	ctr_t *found[KEPT]; /* the first pass's counters, so the second need not hash again */
	shape_t shapes[KEPT]; /* and their shapes (RATE) */

	/* Check everything first: all or nothing, and every item's wait filled in. */
	for (i = 0; i < n; i++) {
		sg_ctr_item_t *it = &items[i];
		int valid = it->kind <= SG_CTR_CONC && limit_ok(it->kind, it->limit) && it->cost >= 0 &&
		            isfinite(it->cost);
		ctr_t *k = valid ? get(l, it->name, it->hash, it->kind, it->hint, now_us, 1) : NULL;
		shape_t sh = k != NULL && it->kind == SG_CTR_RATE ? rate_shape(l, it->limit)
		                                                   : (shape_t){0, 0, 0};
		int ok = k != NULL && check(it, k, sh);
		if (i < KEPT) {
			found[i] = k;
			shapes[i] = sh;
		} else if (k != NULL) {
			fill(it, k, sh); /* not kept for a refusal's loop below: now */
		}

		if (k == NULL)
			no_counter(it, valid);
		if (!ok && first == 0)
			first = i + 1;
	}
	if (first != 0) /* refused: every item's outputs as the counters stand */
		return refused(items, n, found, shapes, first);
	/* Every counter exists now (made above, nothing dropped since): taking cannot fail.
	 * (A refusal may leave counters made idle above: the sweep drops them.) */
	for (i = 0; i < n; i++) {
		sg_ctr_item_t *it = &items[i];
		/* nothing is freed between the passes: the first one's pointers hold */
		int kept = i < KEPT;
		ctr_t *k = kept ? found[i]
		                : get(l, it->name, it->hash, it->kind, it->hint, now_us, 0);
		shape_t sh = kept ? shapes[i] : rate_shape(l, it->limit);

		assert(k != NULL);
		k->level += it->kind == SG_CTR_CONC ? it->cost : it->cost * sh.t;
		fill(it, k, sh);
	}
	return 0;
}

static void local_settle(sg_counters_t *c, const sg_ctr_item_t *it, double delta,
                         uint64_t now_us)
{
	local_t *l = (local_t *)c;
	ctr_t *k;

	if (!limit_ok(SG_CTR_RATE, it->limit) || !isfinite(delta))
		return;
	/* Giving back to a counter that was swept (empty) changes nothing. */
	if ((k = get(l, it->name, it->hash, SG_CTR_RATE, it->hint, now_us, delta > 0)) == NULL)
		return;
	double lv = k->level + delta * (60e6 / it->limit); /* (fmin, fmax: calls into libm) */
	k->level = !(lv > 0) ? 0 : lv < LEVEL_MAX ? lv : LEVEL_MAX;
}

static void local_release(sg_counters_t *c, const sg_ctr_item_t *it)
{
	local_t *l = (local_t *)c;
	ctr_t *k;

	if (!(it->cost >= 0) || !isfinite(it->cost))
		return;
	if ((k = get(l, it->name, it->hash, SG_CTR_CONC, it->hint, 0, 0)) != NULL)
		k->level = k->level > it->cost ? k->level - it->cost : 0;
}

static int idle(const ctr_t *k, uint64_t now)
{
	if (k->kind == SG_CTR_CONC || now <= k->at_us)
		return k->level <= 0;
	return k->level <= (double)(now - k->at_us);
}

static size_t local_sweep(sg_counters_t *c, uint64_t now_us)
{
	local_t *l = (local_t *)c;
	size_t dropped = 0;

	for (size_t i = 0; i < l->map.cap;) {
		ctr_t *head = l->map.vals[i], **pk = &head;

		if (head == NULL) {
			i++;
			continue;
		}
		while (*pk != NULL) {
			ctr_t *k = *pk;
			if (idle(k, now_us)) {
				*pk = k->next;
				free(k);
				dropped++;
			} else {
				pk = &k->next;
			}
		}
		if (head != NULL)
			l->map.vals[i++] = head; /* same key, maybe a new first counter */
		else /* shifts later members of the run back into slot i: look at it again */
			sg__u64map_del(&l->map, l->map.keys[i]);
	}
	l->count -= dropped;
	if (dropped)
		l->gen = atomic_fetch_add(&next_gen, 1); /* every hint made so far may be stale */
	return dropped;
}

static void local_free(sg_counters_t *c)
{
	local_t *l = (local_t *)c;

	for (size_t i = 0; i < l->map.cap; i++) {
		for (ctr_t *k = l->map.vals[i], *next; k != NULL; k = next) {
			next = k->next;
			free(k);
		}
	}
	sg__u64map_free(&l->map);
	free(l);
}

static const sg_counters_ops_t local_ops = {
	.reserve = local_reserve,
	.settle = local_settle,
	.release = local_release,
	.sweep = local_sweep,
	.free = local_free,
};

sg_counters_t *sg_counters_local_new(double burst)
{
	local_t *l;

	if (!(burst > 0 && burst <= 1) || (l = malloc(sizeof(*l))) == NULL)
		return NULL;
	l->base.ops = &local_ops;
	sg__u64map_init(&l->map);
	l->count = 0;
	l->burst = burst;
	l->hash_mask = UINT64_MAX;
	l->gen = atomic_fetch_add(&next_gen, 1);
	return &l->base;
}

size_t sg_counters_local_count(const sg_counters_t *c)
{
	return ((const local_t *)c)->count;
}

int sg__counters_local_hash_mask(sg_counters_t *c, uint64_t mask)
{
	local_t *l = (local_t *)c;

	if (l->count != 0)
		return SG_EINVAL;
	l->hash_mask = mask;
	return 0;
}
