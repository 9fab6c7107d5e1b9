/*
 * The limits step: requests per minute, tokens per minute and concurrent
 * requests for the call's key, its team and the key × model, over the
 * counter interface (counter.h; in-process today). All of the call's
 * counters are reserved together, or none: the request's 1, its tokens
 * (the prompt estimate plus its max_tokens or auth.default_completion_tokens)
 * and a concurrency slot. The tokens are settled with the real usage when
 * the call ends (semantic hits give theirs back unless auth.hits_count_tokens),
 * or with an estimate when the client leaves; the slot is released on every
 * ending. An exact hit, found by the cache's probe before this step
 * (sg__call_stashed_hit), takes its request only: no tokens (with
 * auth.hits_count_tokens, exactly its stored usage) and no slot. Every
 * answer carries OpenAI's x-ratelimit-* headers for the tightest request and
 * token limits, and the IETF RateLimit-Policy / RateLimit fields; a refusal
 * is 429 with Retry-After, saying which limit.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fsm.h"
#include "server_int.h"

static const char *const lim_names[SG_LIM__LAST] = {
	[SG_LIM_NONE] = "none", [SG_LIM_ASKING] = "asking", [SG_LIM_ASKING_LEFT] = "asking-left",
	[SG_LIM_HELD] = "held"};
static const uint32_t lim_next[SG_LIM__LAST] = {
	[SG_LIM_NONE] = SG_FSM_TO(SG_LIM_ASKING) | SG_FSM_TO(SG_LIM_HELD),
	[SG_LIM_ASKING] = SG_FSM_TO(SG_LIM_NONE) | SG_FSM_TO(SG_LIM_ASKING_LEFT) |
	                  SG_FSM_TO(SG_LIM_HELD),
	[SG_LIM_ASKING_LEFT] = SG_FSM_TO(SG_LIM_NONE),
	[SG_LIM_HELD] = SG_FSM_TO(SG_LIM_NONE),
};
static const sg_fsm_t lim_fsm = {"rate limits", lim_names, lim_next, SG_LIM__LAST};

static void lim_set_state(sg_gov_t *g, enum sg_lim_state s)
{
	sg_fsm_move(&lim_fsm, g, g->lim, s);
	g->lim = s;
}

enum { WHAT_RPM, WHAT_TPM, WHAT_CONC };
static const char *const what_suffix[] = {"rpm", "tpm", "conc"};

/* One counter of a key × model ('m') or team × model ('n') limit: its name
 * made here. */
static void add_model(sg_gov_t *g, sg_principal_t *p, char scope, const char *model, int what,
                      long limit, double cost)
{
	if (limit <= 0 || g->nitems == SG_GOV_ITEMS)
		return;
	char *n = g->names[g->nitems];
	snprintf(n, sizeof(g->names[0]), "%c:%s:%.120s:%s", scope, p->id, model, what_suffix[what]);
	g->what[g->nitems] = (uint8_t)what;
	g->scope[g->nitems] = scope;
	g->items[g->nitems++] = (sg_ctr_item_t){.name = n,
	                                        .kind = what == WHAT_CONC ? SG_CTR_CONC : SG_CTR_RATE,
	                                        .limit = (double)limit,
	                                        .cost = cost}; /* (hashed by the backend) */
}

/* hit: the cache holds the answer, which holds no concurrency slot */
static void add_model_set(sg_gov_t *g, sg_principal_t *p, char scope, const char *model,
                          const sg_limitset_t *l, double tokens, int hit)
{
	add_model(g, p, scope, model, WHAT_RPM, l->rpm, 1);
	add_model(g, p, scope, model, WHAT_TPM, l->tpm, tokens);
	if (!hit)
		add_model(g, p, scope, model, WHAT_CONC, l->max_concurrent, 1);
}

static void make_text(sg_rl_text_t *x, char scope, int tokens, uint64_t limit);

/* p's own limits as items (sg_own_items_t) and the header text of its rpm
 * and tpm limits, made the first time. */
static const sg_own_items_t *own_items(sg_principal_t *p)
{
	sg_own_items_t *o = &p->own;
	if (o->made)
		return o;
	const long limit[3] = {p->lim.rpm, p->lim.tpm, p->lim.max_concurrent};
	o->tpm = -1;
	for (int what = WHAT_RPM; what <= WHAT_CONC; what++) {
		if (limit[what] <= 0)
			continue;
		if (what == WHAT_TPM)
			o->tpm = (int8_t)o->n;
		o->what[o->n] = (uint8_t)what;
		if (what != WHAT_CONC)
			make_text(&p->rl_text[what], p->is_team ? 't' : 'k', what == WHAT_TPM,
			          (uint64_t)limit[what]);
		o->items[o->n++] = (sg_ctr_item_t){.name = p->ctr[what],
		                                   .kind = what == WHAT_CONC ? SG_CTR_CONC : SG_CTR_RATE,
		                                   .limit = (double)limit[what],
		                                   .cost = 1,
		                                   .hash = p->ctr_hash[what],
		                                   .hint = &p->ctr_hint[what]};
	}
	o->made = 1;
	return o;
}

/* The counters of p's own limits (a key's, 'k', or a team's, 't'). Whole
 * arrays are copied, not the n items in use: fixed-size copies are a few
 * moves; what lies past the n is overwritten or never read. hit: without
 * the concurrency item (the last, when there is one). */
static void add_own(sg_gov_t *g, sg_principal_t *p, double tokens, int hit)
{
	const sg_own_items_t *o = own_items(p);
	size_t at = g->nitems;
	assert(at + SG_ARRAY_SIZE(o->items) <= SG_GOV_ITEMS); /* the key's, then its team's */
	memcpy(&g->items[at], o->items, sizeof(o->items));
	memcpy(&g->what[at], o->what, sizeof(o->what));
	memset(&g->scope[at], p->is_team ? 't' : 'k', SG_ARRAY_SIZE(o->items));
	if (o->tpm >= 0)
		g->items[at + (size_t)o->tpm].cost = tokens;
	g->nitems = at + o->n - (hit && o->n && o->what[o->n - 1] == WHAT_CONC);
}

/* Writers into a buffer known to be large enough (put_headers' bound). w is
 * evaluated once (often a call that writes, as put_duration(...)). */
static inline char *put_mem(char *w, const void *s, size_t n, size_t advance)
{
	memcpy(w, s, n);
	return w + advance;
}
#define PUT(w, lit) put_mem((w), (lit), sizeof(lit) - 1, sizeof(lit) - 1)
/* The first n bytes of an array, copied as the whole array: a fixed-size
 * copy is a few moves, one of n bytes a loop. What lies past n is written
 * over next or never sent; the buffer has room for it (put_headers). */
#define PUT_ARRAY(w, a, n) put_mem((w), (a), sizeof(a), (n))

/* "1.25s", "6m0s", "120ms": OpenAI's x-ratelimit-reset-* form. */
static char *put_duration(char *w, uint64_t us)
{
	if (us < 1000000)
		return PUT(sg__put_u64(w, (us + 999) / 1000), "ms");
	if (us < 60000000) { /* seconds, up to two decimals, rounded up */
		uint64_t cs = (us + 9999) / 10000;
		w = sg__put_u64(w, cs / 100);
		if (cs % 100) {
			*w++ = '.';
			*w++ = (char)('0' + cs % 100 / 10);
			if (cs % 10)
				*w++ = (char)('0' + cs % 10);
		}
		return PUT(w, "s");
	}
	w = PUT(sg__put_u64(w, us / 60000000), "m");
	return PUT(sg__put_u64(w, (us % 60000000 + 999999) / 1000000), "s");
}

/* The tightest of the call's rpm and of its tpm limits (the fewest left):
 * ti[WHAT_RPM], ti[WHAT_TPM], -1 for none. One pass for both. */
static void tightest(const sg_gov_t *g, int ti[2])
{
	ti[0] = ti[1] = -1;
	for (size_t i = 0; i < g->nitems; i++) {
		const sg_ctr_item_t *it = &g->items[i];
		int what = g->what[i];
		if (what == WHAT_CONC)
			continue;
		int best = ti[what];
		if (best < 0 || it->remaining < g->items[best].remaining ||
		    (it->remaining == g->items[best].remaining && it->limit < g->items[best].limit))
			ti[what] = (int)i;
	}
}

/* A policy's name: "key-rpm", "team-model-tpm"... (quoted). */
static char *put_policy_name(char *w, char scope, int tokens)
{
	switch (scope) {
	case 'k': w = PUT(w, "\"key"); break;
	case 't': w = PUT(w, "\"team"); break;
	case 'm': w = PUT(w, "\"model"); break;
	default: w = PUT(w, "\"team-model"); break;
	}
	return tokens ? PUT(w, "-tpm\"") : PUT(w, "-rpm\"");
}

/* What only the limit of a kind fixes: OpenAI's limit line and the name of
 * the remaining one; the IETF policy item. */
static char *put_limit_lines(char *w, int tokens, uint64_t limit)
{
	w = tokens ? PUT(w, "x-ratelimit-limit-tokens: ") : PUT(w, "x-ratelimit-limit-requests: ");
	w = sg__put_u64(w, limit);
	return tokens ? PUT(w, "\r\nx-ratelimit-remaining-tokens: ")
	              : PUT(w, "\r\nx-ratelimit-remaining-requests: ");
}

static char *put_policy(char *w, char scope, int tokens, uint64_t limit)
{
	w = PUT(put_policy_name(w, scope, tokens), ";q=");
	return PUT(sg__put_u64(w, limit), ";w=60");
}

/* The text of the two above for a principal's own limit (own_items). */
static void make_text(sg_rl_text_t *x, char scope, int tokens, uint64_t limit)
{
	_Static_assert(sizeof(x->lines) >= 60 + 20 && sizeof(x->policy) >= 24 + 20,
	               "room for the longest names and a 20-digit limit");
	x->nlines = (uint8_t)(put_limit_lines(x->lines, tokens, limit) - x->lines);
	x->npolicy = (uint8_t)(put_policy(x->policy, scope, tokens, limit) - x->policy);
	x->nname = (uint8_t)(put_policy_name(x->policy, scope, tokens) - x->policy);
}

/* The header text of item i (-1: none) when it is a key's or team's own
 * limit (own_items made it), else NULL. */
static const sg_rl_text_t *own_text(const sg_gov_t *g, int i)
{
	if (i < 0 || (g->scope[i] != 'k' && g->scope[i] != 't'))
		return NULL;
	return &g->text_of[g->scope[i] == 't']->rl_text[g->what[i]];
}

/* put_headers' lines when both the tightest rpm and tpm limits are a key's
 * or team's own (x: their text, t: their items): the same bytes as
 * put_general writes, without its branches. */
static __attribute__((noinline)) char *put_own(char *w, const sg_rl_text_t *const x[2],
                                               const sg_ctr_item_t *const t[2])
{
	/* each remaining count is formatted once, into words written at both
	 * places (copying digits just written would stall on the store buffer) */
	sg__dec_t rem[2];
	sg__dec(&rem[0], (uint64_t)t[0]->remaining);
	sg__dec(&rem[1], (uint64_t)t[1]->remaining);
	w = sg__put_dec(PUT_ARRAY(w, x[0]->lines, x[0]->nlines), &rem[0]);
	w = PUT(put_duration(PUT(w, "\r\nx-ratelimit-reset-requests: "), t[0]->reset_us), "\r\n");
	w = sg__put_dec(PUT_ARRAY(w, x[1]->lines, x[1]->nlines), &rem[1]);
	w = PUT(put_duration(PUT(w, "\r\nx-ratelimit-reset-tokens: "), t[1]->reset_us), "\r\n");
	w = PUT_ARRAY(PUT(w, "RateLimit-Policy: "), x[0]->policy, x[0]->npolicy);
	w = PUT_ARRAY(PUT(w, ", "), x[1]->policy, x[1]->npolicy);
	w = PUT_ARRAY(PUT(w, "\r\nRateLimit: "), x[0]->policy, x[0]->nname);
	w = sg__put_dec(PUT(w, ";r="), &rem[0]);
	w = sg__put_u64(PUT(w, ";t="), (t[0]->reset_us + 999999) / 1000000);
	w = PUT_ARRAY(PUT(w, ", "), x[1]->policy, x[1]->nname);
	w = sg__put_dec(PUT(w, ";r="), &rem[1]);
	w = sg__put_u64(PUT(w, ";t="), (t[1]->reset_us + 999999) / 1000000);
	return PUT(w, "\r\n");
}

/* The rate-limit header lines: at most about 520 bytes (20-digit numbers
 * everywhere), and PUT_ARRAY writes at most 96 past the end (sg__put_dec 7). */
#define RL_HDRS_ROOM (520 + sizeof(((sg_rl_text_t *)0)->lines) + 24)

/* put_headers' lines in general (any limit, a key × model's too, or of
 * one kind only). Out of line: put_own is the common case, and this one's
 * code would be as many more instruction cache lines on its way. */
static __attribute__((noinline)) char *put_general(char *w, const sg_gov_t *g, const int ti[2],
                                                   const sg_ctr_item_t *const t[2],
                                                   const sg_rl_text_t *const x[2])
{
	sg__dec_t rem[2];
	for (int i = 0; i < 2; i++) {
		if (t[i] == NULL)
			continue;
		if (x[i])
			w = PUT_ARRAY(w, x[i]->lines, x[i]->nlines);
		else
			w = put_limit_lines(w, i, (uint64_t)t[i]->limit);
		sg__dec(&rem[i], (uint64_t)t[i]->remaining);
		w = sg__put_dec(w, &rem[i]);
		w = i ? PUT(w, "\r\nx-ratelimit-reset-tokens: ")
		      : PUT(w, "\r\nx-ratelimit-reset-requests: ");
		w = PUT(put_duration(w, t[i]->reset_us), "\r\n");
	}
	/* draft-ietf-httpapi-ratelimit-headers: one policy item per kind */
	for (int pass = 0; pass < 2 && (t[0] || t[1]); pass++) {
		w = pass ? PUT(w, "RateLimit: ") : PUT(w, "RateLimit-Policy: ");
		for (int i = 0; i < 2; i++) {
			if (t[i] == NULL)
				continue;
			if (i && t[0])
				w = PUT(w, ", ");
			if (pass == 0) {
				w = x[i] ? PUT_ARRAY(w, x[i]->policy, x[i]->npolicy)
				         : put_policy(w, g->scope[ti[i]], i, (uint64_t)t[i]->limit);
				continue;
			}
			w = x[i] ? PUT_ARRAY(w, x[i]->policy, x[i]->nname)
			         : put_policy_name(w, g->scope[ti[i]], i);
			w = sg__put_dec(PUT(w, ";r="), &rem[i]);
			w = sg__put_u64(PUT(w, ";t="), (t[i]->reset_us + 999999) / 1000000);
		}
		w = PUT(w, "\r\n");
	}
	return w;
}

/* The rate-limit header lines, for every answer of the call (the server
 * calls it as it makes the answer's head: req->resp_hdrs_put): OpenAI's for
 * the tightest limit of each kind, then the IETF draft's fields, as the
 * reservation left them. Written straight into the head when it has the
 * room (a call's own buffer would be more cache lines to fill and copy). */
static void put_headers(sg_req_t *req, sg__fbuf_t *head)
{
	char spare[RL_HDRS_ROOM];
	int direct = head->cap > head->len && head->cap - 1 - head->len >= RL_HDRS_ROOM;
	char *start = direct ? head->buf + head->len : spare;
	const sg_gov_t *g = &req->call->gov;
	int ti[2];
	tightest(g, ti);
	const sg_ctr_item_t *t[2] = {ti[0] < 0 ? NULL : &g->items[ti[0]],
	                             ti[1] < 0 ? NULL : &g->items[ti[1]]};
	/* the fixed text of a key's or team's own limit, NULL: written here (× model) */
	const sg_rl_text_t *x[2] = {own_text(g, ti[0]), own_text(g, ti[1])};
	/* the common case, a key's or team's own limits: straight on */
	char *w = x[0] && x[1] ? put_own(start, x, t) : put_general(start, g, ti, t, x);
	size_t n = (size_t)(w - start);
	if (!direct)
		return sg__fbuf_mem(head, spare, n); /* (cut there, as the rest of the head) */
	head->len += n;
	head->buf[head->len] = '\0';
}

/* From now on every answer of the call carries the rate-limit headers. The
 * text they copy from the key and team (rl_text) must outlive the call's
 * end: a hit's head is made after it. */
static void headers_from_now(sg_req_t *req)
{
	sg_call_t *c = req->call;
	sg_gov_t *g = &c->gov;
	sg__gov_text_release(g);
	g->text_of[0] = c->key;
	g->text_of[1] = c->team;
	sg__principal_ref(c->key);
	if (c->team)
		sg__principal_ref(c->team);
	req->resp_hdrs_put = put_headers;
}

void sg__gov_text_release(sg_gov_t *g)
{
	sg__principal_unref(g->text_of[0]);
	sg__principal_unref(g->text_of[1]);
	g->text_of[0] = g->text_of[1] = NULL;
}

static void refuse(sg_req_t *req, int idx)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_gov_t *g = &req->call->gov;
	const sg_ctr_item_t *it = &g->items[idx];
	const char *name = it->name;
	int what = g->what[idx];
	static const char *const what_text[] = {"requests per minute", "tokens per minute",
	                                        "concurrent requests"};
	char id[SG_KEY_ID_LEN + 1] = "";
	memcpy(id, name + 2, SG_KEY_ID_LEN);
	char who[200];
	if (g->scope[idx] == 'k')
		snprintf(who, sizeof(who), "key sg-%s", id);
	else if (g->scope[idx] == 't')
		snprintf(who, sizeof(who), "team %s", id);
	else if (g->scope[idx] == 'm')
		snprintf(who, sizeof(who), "key sg-%s on model '%s'", id, req->call->model->name);
	else
		snprintf(who, sizeof(who), "team %s on model '%s'", id, req->call->model->name);
	gw->limited++;
	headers_from_now(req);
	sg__call_end(req, 0);
	if (it->retry_us == UINT64_MAX)
		return sg__respond_error(req, SG_CE_RATE_LIMITED,
		                         "this request needs %.0f %s, more than the %s limit of %s "
		                         "(%.0f): it can never pass",
		                         it->cost, what == WHAT_TPM ? "tokens" : "slots",
		                         what_text[what], who, it->limit);
	char extra[64];
	uint64_t secs = it->retry_us ? (it->retry_us + 999999) / 1000000 : 1;
	snprintf(extra, sizeof(extra), "Retry-After: %llu\r\n", (unsigned long long)secs);
	if (what == WHAT_CONC)
		return sg__respond_error_h(req, SG_CE_RATE_LIMITED, extra,
		                           "rate limit reached for %s: %.0f %s at once; retry when "
		                           "one of them ends",
		                           who, it->limit, what_text[what]);
	sg__respond_error_h(req, SG_CE_RATE_LIMITED, extra,
	                    "rate limit reached for %s: %.0f %s; this request fits again in "
	                    "%.3f s (fully reset in %.3f s)",
	                    who, it->limit, what_text[what], (double)it->retry_us / 1e6,
	                    (double)it->reset_us / 1e6);
}

/* The counters' answer: refuse, or take the reservation and go on. */
static void answered(sg_req_t *req, int rc)
{
	sg_gov_t *g = &req->call->gov;
	if (g->lim == SG_LIM_ASKING)
		lim_set_state(g, SG_LIM_NONE); /* answered */
	if (rc > 0)
		return refuse(req, rc - 1);
	if (rc < 0) { /* a backend failure: refuse nothing, count nothing */
		sg_log_limited(&sg__req_gateway(req)->gov_log, SG_LOG_ERROR,
		               "rate limits: the counters failed (%d): request let through", rc);
		return sg__call_next(req);
	}
	lim_set_state(g, SG_LIM_HELD);
	headers_from_now(req);
	sg__call_next(req);
}

/* Settle the call's counters with what it really took (requests, tokens)
 * as of now, and give back its concurrency slots. */
static void take_only(sg_req_t *req, double requests, double tokens, uint64_t now)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_gov_t *g = &req->call->gov;
	for (size_t i = 0; i < g->nitems; i++) {
		const sg_ctr_item_t *it = &g->items[i];
		double took = g->what[i] == WHAT_TPM ? tokens : requests;
		if (it->kind == SG_CTR_CONC)
			sg_ctr_release(gw->counters, it);
		else if (took != it->cost)
			sg_ctr_settle(gw->counters, it, took - it->cost, now);
	}
}

static void reserved(void *arg, int rc)
{
	sg_req_t *req = arg; /* held: its memory is there, the client maybe not */
	sg_gov_t *g = &req->call->gov;
	sg_principal_t *held[2] = {g->held[0], g->held[1]};
	g->held[0] = g->held[1] = NULL;
	if (g->lim == SG_LIM_ASKING_LEFT) {
		if (rc == 0) /* a reservation that came after its client left */
			take_only(req, 0, 0, sg_now_us());
		lim_set_state(g, SG_LIM_NONE);
		sg__req_release(req);
	} else if (sg__req_release(req)) {
		answered(req, rc);
	}
	sg__principal_unref(held[0]); /* (after take_only: its items point into them) */
	sg__principal_unref(held[1]);
}

static void limits_request(sg_req_t *req)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_call_t *c = req->call;
	sg_gov_t *g = &c->gov;

	if (c->key == NULL || gw->counters == NULL)
		return sg__call_next(req);
	g->hits_tokens = (int)req->gen->cfg->auth.hits_count_tokens;
	/* An exact hit found by the cache's probe takes a request: its tokens only
	 * with auth.hits_count_tokens (then exactly its stored usage), and no slot */
	const sg_cache_hit_t *stashed = sg__call_stashed_hit(c);
	int hit = stashed != NULL;
	if (!hit)
		sg__call_estimate(req);
	double tokens = !hit ? (double)(g->est_prompt + g->est_completion)
	                : g->hits_tokens ? (double)stashed->entry.m.prompt_tokens +
	                                       (double)stashed->entry.m.completion_tokens
	                                 : 0;
	add_own(g, c->key, tokens, hit);
	if (c->team)
		add_own(g, c->team, tokens, hit);
	for (size_t i = 0; i < c->key->nmlim; i++)
		if (strcmp(c->key->mlim[i].model, c->model->name) == 0)
			add_model_set(g, c->key, 'm', c->model->name, &c->key->mlim[i].lim, tokens, hit);
	for (size_t i = 0; c->team && i < c->team->nmlim; i++)
		if (strcmp(c->team->mlim[i].model, c->model->name) == 0)
			add_model_set(g, c->team, 'n', c->model->name, &c->team->mlim[i].lim, tokens, hit);
	if (g->nitems == 0)
		return sg__call_next(req);
	/* the in-process counters answer at once; a shared backend answers later
	 * (reserved()), the connection held meanwhile. As of the request's arrival
	 * (its last byte): a clock read less, microseconds earlier. */
	int rc = sg_ctr_reserve(gw->counters, g->items, g->nitems, req->start_us, reserved, req);
	if (rc == SG_CTR_PENDING) {
		lim_set_state(g, SG_LIM_ASKING);
		g->held[0] = c->key; /* until reserved(), whatever the call does meanwhile */
		g->held[1] = c->team;
		sg__principal_ref(c->key);
		if (c->team)
			sg__principal_ref(c->team);
		sg__req_hold(req);
		return;
	}
	answered(req, rc);
}

/* Give back what the call holds: tokens settled with what it used, the
 * concurrency slots released. */
static void settle(sg_req_t *req, int aborted)
{
	sg_call_t *c = req->call;
	sg_gov_t *g = &c->gov;
	if (g->lim != SG_LIM_HELD)
		return;
	lim_set_state(g, SG_LIM_NONE);
	sg_usage_t u;
	int estimated;
	sg__call_billable(req, aborted, &u, &estimated);
	double used = (double)u.total;
	if (c->outcome == SG_CALL_HIT && g->hits_tokens)
		used = (double)(c->usage.prompt + c->usage.completion);
	take_only(req, 1, used, sg__call_end_us(req));
}

static void limits_end(sg_req_t *req, int ok)
{
	(void)ok;
	settle(req, 0);
}

static void limits_abort(sg_req_t *req)
{
	sg_gov_t *g = &req->call->gov;
	if (g->lim == SG_LIM_ASKING)
		lim_set_state(g, SG_LIM_ASKING_LEFT); /* reserved() gives it back */
	settle(req, 1);
}

const sg_step_t sg__step_limits = {
	.name = "limits",
	.request = limits_request,
	.end = limits_end,
	.abort = limits_abort,
};
