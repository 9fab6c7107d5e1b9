/*
 * The spend step: budgets and the spend record.
 *
 * Before forwarding, a call with a budget over it (its key's, its team's)
 * reserves its largest possible cost (an exact cache hit, found before this
 * step, reserves nothing: it costs nothing): the request's bytes as prompt tokens
 * (no tokenizer makes more tokens than bytes) at the dearest input price of
 * the model's deployments, plus its completion bound (max_tokens, else
 * auth.default_completion_tokens) at the dearest output price. It is
 * refused (429) when spent + reserved + that would pass the cap, so any
 * number of concurrent calls can never spend past it, except by what a
 * completion longer than the assumed bound costs (only calls without
 * max_tokens can have one). A model without a price under a budget is
 * refused or admitted (and recorded as unpriced) as budget.unpriced says.
 *
 * When the call ends (or the client leaves) its cost is computed from the
 * call's one usage record (sg__call_billable: hits cost nothing and record
 * what they saved; a cut stream is billed an estimate), the reservation is
 * settled, and one record is queued for the store (authdb.c, written in
 * batches off the loop). Buffered answers carry X-Semgate-Cost; crossing a
 * soft limit adds X-Semgate-Budget-Warning and one log line per period.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fsm.h"
#include "openai_wire.h"
#include "server_int.h"

static const char *const sp_names[SG_SP__LAST] = {
	[SG_SP_NONE] = "none", [SG_SP_OPEN] = "open", [SG_SP_RESERVED] = "reserved"};
static const uint32_t sp_next[SG_SP__LAST] = {
	[SG_SP_NONE] = SG_FSM_TO(SG_SP_OPEN),
	[SG_SP_OPEN] = SG_FSM_TO(SG_SP_NONE) | SG_FSM_TO(SG_SP_RESERVED),
	[SG_SP_RESERVED] = SG_FSM_TO(SG_SP_NONE),
};
static const sg_fsm_t sp_fsm = {"spend", sp_names, sp_next, SG_SP__LAST};

static void sp_set_state(sg_gov_t *g, enum sg_sp_state s)
{
	sg_fsm_move(&sp_fsm, g, g->sp, s);
	g->sp = s;
}

/* USD per million tokens for a call: the deployment that answered, else its model's. */
static void prices(const sg_call_t *c, double *in, double *out, double *cached)
{
	const sg_model_t *m = c->model;
	const sg_deployment_t *d = c->proxy.attempts ? c->proxy.dep : NULL;
	if (c->proxy.attempts && c->proxy.fallback_used && c->proxy.model)
		m = c->proxy.model;
	*in = d && d->input_per_mtok >= 0 ? d->input_per_mtok : m->input_per_mtok;
	*out = d && d->output_per_mtok >= 0 ? d->output_per_mtok : m->output_per_mtok;
	/* a deployment's own input price keeps its group's discount for cached tokens */
	*cached = !(d && d->input_per_mtok >= 0) ? m->cached_input_per_mtok
	          : m->input_per_mtok > 0 ? d->input_per_mtok * m->cached_input_per_mtok / m->input_per_mtok
	                                  : d->input_per_mtok;
}

static double cost_of(const sg_call_t *c, const sg_usage_t *u)
{
	double in, out, cached;
	prices(c, &in, &out, &cached);
	long long fresh = u->prompt - u->cached;
	return ((double)(fresh > 0 ? fresh : 0) * in + (double)u->cached * cached +
	        (double)u->completion * out) / 1e6;
}

/* The most a call can cost: every deployment of every group that may answer
 * counts (any may; sg_model_t's reach_* prices, found at load). */
static double max_cost(const sg_req_t *req)
{
	const sg_call_t *c = req->call;
	return ((double)c->gov.body_bytes * c->model->reach_input_per_mtok +
	        (double)c->gov.est_completion * (double)c->gov.completions *
	                c->model->reach_output_per_mtok) / 1e6;
}

static void add_header(sg_req_t *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_header(sg_req_t *req, const char *fmt, ...)
{
	sg_gov_t *g = &req->call->gov;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(g->hdrs + g->hdrs_len, sizeof(g->hdrs) - g->hdrs_len, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(g->hdrs) - g->hdrs_len)
		g->hdrs_len += (size_t)n;
	req->resp_hdrs = g->hdrs;
	req->resp_hdrs_len = g->hdrs_len;
}

static const char *who(const sg_principal_t *p, char *buf, size_t n)
{
	snprintf(buf, n, "%s%s", p->is_team ? "team " : "key sg-", p->id);
	return buf;
}

static void spend_request(sg_req_t *req)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_call_t *c = req->call;
	sg_gov_t *g = &c->gov;
	sg_principal_t *ps[2] = {c->key, c->team};
	int64_t now = (int64_t)time(NULL);
	int budgets = 0;
	char w[64];

	if (gw->authdb) {
		sp_set_state(g, SG_SP_OPEN); /* from here on the call is recorded, however it ends */
		if (!sg__call_stashed_hit(c)) /* (a forwarded call's record may need the estimate) */
			sg__call_estimate(req);
	}
	g->unpriced = !c->model->priced; /* recorded as such, budget or not */
	if (gw->authdb == NULL || c->key == NULL)
		return sg__call_next(req);
	double est = 0;
	for (int i = 0; i < 2; i++) {
		if (ps[i] == NULL)
			continue;
		sg__authdb_window(gw->authdb, ps[i], now); /* a new period for a soft limit too */
		/* (an exact hit waiting in the cache costs nothing: no reservation, and a
		 * model without a price is no reason to refuse it) */
		budgets += ps[i]->max_usd >= 0 && !sg__call_stashed_hit(c);
	}
	if (budgets)
		est = max_cost(req);
	if (budgets && c->model->reach_unpriced) {
		if (!req->gen->cfg->auth.admit_unpriced) {
			gw->budget_refused++;
			sp_set_state(g, SG_SP_NONE); /* refused here: nothing to settle or record */
			sg__call_end(req, 0);
			return sg__respond_error(req, SG_CE_MODEL_UNPRICED,
			                         "model '%s' (or a fallback of it) has no price, so a "
			                         "budget cannot cover it (set input_per_mtok / "
			                         "output_per_mtok, or budget.unpriced: \"admit\")",
			                         c->model->name);
		}
		/* admitted, and recorded as unpriced: never silently free */
	}
	if (budgets) { /* admitted unpriced groups count at 0: the priced ones still reserve */
		for (int i = 0; i < 2; i++) {
			sg_principal_t *p = ps[i];
			if (p == NULL || p->max_usd < 0)
				continue;
			sg_window_t *win = p->win;
			if (win->spent + win->reserved + est > p->max_usd + 1e-12) {
				gw->budget_refused++;
				sp_set_state(g, SG_SP_NONE);
				int64_t end = sg__authdb_period_end(p, win->start);
				char extra[64] = "";
				if (end != INT64_MAX)
					snprintf(extra, sizeof(extra), "Retry-After: %lld\r\n",
					         (long long)SG_MAX(1, end - now));
				sg__call_end(req, 0);
				return sg__respond_error_h(
					req, SG_CE_BUDGET_EXCEEDED, extra,
					"budget exceeded for %s: $%.6f of $%.6f spent%s, $%.6f reserved by "
					"calls in flight, and this call may cost up to $%.6f%s",
					who(p, w, sizeof(w)), win->spent, p->max_usd,
					p->period == SG_PERIOD_NONE ? "" : " this period", win->reserved, est,
					end == INT64_MAX ? "" : " (the period resets at the time in Retry-After)");
			}
		}
		for (int i = 0; i < 2; i++)
			if (ps[i] && ps[i]->max_usd >= 0) {
				ps[i]->win->reserved += est;
				ps[i]->win->inflight++;
			}
		g->cost_reserved = est;
		sp_set_state(g, SG_SP_RESERVED);
	}
	for (int i = 0; i < 2; i++) {
		sg_principal_t *p = ps[i];
		if (p && p->soft_usd >= 0 && p->win->spent >= p->soft_usd)
			add_header(req, "X-Semgate-Budget-Warning: %s spent $%.6f, past its soft limit "
			                "of $%.6f\r\n",
			           who(p, w, sizeof(w)), p->win->spent, p->soft_usd);
	}
	sg__call_next(req);
}

static const char cost_zero[] = "X-Semgate-Cost: 0.00000000\r\n";

/* X-Semgate-Cost of a call the upstream answered. Out of line: a cache
 * hit's answer needs none of its code. */
static __attribute__((noinline)) void put_cost(sg_req_t *req, sg__fbuf_t *extra)
{
	sg_usage_t u;
	int estimated;
	sg__call_billable(req, 0, &u, &estimated);
	double cost = cost_of(req->call, &u);
	/* USD with 8 decimals, without printf's cost on every answer */
	uint64_t v = cost > 0 && cost < 1e10 ? (uint64_t)llround(cost * 1e8) : 0;
	if (v == 0) {
		sg__fbuf_mem(extra, cost_zero, sizeof(cost_zero) - 1);
		return;
	}
	/* the line made whole, then appended once: the 8 decimals as one word
	 * of digits (sg__ascii8), not a division each */
	static const char name[] = "X-Semgate-Cost: ";
	char line[sizeof(name) - 1 + 20 + 1 + 8 + 2];
	uint64_t whole = v / 100000000;
	uint64_t frac = sg__ascii8((uint32_t)(v - whole * 100000000));
	memcpy(line, name, sizeof(name) - 1);
	char *w = sg__put_u64(line + sizeof(name) - 1, whole);
	*w++ = '.';
	memcpy(w, &frac, 8);
	memcpy(w + 8, "\r\n", 2);
	sg__fbuf_mem(extra, line, (size_t)(w + 10 - line));
}

static int spend_reply(sg_req_t *req, int status, const char *body, size_t len,
                       sg__fbuf_t *extra, sg_buf_t *out)
{
	sg_call_t *c = req->call;
	(void)body, (void)len, (void)out;
	if (sg__req_gateway(req)->authdb == NULL || status >= 300)
		return 0;
	if (c->outcome == SG_CALL_HIT) { /* billed nothing */
		sg__fbuf_mem(extra, cost_zero, sizeof(cost_zero) - 1);
		return 0;
	}
	put_cost(req, extra);
	return 0;
}

/* budget.stop_streams: whether the stream so far (the prompt estimate and
 * one token per content event) takes a budget past its cap; if so the error
 * event goes to out. */
static int crosses_cap(sg_req_t *req, sg_buf_t *out)
{
	sg_call_t *c = req->call;
	sg_usage_t so_far = {c->gov.est_prompt, c->gov.events, 0, 0};
	double cost = cost_of(c, &so_far);
	sg_principal_t *ps[2] = {c->key, c->team};
	char w[64], msg[256];
	for (int i = 0; i < 2; i++) {
		sg_principal_t *p = ps[i];
		if (p == NULL || p->max_usd < 0 || p->win->spent + cost <= p->max_usd)
			continue;
		snprintf(msg, sizeof(msg), "budget exceeded for %s during this stream: $%.6f of $%.6f "
		         "with this answer so far", who(p, w, sizeof(w)), p->win->spent + cost,
		         p->max_usd);
		sg_buf_reset(out);
		return sg__error_body(out, msg, strlen(msg), "insufficient_quota", "budget_exceeded") == 0;
	}
	return 0;
}

static int spend_event(sg_req_t *req, const char *data, size_t n, sg_buf_t *out)
{
	sg_gov_t *g = &req->call->gov;
	/* one content event, about one token: the estimate if no usage comes */
	if (data && n && memmem(data, n, "\"content\"", 9)) {
		g->events++;
		if (g->sp == SG_SP_RESERVED && req->gen->cfg->auth.stop_streams &&
		    crosses_cap(req, out)) {
			sg__req_gateway(req)->budget_refused++;
			return SG_CALL_STOP;
		}
	}
	return 0;
}

static void settle(sg_req_t *req, int aborted)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_call_t *c = req->call;
	sg_gov_t *g = &c->gov;
	sg_principal_t *ps[2] = {c->key, c->team};
	char w[64];

	if (g->sp == SG_SP_NONE)
		return;
	/* the call's end (also its latency's and the limits' settlement time), on the wall clock */
	int64_t wall_us = sg_wall_at_us(sg__call_end_us(req)), now = wall_us / 1000000;
	int reserved = g->sp == SG_SP_RESERVED;
	sp_set_state(g, SG_SP_NONE);
	sg_usage_t u;
	int estimated;
	sg__call_billable(req, aborted, &u, &estimated);
	if (c->proxy.attempts && c->proxy.fallback_used && c->proxy.model)
		g->unpriced = !c->proxy.model->priced; /* the group that answered */
	int hit = c->outcome == SG_CALL_HIT;
	double cost = g->unpriced || hit ? 0 : cost_of(c, &u); /* (a hit is billed nothing) */
	double saved = hit ? cost_of(c, &c->usage) : 0;
	for (int i = 0; i < 2; i++) {
		sg_principal_t *p = ps[i];
		if (p == NULL)
			continue;
		sg_window_t *win = p->win;
		if (reserved && p->max_usd >= 0) {
			/* none left in flight: exactly 0, not what float sums leave */
			win->reserved = --win->inflight <= 0 ? 0.0
			                                     : SG_MAX(0.0, win->reserved - g->cost_reserved);
			if (win->inflight < 0)
				win->inflight = 0;
		}
		sg__authdb_window(gw->authdb, p, now);
		if (cost > 0) {
			win->spent += cost;
			sg__authdb_window_dirty(gw->authdb, win);
		}
		if (p->soft_usd >= 0 && win->spent >= p->soft_usd && !win->soft_noted) {
			win->soft_noted = 1;
			sg_log_warn("budget: %s has spent $%.6f, past its soft limit of $%.6f%s",
			            who(p, w, sizeof(w)), win->spent, p->soft_usd,
			            p->max_usd >= 0 ? "" : " (no hard limit)");
		}
	}
	sg_spend_rec_t r = {
		.t_us = wall_us,
		.request_id = {req->id, strlen(req->id)},
		/* (a key's or team's id is always SG_KEY_ID_LEN: sg__authdb_id_ok) */
		.key = {c->key ? c->key->id : NULL, c->key ? SG_KEY_ID_LEN : 0},
		.team = {c->team ? c->team->id : NULL, c->team ? SG_KEY_ID_LEN : 0},
		.model = {c->model->name, strlen(c->model->name)},
		.prompt = u.prompt,
		.completion = u.completion,
		.cost = cost,
		.saved = saved,
		.latency_ms = (uint32_t)((sg__call_end_us(req) - req->start_us) / 1000),
		.status = (uint16_t)(aborted && !c->status ? 499 : c->status ? c->status : 500),
		.cache = c->outcome != SG_CALL_HIT ? 0 : c->cache.state == SG_RC_HIT_EXACT ? 1 : 2,
		.flags = (uint8_t)((g->unpriced ? SG_SPEND_UNPRICED : 0) |
		                   (estimated ? SG_SPEND_ESTIMATED : 0)),
	};
	if (c->proxy.attempts && c->proxy.dep)
		r.deployment = (sg_iovec_t){c->proxy.dep->id, strlen(c->proxy.dep->id)};
	if (c->outcome == SG_CALL_HIT) {
		r.prompt = c->usage.prompt; /* the tokens it saved */
		r.completion = c->usage.completion;
	}
	if (req->gen->cfg->auth.record_spend)
		sg__authdb_record(gw->authdb, &r);
}

static void spend_end(sg_req_t *req, int ok)
{
	(void)ok;
	settle(req, 0);
}

static void spend_abort(sg_req_t *req)
{
	settle(req, 1);
}

const sg_step_t sg__step_spend = {
	.name = "spend",
	.request = spend_request,
	.reply = spend_reply,
	.event = spend_event,
	.end = spend_end,
	.abort = spend_abort,
};
