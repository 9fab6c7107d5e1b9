"""Rate limits of virtual keys (issue 12), through the real binary: GCRA
requests per minute with auth.burst; team and key x model limits on top of a
key's; tokens reserved before forwarding (prompt estimate + max_tokens or
auth.default_completion_tokens) and settled with the real usage, or with the
prompt estimate + the events streamed when the client leaves; the
concurrency slot released on every ending; cache hits counting toward
requests but not tokens (unless auth.hits_count_tokens), exact hits taking no
concurrency slot or budget either; the x-ratelimit-* and
RateLimit headers on every answer of a keyed call. With auth off none of it.

Token counts are checked against bounds that allow for the refill between two
answers (elapsed seconds x tpm/60, measured around the requests): nothing here
asserts how long anything takes.
"""

import json
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

A = h.MODEL
B = "second-model"
ADMIN_ENV, ADMIN = "SG_LIMITS_ADMIN", "limits-admin-key-0123456789"
SECRET_ENV, SECRET = "SG_LIMITS_SECRET", "limits-server-secret-0123456789"
NEVER = 10 ** 7  # max_tokens no tpm here ever allows: a probe that takes nothing
RESET_RE = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+s)$")
POLICY_RE = re.compile(r'^"(key|team|model|team-model)-(rpm|tpm)";q=(\d+);w=60$')
STATE_RE = re.compile(r'^"(key|team|model|team-model)-(rpm|tpm)";r=(\d+);t=(\d+)$')


# --- setup ---------------------------------------------------------------------


def group(name, base_url, dep_extra=None, **extra):
    dep = {"provider": "openai", "base_url": base_url, "model": h.UPSTREAM_MODEL}
    dep.update(dep_extra or {})
    g = {"name": name, "deployments": [dep]}
    g.update(extra)
    return g


def closed_url():
    return "http://127.0.0.1:%d/v1" % h.closed_port()


def gateway(mock, auth=None, cache=False, groups=(), env=None, priced=False):
    """semgate in keys mode: group A on mock (priced: with prices), plus
    groups; auth.path in a fresh temp dir; the cache off, or on with the
    local embedder."""
    cfg = h.base_config(mock)
    if priced:
        cfg["models"][0].update(input_per_mtok=1.0, output_per_mtok=2.0)
    cfg["models"] += list(groups)
    cfg["admin_key_env"] = ADMIN_ENV
    cfg["auth"] = {"mode": "keys", "secret_env": SECRET_ENV,
                   "path": h.make_temp_dir("sg-it-auth-")}
    cfg["auth"].update(auth or {})
    cfg["cache"] = {"enabled": True, "embedder": {"provider": "local"}} if cache \
        else {"enabled": False}
    return h.Semgate(cfg, env=dict({ADMIN_ENV: ADMIN, SECRET_ENV: SECRET}, **(env or {})))


def admin_post(sg, path, obj):
    r = sg.post_json(path, obj, headers={"Authorization": "Bearer " + ADMIN})
    h.expect_status(r, 201)
    return r.json()


def new_key(sg, **fields):
    """(public id, whole key) of a new key with fields."""
    v = admin_post(sg, "/admin/keys", dict({"name": "k"}, **fields))
    return v["id"], v["key"]


def new_team(sg, **fields):
    return admin_post(sg, "/admin/teams", dict({"name": "t"}, **fields))["id"]


def bearer(key):
    return {"Authorization": "Bearer " + key}


def body(prompt=None, model=A, stream=False, **extra):
    return h.chat_body(prompt or h.unique(), model=model, stream=stream, **extra)


def prompt_estimate(b):
    """semgate's prompt estimate of body b: ceil(bytes/4), as the harness sends it."""
    return (len(json.dumps(b).encode("utf-8")) + 3) // 4


def chat(sg, key, b=None, **kw):
    return sg.post_json("/v1/chat/completions", b if b is not None else body(**kw),
                        headers=bearer(key))


def chat_req(key, b):
    return h.build_request("POST", "/v1/chat/completions", body=b, headers=bearer(key))


def refill(t0, tpm):
    """Tokens a tpm limit may have refilled since time.monotonic() was t0."""
    return math.ceil((time.monotonic() - t0) * tpm / 60.0) + 1


def expect_between(got, lo, hi, what):
    h.expect(lo <= got <= hi, "%s: %r, expected in [%r, %r]", what, got, lo, hi)


def limits_of(r, requests=True, tokens=None, what="answer"):
    """r's rate-limit headers, checked for form and agreement with each other.
    requests/tokens: True = must be there, False = must not, None = either.
    Returns {"limit_requests", "remaining_requests", "reset_requests",
    "scope_requests", and the same for tokens when present}."""
    out = {}
    policy = {}
    state = {}
    pol, st = r.header("RateLimit-Policy"), r.header("RateLimit")
    for raw, regex, into in ((pol, POLICY_RE, policy), (st, STATE_RE, state)):
        for item in (raw.split(", ") if raw else []):
            m = regex.match(item)
            h.expect(m, "%s: bad RateLimit item %r in %r", what, item, raw)
            into[m.group(2)] = (m.group(1), int(m.group(3)))
    for unit, kind, want in (("requests", "rpm", requests), ("tokens", "tpm", tokens)):
        names = ["x-ratelimit-%s-%s" % (f, unit) for f in ("limit", "remaining", "reset")]
        vals = [r.headers.get_all(n) for n in names]
        if want is False or (want is None and not any(vals)):
            h.expect(not any(vals) and kind not in policy and kind not in state,
                     "%s: %s headers where none are expected: %r", what, unit, r.headers.pairs)
            continue
        for n, v in zip(names, vals):
            h.expect(len(v) == 1, "%s: %s appears %d times; headers %r", what, n, len(v),
                     r.headers.pairs)
        limit, remaining, reset = (v[0] for v in vals)
        h.expect(limit.isdigit() and remaining.isdigit(), "%s: limit %r remaining %r (%s)",
                 what, limit, remaining, unit)
        h.expect(RESET_RE.match(reset), "%s: x-ratelimit-reset-%s %r", what, unit, reset)
        h.expect(kind in policy and kind in state,
                 "%s: no %s item in RateLimit-Policy %r / RateLimit %r", what, kind, pol, st)
        h.expect_eq(policy[kind][1], int(limit), "%s: RateLimit-Policy q of %s" % (what, kind))
        h.expect_eq(state[kind][1], int(remaining), "%s: RateLimit r of %s" % (what, kind))
        h.expect_eq(state[kind][0], policy[kind][0], "%s: scope of %s" % (what, kind))
        out.update({"limit_" + unit: int(limit), "remaining_" + unit: int(remaining),
                    "reset_" + unit: reset, "scope_" + unit: policy[kind][0]})
    return out


def expect_limited(r, *words, retry_after=True):
    """r is a 429 rate-limit error whose message has all words; Retry-After an
    integer >= 1 (or absent with retry_after False). Returns the message."""
    err = h.expect_error(r, 429, code="rate_limit_exceeded", type_="rate_limit_error")
    for w in words:
        h.expect(w in err["message"], "429 message %r does not say %r", err["message"], w)
    ra = r.header("Retry-After")
    if retry_after:
        h.expect(ra is not None and ra.isdigit() and int(ra) >= 1, "Retry-After %r", ra)
    else:
        h.expect(ra is None, "Retry-After %r on a request that can never pass", ra)
    return err["message"]


def send_all(sg, reqs):
    """Open one connection per request, then send them all back to back (so
    they arrive within a few ms) and read the answers, in order."""
    conns = [sg.connect() for _ in reqs]
    try:
        for c, q in zip(conns, reqs):
            c.send(q)
        return [c.read_response("POST") for c in conns]
    finally:
        for c in conns:
            c.close()


def open_stream(sg, key, b):
    """A raw connection with b (a stream) sent on it and the head read: (conn, head)."""
    c = sg.connect(timeout=30)
    c.send(chat_req(key, b))
    head = c.read_head()
    head.chunked = True
    return c, head


def read_events(c, head, n):
    """Read chunks of head's stream until n events with "content" came; returns
    how many did (the stream may end first)."""
    while True:
        got = sum(1 for e in h.parse_sse(head.body) if '"content"' in e["data"])
        if got >= n or c.read_chunk(head) is None:
            return got


# --- the tests -------------------------------------------------------------------


def test_gcra_admits_the_rate_and_no_burst_beyond():
    """rpm 30 at burst 1.0: of 40 requests at once exactly 30 pass, then 429s
    with Retry-After naming the key and "requests per minute"; after waiting
    what Retry-After said exactly one more passes. burst 0.1 at rpm 600:
    exactly 60 pass at once."""
    mock = h.Mock("--quiet")
    sg = gateway(mock)
    kid, key = new_key(sg, rpm=30)
    with sg.connect() as c:
        rs = [c.request("POST", "/v1/chat/completions", body=body(), headers=bearer(key))
              for _ in range(40)]
    h.expect_eq([r.status for r in rs], [200] * 30 + [429] * 10, "statuses of 40 at once")
    for r in rs[30:]:
        msg = expect_limited(r, "key sg-%s" % kid, "requests per minute")
        h.expect(key.rsplit("-", 1)[1] not in msg, "the 429 names the key's secret: %r", msg)
    h.expect_eq(mock.stats()["chat"], 30, "requests that reached the upstream")
    time.sleep(int(rs[-1].header("Retry-After")) + 0.2)
    h.expect_status(chat(sg, key), 200)
    expect_limited(chat(sg, key), "requests per minute")
    h.expect_eq(mock.stats()["chat"], 31, "requests that reached the upstream")

    sg = gateway(mock, auth={"burst": 0.1})
    _, key = new_key(sg, rpm=600)
    rs = send_all(sg, [chat_req(key, body()) for _ in range(75)])
    h.expect_eq(sum(r.status == 200 for r in rs), 60, "requests passed at rpm 600 burst 0.1")
    h.expect_eq(sum(r.status == 429 for r in rs), 15, "requests refused")


def test_team_and_model_limits_on_top_of_keys():
    """Two keys of a team with rpm 5 (keys rpm 100): together 5 pass, the 429
    names the team. A key x model limit of rpm 2: the 3rd request to that
    model is refused naming it; another model group still passes."""
    mock = h.Mock("--quiet")
    sg = gateway(mock, groups=[group(B, mock.url)])
    tid = new_team(sg, rpm=5)
    keys = [new_key(sg, team=tid, rpm=100)[1] for _ in range(2)]
    rs = [chat(sg, keys[i % 2]) for i in range(10)]
    h.expect_eq([r.status for r in rs], [200] * 5 + [429] * 5, "statuses of the team's keys")
    for r in rs[5:]:
        expect_limited(r, "team %s" % tid, "requests per minute")
        h.expect_eq(limits_of(r)["scope_requests"], "team", "scope of the tightest limit")

    kid, key = new_key(sg, rpm=100, model_limits={A: {"rpm": 2}})
    for _ in range(2):
        h.expect_status(chat(sg, key), 200)
    r = chat(sg, key)
    expect_limited(r, "key sg-%s" % kid, "'%s'" % A, "requests per minute")
    lim = limits_of(r)
    h.expect_eq((lim["scope_requests"], lim["limit_requests"], lim["remaining_requests"]),
                ("model", 2, 0), "tightest limit on the model's 429")
    r = chat(sg, key, model=B)
    h.expect_status(r, 200)
    h.expect_eq(limits_of(r)["scope_requests"], "key", "tightest limit on the other model")

    # a team x model limit binds its keys on that model only
    tid = new_team(sg, model_limits={A: {"rpm": 2}})
    kid, key = new_key(sg, team=tid)
    for _ in range(2):
        h.expect_status(chat(sg, key), 200)
    r = chat(sg, key)
    expect_limited(r, "team %s" % tid, "'%s'" % A, "requests per minute")
    h.expect_eq(limits_of(r)["scope_requests"], "team-model", "scope of a team x model limit")
    h.expect_status(chat(sg, key, model=B), 200)


def test_headers_on_every_answer():
    """Every answer of a keyed call with limits carries x-ratelimit-*-requests
    (remaining down by one per request), -tokens when tpm is set, and
    RateLimit-Policy / RateLimit: on 200s, upstream errors (500, refused),
    cache hits, in a stream's head, and on 429s. The tightest limit is shown."""
    mock = h.Mock("--quiet")
    failing = h.Mock("--quiet", "--fail-status", "500")
    sg = gateway(mock, cache=True, groups=[group("failing", failing.url, max_attempts=1),
                                           group("refused", closed_url(), max_attempts=1)])
    kid, key = new_key(sg, rpm=20, tpm=100000)
    p = h.unique("headers")
    answers = [("200", chat(sg, key, prompt=p)), ("hit", chat(sg, key, prompt=p)),
               ("upstream 500", chat(sg, key, model="failing")),
               ("connection refused", chat(sg, key, model="refused"))]
    h.expect_status(answers[0][1], 200)
    h.expect((answers[1][1].header("X-Semgate-Cache") or "").startswith("hit"),
             "second request not a hit: %r", answers[1][1].headers.pairs)
    h.expect_eq(answers[2][1].status, 500, "status of the failing upstream's answer")
    h.expect_eq(answers[3][1].status, 502, "status with the upstream refusing connections")
    c, head = open_stream(sg, key, body(stream=True))
    with c:
        h.expect_status(head, 200)
        answers.append(("stream head", head))
        while c.read_chunk(head) is not None:
            pass
        h.expect_eq(h.parse_sse(head.body)[-1]["data"], "[DONE]", "last event of the stream")
    rems = []
    for what, r in answers:
        lim = limits_of(r, tokens=True, what=what)
        h.expect_eq((lim["limit_requests"], lim["limit_tokens"], lim["scope_requests"]),
                    (20, 100000, "key"), "%s: limits" % what)
        rems.append(lim["remaining_requests"])
    h.expect_eq(rems, [19, 18, 17, 16, 15], "remaining-requests of consecutive answers")
    rs = [chat(sg, key) for _ in range(16)]
    h.expect_eq([r.status for r in rs], [200] * 15 + [429], "statuses up to the limit")
    expect_limited(rs[-1], "key sg-%s" % kid)
    lim = limits_of(rs[-1], tokens=True, what="429")
    h.expect_eq((lim["limit_requests"], lim["remaining_requests"]), (20, 0), "on the 429")

    # the tightest limit is the one shown
    tid = new_team(sg, rpm=3)
    _, tkey = new_key(sg, team=tid, rpm=100)
    r = chat(sg, tkey)
    h.expect_status(r, 200)
    lim = limits_of(r, tokens=False)
    h.expect_eq((lim["limit_requests"], lim["remaining_requests"], lim["scope_requests"]),
                (3, 2, "team"), "tightest of key rpm 100 and team rpm 3")


def test_limits_follow_an_admin_change():
    """A key's own limits (copied into every call from what its first call
    made) follow a PATCH at once, on the same keep-alive connection: rpm 20
    becomes 3 (its backlog kept: the third call after the change is refused)
    and tpm, removed, leaves the headers; a team's new rpm shows as the
    tightest."""
    mock = h.Mock("--quiet")
    sg = gateway(mock)
    kid, key = new_key(sg, rpm=20, tpm=100000)
    admin = {"Authorization": "Bearer " + ADMIN}
    with sg.connect() as c:
        lim = limits_of(c.request("POST", "/v1/chat/completions", body=body(),
                                  headers=bearer(key)), tokens=True)
        h.expect_eq((lim["limit_requests"], lim["limit_tokens"]), (20, 100000), "before")
        r = sg.request("PATCH", "/admin/keys/" + kid, body={"rpm": 3, "tpm": None},
                       headers=admin)
        h.expect_status(r, 200)
        rs = [c.request("POST", "/v1/chat/completions", body=body(), headers=bearer(key))
              for _ in range(3)]
        h.expect_eq([r.status for r in rs], [200, 200, 429], "statuses under rpm 3")
        for r in rs:
            lim = limits_of(r, tokens=False)
            h.expect_eq((lim["limit_requests"], lim["scope_requests"]), (3, "key"),
                        "after the change")
        tid = new_team(sg, rpm=2)
        r = sg.request("PATCH", "/admin/keys/" + kid, body={"team": tid, "rpm": 100},
                       headers=admin)
        h.expect_status(r, 200)
        lim = limits_of(c.request("POST", "/v1/chat/completions", body=body(),
                                  headers=bearer(key)), tokens=False)
        h.expect_eq((lim["limit_requests"], lim["remaining_requests"], lim["scope_requests"]),
                    (2, 1, "team"), "the team's rpm 2 under the key's 100")


def test_token_reservation_and_settlement():
    """tpm 1000: max_tokens 900 is admitted reserving ceil(body/4)+900, and the
    next answer shows the real usage settled instead; max_tokens 2000 can
    never pass (no Retry-After). Without max_tokens,
    auth.default_completion_tokens (500) is reserved, then settled."""
    mock = h.Mock("--quiet")
    sg = gateway(mock, auth={"default_completion_tokens": 500})
    kid, key = new_key(sg, tpm=1000)
    short = "z" * 200  # its usage (~110 tokens) is far more than a second's refill (~17)
    b1 = body(prompt=h.unique(short), max_tokens=900)
    t0 = time.monotonic()
    r1 = chat(sg, key, b1)
    h.expect_status(r1, 200)
    res1 = prompt_estimate(b1) + 900
    lim = limits_of(r1, requests=False, tokens=True)
    h.expect_eq(lim["remaining_tokens"], 1000 - res1, "remaining-tokens with 900 reserved")
    used1 = r1.json()["usage"]["total_tokens"]
    b2 = body(max_tokens=10)
    res2 = prompt_estimate(b2) + 10
    r2 = chat(sg, key, b2)
    h.expect_status(r2, 200)
    rem2 = limits_of(r2, requests=False, tokens=True)["remaining_tokens"]
    h.expect(rem2 > 1000 - 900 + 500, "remaining-tokens %d: the 900 were not given back", rem2)
    expect_between(rem2, 1000 - used1 - res2 - 1, 1000 - used1 - res2 + refill(t0, 1000),
                   "remaining-tokens after the first call settled to %d tokens" % used1)

    r = chat(sg, key, body(max_tokens=2000))
    expect_limited(r, "never", "key sg-%s" % kid, "tokens per minute", retry_after=False)
    limits_of(r, requests=False, tokens=True, what="429 that can never pass")
    h.expect_eq(mock.stats()["chat"], 2, "requests that reached the upstream")

    _, key = new_key(sg, tpm=1000)
    b4 = body(prompt=h.unique(short))
    t0 = time.monotonic()
    r4 = chat(sg, key, b4)
    h.expect_status(r4, 200)
    res4 = prompt_estimate(b4) + 500
    h.expect_eq(limits_of(r4, requests=False, tokens=True)["remaining_tokens"], 1000 - res4,
                "remaining-tokens with default_completion_tokens reserved")
    used4 = r4.json()["usage"]["total_tokens"]
    r5 = chat(sg, key, body(max_tokens=NEVER))
    expect_limited(r5, "never", retry_after=False)
    expect_between(limits_of(r5, requests=False, tokens=True)["remaining_tokens"],
                   1000 - used4 - 1, 1000 - used4 + refill(t0, 1000),
                   "remaining-tokens after settling %d used of %d reserved" % (used4, res4))


def test_abandoned_stream_settles_and_frees_its_slot():
    """A client leaving a stream half-way is charged its prompt estimate plus
    the events streamed, not its max_tokens=5000 reservation; with
    max_concurrent=1 a second request is refused while a stream is open
    and passes once the client has left it."""
    mock = h.Mock("--quiet", "--stream-chunks", "50", "--stream-interval-ms", "50")
    sg = gateway(mock)
    tpm = 14000  # refills ~233 tokens/s: a big prompt keeps the charge visible
    _, key = new_key(sg, tpm=tpm)
    b = body(prompt=h.unique("x" * 24000), stream=True, max_tokens=5000)
    est = prompt_estimate(b)
    reserved = est + 5000
    h.expect(reserved < tpm, "test setup: reservation %d over tpm", reserved)
    t0 = time.monotonic()
    c, head = open_stream(sg, key, b)
    with c:
        h.expect_status(head, 200)
        h.expect_eq(limits_of(head, requests=False, tokens=True)["remaining_tokens"],
                    tpm - reserved, "remaining-tokens in the stream's head")
        seen = read_events(c, head, 6)
        h.expect_eq(seen, 6, "content events read before leaving")
    probe = body(max_tokens=NEVER)

    def remaining():
        r = chat(sg, key, probe)
        expect_limited(r, "never", retry_after=False)
        return limits_of(r, requests=False, tokens=True)["remaining_tokens"]

    def settled():
        v = remaining()
        return v if v > tpm - reserved + 4000 else None

    rem = h.wait_for(settled, timeout=10, what="the abandoned stream's reservation given back")
    expect_between(rem, tpm - est - 55, tpm - est - seen + refill(t0, tpm),
                   "remaining-tokens after leaving a stream of prompt estimate %d, %d events read"
                   % (est, seen))
    h.wait_for(lambda: mock.stats()["streams_aborted"] >= 1, what="the upstream stream aborted")

    _, ckey = new_key(sg, max_concurrent=1)
    c, head = open_stream(sg, ckey, body(stream=True))
    with c:
        h.expect_status(head, 200)
        read_events(c, head, 2)
        r = chat(sg, ckey)
        expect_limited(r, "concurrent requests")
        h.expect_eq(r.header("Retry-After"), "1", "Retry-After of the concurrency limit")
    h.wait_for(lambda: chat(sg, ckey).status == 200, timeout=10,
               what="a request passing after the stream was left")


def test_concurrency_slot_released_on_every_ending():
    """max_concurrent=1: after each way a call can end (buffered and streamed
    success, upstream error reply, upstream timeout, connection refused,
    client gone before the answer, cache hit) the next request passes."""
    mock = h.Mock("--quiet")
    failing = h.Mock("--quiet", "--fail-status", "500")
    slow = h.Mock("--quiet", "--latency-ms", "1000")
    sg = gateway(mock, cache=True, groups=[
        group("failing", failing.url, max_attempts=1),
        group("timeout", slow.url, {"timeout_ms": 200}, max_attempts=1),
        group("refused", closed_url(), max_attempts=1),
        group("slow", slow.url, max_attempts=1)])
    _, key = new_key(sg, max_concurrent=1)

    def next_passes(ending):
        r = chat(sg, key)
        h.expect(r.status == 200, "after %s: the next request got %d %r", ending, r.status,
                 r.body[:300])

    h.expect_status(chat(sg, key), 200)
    next_passes("a buffered success")
    c, head = open_stream(sg, key, body(stream=True))
    with c:
        h.expect_status(head, 200)
        while c.read_chunk(head) is not None:
            pass
    next_passes("a streamed success")
    h.expect_eq(chat(sg, key, model="failing").status, 500, "the failing upstream's status")
    next_passes("an upstream error reply")
    r = chat(sg, key, model="timeout")
    h.expect(r.status in (502, 504), "upstream timeout answered %d %r", r.status, r.body)
    next_passes("an upstream timeout")
    h.expect_eq(chat(sg, key, model="refused").status, 502, "status on connection refused")
    next_passes("connection refused upstream")
    sent = slow.stats()["chat"]
    with sg.connect() as c:
        c.send(chat_req(key, body(model="slow")))
        h.wait_for(lambda: slow.stats()["chat"] > sent, what="the slow request upstream")
    h.wait_for(lambda: chat(sg, key).status == 200, timeout=10,
               what="a request passing after the client left before its answer")
    p = h.unique("cached")
    h.expect_status(chat(sg, key, prompt=p), 200)
    r = chat(sg, key, prompt=p)
    h.expect((r.header("X-Semgate-Cache") or "").startswith("hit"), "not a hit: %r",
             r.headers.pairs)
    next_passes("a cache hit")


def hits_then_probe(sg, key):
    """A miss, a probe, 5 hits of the same prompt, a probe: the two probes'
    (remaining requests, remaining tokens), the miss's usage and the seconds
    between the probes."""
    p = h.unique("y" * 200)
    miss = chat(sg, key, prompt=p, max_tokens=100)
    h.expect_status(miss, 200)
    h.expect_eq(miss.header("X-Semgate-Cache"), "miss", "first request")
    used = miss.json()["usage"]["total_tokens"]

    def probe():
        r = chat(sg, key, body(max_tokens=NEVER))
        expect_limited(r, "never", retry_after=False)
        lim = limits_of(r, tokens=True)
        return lim["remaining_requests"], lim["remaining_tokens"]

    t0 = time.monotonic()
    before = probe()
    for i in range(5):
        r = chat(sg, key, prompt=p, max_tokens=100)
        h.expect_status(r, 200)
        h.expect((r.header("X-Semgate-Cache") or "").startswith("hit"), "repeat %d: %r",
                 i + 1, r.headers.pairs)
    after = probe()
    return before, after, used, time.monotonic() - t0


def test_cache_hits_count_requests_not_tokens():
    """rpm 100 tpm 2000, cache on: 5 hits after a miss take 5 requests and give
    their tokens back; with auth.hits_count_tokens they are charged the
    stored usage."""
    mock = h.Mock("--quiet")
    for counts in (False, True):
        sg = gateway(mock, cache=True, auth={"hits_count_tokens": counts})
        _, key = new_key(sg, rpm=100, tpm=2000)
        (q0, t0), (q1, t1), used, secs = hits_then_probe(sg, key)
        what = "hits_count_tokens %s" % counts
        expect_between(q1, q0 - 5, q0 - 5 + math.ceil(secs / 0.6),
                       "%s: remaining-requests after 5 hits (%d before)" % (what, q0))
        charged = 5 * used if counts else 0
        expect_between(t1, t0 - charged - 1, t0 - charged + math.ceil(secs * 2000 / 60) + 1,
                       "%s: remaining-tokens after 5 hits of %d tokens (%d before)"
                       % (what, used, t0))
    h.expect_eq(mock.stats()["chat"], 2, "requests that reached the upstream")


def test_exact_hits_take_a_request_only():
    """The cache's exact lookup comes before the limits and the budget: an
    exact hit takes a request (rpm) but no tokens, no concurrency slot and no
    budget. Keys sharing a namespace with the key that filled the cache: one
    with less tpm than any miss needs, one past a hard budget, one holding
    its only slot with a slow call; each gets the cached answer (200, hit,
    X-Semgate-Cost 0, x-ratelimit-*-tokens still there) while its miss is
    refused with 429 naming that limit; and each hit counts toward rpm. With
    auth.hits_count_tokens a hit takes its stored usage, so the small-tpm key
    is refused the hit as well."""
    mock = h.Mock("--quiet")
    slow = h.Mock("--quiet", "--latency-ms", "3000")
    for counts in (False, True):
        what = "hits_count_tokens %s: " % counts
        sg = gateway(mock, cache=True, auth={"hits_count_tokens": counts}, priced=True,
                     groups=[group("slow", slow.url, max_attempts=1)])
        ns = "shared-%s" % counts
        _, filler = new_key(sg, namespace=ns)
        p = h.unique("cached answer")
        h.expect_eq(chat(sg, filler, prompt=p).header("X-Semgate-Cache"), "miss",
                    what + "the filler's call")
        kid, small = new_key(sg, namespace=ns, rpm=100, tpm=5)
        r = chat(sg, small, prompt=p)
        if counts:
            expect_limited(r, "key sg-%s" % kid, "tokens per minute", retry_after=False)
            continue
        h.expect_status(r, 200)
        h.expect_eq(r.header("X-Semgate-Cache"), "hit-exact", what + "tpm-less key's repeat")
        lim = limits_of(r, tokens=True, what="a hit that took no tokens")
        h.expect_eq((lim["limit_tokens"], lim["remaining_tokens"]), (5, 5),
                    what + "tokens limit and remaining after a hit that took none")
        h.expect_eq(lim["remaining_requests"], 99, what + "requests remaining after the hit")
        expect_limited(chat(sg, small), "key sg-%s" % kid, "tokens per minute",
                       retry_after=False)
        # past a hard budget: the miss's reservation cannot fit, the hit costs nothing
        kid, broke = new_key(sg, namespace=ns, budget={"max_usd": 1e-12})
        r = chat(sg, broke, prompt=p)
        h.expect_status(r, 200)
        h.expect_eq((r.header("X-Semgate-Cache"), r.header("X-Semgate-Cost")),
                    ("hit-exact", "0.00000000"), what + "the broke key's repeat")
        r = chat(sg, broke)
        h.expect_eq(r.status, 429, what + "the broke key's miss")
        h.expect("budget exceeded for key sg-" + kid in r.text(), "the refusal: %r",
                 r.body[:300])
        # the only slot held by a slow call: a hit still passes, a miss does not
        kid, single = new_key(sg, namespace=ns, max_concurrent=1)
        sent = slow.stats()["chat"]
        with sg.connect() as c:
            c.send(chat_req(single, body(model="slow")))
            h.wait_for(lambda: slow.stats()["chat"] > sent, what="the slow call upstream")
            r = chat(sg, single, prompt=p)
            h.expect_status(r, 200)
            h.expect_eq(r.header("X-Semgate-Cache"), "hit-exact",
                        what + "a repeat while the slot is held")
            expect_limited(chat(sg, single), "key sg-%s" % kid, "concurrent requests")
            h.expect_status(c.read_response("POST"), 200)
    h.expect_eq(mock.stats()["chat"], 2, "calls that reached the upstream (the fillers')")


def test_cache_counts_only_calls_the_limits_admit():
    """rpm 2, cache on: a miss, its exact hit, then a bypass (n > 1) and a
    repeat refused with 429 (the exact lookup ran before the limits, and
    the bypass was seen before them): /stats counts one miss, one exact hit
    and no bypass, as if the refused calls never reached the cache."""
    mock = h.Mock("--quiet")
    sg = gateway(mock, cache=True)
    kid, key = new_key(sg, rpm=2)
    p = h.unique("counted")
    h.expect_eq(chat(sg, key, prompt=p).header("X-Semgate-Cache"), "miss", "first call")
    h.expect_eq(chat(sg, key, prompt=p).header("X-Semgate-Cache"), "hit-exact", "its repeat")
    expect_limited(chat(sg, key, body(n=2)), "key sg-%s" % kid, "requests per minute")
    expect_limited(chat(sg, key, prompt=p), "key sg-%s" % kid, "requests per minute")
    r = sg.request("GET", "/stats", headers={"Authorization": "Bearer " + ADMIN})
    h.expect_status(r, 200)
    o = r.json()["overall"]
    h.expect_eq((o["misses"], o["hits_exact"], o["bypasses"], o["requests"]), (1, 1, 0, 2),
                "misses, exact hits, bypasses, requests in /stats")


def test_auth_off_has_no_limit_headers():
    """No auth section (auth off): requests pass as before (40 at once, a
    stream, a cache hit), and no answer carries x-ratelimit-* or RateLimit."""
    mock = h.Mock("--quiet")
    cfg = h.base_config(mock)
    cfg["cache"] = {"enabled": True, "embedder": {"provider": "local"}}
    sg = h.Semgate(cfg)
    p = h.unique("auth off")
    rs = [sg.post_json("/v1/chat/completions", body(prompt=p if i < 2 else None))
          for i in range(40)]
    h.expect_eq([r.status for r in rs], [200] * 40, "statuses with auth off")
    h.expect((rs[1].header("X-Semgate-Cache") or "").startswith("hit"), "not a hit: %r",
             rs[1].headers.pairs)
    with sg.connect() as c:
        c.send(h.build_request("POST", "/v1/chat/completions", body=body(stream=True)))
        rs.append(c.read_response("POST"))
    h.expect_status(rs[-1], 200)
    h.expect_eq(h.parse_sse(rs[-1].body)[-1]["data"], "[DONE]", "last event of the stream")
    for r in rs:
        bad = [k for k, _ in r.headers.pairs if k.lower().startswith(("x-ratelimit", "ratelimit"))]
        h.expect(not bad, "rate-limit headers with auth off: %r", bad)
    h.expect_eq(mock.stats()["chat"], 40, "requests that reached the upstream")


def test_no_limit_headers_from_the_last_request_on_the_connection():
    """The rate-limit headers belong to the answers of the call that took the
    limits: on a keep-alive connection (one a front proxy may share between
    clients) the next request's answers made before any call starts (a 401
    for an unknown key, a 401 for none, a 404, a 413 sent from the head of a
    body too large) carry none of them."""
    mock = h.Mock("--quiet")
    sg = gateway(mock)
    _, key = new_key(sg, rpm=50, tpm=100000)
    with sg.connect() as c:
        def send(method, path, b=None, hdrs=None):
            r = c.request(method, path, body=b, headers=hdrs)
            h.expect(not r.wants_close(), "the connection closes after %d %r", r.status, r.body)
            return r

        first = send("POST", "/v1/chat/completions", body(), bearer(key))
        h.expect_status(first, 200)
        limits_of(first, tokens=True, what="the keyed call's answer")
        later = [("401", send("POST", "/v1/chat/completions", body(),
                              bearer("sg-%s-%s" % ("a" * 12, "b" * 32)))),
                 ("missing key", send("POST", "/v1/chat/completions", body())),
                 ("404", send("GET", "/nowhere"))]
        # answered from the head, before the request is complete (and closing)
        send("POST", "/v1/chat/completions", body(), bearer(key))
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
               b"application/json\r\nContent-Length: 99999999999\r\n\r\n")
        later.append(("413", c.read_response("POST")))
    h.expect_eq([r.status for _, r in later], [401, 401, 404, 413],
                "statuses after the keyed calls")
    for what, r in later:
        bad = [k for k, _ in r.headers.pairs if k.lower().startswith(("x-ratelimit", "ratelimit"))]
        h.expect(not bad, "%s after a keyed call on the same connection carries %r", what, bad)


def test_counters_that_answer_later():
    """The counter interface lets a shared backend answer later: with counters
    that answer after 300 ms (SEMGATE_TEST_DEFERRED_COUNTERS_MS, a stand-in
    for a round trip to Redis) requests are admitted and refused as before,
    with their headers; a client that leaves while its reservation is on its
    way gets it given back (its request slot and its concurrency slot)."""
    mock = h.Mock("--quiet")
    sg = gateway(mock, env={"SEMGATE_TEST_DEFERRED_COUNTERS_MS": "300"})
    kid, key = new_key(sg, rpm=3, max_concurrent=1)
    c = sg.connect()
    c.send(h.build_request("POST", "/v1/chat/completions", body=body(),
                           headers={"Authorization": "Bearer " + key}))
    time.sleep(0.05)
    c.close()  # before the counters answered
    time.sleep(0.6)
    r = chat(sg, key)
    h.expect_status(r, 200)
    h.expect_eq(limits_of(r)["remaining_requests"], 2,
                "remaining of 3 after one request (the abandoned one's given back)")
    for _ in range(2):
        h.expect_status(chat(sg, key), 200)
    r = chat(sg, key)
    expect_limited(r, "key sg-%s" % kid, "requests per minute")
    h.expect_eq(mock.stats()["chat"], 3, "upstream calls")
    sg.assert_alive()


def test_key_deleted_while_its_counters_answer():
    """A reservation still on its way when its client leaves and its key (with
    its team's) is deleted: the items it carries point into the key and team
    (counter names, hints), so the limits step keeps them until the answer
    comes; under ASan a freed key read or written then is a crash. Both
    orders: the client leaves first, or stays and gets its answer."""
    mock = h.Mock("--quiet")
    sg = gateway(mock, env={"SEMGATE_TEST_DEFERRED_COUNTERS_MS": "300"})
    admin = {"Authorization": "Bearer " + ADMIN}
    for leave in (True, False):
        tid = new_team(sg, rpm=100, max_concurrent=5)
        kid, key = new_key(sg, team=tid, rpm=10, tpm=100000, max_concurrent=2)
        c = sg.connect()
        c.send(chat_req(key, body()))
        time.sleep(0.1)  # checked and asking (the answer comes at 300 ms)
        if leave:
            c.close()  # before the counters answered
        h.expect_status(sg.request("DELETE", "/admin/keys/" + kid, headers=admin), 200)
        h.expect_status(sg.request("DELETE", "/admin/teams/" + tid, headers=admin), 200)
        if not leave:
            # admitted: the key was good when it was checked (on a machine slow
            # enough for the delete to come first, refused: either is right)
            r = c.read_response("POST")
            h.expect(r.status in (200, 401), "status %d", r.status)
            c.close()
        time.sleep(0.6)
        h.expect_error(chat(sg, key), 401)  # deleted: the next request is refused
    kid, key = new_key(sg, rpm=3)
    h.expect_status(chat(sg, key), 200)
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
