"""Budgets and spend (auth.mode "keys"): a call reserves its largest possible
cost before it is forwarded, so concurrent calls never spend past a cap;
X-Semgate-Cost follows the answer's usage and the model's prices (its own or
LiteLLM's price file); cache hits cost nothing and record what they saved;
periods roll over; a soft limit warns; unpriced models are refused or admitted
as budget.unpriced says; /admin/spend groups the spend records; spend, budget
windows and records survive kill -9 (after auth.flush_ms) and SIGTERM; a
stream whose client leaves is still billed.

The mock upstream ignores max_tokens: its usage is prompt_tokens = ceil(len/4)+3
per message and completion_tokens = ceil(len("mock answer to: <prompt>")/4).
"""

import json
import math
import os
import re
import signal
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ADMIN_KEY = "spend-test-admin-key-42"
ENV = {"SG_SPEND_ADMIN": ADMIN_KEY, "SG_SPEND_SECRET": "spend-test-server-secret-0123456789"}
ADMIN = {"Authorization": "Bearer " + ADMIN_KEY}
A = h.MODEL
EPS = 1e-9


# --- helpers ----------------------------------------------------------------------------


def group(name, mock, prices=(1000.0, 1000.0), cached=None, dep_model=h.UPSTREAM_MODEL, **dep):
    """A model group on mock; prices (input, output) per million tokens, or None."""
    d = {"provider": "openai", "base_url": mock.url, "model": dep_model}
    d.update(dep)
    g = {"name": name, "deployments": [d]}
    if prices:
        g["input_per_mtok"], g["output_per_mtok"] = prices
    if cached is not None:
        g["cached_input_per_mtok"] = cached
    return g


def config(models, auth_path=None, flush_ms=60000, cache=False, **top):
    """flush_ms 60000: records stay queued (and count in reports) unless a
    test wants them written."""
    cfg = {"log_level": "warn", "admin_key_env": "SG_SPEND_ADMIN", "models": models,
           "auth": {"mode": "keys", "secret_env": "SG_SPEND_SECRET", "flush_ms": flush_ms,
                    "path": auth_path or h.make_temp_dir("sg-auth-")},
           "cache": ({"enabled": True, "embedder": {"provider": "local"}} if cache
                     else {"enabled": False})}
    cfg.update(top)
    return cfg


def start(cfg):
    return h.Semgate(cfg, env=ENV)


def create(sg, what, **fields):
    r = sg.post_json("/admin/%s" % what, fields, headers=ADMIN)
    h.expect_status(r, 201)
    return r.json()


def new_key(sg, **fields):
    """The new key's view; view["key"] is its whole secret."""
    return create(sg, "keys", **fields)


def spend_of(sg, kid, what="keys"):
    r = sg.request("GET", "/admin/%s/%s" % (what, kid), headers=ADMIN)
    h.expect_status(r, 200)
    return r.json()["spend"]


def chat(sg, key, prompt, model=A, conn=None, **extra):
    hdrs = {"Authorization": "Bearer " + key["key"]}
    body = h.chat_body(prompt, model=model, **extra)
    if conn is not None:
        return conn.request("POST", "/v1/chat/completions", body=body, headers=hdrs)
    return sg.post_json("/v1/chat/completions", body, headers=hdrs)


def cost(r):
    v = r.header("X-Semgate-Cost")
    h.expect(v is not None and re.fullmatch(r"\d+\.\d{8}", v),
             "X-Semgate-Cost %r (want USD with 8 decimals) on %r", v, r)
    return float(v)


def usage_cost(r, pin, pout):
    u = r.json()["usage"]
    return (u["prompt_tokens"] * pin + u["completion_tokens"] * pout) / 1e6


def reservation(prompt, pin, pout, max_tokens, model=A, completions=1, **extra):
    """What semgate reserves for chat(prompt, max_tokens=..., **extra): body
    bytes at the input price plus the completion bound, times the completions
    billed, at the output price."""
    body = json.dumps(h.chat_body(prompt, model=model, max_tokens=max_tokens, **extra)).encode()
    return (len(body) * pin + max_tokens * completions * pout) / 1e6


def report(sg, group_by="key", **q):
    qs = "&".join(["group_by=" + group_by] + ["%s=%s" % kv for kv in q.items()])
    r = sg.request("GET", "/admin/spend?" + qs, headers=ADMIN)
    h.expect_status(r, 200)
    out = r.json()
    h.expect_eq(out["group_by"], group_by, "report group_by")
    return {row[group_by]: row for row in out["data"]}


def records_written(sg):
    st = sg.request("GET", "/stats", headers=ADMIN).json()["auth"]["store"]
    return st["spend_records_written"] if st["spend_records_queued"] == 0 else -1


def expect_budget_429(r):
    return h.expect_error(r, 429, code="budget_exceeded", type_="insufficient_quota")


def expect_close(got, want, what, eps=EPS):
    h.expect(abs(got - want) <= eps, "%s: expected %.12f, got %.12f", what, want, got)


def answer_tokens(prompt):
    """The mock's completion_tokens for prompt."""
    return math.ceil(len("mock answer to: " + prompt) / 4)


def fire(sg, jobs):
    """Run jobs [(key, prompt, extra)] at once, one thread and connection each
    (all connected before any sends); returns [(key, prompt, response)]."""
    out = [None] * len(jobs)
    errors = []
    barrier = threading.Barrier(len(jobs))

    def one(i, key, prompt, extra):
        try:
            with sg.connect(timeout=60) as c:
                barrier.wait(30)
                out[i] = (key, prompt, chat(sg, key, prompt, conn=c, **extra))
        except Exception as e:  # reported below, in the test's thread
            errors.append(repr(e))
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,) + j, daemon=True)
               for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    h.expect(not errors, "%d requests failed: %r", len(errors), errors[:3])
    return out


# --- 1. the budget race -----------------------------------------------------------------

RACE_PROMPT_LEN = 400


def race_prompt(i):
    return ("race %06d " % i).ljust(RACE_PROMPT_LEN, "x")


def drain(sg, keys, first_wave=200, wave=64, max_waves=40):
    """Waves of concurrent calls (keys in turn) until a wave gets no 200: then
    the budget refused a call with nothing in flight. Every answer must be a
    200 or a budget 429. Returns (costs of the 200s per key id, 429 bodies)."""
    mt = answer_tokens(race_prompt(0))
    costs = {k["id"]: [] for k in keys}
    refusals = []
    n = 0
    for w in range(max_waves):
        size = first_wave if w == 0 else wave
        jobs = [(keys[(n + i) % len(keys)], race_prompt(n + i), {"max_tokens": mt})
                for i in range(size)]
        n += size
        oks = 0
        for key, _, r in fire(sg, jobs):
            if r.status == 200:
                costs[key["id"]].append(cost(r))
                oks += 1
            else:
                refusals.append(expect_budget_429(r))
        if oks == 0:
            return costs, refusals
    raise h.TestFailure("the budget never ran out in %d waves" % max_waves)


def test_concurrent_calls_never_spend_past_the_key_budget():
    """200 calls at once (then waves of 64) against a key budget worth ~100
    calls: every answer is a 200 or a 429 budget_exceeded, the spend never
    passes max_usd, nothing stays reserved, the spend is the sum of the
    X-Semgate-Cost headers, and once what is left cannot cover a call's
    reservation every call is refused."""
    mock = h.Mock("--quiet", "--latency-ms", "100")
    sg = start(config([group(A, mock)]))
    probe = new_key(sg, name="probe")
    r = chat(sg, probe, race_prompt(0), max_tokens=answer_tokens(race_prompt(0)))
    one_call = cost(r)
    expect_close(one_call, usage_cost(r, 1000, 1000), "probe cost")
    cap = round(100 * one_call, 6)
    key = new_key(sg, name="racer", budget={"max_usd": cap})

    costs, refusals = drain(sg, [key])
    paid = costs[key["id"]]
    h.expect(paid, "no call passed")
    h.expect(refusals, "no call was refused")
    h.expect(all(c == one_call for c in paid), "calls of one size cost differently: %r",
             sorted(set(paid)))
    sp = spend_of(sg, key["id"])
    h.expect(sp["spent_usd"] <= cap + EPS, "spent %.9f past the cap %.9f (%d calls passed)",
             sp["spent_usd"], cap, len(paid))
    expect_close(sp["reserved_usd"], 0.0, "reserved_usd after every call ended")
    expect_close(sp["spent_usd"], sum(paid), "spent_usd vs the sum of X-Semgate-Cost")
    res = reservation(race_prompt(0), 1000, 1000, answer_tokens(race_prompt(0)))
    h.expect(cap - sp["spent_usd"] < res + EPS,
             "refused although $%.6f is left and a call reserves $%.6f", cap - sp["spent_usd"], res)
    for i in range(3):  # and it stays refused
        r = chat(sg, key, race_prompt(10000 + i), max_tokens=answer_tokens(race_prompt(0)))
        err = expect_budget_429(r)
        h.expect(key["id"] in err["message"], "refusal does not name the key: %r", err)
        h.expect(key["key"] not in r.text(), "the refusal shows the secret")
        h.expect(r.header("Retry-After") is None, "Retry-After on a budget without a period")
    expect_close(spend_of(sg, key["id"])["spent_usd"], sp["spent_usd"], "spent after refusals")


def test_team_budget_shared_by_two_keys():
    """Two keys without budgets of their own in a team with one: concurrent
    calls through both never spend past the team's cap; the team's spend is
    the sum of its keys' and of their X-Semgate-Cost headers."""
    mock = h.Mock("--quiet", "--latency-ms", "100")
    sg = start(config([group(A, mock)]))
    one_call = usage_cost(chat(sg, new_key(sg), race_prompt(0)), 1000, 1000)
    cap = round(40 * one_call, 6)
    team = create(sg, "teams", name="t", budget={"max_usd": cap})
    k1, k2 = new_key(sg, name="k1", team=team["id"]), new_key(sg, name="k2", team=team["id"])

    costs, refusals = drain(sg, [k1, k2], first_wave=100)
    h.expect(costs[k1["id"]] or costs[k2["id"]], "no call passed")
    h.expect(all(team["id"] in e["message"] for e in refusals),
             "a refusal does not name the team: %r", refusals[:2])
    s1, s2, st = spend_of(sg, k1["id"]), spend_of(sg, k2["id"]), spend_of(sg, team["id"], "teams")
    total = s1["spent_usd"] + s2["spent_usd"]
    h.expect(total <= cap + EPS, "the keys spent %.9f, past the team cap %.9f", total, cap)
    expect_close(st["spent_usd"], total, "team spent vs its keys' spend")
    expect_close(st["reserved_usd"], 0.0, "team reserved_usd")
    expect_close(s1["spent_usd"], sum(costs[k1["id"]]), "k1 spent vs its X-Semgate-Cost")
    expect_close(s2["spent_usd"], sum(costs[k2["id"]]), "k2 spent vs its X-Semgate-Cost")
    expect_budget_429(chat(sg, k2, race_prompt(9999)))


# --- 2. cost arithmetic -----------------------------------------------------------------


def test_cost_header_follows_usage_and_prices():
    """X-Semgate-Cost = (prompt_tokens*in + completion_tokens*out)/1e6 from the
    answer's usage; a deployment's own prices win over its group's; a cache
    hit costs 0 and the report counts it in cache_hits with saved_usd = the
    miss's cost. (cached_input_per_mtok is not checked: the mock never sends
    usage.prompt_tokens_details.cached_tokens.)"""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock, prices=(1500.0, 2500.0), cached=100.0),
                       group("dep-priced", mock, input_per_mtok=3000.0, output_per_mtok=5000.0)],
                      cache=True))
    key = new_key(sg, budget={"max_usd": 100.0})
    for p in ("short", "a somewhat longer prompt " * 7):
        r = chat(sg, key, p)
        h.expect_answer(r, p)
        expect_close(cost(r), usage_cost(r, 1500, 2500), "cost of %r" % p[:20], 5e-9)
        u = r.json()["usage"]
        h.expect_eq(u["completion_tokens"], answer_tokens(p), "mock completion_tokens")
    miss = chat(sg, key, "priced by its deployment", model="dep-priced")
    expect_close(cost(miss), usage_cost(miss, 3000, 5000), "deployment-priced cost", 5e-9)

    other = new_key(sg, name="cache-check")
    miss = chat(sg, other, "what is a budget")
    h.expect_eq(miss.header("X-Semgate-Cache"), "miss", "first call's cache state")
    hit = chat(sg, other, "what is a budget")
    h.expect_eq(hit.header("X-Semgate-Cache"), "hit-exact", "repeat's cache state")
    h.expect_eq(hit.header("X-Semgate-Cost"), "0.00000000", "X-Semgate-Cost of a hit")
    row = report(sg)[other["id"]]
    h.expect_eq((row["requests"], row["cache_hits"]), (2, 1), "requests, cache_hits")
    expect_close(row["cost_usd"], cost(miss), "cost_usd with a hit")
    expect_close(row["saved_usd"], cost(miss), "saved_usd of the hit")
    expect_close(spend_of(sg, other["id"])["spent_usd"], cost(miss), "spent_usd with a hit")


def test_reservation_counts_every_completion_billed():
    """n, or best_of when larger, multiplies the completion bound a call
    reserves, and so do a completions request's prompts (not the ids of a
    tokenized one): a cap that covers
    one completion refuses three, naming the reservation; one still passes."""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock)]))
    mt = 1000
    key = new_key(sg, budget={"max_usd": round(2 * reservation("n", 1000, 1000, mt), 6)})
    for extra, k in (({"n": 3}, 3), ({"n": 2, "best_of": 3}, 3), ({"n": 3, "best_of": 2}, 3)):
        err = expect_budget_429(chat(sg, key, "n", max_tokens=mt, **extra))
        want = "may cost up to $%.6f" % reservation("n", 1000, 1000, mt, completions=k, **extra)
        h.expect(want in err["message"], "%r: %r not in %r", extra, want, err["message"])
    body = {"model": A, "prompt": ["a", "b", "c"], "max_tokens": mt}
    r = sg.post_json("/v1/completions", body, headers={"Authorization": "Bearer " + key["key"]})
    err = expect_budget_429(r)
    want = (len(json.dumps(body).encode()) * 1000 + mt * 3 * 1000) / 1e6
    h.expect("may cost up to $%.6f" % want in err["message"], "prompts: %r", err["message"])
    # an array of token ids is one prompt, not five
    body = {"model": A, "prompt": [101, 2023, 2003, 1037, 102], "max_tokens": mt}
    r = sg.post_json("/v1/completions", body, headers={"Authorization": "Bearer " + key["key"]})
    h.expect(r.status != 429, "a tokenized prompt reserved as 5 prompts: %r", r.text())
    h.expect_status(chat(sg, key, "n", max_tokens=mt, n=1), 200)


# --- 3, 4. periods and soft limits ------------------------------------------------------


def test_short_period_rolls_over():
    """budget {max_usd, period "3s"}: calls until a 429 budget_exceeded whose
    Retry-After is at most 3; a later call passes in the next period, and the
    key's spend starts again from 0 in a later, epoch-aligned window."""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock)]))
    mt = answer_tokens("period call 0000")
    cap = round(2 * reservation("period call 0000", 1000, 1000, mt), 6)
    key = new_key(sg, budget={"max_usd": cap, "period": "3s"})
    n = 0
    for _ in range(3):  # again if the period ends between the refusal and the look
        for n in range(n, n + 60):
            r = chat(sg, key, "period call %04d" % n, max_tokens=mt)
            if r.status != 200:
                break
        expect_budget_429(r)
        ra = r.header("Retry-After")
        h.expect(ra is not None and 1 <= int(ra) <= 3, "Retry-After %r, want 1..3", ra)
        before = spend_of(sg, key["id"])
        if before["spent_usd"] > 0:
            break
    h.expect_eq(before["period_end"] - before["period_start"], 3, "period length")
    h.expect_eq(before["period_start"] % 3, 0, "period_start epoch-aligned")
    h.expect(before["spent_usd"] > 0, "nothing spent before the refusal: %r", before)

    passed = []

    def passes():
        r = chat(sg, key, "period call %04d" % (1000 + len(passed)), max_tokens=mt)
        if r.status == 200:
            passed.append(cost(r))
            return True
        expect_budget_429(r)
        return False

    h.wait_for(passes, timeout=8, interval=0.2, what="a call passing in the next period")
    after = spend_of(sg, key["id"])
    h.expect(after["period_start"] >= before["period_start"] + 3,
             "period did not advance: %r -> %r", before, after)
    if after["period_start"] == before["period_start"] + 3 or after["spent_usd"]:
        expect_close(after["spent_usd"], passed[0], "spent in the new period")
    expect_close(after["reserved_usd"], 0.0, "reserved_usd")


def test_soft_limit_warns():
    """Once a key's spend reaches soft_usd, its answers carry
    X-Semgate-Budget-Warning and the log has exactly one "soft limit" line for
    it; a key under its soft limit gets no warning."""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock)]))
    one = usage_cost(chat(sg, new_key(sg), "soft call 00"), 1000, 1000)
    soft = round(2.5 * one, 6)
    key = new_key(sg, budget={"max_usd": 100.0, "soft_usd": soft})
    quiet = new_key(sg, budget={"max_usd": 100.0, "soft_usd": 50.0})
    spent = 0.0
    for i in range(6):
        r = chat(sg, key, "soft call %02d" % i)
        h.expect_status(r, 200)
        warn = r.header("X-Semgate-Budget-Warning")
        if spent >= soft:
            h.expect(warn and key["id"] in warn, "no warning naming the key at $%.4f spent of a "
                     "$%.4f soft limit: %r", spent, soft, warn)
            h.expect(key["key"] not in warn, "the warning shows the secret")
        else:
            h.expect(warn is None, "warning at $%.4f spent, under the soft limit: %r", spent, warn)
        spent += cost(r)
        r = chat(sg, quiet, "quiet call %02d" % i)
        h.expect(r.header("X-Semgate-Budget-Warning") is None, "warning for a key under its limit")
    h.expect(spent >= soft + 2 * one, "the test never went past the soft limit")
    lines = [ln for ln in sg.log().splitlines() if "soft limit" in ln and key["id"] in ln]
    h.expect_eq(len(lines), 1, "soft-limit log lines for the key (%r)" % lines)
    h.expect(quiet["id"] not in sg.log(), "a log line about the key under its soft limit")


def test_soft_only_budget_starts_each_period_clean():
    """A budget with only soft_usd and a period: in a new period (spend 0) the
    first answer carries no X-Semgate-Budget-Warning."""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock)]))
    key = new_key(sg, budget={"soft_usd": 0.001, "period": "2s"})
    t = time.time()
    time.sleep(math.ceil(t / 2) * 2 - t + 0.05)  # the start of a period
    for i in range(2):
        h.expect_status(chat(sg, key, "soft only %d" % i), 200)
    h.expect(chat(sg, key, "soft only 2").header("X-Semgate-Budget-Warning"),
             "no warning past the soft limit")
    t = time.time()
    time.sleep(math.ceil(t / 2) * 2 - t + 0.2)  # the next period
    r = chat(sg, key, "soft only 3")
    h.expect(r.header("X-Semgate-Budget-Warning") is None,
             "warning on the first call of a new period (spend 0): %r",
             r.header("X-Semgate-Budget-Warning"))


# --- 5, 6. unpriced models and LiteLLM's price file -------------------------------------


def test_unpriced_model_under_a_budget():
    """A model without prices: a key with a budget gets 403 model_unpriced
    when budget.unpriced is "refuse"; with "admit" it passes and the report
    counts it in unpriced_requests; a key without a budget passes either way."""
    mock = h.Mock("--quiet")
    for mode in ("refuse", "admit"):
        sg = start(config([group(A, mock), group("free", mock, prices=None)],
                          budget={"unpriced": mode}))
        budgeted = new_key(sg, budget={"max_usd": 10.0})
        unbudgeted = new_key(sg)
        h.expect_answer(chat(sg, unbudgeted, "free for all", model="free"), "free for all")
        h.expect_answer(chat(sg, budgeted, "priced one"), "priced one")
        r = chat(sg, budgeted, "free for me", model="free")
        if mode == "refuse":
            h.expect_error(r, 403, code="model_unpriced", message_contains="free")
            continue
        h.expect_answer(r, "free for me")
        row = report(sg)[budgeted["id"]]
        h.expect_eq((row["requests"], row["unpriced_requests"]), (2, 1),
                    "requests, unpriced_requests (admit)")
        h.expect_eq(report(sg, "model")["free"]["requests"], 2, "requests to the unpriced model")
        sg.stop()


def litellm_file(entries):
    doc = {"sample_spec": {
        "max_tokens": "LEGACY parameter. set to max_output_tokens if provider specifies it.",
        "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion, image_generation, audio_transcription",
        "supports_function_calling": True, "supported_regions": ["global", "us-west-2"]}}
    for name, (pin, pout, cached) in entries.items():
        doc[name] = {"max_tokens": 4096, "max_input_tokens": 128000, "max_output_tokens": 4096,
                     "input_cost_per_token": pin, "output_cost_per_token": pout,
                     "cache_read_input_token_cost": cached, "litellm_provider": "openai",
                     "mode": "chat", "supports_function_calling": True}
    path = os.path.join(h.make_temp_dir("sg-prices-"), "model_prices_and_context_window.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=4)
    return path


def test_litellm_price_file():
    """A group without prices takes LiteLLM's entry for its deployment's model
    (or "<provider>/<model>"); a group with prices of its own keeps them."""
    mock = h.Mock("--quiet")
    path = litellm_file({"mock-model": (2e-6, 8e-6, 1e-6),
                         "openai/other-mock": (3e-6, 1.2e-5, 1.5e-6)})
    sg = start(config([group(A, mock, prices=None),
                       group("by-provider", mock, prices=None, dep_model="other-mock"),
                       group("own-prices", mock, prices=(7.0, 9.0))],
                      prices_file=path))
    key = new_key(sg, budget={"max_usd": 10.0})
    for model, pin, pout in ((A, 2.0, 8.0), ("by-provider", 3.0, 12.0), ("own-prices", 7.0, 9.0)):
        p = "priced by the file for " + model + " please " * 20
        r = chat(sg, key, p, model=model)
        h.expect_answer(r, p)
        expect_close(cost(r), usage_cost(r, pin, pout), "cost of %s" % model, 5e-9)
        h.expect(cost(r) > 0, "a zero cost for %s" % model)


def test_price_file_not_json_is_refused():
    """A prices_file that is not JSON (or not an object) stops semgate at
    start-up with an error naming prices_file."""
    mock = h.Mock("--quiet")
    d = h.make_temp_dir("sg-prices-")
    for text in ('{"mock-model": {"input_cost_per_token": 1e-6,', '[1, 2]'):
        path = os.path.join(d, "prices.json")
        with open(path, "w") as f:
            f.write(text)
        sg = h.Semgate(config([group(A, mock, prices=None)], prices_file=path), env=ENV,
                       wait=False)
        rc = sg.wait_exit(15)
        h.expect(rc != 0, "semgate started with prices_file %r (rc %r)", text, rc)
        h.expect("prices_file" in sg.log(), "the error does not name prices_file:\n%s", sg.log())


# --- 7. spend records and reports -------------------------------------------------------


def rfc3339(t, offset_h=0):
    tz = "Z" if offset_h == 0 else "%+03d:00" % offset_h
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + offset_h * 3600)) + tz


def test_spend_report_groups_and_filters():
    """Keys in two teams (and one in none), two models, some cache hits: GET
    /admin/spend by key, team, model and day matches what the answers said;
    from/to (Unix seconds or RFC 3339) and key=/team=/model= filter records;
    bad parameters are a 400; keys appear by their public id only."""
    mock = h.Mock("--quiet")
    prices = {A: (1000.0, 1000.0), "model-b": (2000.0, 3000.0)}
    sg = start(config([group(A, mock, prices[A]), group("model-b", mock, prices["model-b"])],
                      cache=True, flush_ms=100))
    t1, t2 = create(sg, "teams", name="t1"), create(sg, "teams", name="t2")
    k1, k2 = new_key(sg, team=t1["id"]), new_key(sg, team=t1["id"])
    k3, k4 = new_key(sg, team=t2["id"]), new_key(sg)
    first = [(k1, A, "alpha apple"), (k1, A, "alpha apple"), (k1, "model-b", "bravo banana"),
             (k2, A, "charlie cherry"), (k2, "model-b", "delta date")]
    second = [(k2, "model-b", "delta date"), (k3, A, "echo elder"), (k4, "model-b", "foxtrot fig"),
              (k4, "model-b", "foxtrot fig"), (k3, "model-b", "golf grape")]
    t0 = int(time.time())
    rows = []
    for phase, calls in enumerate((first, second)):
        if phase == 1:  # a second boundary between the two halves
            mid = int(time.time() + 0.3) + 1
            time.sleep(mid - time.time() + 0.2)
        for key, model, prompt in calls:
            r = chat(sg, key, prompt, model=model)
            h.expect_answer(r, prompt)
            u = r.json()["usage"]
            hit = r.header("X-Semgate-Cache", "").startswith("hit")
            rows.append({"phase": phase, "key": key["id"], "team": key.get("team", ""),
                         "model": model, "p": u["prompt_tokens"], "c": u["completion_tokens"],
                         "cost": cost(r), "hit": hit,
                         "saved": usage_cost(r, *prices[model]) if hit else 0.0})
    h.expect(sum(r["hit"] for r in rows) >= 3, "fewer than 3 cache hits: %r", rows)
    # read from the disk (test_spend_report_counts_records_being_written covers the way there)
    h.wait_for(lambda: records_written(sg) == len(rows), what="the records written")

    def expect_groups(got, by, sel=lambda r: True, names=None):
        want = {}
        for r in filter(sel, rows):
            g = want.setdefault(r[by], dict(requests=0, p=0, c=0, cost=0.0, hit=0, saved=0.0))
            for f in g:
                g[f] += 1 if f == "requests" else r[f]
        for name in names if names is not None else want:
            h.expect(name in got, "no %s row %r in %r" % (by, name, sorted(got)))
            row, w = got[name], want[name]
            what = "%s %s: " % (by, name)
            h.expect_eq((row["requests"], row["prompt_tokens"], row["completion_tokens"],
                         row["total_tokens"], row["cache_hits"], row["unpriced_requests"]),
                        (w["requests"], w["p"], w["c"], w["p"] + w["c"], w["hit"], 0),
                        what + "requests, prompt/completion/total tokens, hits, unpriced")
            expect_close(row["cost_usd"], w["cost"], what + "cost_usd", 1e-8)
            expect_close(row["saved_usd"], w["saved"], what + "saved_usd", 1e-8)
        if names is None:
            h.expect_eq(sorted(got), sorted(want), "%s rows" % by)

    expect_groups(report(sg, "key"), "key")
    expect_groups(report(sg, "team"), "team", names=[t1["id"], t2["id"]])
    h.expect_eq(sum(r["requests"] for r in report(sg, "team").values()), len(rows),
                "requests over all team rows")
    expect_groups(report(sg, "model"), "model")
    days = report(sg, "day")
    h.expect(all(re.fullmatch(r"\d{4}-\d\d-\d\d", d) for d in days), "day names %r", list(days))
    h.expect_eq(sum(d["requests"] for d in days.values()), len(rows), "requests over all days")
    expect_close(sum(d["cost_usd"] for d in days.values()), sum(r["cost"] for r in rows),
                 "cost over all days", 1e-8)

    late = lambda r: r["phase"] == 1  # noqa: E731
    early = lambda r: r["phase"] == 0  # noqa: E731
    expect_groups(report(sg, "key", **{"from": mid}), "key", late)
    expect_groups(report(sg, "key", to=mid), "key", early)
    expect_groups(report(sg, "model", **{"from": rfc3339(mid)}), "model", late)
    enc = urllib.parse.quote(rfc3339(mid, 2), safe="")  # the same instant at +02:00
    h.expect("%2B02%3A00" in enc, "encoded %r" % enc)
    expect_groups(report(sg, "key", **{"from": enc}), "key", late)
    expect_groups(report(sg, "key", **{"from": t0 - 1, "to": rfc3339(mid)}), "key", early)
    future = int(time.time()) + 3600
    h.expect_eq(report(sg, "key", **{"from": future, "to": future + 60}), {}, "a future from")
    h.expect_eq(report(sg, "key", **{"from": urllib.parse.quote(rfc3339(future + 3600, 1)),
                                     "to": future + 7200}), {}, "a future from at +01:00")
    h.expect_eq(report(sg, "key", to=t0 - 1), {}, "to before every record")

    # key=, team=, model=: only those records, in any grouping, together too
    of = lambda f, v: lambda r: r[f] == v  # noqa: E731
    expect_groups(report(sg, "model", key=k1["id"]), "model", of("key", k1["id"]))
    expect_groups(report(sg, "key", team=t1["id"]), "key", of("team", t1["id"]))
    expect_groups(report(sg, "team", model="model-b"), "team", of("model", "model-b"),
                  names=[t1["id"], t2["id"]])
    expect_groups(report(sg, "model", key=k2["id"], model="model-b"), "model",
                  lambda r: r["key"] == k2["id"] and r["model"] == "model-b")
    expect_groups(report(sg, "key", team=t2["id"], **{"from": mid}), "key",
                  lambda r: r["team"] == t2["id"] and r["phase"] == 1)
    r = sg.request("GET", "/admin/spend?group_by=day&key=%s&team=%s" % (k1["id"], t2["id"]),
                   headers=ADMIN)
    h.expect_status(r, 200)
    h.expect_eq((r.json()["key"], r.json()["team"], r.json()["data"]), (k1["id"], t2["id"], []),
                "a key outside the team filtered on: its filters echoed, no rows")
    h.expect_eq(report(sg, "key", key="zzzzzzzzzzzz"), {}, "an unknown key")

    for q in ("group_by=user", "group_by=key&from=yesterday", "from=2026-13-01T00:00:00Z",
              "group_by=key&to=12abc", "group_by=key&from=100&to=50",
              "key=sg-" + k1["id"], "key=" + k1["id"].upper(), "team=short",
              "key=" + k1["id"] + "x", "model=%FF%FE", "model=" + "m" * 300):
        h.expect_error(sg.request("GET", "/admin/spend?" + q, headers=ADMIN), 400)
    h.expect_error(sg.request("GET", "/admin/spend?group_by=key"), 401)

    text = sg.request("GET", "/admin/spend?group_by=key", headers=ADMIN).text()
    for k in (k1, k2, k3, k4):
        secret = k["key"].rsplit("-", 1)[1]
        h.expect(secret not in text and secret not in sg.log(), "a secret in the report or log")
        h.expect(len(k["id"]) == 12 and k["id"] in report(sg), "key %s not in the report" % k["id"])


def test_spend_report_from_in_the_future_is_empty():
    """A `from` in the future without a `to` is an empty report, not a 400
    (the client sent no `to` that could be before it)."""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock)]))
    h.expect_status(chat(sg, new_key(sg), "now"), 200)
    h.expect_eq(report(sg, "key", **{"from": int(time.time()) + 3600}), {}, "a future from")


def test_spend_report_counts_a_call_from_a_seconds_first_tick():
    """A report without `to` counts every call that ended before it, also one
    ended in the first milliseconds of a second (time()'s coarse clock still
    says the second before then: it cannot be what ends the default range)."""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock)]))
    key = new_key(sg)
    with sg.connect() as c:
        for i in range(5):
            while time.time() % 1.0 > 0.0005:  # spin to just past a second's start
                time.sleep(0.0002 if time.time() % 1.0 < 0.99 else 0)
            h.expect_status(chat(sg, key, "tick %d" % i, conn=c), 200)
            r = c.request("GET", "/admin/spend?group_by=key", headers=ADMIN)
            h.expect_status(r, 200)
            rows = {row["key"]: row for row in r.json()["data"]}
            h.expect_eq(rows.get(key["id"], {}).get("requests"), i + 1,
                        "requests in a report made right after call %d" % i)


def test_spend_report_counts_records_being_written():
    """The report counts every ended call, also while its record is on its way
    to the disk: with auth.flush_ms 1, a report's request count never goes
    down while calls keep ending."""
    mock = h.Mock("--quiet")
    sg = start(config([group(A, mock)], flush_ms=1))
    key = new_key(sg)
    stop = threading.Event()
    errors = []

    def caller():
        try:
            with sg.connect() as c:
                while not stop.is_set():
                    h.expect_status(chat(sg, key, "busy", conn=c), 200)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    drops = []
    last = 0
    try:
        with sg.connect() as c:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and len(drops) < 3:
                r = c.request("GET", "/admin/spend?group_by=key", headers=ADMIN)
                data = r.json()["data"]
                n = data[0]["requests"] if data else 0
                if n < last:
                    drops.append((last, n))
                last = max(last, n)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    h.expect(not errors, "calls failed: %r", errors[:3])
    h.expect(not drops, "the report's request count went down: %r", drops)


# --- 8. persistence ---------------------------------------------------------------------


def threads(sg):
    return len(os.listdir("/proc/%d/task" % sg.proc.pid))


def test_spend_writer_thread_lives_only_for_its_batch():
    """Each batch of records is written on a thread started for it and joined
    after, not on libuv's pool: with the cache off (and OpenBLAS kept to one
    thread), the server is back to its loop's one thread once the records
    are in."""
    mock = h.Mock("--quiet")
    sg = h.Semgate(config([group(A, mock)], flush_ms=50), env=dict(ENV, OPENBLAS_NUM_THREADS="1"))
    # (the first tick writes a batch too: retention's; its thread may be alive)
    h.wait_for(lambda: threads(sg) == 1, what="one thread between batches at start")
    key = new_key(sg)
    for i in range(3):
        h.expect_status(chat(sg, key, h.unique("writer %d" % i)), 200)
        h.wait_for(lambda: records_written(sg) == i + 1, what="record %d written" % (i + 1))
        h.wait_for(lambda: threads(sg) == 1, what="the writer's thread gone after batch %d" % i)


def spend_state(sg, keys):
    return ({k["id"]: spend_of(sg, k["id"]) for k in keys},
            {k: (r["requests"], r["prompt_tokens"], r["completion_tokens"], r["cost_usd"])
             for k, r in report(sg).items()})


def expect_same_state(before, after):
    for kid, sp in before[0].items():
        expect_close(after[0][kid]["spent_usd"], sp["spent_usd"], "spent_usd of %s" % kid)
        h.expect_eq(after[0][kid].get("period_start"), sp.get("period_start"), "period_start")
    h.expect_eq(sorted(after[1]), sorted(before[1]), "report keys after the restart")
    for kid, row in before[1].items():
        h.expect_eq(after[1][kid][:3], row[:3], "report requests/tokens of %s" % kid)
        expect_close(after[1][kid][3], row[3], "report cost of %s" % kid)


def spend_some(sg):
    """An exhausted key, a key with an hourly window and one without a budget."""
    mt = answer_tokens("persist 000")
    cap = round(1.5 * reservation("persist 000", 1000, 1000, mt), 6)
    keys = [new_key(sg, budget={"max_usd": cap}), new_key(sg, budget={"max_usd": 100.0,
                                                                    "period": "3600s"}),
            new_key(sg)]
    for i in range(10):
        r = chat(sg, keys[0], "persist %03d" % i, max_tokens=mt)
        if r.status != 200:
            break
    expect_budget_429(r)
    sp = spend_of(sg, keys[0]["id"])
    h.expect(sp["reserved_usd"] < EPS and cap - sp["spent_usd"] < cap / 1.5,
             "refused with what is left covering a call: %r", sp)
    for k in keys[1:]:
        for i in range(3):
            h.expect_status(chat(sg, k, "persist more %d" % i), 200)
    return keys


def test_spend_survives_kill_9():
    """After flush_ms, a kill -9 loses nothing: the restarted semgate (same
    auth.path) shows the same spent_usd and windows, still refuses the
    exhausted key, and reports the same totals."""
    mock = h.Mock("--quiet")
    cfg = config([group(A, mock)], flush_ms=100)
    sg = start(cfg)
    keys = spend_some(sg)
    time.sleep(1.0)
    before = spend_state(sg, keys)
    sg.stop()
    sg = start(cfg)
    expect_same_state(before, spend_state(sg, keys))
    expect_budget_429(chat(sg, keys[0], "persist 999", max_tokens=answer_tokens("persist 000")))
    h.expect_status(chat(sg, keys[2], "still works"), 200)


def test_spend_written_on_sigterm():
    """flush_ms 60000 (nothing written on the way): a SIGTERM stop writes the
    spend, the windows and the records before exiting."""
    mock = h.Mock("--quiet")
    cfg = config([group(A, mock)], flush_ms=60000)
    sg = start(cfg)
    keys = spend_some(sg)
    before = spend_state(sg, keys)
    sg.signal(signal.SIGTERM)
    h.expect_eq(sg.wait_exit(30), 0, "exit status after SIGTERM")
    sg = start(cfg)
    expect_same_state(before, spend_state(sg, keys))
    expect_budget_429(chat(sg, keys[0], "persist 999", max_tokens=answer_tokens("persist 000")))


# --- 9. a stream whose client leaves ----------------------------------------------------


def test_stream_cut_by_the_client_is_billed():
    """A client reads a few events of a slow stream and leaves: the call is
    billed (an estimate, less than its reservation), recorded, and its
    reservation released."""
    mock = h.Mock("--quiet", "--stream-chunks", "50", "--stream-interval-ms", "50")
    sg = start(config([group(A, mock)]))
    key = new_key(sg, budget={"max_usd": 100.0})
    body = h.chat_body("tell me a long story", stream=True)
    reserved = (len(json.dumps(body).encode()) * 1000 + 1024 * 1000) / 1e6
    c = sg.connect()
    c.send(h.build_request("POST", "/v1/chat/completions", body=body,
                           headers={"Authorization": "Bearer " + key["key"]}))
    r = c.read_head()
    h.expect_status(r, 200)
    for _ in range(3):
        h.expect(c.read_chunk(r) is not None, "stream ended early")
    expect_close(spend_of(sg, key["id"])["reserved_usd"], reserved, "reserved during the stream")
    c.close()
    h.wait_for(lambda: spend_of(sg, key["id"])["spent_usd"] > 0, timeout=10,
               what="the cut stream billed")
    row = h.wait_for(lambda: report(sg).get(key["id"]), timeout=5, what="its spend record")
    h.expect_eq(row["requests"], 1, "requests")
    h.expect(0 < row["cost_usd"] < reserved, "cost %r, want in (0, %r)", row["cost_usd"], reserved)
    sp = spend_of(sg, key["id"])
    expect_close(sp["spent_usd"], row["cost_usd"], "spent_usd vs the record")
    expect_close(sp["reserved_usd"], 0.0, "reserved_usd after the stream")
    sg.assert_alive()


def test_fallback_to_a_dearer_group_stays_under_the_cap():
    """A cheap group whose upstream fails falls back to a dear one: the
    reservation prices the dear group (any group a call may reach), so 40
    concurrent calls never spend past the cap; a fallback to an unpriced group
    under a budget is refused (budget.unpriced "refuse")."""
    bad = h.Mock("--quiet", "--fail-status", "500")
    good = h.Mock("--quiet")
    cheap = group("cheap", bad, prices=(1.0, 1.0))
    cheap["fallbacks"] = ["dear"]
    cheap["max_attempts"] = 2
    cheap["backoff_ms"] = 0
    sg = start(config([cheap, group("dear", good, prices=(1000.0, 1000.0)),
                       group("free-fallback", bad, prices=None),
                       dict(group("to-free", bad, prices=(1.0, 1.0)),
                            fallbacks=["free-fallback"])], budget={"unpriced": "refuse"}))
    one = reservation("x" * 20, 1000.0, 1000.0, 16, model="cheap")
    key = new_key(sg, budget={"max_usd": one * 3.5})
    rs = [r for _, _, r in fire(sg, [(key, "x" * 20, {"model": "cheap", "max_tokens": 16})
                                     for _ in range(40)])]
    ok = [r for r in rs if r.status == 200]
    h.expect(ok, "no call passed: %r", [r.status for r in rs])
    for r in rs:
        if r.status != 200:
            expect_budget_429(r)
    sp = spend_of(sg, key["id"])
    h.expect(sp["spent_usd"] <= one * 3.5 + EPS, "spent %r past the cap %r", sp["spent_usd"],
             one * 3.5)
    expect_close(sp["spent_usd"], sum(cost(r) for r in ok), "spent vs the answers' costs")
    r = chat(sg, key, "y", model="to-free", max_tokens=4)
    h.expect_error(r, 403, code="model_unpriced")


def test_reload_reprices_what_a_fallback_may_cost():
    """The dearest price a call may reach through its fallbacks (found once
    per configuration) follows a reload: the same call fits the budget while
    its fallback is cheap, and is refused, at the new fallback price in the
    message, once the reloaded configuration makes the fallback dear."""
    mock = h.Mock("--quiet")
    cheap = dict(group("cheap", mock, prices=(1.0, 1.0)), fallbacks=["dear"])
    cfg = config([cheap, group("dear", mock, prices=(2.0, 2.0))])
    sg = start(cfg)
    at_dear = reservation("x" * 20, 1000.0, 1000.0, 16, model="cheap")
    key = new_key(sg, budget={"max_usd": at_dear / 2})
    h.expect_status(chat(sg, key, "x" * 20, model="cheap", max_tokens=16), 200)
    cfg["models"][1] = group("dear", mock, prices=(1000.0, 1000.0))
    with open(sg.config_path, "w") as f:
        json.dump(cfg, f)
    r = sg.request("POST", "/admin/reload", headers=ADMIN)
    h.expect_status(r, 200)
    h.expect_eq(r.json()["reloaded"], True, "reloaded")
    err = expect_budget_429(chat(sg, key, "x" * 20, model="cheap", max_tokens=16))
    h.expect("may cost up to $%.6f" % at_dear in err["message"],
             "message %r does not price the call at the dear fallback ($%.6f)",
             err["message"], at_dear)


def test_stop_streams_ends_a_stream_past_the_cap():
    """budget.stop_streams: a stream without max_tokens (default bound 1 token)
    passes its reservation, then crosses the cap while it streams: it ends
    with an SSE error event budget_exceeded and no [DONE], the call is billed
    at about the cap (within one event's price), and the next call is refused.
    Without stop_streams the same stream runs to its [DONE]."""
    mock = h.Mock("--quiet", "--stream-chunks", "200", "--stream-interval-ms", "1")
    for stop in (True, False):
        cfg = config([group(A, mock)], budget={"stop_streams": stop})
        cfg["auth"]["default_completion_tokens"] = 1
        sg = start(cfg)
        body = h.chat_body("count to two hundred", stream=True)
        cap = (len(json.dumps(body).encode()) + 60) * 1000 / 1e6  # the reservation + 59 tokens
        key = new_key(sg, budget={"max_usd": cap})
        r = sg.post_json("/v1/chat/completions", body,
                         headers={"Authorization": "Bearer " + key["key"]})
        h.expect_status(r, 200)
        text = r.body.decode()
        if stop:
            h.expect("data: [DONE]" not in text, "a stopped stream still ended with [DONE]")
            last = [e for e in text.split("\n\n") if e.startswith("data: ")][-1]
            err = json.loads(last[6:])["error"]
            h.expect_eq(err["code"], "budget_exceeded", "the stream's last event")
            h.expect(key["id"] in err["message"] and key["key"] not in err["message"],
                     "the event names the key id only: %r", err["message"])
            sp = h.wait_for(lambda: spend_of(sg, key["id"]) if spend_of(sg, key["id"])
                            ["spent_usd"] > 0 else None, timeout=5, what="the stream billed")
            h.expect(cap < sp["spent_usd"] <= cap + 1000 / 1e6 + EPS,
                     "billed %r, want just past the cap %r (one event's price)",
                     sp["spent_usd"], cap)
            expect_budget_429(chat(sg, key, "and now?"))
        else:
            h.expect(text.rstrip().endswith("data: [DONE]"), "without stop_streams the stream "
                     "runs to its end: %r", text[-200:])
        sg.stop()


if __name__ == "__main__":
    h.main()
