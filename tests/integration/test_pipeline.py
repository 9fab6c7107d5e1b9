"""The request pipeline end to end (issue 11): what reaches the cache and
/stats, and what reaches the router's rate windows.

- A stream whose upstream ends its HTTP reply cleanly (zero-size chunk, or
  the close of a close-delimited body; status 200) without `data: [DONE]` is
  incomplete: the client gets valid SSE ending with semgate's
  upstream_stream_interrupted error event, and nothing is stored (the
  identical repeat is a miss that reaches the upstream). The control: the
  same stream with its [DONE] is stored and repeats as an exact hit.
- The hit rate of /stats, pinned: hit_rate = (hits_exact + hits_semantic) /
  (hits_exact + hits_semantic + misses), printed with 4 decimals, 0 when there
  was no lookup. A Cache-Control: no-store request still looks up (a hit or a
  miss); no-cache (refresh) and bypasses (n > 1, temperature above
  cache.max_temperature) are requests but not lookups; requests that never
  reach the cache step (embeddings, a model group with the cache off) are
  not counted at all.
- A streamed reply's usage counts toward its deployment's `tpm` (/stats
  deployments.*.tpm_used) exactly as a buffered reply's does, so streams
  exhaust a tpm limit and steer the `usage` strategy.

The fault markers ([[no-done]], [[no-done=close]], [[status=N]]) are
documented at the top of bench/mock/main.c.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import test_hostile_upstream as hu  # noqa: E402  (strict SSE checks; its tests do not run here)

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
HITS = ("hit-exact", "hit-semantic")

FRANCE = "What is the capital of France?"
FRANCE_PARAPHRASE = "what is the capital city of France"
BREAD = "How do I bake bread?"


# --- helpers -----------------------------------------------------------------------


def state(resp):
    return resp.header("X-Semgate-Cache")


def expect_state(resp, want, what="X-Semgate-Cache"):
    h.expect_status(resp, 200)
    h.expect_eq(state(resp), want, what)


def stats(sg):
    r = sg.request("GET", "/stats")
    h.expect_status(r, 200)
    return r.json()


def stream_body(prompt, usage=True):
    body = h.chat_body(prompt, stream=True)
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def call(sg, body, path=CHAT):
    """One request on a fresh connection; the response as far as it came."""
    with sg.connect(timeout=30) as c:
        c.send(h.build_request("POST", path, body=body))
        return c.read_partial()


def stream_usage(resp):
    """The usage object of a stream's usage chunk (choices [], usage set)."""
    found = None
    for ev in resp.events():
        if ev["data"] == "[DONE]":
            continue
        obj = json.loads(ev["data"])
        if isinstance(obj.get("usage"), dict):
            found = obj["usage"]
    h.expect(found is not None, "no usage chunk in the stream: %r", resp.body[-400:])
    return found


def dep_stats(sg, dep_id):
    deps = stats(sg).get("deployments")
    h.expect(isinstance(deps, dict) and dep_id in deps, "/stats deployments lacks %r: %r",
             dep_id, deps)
    return deps[dep_id]


def tpm_used(sg, dep_id=h.MODEL + "/0"):
    return dep_stats(sg, dep_id)["tpm_used"]


# --- 1. a stream without [DONE] is not stored ------------------------------------------


def store_barrier(sg):
    """A complete stream (with [DONE]) is stored and repeats as a hit: stores
    happen in completion order, so anything before it was stored or never
    will be."""
    body = stream_body(h.unique("quokka marmalade barrier"))
    hu.expect_whole(call(sg, body), hu.answer(body["messages"][0]["content"]))

    def stored():
        r = call(sg, body)
        h.expect_status(r, 200)
        return state(r) == "hit-exact"
    h.wait_for(stored, timeout=5, what="the barrier stream to be stored")


def stream_without_done_not_stored(marker):
    mock, sg = h.start("--quiet", "--stream-chunks", "3")
    p = h.unique("tell me about tides %s" % marker)
    body = stream_body(p)
    r = call(sg, body)
    expect_state(r, "miss", "first request")
    # everything the upstream sent reached the client, then semgate's error event
    s = hu.expect_interrupted(r)
    h.expect_eq(s.content, hu.answer(p), "content before the error event")
    h.expect_eq(s.finish_reasons, ["stop"], "finish reasons relayed")
    h.expect(b"data: [DONE]" not in r.body, "semgate invented a [DONE]: %r", r.body[-300:])
    h.expect_eq(mock.stats()["streams_completed"], 1, "mock streams completed (not cut)")

    store_barrier(sg)
    n = mock.stats()["chat"]
    st = stats(sg)
    entries, o0 = st["cache"]["entries"], st["overall"]
    r = call(sg, body)
    h.expect(state(r) not in HITS, "a stream without [DONE] was stored: the repeat is a %s "
             "(entry %s)" % (state(r), r.header("X-Semgate-Cache-Id")))
    expect_state(r, "miss", "the identical repeat")
    hu.expect_interrupted(r)
    h.expect_eq(mock.stats()["chat"], n + 1, "upstream chats for the repeat")
    h.expect_eq(stats(sg)["cache"]["entries"], entries, "cache entries after the repeat")
    o = stats(sg)["overall"]
    h.expect_eq((o["misses"], o["hits"]), (o0["misses"] + 1, o0["hits"]),
                "/stats misses, hits after the repeat")


def test_stream_ended_by_zero_chunk_without_done_not_stored():
    stream_without_done_not_stored("[[no-done]]")


def test_stream_ended_by_close_without_done_not_stored():
    stream_without_done_not_stored("[[no-done=close]]")


def test_stream_with_done_is_stored_and_repeat_hits():
    """The control of the two tests above: the same stream with its [DONE]."""
    mock, sg = h.start("--quiet", "--stream-chunks", "3")
    p = h.unique("tell me about tides")
    body = stream_body(p)
    r = call(sg, body)
    expect_state(r, "miss", "first request")
    hu.expect_whole(r, hu.answer(p))
    n = mock.stats()["chat"]

    def repeat():
        r = call(sg, body)
        return r if state(r) == "hit-exact" else None
    r = h.wait_for(repeat, timeout=5, what="the complete stream to be stored")
    hu.expect_whole(r, hu.answer(p))
    h.expect_eq(mock.stats()["chat"], n, "upstream chats for the hit")
    h.expect_eq(stats(sg)["cache"]["entries"], 1, "cache entries")


# --- 2. the hit rate ---------------------------------------------------------------------


def counters(obj):
    keys = ("requests", "hits", "hits_exact", "hits_semantic", "misses", "bypasses",
            "refreshes", "hit_rate")
    return {k: obj.get(k) for k in keys}


def test_hit_rate_is_hits_over_hits_plus_misses():
    mock = h.Mock("--quiet", "--stream-chunks", "3")
    cfg = h.base_config(mock)
    cfg["cache"] = {"threshold": 0.8, "index": "flat"}
    cfg["models"].append({"name": "nocache", "cache": False,
                          "deployments": [{"base_url": mock.url, "model": h.UPSTREAM_MODEL}]})
    sg = h.Semgate(cfg)
    zero = {"requests": 0, "hits": 0, "hits_exact": 0, "hits_semantic": 0, "misses": 0,
            "bypasses": 0, "refreshes": 0, "hit_rate": 0}
    h.expect_eq(counters(stats(sg)["overall"]), zero, "counters before any request")

    # Requests without a lookup: a bypass and a refresh. No lookup yet: 0.
    expect_state(call(sg, h.chat_body(h.unique("three answers"), n=3)), "bypass", "n=3")
    expect_state(sg.post_json(CHAT, h.chat_body(h.unique("fresh")),
                              headers={"Cache-Control": "no-cache"}), "refresh", "no-cache")
    h.expect_eq(counters(stats(sg)["overall"]),
                dict(zero, requests=2, bypasses=1, refreshes=1),
                "counters after a bypass and a refresh (no lookup: hit_rate 0)")

    # The mix.
    expect_state(call(sg, h.chat_body(FRANCE)), "miss", "France")                 # miss 1
    expect_state(call(sg, h.chat_body(FRANCE)), "hit-exact", "France again")      # exact 1
    expect_state(call(sg, h.chat_body(FRANCE)), "hit-exact", "France 3rd")        # exact 2
    expect_state(call(sg, h.chat_body(FRANCE_PARAPHRASE)), "hit-semantic",
                 "paraphrase")                                                     # semantic 1
    expect_state(call(sg, h.chat_body(BREAD)), "miss", "bread")                   # miss 2
    expect_state(sg.post_json(CHAT, h.chat_body(h.unique("keep nothing")),
                              headers={"Cache-Control": "no-store"}),
                 "miss", "no-store, new prompt")                                   # miss 3
    expect_state(sg.post_json(CHAT, h.chat_body(FRANCE), headers={"Cache-Control": "no-store"}),
                 "hit-exact", "no-store, stored prompt")                           # exact 3
    expect_state(sg.post_json(CHAT, h.chat_body(BREAD), headers={"Cache-Control": "no-cache"}),
                 "refresh", "no-cache")                                            # refresh 2
    expect_state(call(sg, h.chat_body(BREAD, temperature=1.5)), "bypass",
                 "temperature 1.5")                                                # bypass 2
    sp = h.unique("stream a story")
    r = call(sg, stream_body(sp))
    expect_state(r, "miss", "stream")                                              # miss 4
    hu.expect_whole(r, hu.answer(sp))
    # stored before the stream's end reached the client
    expect_state(call(sg, stream_body(sp)), "hit-exact", "stream again")           # exact 4
    r = sg.post_json(CHAT, h.chat_body(h.unique("refuse me [[status=400]]")))
    h.expect_eq(r.status, 400, "status of an upstream 400")
    h.expect_eq(state(r), "miss", "X-Semgate-Cache of an upstream 400")            # miss 5
    r = sg.post_json(TEXT, {"model": h.MODEL, "prompt": h.unique("once upon a time")})
    expect_state(r, "miss", "completions")                                         # miss 6

    # Not counted anywhere: embeddings, a model with the cache off, GET /v1/models.
    h.expect_status(sg.post_json("/v1/embeddings", {"model": h.MODEL, "input": "embed me"}), 200)
    r = sg.post_json(CHAT, h.chat_body(FRANCE, model="nocache"))
    h.expect_answer(r, FRANCE)
    h.expect(state(r) is None, "X-Semgate-Cache %r for a model with the cache off", state(r))
    h.expect_status(sg.request("GET", "/v1/models"), 200)

    st = stats(sg)
    # hit_rate = hits / (hits + misses) = 5 / 11, printed with 4 decimals
    want = {"requests": 15, "hits": 5, "hits_exact": 4, "hits_semantic": 1, "misses": 6,
            "bypasses": 2, "refreshes": 2, "hit_rate": 0.4545}
    h.expect_eq(counters(st["overall"]), want, "overall counters")
    h.expect_eq(counters(st["per_model"][h.MODEL]), want, "per_model counters")
    h.expect_eq(sorted(st["per_model"]), [h.MODEL], "models in per_model")
    h.expect_eq(counters(st["per_namespace"]["default"]), want, "per_namespace counters")


# --- 3. streamed usage counts toward tpm and the usage strategy ------------------------


def routing_config(deps, cache=False, **group):
    g = {"name": h.MODEL, "deployments": deps}
    g.update(group)
    cfg = {"log_level": "warn", "models": [g]}
    if not cache:
        cfg["cache"] = {"enabled": False}
    return cfg


def dep(mock, **extra):
    d = {"provider": "openai", "base_url": mock.url, "model": h.UPSTREAM_MODEL}
    d.update(extra)
    return d


def stream_counts_like_buffered(cache):
    mock = h.Mock("--quiet", "--stream-chunks", "3")
    sg = h.Semgate(routing_config([dep(mock, tpm=1000000)], cache=cache))
    h.expect_eq(tpm_used(sg), 0, "tpm_used at start")
    p = h.unique("count my tokens")
    r = sg.post_json(CHAT, h.chat_body(p))
    h.expect_answer(r, p)
    buffered = r.json()["usage"]["total_tokens"]
    h.expect(buffered > 0, "the mock's usage: %r", r.json()["usage"])
    h.expect_eq(tpm_used(sg), buffered, "tpm_used after a buffered reply")
    # A streamed request (another question: never a cache hit)
    p2 = h.unique("a different question, streamed")
    r = call(sg, stream_body(p2))
    hu.expect_whole(r, hu.answer(p2))
    h.expect_eq(state(r), "miss" if cache else None, "X-Semgate-Cache of the stream")
    streamed = stream_usage(r)["total_tokens"]
    h.expect(streamed > 0, "the stream's usage: %r", stream_usage(r))
    h.expect_eq(tpm_used(sg), buffered + streamed,
                "tpm_used after a buffered and a streamed reply: a stream must count its "
                "usage like a buffered reply")


def test_streamed_usage_counts_toward_tpm_cache_off():
    stream_counts_like_buffered(cache=False)


def test_streamed_usage_counts_toward_tpm_cache_on():
    stream_counts_like_buffered(cache=True)


def translated_stream_counts(provider, model):
    mock = h.Mock("--quiet", "--stream-chunks", "3")
    d = {"provider": provider, "base_url": "http://%s:%d" % (mock.host, mock.port),
         "model": model, "api_key_env": "SG_PIPELINE_TEST_KEY", "tpm": 1000000}
    if provider == "anthropic":
        d["api_version"] = "2023-06-01"
    sg = h.Semgate(routing_config([d]), env={"SG_PIPELINE_TEST_KEY": "test-key"})
    p = h.unique("count my translated tokens")
    r = sg.post_json(CHAT, h.chat_body(p))
    h.expect_status(r, 200)
    buffered = r.json()["usage"]["total_tokens"]
    h.expect(buffered > 0, "the translated reply's usage: %r", r.json()["usage"])
    h.expect_eq(tpm_used(sg), buffered, "tpm_used after a buffered %s reply" % provider)
    r = call(sg, stream_body(h.unique("a different question, streamed")))
    s = hu.strict_sse(r)
    h.expect_eq(s.terminal, "done", "the translated stream's end")
    streamed = stream_usage(r)["total_tokens"]
    h.expect(streamed > 0, "the translated stream's usage: %r", stream_usage(r))
    h.expect_eq(tpm_used(sg), buffered + streamed,
                "tpm_used after a buffered and a streamed %s reply" % provider)


def test_streamed_anthropic_usage_counts_toward_tpm():
    translated_stream_counts("anthropic", "claude-x")


def test_streamed_gemini_usage_counts_toward_tpm():
    translated_stream_counts("gemini", "gemini-x")


def test_streamed_requests_exhaust_tpm():
    mock = h.Mock("--quiet", "--stream-chunks", "3")
    sg = h.Semgate(routing_config([dep(mock, tpm=1)]))
    p = h.unique("spend my only token")
    r = call(sg, stream_body(p))
    hu.expect_whole(r, hu.answer(p))
    h.expect(tpm_used(sg) >= 1, "tpm_used after a streamed reply: %r", tpm_used(sg))
    for body in (stream_body(h.unique("over the limit")), h.chat_body(h.unique("buffered"))):
        r = sg.post_json(CHAT, body)
        h.expect_error(r, 503, code="no_healthy_upstream")
    h.expect_eq(mock.stats()["chat"], 1, "chats that reached the upstream past tpm 1")


def test_buffered_requests_exhaust_tpm():
    """The buffered twin of the test above (the behaviour streams must match)."""
    mock = h.Mock("--quiet")
    sg = h.Semgate(routing_config([dep(mock, tpm=1)]))
    p = h.unique("spend my only token")
    h.expect_answer(sg.post_json(CHAT, h.chat_body(p)), p)
    h.expect_error(sg.post_json(CHAT, stream_body(h.unique("over"))), 503,
                   code="no_healthy_upstream")
    h.expect_eq(mock.stats()["chat"], 1, "chats that reached the upstream past tpm 1")


def test_usage_strategy_sees_streamed_tokens():
    """strategy usage: the deployment with the smaller share of its tpm used
    gets the next request (ties: the first). Streams alone must move it."""
    m0, m1 = h.Mock("--quiet", "--stream-chunks", "3"), h.Mock("--quiet", "--stream-chunks", "3")
    sg = h.Semgate(routing_config([dep(m0, tpm=1000000), dep(m1, tpm=1000000)],
                                  strategy="usage"))
    ids = [h.MODEL + "/0", h.MODEL + "/1"]
    picked = []
    for i in range(6):
        used = [tpm_used(sg, d) for d in ids]
        want = ids[1] if used[1] < used[0] else ids[0]
        p = h.unique("stream %d" % i)
        r = call(sg, stream_body(p))
        hu.expect_whole(r, hu.answer(p))
        h.expect_eq(r.header("X-Semgate-Upstream"), want,
                    "upstream of stream #%d with tpm_used %r" % (i + 1, used))
        picked.append(r.header("X-Semgate-Upstream"))
    h.expect(ids[1] in picked, "every stream went to %s: the usage strategy did not see the "
             "streams' tokens (picks %r)" % (ids[0], picked))
    h.expect_eq(m0.stats()["chat"] + m1.stats()["chat"], 6, "chats upstream")
    h.expect(m1.stats()["chat"] >= 2, "chats on the second deployment: %r" % m1.stats()["chat"])


if __name__ == "__main__":
    h.main()
