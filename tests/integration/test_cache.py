"""The semantic cache in the request path: exact and semantic hits, scope
isolation, bypass rules, request controls, streaming replay, expiry and
eviction, the embedders, /stats and the /cache admin API."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"

FRANCE = "What is the capital of France?"
FRANCE_PARAPHRASE = "what is the capital city of France"
BREAD = "How do I bake bread?"


# --- helpers -----------------------------------------------------------------------


def start_cached(*mock_args, cache=None, model=None, models=(), config=None, env=None):
    """A mock and a semgate with the cache on (plus `cache` options), the default
    model group updated with `model`, extra model groups `models` (dicts whose
    deployments default to the mock)."""
    mock = h.Mock("--quiet", *mock_args)
    cfg = h.base_config(mock)
    cfg["cache"] = dict(cache or {})
    if model:
        cfg["models"][0].update(model)
    for m in models:
        m = dict(m)
        m.setdefault("deployments", [{"base_url": mock.url, "model": h.UPSTREAM_MODEL}])
        cfg["models"].append(m)
    if config:
        cfg.update(config)
    return mock, h.Semgate(cfg, env=env)


def state(resp):
    return resp.header("X-Semgate-Cache")


def expect_state(resp, want, what="X-Semgate-Cache"):
    h.expect_status(resp, 200)
    h.expect_eq(state(resp), want, what)


def chat(sg, prompt, headers=None, **extra):
    """POST a one-message chat (or a full body when prompt is a dict)."""
    body = prompt if isinstance(prompt, dict) else h.chat_body(prompt, **extra)
    return sg.post_json(CHAT, body, headers=headers)


def upstream_chats(mock):
    return mock.stats()["chat"]


def stats(sg, headers=None):
    r = sg.request("GET", "/stats", headers=headers)
    h.expect_status(r, 200)
    obj = r.json()
    h.expect_eq(obj.get("object"), "semgate.stats", "stats object")
    return obj


def expect_miss_then_hit(sg, mock, body, path=CHAT, headers=None):
    """body misses (and is stored), then an identical request is an exact hit
    that does not reach the upstream. Returns (miss, hit)."""
    miss = sg.post_json(path, body, headers=headers)
    expect_state(miss, "miss", "first request")
    before = mock.stats()
    hit = sg.post_json(path, body, headers=headers)
    expect_state(hit, "hit-exact", "repeat")
    after = mock.stats()
    h.expect_eq(after["requests"], before["requests"], "upstream requests during a hit")
    return miss, hit


def expect_isolated(sg, mock, first, second, path=CHAT, h1=None, h2=None, what="scope"):
    """first is stored; second (a different scope) is a miss that reaches the
    upstream; then both repeat as exact hits of their own entries."""
    r1 = sg.post_json(path, first, headers=h1)
    expect_state(r1, "miss", what + ": first")
    n = mock.stats()["requests"]
    r2 = sg.post_json(path, second, headers=h2)
    expect_state(r2, "miss", what + ": second (other scope) must not hit the first")
    h.expect_eq(mock.stats()["requests"], n + 1, what + ": upstream requests for the second")
    id1, id2 = r1.header("X-Semgate-Cache-Id"), r2.header("X-Semgate-Cache-Id")
    h.expect(id1 and id2 and id1 != id2, "%s: cache ids %r %r", what, id1, id2)
    r = sg.post_json(path, first, headers=h1)
    expect_state(r, "hit-exact", what + ": first again")
    h.expect_eq(r.header("X-Semgate-Cache-Id"), id1, what + ": id of the first's hit")
    r = sg.post_json(path, second, headers=h2)
    expect_state(r, "hit-exact", what + ": second again")
    h.expect_eq(r.header("X-Semgate-Cache-Id"), id2, what + ": id of the second's hit")


def expect_bypass(sg, mock, body, path=CHAT, what="request"):
    """body is forwarded every time with X-Semgate-Cache: bypass, never served
    from the cache, and never stored."""
    entries = stats(sg)["cache"]["entries"]
    for i in range(2):
        n = mock.stats()["requests"]
        r = sg.post_json(path, body)
        h.expect_status(r, 200)
        h.expect_eq(state(r), "bypass", "%s #%d X-Semgate-Cache" % (what, i + 1))
        h.expect(r.header("X-Semgate-Cache-Id") is None, "%s: a bypass has a cache id", what)
        h.expect_eq(mock.stats()["requests"], n + 1, what + ": upstream requests")
    h.expect_eq(stats(sg)["cache"]["entries"], entries, what + ": entries after bypasses")


def get_entry(sg, eid, headers=None):
    r = sg.request("GET", "/cache/entries/%s" % eid, headers=headers)
    h.expect_status(r, 200)
    return r.json()


# --- hits and misses ------------------------------------------------------------------


def test_miss_then_exact_hit():
    mock, sg = start_cached()
    prompt = h.unique("tell me about the cache")
    miss = chat(sg, prompt)
    h.expect_answer(miss, prompt)
    expect_state(miss, "miss")
    h.expect_eq(miss.header("X-Semgate-Upstream"), "gpt-4o-mini/0", "X-Semgate-Upstream")
    eid = miss.header("X-Semgate-Cache-Id")
    h.expect(eid and eid.isdigit(), "X-Semgate-Cache-Id on a stored miss: %r", eid)
    h.expect(miss.header("Age") is None, "Age on a miss: %r", miss.header("Age"))
    n = upstream_chats(mock)
    hit = chat(sg, prompt)
    obj = h.expect_answer(hit, prompt)
    expect_state(hit, "hit-exact")
    h.expect_eq(hit.header("X-Semgate-Cache-Id"), eid, "X-Semgate-Cache-Id of the hit")
    age = hit.header("Age")
    h.expect(age is not None and age.isdigit(), "Age on a hit: %r", age)
    h.expect(hit.header("X-Semgate-Similarity") is None, "X-Semgate-Similarity on an exact hit")
    h.expect((hit.header("Content-Type") or "").startswith("application/json"),
             "Content-Type %r", hit.header("Content-Type"))
    h.expect_eq(obj, miss.json(), "replayed body")
    h.expect_eq(upstream_chats(mock), n, "upstream chat requests during the hit")


def test_semantic_hit_quality_local_embedder():
    mock, sg = start_cached(cache={"threshold": 0.8})
    h.expect_answer(chat(sg, FRANCE), FRANCE)
    n = upstream_chats(mock)
    r = chat(sg, FRANCE_PARAPHRASE)
    expect_state(r, "hit-semantic", "paraphrase")
    # The stored answer is replayed: it answers the original question.
    h.expect_answer(r, FRANCE)
    sim = r.header("X-Semgate-Similarity")
    h.expect(sim is not None, "X-Semgate-Similarity missing on a semantic hit")
    h.expect(len(sim.split(".")[-1]) == 4, "similarity %r not formatted 0.xxxx", sim)
    h.expect(0.8 <= float(sim) <= 1.0, "similarity %r outside [threshold, 1]", sim)
    h.expect(r.header("X-Semgate-Cache-Id"), "X-Semgate-Cache-Id on a semantic hit")
    h.expect(r.header("Age") is not None, "Age on a semantic hit")
    h.expect_eq(upstream_chats(mock), n, "upstream chat requests during the semantic hit")
    r = chat(sg, BREAD)
    h.expect_answer(r, BREAD)
    expect_state(r, "miss", "unrelated question")
    h.expect_eq(upstream_chats(mock), n + 1, "upstream chat requests after the unrelated miss")


def test_canonical_json_exact_hit():
    mock, sg = start_cached()
    prompt = h.unique("canonical keys")
    body = ('{"model":"%s","temperature":1,"max_tokens":50,"messages":[{"role":"user",'
            '"content":"%s"}],"stop":["x","y"]}' % (h.MODEL, prompt))
    hdr = {"Content-Type": "application/json"}
    r = sg.request("POST", CHAT, body=body, headers=hdr)
    expect_state(r, "miss")
    eid = r.header("X-Semgate-Cache-Id")
    variants = [
        # other key order, whitespace, 1.0 for 1, 50.0 for 50
        '{ "stop" : [ "x" , "y" ] ,\n "messages": [ {"content": "%s", "role": "user"} ],'
        '\t"max_tokens": 50.0, "temperature": 1.0, "model": "%s" }' % (prompt, h.MODEL),
        '{"messages":[{"content":"%s","role":"user"}],"model":"%s","stop":["x","y"],'
        '"temperature":1e0,"max_tokens":50}' % (prompt, h.MODEL),
    ]
    n = upstream_chats(mock)
    for i, v in enumerate(variants):
        r = sg.request("POST", CHAT, body=v, headers=hdr)
        expect_state(r, "hit-exact", "variant %d" % i)
        h.expect_eq(r.header("X-Semgate-Cache-Id"), eid, "variant %d cache id" % i)
        h.expect_answer(r, prompt)
    h.expect_eq(upstream_chats(mock), n, "upstream chat requests for the variants")


def test_unscoped_params_do_not_change_the_key():
    mock, sg = start_cached()
    prompt = h.unique("unscoped parameters")
    expect_state(chat(sg, prompt), "miss")
    for extra in ({"user": "alice"}, {"metadata": {"k": "v"}}, {"store": True},
                  {"service_tier": "auto"}, {"stream_options": {"include_usage": False}}):
        r = chat(sg, prompt, **extra)
        expect_state(r, "hit-exact", "with %r" % extra)


# --- scope isolation -------------------------------------------------------------------


def test_scope_namespace():
    mock, sg = start_cached(cache={"threshold": 0.5})
    body = h.chat_body(h.unique("namespaced question"))
    expect_isolated(sg, mock, body, body, h1=None, h2={"X-Semgate-Namespace": "team-b"},
                    what="default vs team-b")
    expect_isolated(sg, mock, dict(body, messages=[{"role": "user", "content": "ns two"}]),
                    dict(body, messages=[{"role": "user", "content": "ns two"}]),
                    h1={"X-Semgate-Namespace": "a:b/c.d_e"},
                    h2={"X-Semgate-Namespace": "A:b/c.d_e"}, what="namespaces differing in case")
    # An explicit "default" is the default namespace.
    r = chat(sg, body, headers={"X-Semgate-Namespace": "default"})
    expect_state(r, "hit-exact", "explicit default namespace")


def test_scope_model_group():
    mock, sg = start_cached(cache={"threshold": 0.5}, models=[{"name": "other-group"}])
    prompt = h.unique("which model")
    expect_isolated(sg, mock, h.chat_body(prompt), h.chat_body(prompt, model="other-group"),
                    what="model groups")


def test_scope_system_prompt():
    mock, sg = start_cached(cache={"threshold": 0.5})
    prompt = h.unique("system scoped")

    def body(system):
        msgs = [{"role": "user", "content": prompt}]
        if system is not None:
            msgs.insert(0, {"role": "system", "content": system})
        return {"model": h.MODEL, "messages": msgs}

    expect_isolated(sg, mock, body("You are a pirate."), body("You are a lawyer."),
                    what="system prompts")
    r = chat(sg, body(None))
    expect_state(r, "miss", "no system prompt vs a system prompt")


def test_scope_params():
    mock, sg = start_cached(cache={"threshold": 0.5})
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    tool2 = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {}}}}
    cases = [
        ("temperature", {"temperature": 0.2}, {"temperature": 0.7}),
        ("max_tokens", {"max_tokens": 10}, {"max_tokens": 11}),
        ("top_p", {"top_p": 0.5}, {"top_p": 0.9}),
        ("seed", {"seed": 1}, {"seed": 2}),
        ("stop", {"stop": ["a"]}, {"stop": ["b"]}),
        ("tools", {"tools": [tool]}, {"tools": [tool2]}),
        ("response_format", {"response_format": {"type": "json_object"}},
         {"response_format": {"type": "text"}}),
        ("present vs absent", {"temperature": 0.5}, {}),
    ]
    for name, a, b in cases:
        prompt = h.unique("parameter scope " + name)
        expect_isolated(sg, mock, h.chat_body(prompt, **a), h.chat_body(prompt, **b), what=name)


def test_scope_conversation_history():
    mock, sg = start_cached(cache={"threshold": 0.5})
    prompt = h.unique("and what about the second one?")

    def conv(first_q, first_a):
        return {"model": h.MODEL, "messages": [
            {"role": "user", "content": first_q},
            {"role": "assistant", "content": first_a},
            {"role": "user", "content": prompt}]}

    expect_isolated(sg, mock, conv("name two rivers", "Nile and Amazon"),
                    conv("name two mountains", "Everest and K2"), what="earlier user turn")
    expect_isolated(sg, mock, conv("name two lakes", "Superior and Victoria"),
                    conv("name two lakes", "Baikal and Titicaca"), what="earlier assistant turn")
    r = chat(sg, prompt)
    expect_state(r, "miss", "no history vs a history")


def test_scope_endpoint():
    mock, sg = start_cached(cache={"threshold": 0.5})
    prompt = h.unique("chat or text")
    r1 = sg.post_json(CHAT, h.chat_body(prompt))
    expect_state(r1, "miss", "chat")
    n = mock.stats()["requests"]
    r2 = sg.post_json(TEXT, {"model": h.MODEL, "prompt": prompt})
    expect_state(r2, "miss", "completions with the chat's prompt")
    h.expect_eq(mock.stats()["completions"], 1, "upstream completions requests")
    h.expect_eq(mock.stats()["requests"], n + 1, "upstream requests")
    r = sg.post_json(TEXT, {"model": h.MODEL, "prompt": prompt})
    expect_state(r, "hit-exact", "completions repeat")
    h.expect_eq(r.header("X-Semgate-Cache-Id"), r2.header("X-Semgate-Cache-Id"), "id")
    h.expect_eq(r.json().get("object"), "text_completion", "object of a completions hit")
    r = sg.post_json(CHAT, h.chat_body(prompt))
    expect_state(r, "hit-exact", "chat repeat")
    h.expect_eq(r.header("X-Semgate-Cache-Id"), r1.header("X-Semgate-Cache-Id"), "id")
    h.expect_eq(r.json().get("object"), "chat.completion", "object of a chat hit")


# --- bypass ---------------------------------------------------------------------------


def test_bypass_n_greater_than_one():
    mock, sg = start_cached()
    expect_bypass(sg, mock, h.chat_body(h.unique("several choices"), n=2), what="n=2")
    # n=1 is cacheable
    expect_miss_then_hit(sg, mock, h.chat_body(h.unique("one choice"), n=1))


def test_bypass_temperature_above_max():
    mock, sg = start_cached(cache={"max_temperature": 0.7})
    expect_bypass(sg, mock, h.chat_body(h.unique("hot"), temperature=0.8),
                  what="temperature 0.8 > 0.7")
    expect_miss_then_hit(sg, mock, h.chat_body(h.unique("warm"), temperature=0.7))


def test_bypass_default_max_temperature():
    mock, sg = start_cached()
    expect_bypass(sg, mock, h.chat_body(h.unique("very hot"), temperature=1.5),
                  what="temperature 1.5 > default 1.0")


def test_bypass_tool_continuation():
    mock, sg = start_cached()
    prompt = h.unique("weather in Paris?")
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
    for role_msg in ({"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                     {"role": "function", "name": "get_weather", "content": "sunny"}):
        body = {"model": h.MODEL, "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            role_msg]}
        r = sg.post_json(CHAT, body)
        h.expect_eq(state(r), "bypass", "last message role %s" % role_msg["role"])
        h.expect(r.status == 200, "tool continuation status %d %r", r.status, r.body)
        r = sg.post_json(CHAT, body)
        h.expect_eq(state(r), "bypass", "repeat of last message role %s" % role_msg["role"])
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries")


def test_bypass_last_message_not_user():
    mock, sg = start_cached()
    body = {"model": h.MODEL, "messages": [
        {"role": "user", "content": h.unique("continue this")},
        {"role": "assistant", "content": "partial answer"}]}
    r = sg.post_json(CHAT, body)
    h.expect_eq(state(r), "bypass", "last message from the assistant")
    r = sg.post_json(CHAT, body)
    h.expect_eq(state(r), "bypass", "repeat")
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries")


def test_bypass_empty_prompt():
    mock, sg = start_cached()
    expect_bypass(sg, mock, h.chat_body(""), what="empty chat prompt")
    expect_bypass(sg, mock, {"model": h.MODEL, "prompt": ""}, path=TEXT,
                  what="empty completions prompt")


def test_bypass_completions_several_prompts():
    mock, sg = start_cached()
    body = {"model": h.MODEL, "prompt": [h.unique("first"), h.unique("second")]}
    expect_bypass(sg, mock, body, path=TEXT, what="two prompts")


def test_embeddings_not_cached():
    mock, sg = start_cached()
    body = {"model": h.MODEL, "input": h.unique("embed me")}
    for i in range(2):
        r = sg.post_json("/v1/embeddings", body)
        h.expect_status(r, 200)
        h.expect(state(r) not in ("hit-exact", "hit-semantic"), "embeddings served from cache")
    h.expect_eq(mock.stats()["embeddings"], 2, "embeddings requests upstream")
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries")


def test_model_cache_disabled():
    mock, sg = start_cached(models=[{"name": "nocache", "cache": False}])
    prompt = h.unique("never cached")
    n = upstream_chats(mock)
    for _ in range(2):
        r = chat(sg, prompt, model="nocache")
        h.expect_answer(r, prompt)
        h.expect(state(r) not in ("hit-exact", "hit-semantic", "miss"),
                 "X-Semgate-Cache %r for a model with cache off", state(r))
    h.expect_eq(upstream_chats(mock), n + 2, "upstream chat requests")
    expect_miss_then_hit(sg, mock, h.chat_body(prompt))  # the default group still caches


def test_cache_disabled_globally():
    mock, sg = start_cached(cache={"enabled": False})
    prompt = h.unique("no cache at all")
    for _ in range(2):
        r = chat(sg, prompt)
        h.expect_answer(r, prompt)
        h.expect(state(r) not in ("hit-exact", "hit-semantic"), "hit with the cache disabled")
    h.expect_eq(upstream_chats(mock), 2, "upstream chat requests")
    h.expect_eq(stats(sg)["cache"]["enabled"], False, "stats cache.enabled")


def test_upstream_error_not_stored():
    mock, sg = start_cached()
    prompt = h.unique("fail please [[status=500]]")
    for _ in range(2):
        r = chat(sg, prompt)
        h.expect_eq(r.status, 500, "status of an upstream error")
        h.expect(state(r) not in ("hit-exact", "hit-semantic"), "an error was served from cache")
        h.expect(r.header("X-Semgate-Cache-Id") is None, "an error reply has a cache id")
    # each request went upstream (retries included): nothing was stored
    h.expect(upstream_chats(mock) >= 2, "both requests reached the upstream")
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries")


# --- request controls ---------------------------------------------------------------------


def test_no_cache_refreshes():
    mock, sg = start_cached()
    prompt = h.unique("refresh me")
    miss = chat(sg, prompt)
    expect_state(miss, "miss")
    n = upstream_chats(mock)
    r = chat(sg, prompt, headers={"Cache-Control": "no-cache"})
    h.expect_answer(r, prompt)
    expect_state(r, "refresh", "no-cache")
    h.expect_eq(upstream_chats(mock), n + 1, "upstream chat requests for no-cache")
    new_id = r.header("X-Semgate-Cache-Id")
    h.expect(new_id, "X-Semgate-Cache-Id on a refresh")
    r = chat(sg, prompt)
    expect_state(r, "hit-exact", "after the refresh")
    h.expect_eq(upstream_chats(mock), n + 1, "upstream chat requests")
    h.expect_eq(r.header("X-Semgate-Cache-Id"), new_id, "the hit serves the fresh entry")
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"]), (1, 1),
                "entries, vectors (a refresh replaces the old entry)")
    # no-cache on a prompt never seen also stores it
    p2 = h.unique("fresh refresh")
    expect_state(chat(sg, p2, headers={"Cache-Control": "no-cache"}), "refresh")
    expect_state(chat(sg, p2), "hit-exact", "after a refresh of a new prompt")


def test_no_store():
    mock, sg = start_cached()
    prompt = h.unique("do not keep")
    r = chat(sg, prompt, headers={"Cache-Control": "no-store"})
    h.expect_answer(r, prompt)
    expect_state(r, "miss", "no-store miss")
    h.expect(r.header("X-Semgate-Cache-Id") is None, "cache id on a no-store miss")
    r = chat(sg, prompt, headers={"Cache-Control": "max-age=0, no-store"})
    expect_state(r, "miss", "no-store in a list, repeat")
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries after no-store misses")
    # no-store may still be served from an existing entry
    stored = chat(sg, prompt)
    expect_state(stored, "miss")
    r = chat(sg, prompt, headers={"Cache-Control": "no-store"})
    expect_state(r, "hit-exact", "no-store with a stored entry")


def test_threshold_header():
    mock, sg = start_cached(cache={"threshold": 0.99})
    h.expect_answer(chat(sg, FRANCE), FRANCE)
    r = chat(sg, FRANCE_PARAPHRASE, headers={"Cache-Control": "no-store"})
    expect_state(r, "miss", "paraphrase at threshold 0.99")
    r = chat(sg, FRANCE_PARAPHRASE, headers={"X-Semgate-Threshold": "0.5"})
    expect_state(r, "hit-semantic", "paraphrase with X-Semgate-Threshold 0.5")
    h.expect(float(r.header("X-Semgate-Similarity")) >= 0.5, "similarity %r",
             r.header("X-Semgate-Similarity"))
    # 1 demands identity: a paraphrase misses
    r = chat(sg, "what's the capital of france", headers={"X-Semgate-Threshold": "1",
                                                         "Cache-Control": "no-store"})
    expect_state(r, "miss", "threshold 1")


def test_threshold_floor():
    # cache.min_threshold: a client cannot ask for looser matches than this.
    mock, sg = start_cached(cache={"threshold": 0.99, "min_threshold": 0.98})
    h.expect_answer(chat(sg, FRANCE), FRANCE)
    r = chat(sg, FRANCE_PARAPHRASE, headers={"X-Semgate-Threshold": "0.5",
                                             "Cache-Control": "no-store"})
    expect_state(r, "miss", "paraphrase with X-Semgate-Threshold 0.5 under a 0.98 floor")


def test_untrusted_client_headers():
    # cache.trust_client_headers false: X-Semgate-Namespace and -Threshold from
    # clients are ignored (until a trusted front or keys set them).
    mock, sg = start_cached(cache={"threshold": 0.99, "trust_client_headers": False})
    h.expect_answer(chat(sg, FRANCE, headers={"X-Semgate-Namespace": "victim"}), FRANCE)
    # another "tenant" reads the same entry: the namespace header is not honoured
    expect_state(chat(sg, FRANCE, headers={"X-Semgate-Namespace": "other"}), "hit-exact",
                 "a namespace header that is not trusted")
    r = chat(sg, FRANCE_PARAPHRASE, headers={"X-Semgate-Threshold": "0.5",
                                             "Cache-Control": "no-store"})
    expect_state(r, "miss", "a threshold header that is not trusted")
    h.expect_eq(list(stats(sg)["per_namespace"].keys()), ["default"], "namespaces in /stats")


def test_model_cache_threshold():
    mock, sg = start_cached(cache={"threshold": 0.99}, model={"cache_threshold": 0.5})
    h.expect_answer(chat(sg, FRANCE), FRANCE)
    r = chat(sg, FRANCE_PARAPHRASE)
    expect_state(r, "hit-semantic", "paraphrase under the model's cache_threshold 0.5")


def test_invalid_controls():
    mock, sg = start_cached()
    body = h.chat_body(h.unique("bad headers"))
    cases = [
        {"X-Semgate-Threshold": "abc"}, {"X-Semgate-Threshold": "1.5"},
        {"X-Semgate-Threshold": "-0.1"}, {"X-Semgate-Threshold": ""},
        {"X-Semgate-TTL": "abc"}, {"X-Semgate-TTL": "-5"}, {"X-Semgate-TTL": "1.5"},
        {"X-Semgate-TTL": ""},
        {"X-Semgate-Namespace": "has space"}, {"X-Semgate-Namespace": "x" * 129},
        {"X-Semgate-Namespace": "semi;colon"}, {"X-Semgate-Namespace": "ü"},
    ]
    failures = []
    for hdr in cases:
        r = sg.post_json(CHAT, body, headers=hdr)
        try:
            h.expect_error(r, 400, code="invalid_cache_control")
        except h.TestFailure as e:
            failures.append("%r: %s" % (hdr, e))
    h.expect(not failures, "%d of %d cases wrong:\n%s", len(failures), len(cases),
             "\n".join(failures))
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")
    # the limits themselves are fine
    for hdr in ({"X-Semgate-Namespace": "x" * 128}, {"X-Semgate-Namespace": "a"},
                {"X-Semgate-Threshold": "0"}, {"X-Semgate-Threshold": "1.0"},
                {"X-Semgate-TTL": "0"}, {"X-Semgate-TTL": "3600"}):
        r = sg.post_json(CHAT, h.chat_body(h.unique("good headers")), headers=hdr)
        h.expect_status(r, 200)
    sg.assert_alive()


# --- expiry and eviction ------------------------------------------------------------------


def test_ttl_expiry():
    mock, sg = start_cached(cache={"threshold": 0.5})
    short = "short lived question about tomatoes"
    forever = "a question about granite that never expires"
    r = chat(sg, short, headers={"X-Semgate-TTL": "1"})
    expect_state(r, "miss")
    short_id = r.header("X-Semgate-Cache-Id")
    ent = get_entry(sg, short_id)
    h.expect(ent["expires"] - ent["created"] in (1, 2), "expires-created for TTL 1: %r", ent)
    r = chat(sg, forever, headers={"X-Semgate-TTL": "0"})
    expect_state(r, "miss")
    expect_state(chat(sg, short), "hit-exact", "before the TTL")
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"]), (2, 2), "entries, index_vectors")
    expired0 = st["expired"]
    time.sleep(2.5)
    n = upstream_chats(mock)
    r = chat(sg, short, headers={"Cache-Control": "no-store"})
    h.expect_answer(r, short)
    expect_state(r, "miss", "after the TTL")
    h.expect_eq(upstream_chats(mock), n + 1, "upstream chat requests after expiry")
    # a paraphrase must not find the expired entry either
    r = chat(sg, "short lived question about tomato", headers={"Cache-Control": "no-store"})
    expect_state(r, "miss", "paraphrase after the TTL")
    expect_state(chat(sg, forever), "hit-exact", "TTL 0 entry")

    def dropped():
        c = stats(sg)["cache"]
        return c if (c["entries"], c["index_vectors"]) == (1, 1) and \
            c["expired"] > expired0 else None
    h.wait_for(dropped, timeout=10, what="the expired entry to leave the store and index")
    r = sg.request("GET", "/cache/entries/%s" % short_id)
    h.expect_eq(r.status, 404, "GET of the expired entry")


def test_default_ttl_from_config():
    mock, sg = start_cached(cache={"ttl_s": 1})
    prompt = "configured ttl question"
    expect_state(chat(sg, prompt), "miss")
    expect_state(chat(sg, prompt), "hit-exact", "before the TTL")
    time.sleep(2.5)
    expect_state(chat(sg, prompt), "miss", "after the configured TTL")


def test_lru_eviction():
    mock, sg = start_cached(cache={"max_entries": 3, "threshold": 0.99})
    a, b, c, d = ("apples grow on orchards", "bicycles need pumped tyres",
                  "comets orbit distant stars", "dolphins sleep with one eye")
    for p in (a, b, c):
        expect_state(chat(sg, p), "miss", p)
    expect_state(chat(sg, a), "hit-exact", "a refreshes its recency")
    ev0 = stats(sg)["cache"]["evicted"]
    expect_state(chat(sg, d), "miss", "d")
    st = stats(sg)["cache"]
    h.expect_eq(st["entries"], 3, "entries after the 4th store")
    h.expect_eq(st["index_vectors"], 3, "index_vectors after the 4th store")
    h.expect(st["evicted"] >= ev0 + 1, "evicted did not grow: %r", st)
    expect_state(chat(sg, a), "hit-exact", "a (recently used) survives")
    expect_state(chat(sg, d), "hit-exact", "d survives")
    expect_state(chat(sg, c), "hit-exact", "c survives")
    n = upstream_chats(mock)
    expect_state(chat(sg, b), "miss", "b (least recently used) was evicted")
    h.expect_eq(upstream_chats(mock), n + 1, "upstream chat requests for b")
    h.expect_eq(stats(sg)["cache"]["entries"], 3, "entries stay at max_entries")


def test_max_bytes_bound():
    mock, sg = start_cached(cache={"max_bytes": 4096, "threshold": 0.99})
    for i in range(30):
        r = chat(sg, "question number %d about %s" % (i, "xyz " * 30))
        h.expect_status(r, 200)
    st = stats(sg)["cache"]
    h.expect(st["bytes"] <= 4096, "cache bytes %d over max_bytes 4096" % st["bytes"])
    h.expect(st["evicted"] > 0, "nothing evicted under max_bytes: %r", st)
    h.expect(st["entries"] < 30, "entries %d not bounded" % st["entries"])


# --- streaming ----------------------------------------------------------------------------


def expect_replayed_stream(resp, content, include_usage=False, kind="chat"):
    """resp is an SSE replay: role chunk, content, a finish chunk, an optional
    usage chunk, then [DONE]."""
    h.expect_status(resp, 200)
    ct = (resp.header("Content-Type") or "").lower()
    h.expect(ct.startswith("text/event-stream"), "Content-Type %r", ct)
    evs = resp.events()
    h.expect(evs and evs[-1]["data"] == "[DONE]", "stream does not end with [DONE]: %r",
             [e["data"] for e in evs[-3:]])
    objs = [json.loads(e["data"]) for e in evs[:-1]]
    want_obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    for o in objs:
        h.expect_eq(o.get("object"), want_obj, "chunk object")
    h.expect_eq(h.sse_content(evs), content, "replayed content")
    choice_objs = [o for o in objs if o.get("choices")]
    finishes = [o["choices"][0].get("finish_reason") for o in choice_objs]
    h.expect(finishes and finishes[-1], "no finish_reason in the last choice chunk: %r", finishes)
    h.expect(all(f is None for f in finishes[:-1]), "finish_reason before the end: %r", finishes)
    if kind == "chat":
        h.expect_eq(choice_objs[0]["choices"][0]["delta"].get("role"), "assistant",
                    "first chunk's delta.role")
    usage = [o for o in objs if o.get("usage")]
    if include_usage:
        h.expect(usage and objs[-1].get("usage"), "no usage chunk before [DONE]: %r", objs[-1:])
        h.expect_eq(objs[-1].get("choices"), [], "choices of the usage chunk")
        u = objs[-1]["usage"]
        h.expect(u.get("prompt_tokens", 0) > 0 and u.get("completion_tokens", 0) > 0,
                 "usage %r", u)
    else:
        h.expect(not any(o.get("choices") == [] for o in objs), "usage chunk without include_usage")
    return objs


def test_stream_miss_then_stream_hit():
    mock, sg = start_cached("--stream-chunks", "5")
    prompt = h.unique("stream me a story")
    r = sg.post_json(CHAT, h.chat_body(prompt, stream=True))
    h.expect_status(r, 200)
    h.expect_eq(state(r), "miss", "streamed miss")
    h.expect_eq(h.sse_content(r.events()), "mock answer to: " + prompt, "streamed content")
    n = mock.stats()["requests"]

    def stored():
        r = sg.post_json(CHAT, h.chat_body(prompt, stream=True))
        return r if state(r) == "hit-exact" else None
    r = h.wait_for(stored, timeout=5, what="the streamed answer to be stored")
    h.expect(r.header("X-Semgate-Cache-Id"), "X-Semgate-Cache-Id on a streamed hit")
    h.expect(r.header("Age") is not None, "Age on a streamed hit")
    expect_replayed_stream(r, "mock answer to: " + prompt)
    h.expect_eq(mock.stats()["requests"], n, "upstream requests during streamed hits")


def test_stream_with_usage_stored_and_replayed():
    mock, sg = start_cached("--stream-chunks", "3")
    prompt = h.unique("stream with usage")
    body = h.chat_body(prompt, stream=True, stream_options={"include_usage": True})
    r = sg.post_json(CHAT, body)
    h.expect_eq(state(r), "miss", "streamed miss")

    def stored():
        r = sg.post_json(CHAT, body)
        return r if state(r) == "hit-exact" else None
    r = h.wait_for(stored, timeout=5, what="the streamed answer to be stored")
    expect_replayed_stream(r, "mock answer to: " + prompt, include_usage=True)


def test_stream_stored_without_usage_replays_usage():
    # "usage chunk when stream_options.include_usage ... whichever way it was stored"
    mock, sg = start_cached("--stream-chunks", "3")
    prompt = h.unique("stream without usage")
    r = sg.post_json(CHAT, h.chat_body(prompt, stream=True))
    h.expect_eq(state(r), "miss", "streamed miss")

    def stored():
        r = sg.post_json(CHAT, h.chat_body(prompt, stream=True,
                                           stream_options={"include_usage": True}))
        return r if state(r) == "hit-exact" else None
    r = h.wait_for(stored, timeout=5, what="the streamed answer to be stored")
    expect_replayed_stream(r, "mock answer to: " + prompt, include_usage=True)


def test_json_stored_stream_hit():
    mock, sg = start_cached()
    prompt = h.unique("stored as json")
    expect_state(chat(sg, prompt), "miss")
    r = sg.post_json(CHAT, h.chat_body(prompt, stream=True,
                                       stream_options={"include_usage": True}))
    h.expect_eq(state(r), "hit-exact", "stream request on a JSON entry")
    expect_replayed_stream(r, "mock answer to: " + prompt, include_usage=True)


def test_stream_stored_json_hit():
    mock, sg = start_cached("--stream-chunks", "4")
    prompt = h.unique("stored as a stream")
    r = sg.post_json(CHAT, h.chat_body(prompt, stream=True,
                                       stream_options={"include_usage": True}))
    h.expect_eq(state(r), "miss", "streamed miss")
    h.expect_eq(r.events()[-1]["data"], "[DONE]", "streamed miss ends with [DONE]")
    n = upstream_chats(mock)

    def stored():
        r = chat(sg, prompt)
        return r if state(r) == "hit-exact" else None
    # a stream is stored when it completes, which may trail the client's [DONE]
    r = h.wait_for(stored, timeout=5, what="the streamed answer to be stored")
    obj = h.expect_answer(r, prompt)
    h.expect_eq(obj.get("object"), "chat.completion", "object of the reassembled reply")
    h.expect_eq(obj["choices"][0]["message"]["role"], "assistant", "role")
    h.expect(obj["choices"][0].get("finish_reason"), "finish_reason missing: %r", obj)
    h.expect(obj.get("usage", {}).get("completion_tokens", 0) > 0, "usage missing: %r", obj)
    h.expect_eq(upstream_chats(mock), n, "upstream chat requests")


def test_stream_cut_not_stored():
    mock, sg = start_cached("--stream-chunks", "6")
    prompt = h.unique("cut me off [[cut=2]]")
    with sg.connect() as c:
        c.send(h.build_request("POST", CHAT, body=h.chat_body(prompt, stream=True)))
        r = c.read_partial()
        h.expect_eq(state(r), "miss", "cut stream")
    time.sleep(0.3)
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries after a cut stream")
    n = upstream_chats(mock)
    with sg.connect() as c:
        c.send(h.build_request("POST", CHAT, body=h.chat_body(prompt, stream=True)))
        r = c.read_partial()
        h.expect_eq(state(r), "miss", "repeat of a cut stream")
    h.expect_eq(upstream_chats(mock), n + 1, "upstream chat requests for the repeat")
    r = chat(sg, prompt.replace("[[cut=2]]", "done"))
    h.expect_status(r, 200)
    sg.assert_alive()


def test_completions_cache():
    mock, sg = start_cached("--stream-chunks", "3")
    prompt = h.unique("once upon a time")
    body = {"model": h.MODEL, "prompt": prompt, "max_tokens": 20}
    miss, hit = expect_miss_then_hit(sg, mock, body, path=TEXT)
    obj = hit.json()
    h.expect_eq(obj.get("object"), "text_completion", "object")
    h.expect_eq(obj["choices"][0]["text"], "mock answer to: " + prompt, "choices[0].text")
    h.expect_eq(hit.header("X-Semgate-Cache-Id"), miss.header("X-Semgate-Cache-Id"), "id")
    # a one-element prompt array is the same prompt
    r = sg.post_json(TEXT, dict(body, prompt=[prompt]))
    h.expect_eq(state(r), "hit-exact", "one-element prompt array")
    r = sg.post_json(TEXT, dict(body, stream=True))
    h.expect_eq(state(r), "hit-exact", "streamed completions hit")
    expect_replayed_stream(r, "mock answer to: " + prompt, kind="text")
    # a streamed completions miss is stored and replayed as JSON
    p2 = h.unique("a streamed tale")
    r = sg.post_json(TEXT, {"model": h.MODEL, "prompt": p2, "stream": True})
    h.expect_eq(state(r), "miss", "streamed completions miss")

    def stored():
        r = sg.post_json(TEXT, {"model": h.MODEL, "prompt": p2})
        return r if state(r) == "hit-exact" else None
    r = h.wait_for(stored, timeout=5, what="the streamed completion to be stored")
    h.expect_eq(r.json()["choices"][0]["text"], "mock answer to: " + p2, "reassembled text")
    h.expect_eq(r.json().get("object"), "text_completion", "reassembled object")


def test_completions_semantic_hit():
    mock, sg = start_cached(cache={"threshold": 0.8})
    r = sg.post_json(TEXT, {"model": h.MODEL, "prompt": FRANCE})
    h.expect_eq(state(r), "miss", "first")
    r = sg.post_json(TEXT, {"model": h.MODEL, "prompt": FRANCE_PARAPHRASE})
    h.expect_eq(state(r), "hit-semantic", "paraphrase")
    h.expect_eq(r.json()["choices"][0]["text"], "mock answer to: " + FRANCE, "replayed text")


# --- stats and admin -------------------------------------------------------------------------


def test_stats_counters_and_savings():
    price_in, price_out = 0.15, 0.6
    mock, sg = start_cached(cache={"threshold": 0.8, "index": "flat"},
                            model={"input_per_mtok": price_in, "output_per_mtok": price_out})
    st = stats(sg)
    c = st["cache"]
    for k in ("enabled", "entries", "bytes", "file_bytes", "index_type", "index_vectors",
              "scopes", "evicted", "expired", "threshold"):
        h.expect(k in c, "stats cache.%s missing: %r", k, c)
    h.expect_eq(c["enabled"], True, "cache.enabled")
    h.expect_eq(c["index_type"], "flat", "cache.index_type")
    h.expect(abs(c["threshold"] - 0.8) < 1e-9, "cache.threshold %r", c["threshold"])
    miss = chat(sg, FRANCE, headers={"X-Semgate-Namespace": "nsa"})
    expect_state(miss, "miss")
    usage = miss.json()["usage"]
    expect_state(chat(sg, FRANCE, headers={"X-Semgate-Namespace": "nsa"}), "hit-exact")
    expect_state(chat(sg, FRANCE_PARAPHRASE, headers={"X-Semgate-Namespace": "nsa"}),
                 "hit-semantic")
    expect_state(chat(sg, BREAD), "miss")
    h.expect_eq(state(chat(sg, h.chat_body(BREAD, n=3))), "bypass", "bypass")
    expect_state(chat(sg, BREAD, headers={"Cache-Control": "no-cache"}), "refresh")
    st = stats(sg)
    o = st["overall"]
    want = {"requests": 6, "hits": 2, "hits_exact": 1, "hits_semantic": 1, "misses": 2,
            "bypasses": 1, "refreshes": 1}
    h.expect_eq({k: o.get(k) for k in want}, want, "overall counters")
    h.expect(abs(o["hit_rate"] - 2 / 6) < 0.01 or abs(o["hit_rate"] - 2 / 5) < 0.01 or
             abs(o["hit_rate"] - 2 / 4) < 0.01, "hit_rate %r", o["hit_rate"])
    pt, ct = usage["prompt_tokens"], usage["completion_tokens"]
    h.expect_eq((o["prompt_tokens_saved"], o["completion_tokens_saved"], o["tokens_saved"]),
                (2 * pt, 2 * ct, 2 * (pt + ct)), "tokens saved by two hits")
    money = 2 * (pt * price_in + ct * price_out) / 1e6
    h.expect(abs(o["money_saved"] - money) < 1e-6, "money_saved %r, want %r",
             o["money_saved"], money)
    pm = st["per_model"][h.MODEL]
    h.expect_eq({k: pm.get(k) for k in want}, want, "per_model counters")
    nsa = st["per_namespace"]["nsa"]
    h.expect_eq((nsa["requests"], nsa["hits"], nsa["misses"]), (3, 2, 1), "namespace nsa")
    dflt = st["per_namespace"]["default"]
    h.expect_eq((dflt["requests"], dflt["hits"], dflt["misses"], dflt["bypasses"],
                 dflt["refreshes"]), (3, 0, 1, 1, 1), "namespace default")
    h.expect_eq(st["cache"]["entries"], 2, "entries (France in nsa, bread refreshed in place)")
    h.expect(st["cache"]["scopes"] >= 2, "scopes %r", st["cache"]["scopes"])
    h.expect(st["cache"]["bytes"] > 0 and st["cache"]["file_bytes"] > 0, "bytes %r", st["cache"])
    lat = st["lookup_latency_us"]
    h.expect(lat["count"] >= 4, "lookup_latency_us.count %r", lat)
    h.expect(lat["p50"] <= lat["p90"] <= lat["p99"], "lookup percentiles %r", lat)
    h.expect("embed_errors" in st and st["embed_errors"] == 0, "embed_errors %r",
             st.get("embed_errors"))
    for k in ("connections", "upstream_in_flight"):
        h.expect(isinstance(st.get(k), int), "stats %s %r", k, st.get(k))


def test_admin_entries_list_get_delete():
    mock, sg = start_cached(cache={"threshold": 0.99})
    prompts = ["entry %s about %s" % (i, w) for i, w in
               enumerate(("kayaks", "lanterns", "marmots", "nebulae", "oysters"))]
    ids = []
    for p in prompts:
        r = chat(sg, p, headers={"X-Semgate-Namespace": "listing"})
        expect_state(r, "miss")
        ids.append(int(r.header("X-Semgate-Cache-Id")))
    h.expect_eq(ids, sorted(ids), "ids increase")
    r = sg.request("GET", "/cache/entries")
    h.expect_status(r, 200)
    lst = r.json()
    h.expect_eq(lst.get("object"), "list", "object")
    h.expect_eq([e["id"] for e in lst["data"]], ids, "listed ids")
    h.expect_eq(lst.get("has_more"), False, "has_more")
    e0 = lst["data"][0]
    for k in ("id", "namespace", "model", "prompt", "created", "expires", "hits", "last_hit",
              "prompt_tokens", "completion_tokens", "response_bytes"):
        h.expect(k in e0, "entry field %s missing: %r", k, e0)
    h.expect_eq((e0["namespace"], e0["model"], e0["prompt"]), ("listing", h.MODEL, prompts[0]),
                "entry namespace, model, prompt")
    h.expect(e0["response_bytes"] > 0 and e0["prompt_tokens"] > 0, "entry sizes %r", e0)
    # paging
    seen, after, pages = [], 0, 0
    while True:
        r = sg.request("GET", "/cache/entries?after=%d&limit=2" % after)
        h.expect_status(r, 200)
        page = r.json()
        pages += 1
        h.expect(len(page["data"]) <= 2, "page of %d entries with limit 2", len(page["data"]))
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = page["next_after"]
        h.expect_eq(after, page["data"][-1]["id"], "next_after")
        h.expect(pages < 10, "paging does not end")
    h.expect_eq(seen, ids, "ids over pages")
    h.expect_eq(pages, 3, "pages of 2 over 5 entries")
    # one entry in full
    full = get_entry(sg, ids[1])
    h.expect_eq(full["id"], ids[1], "id")
    h.expect_eq(full["prompt"], prompts[1], "prompt")
    h.expect("scope" in full, "full entry without scope: %r", list(full))
    resp = full["response"]
    if isinstance(resp, str):
            resp = json.loads(resp)
    h.expect_eq(resp["choices"][0]["message"]["content"], "mock answer to: " + prompts[1],
                "stored response")
    # delete
    r = sg.request("DELETE", "/cache/entries/%d" % ids[1])
    h.expect_status(r, 200)
    h.expect_eq(r.json(), {"id": ids[1], "deleted": True}, "delete reply")
    h.expect_error(sg.request("DELETE", "/cache/entries/%d" % ids[1]), 404)
    h.expect_error(sg.request("GET", "/cache/entries/%d" % ids[1]), 404)
    h.expect_error(sg.request("GET", "/cache/entries/999999"), 404)
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"]), (4, 4), "entries, vectors after delete")
    r = chat(sg, prompts[1], headers={"X-Semgate-Namespace": "listing"})
    expect_state(r, "miss", "deleted entry")
    r = chat(sg, prompts[2], headers={"X-Semgate-Namespace": "listing"})
    expect_state(r, "hit-exact", "other entry")
    for bad in ("/cache/entries/abc", "/cache/entries/-1"):
        r = sg.request("GET", bad)
        h.expect(r.status in (400, 404), "GET %s -> %d", bad, r.status)
    sg.assert_alive()


def test_admin_clear_by_namespace():
    mock, sg = start_cached(cache={"threshold": 0.99})
    for ns in ("ns-a", "ns-b"):
        for p in ("red herrings", "blue whales", "green beans"):
            expect_state(chat(sg, p, headers={"X-Semgate-Namespace": ns}), "miss")
    # a namespace that cannot be read is refused, never taken as "all"
    for bad in ("x" * 200, "ns-%zz", "ns%2"):
        h.expect_error(sg.request("DELETE", "/cache?namespace=" + bad), 400)
    h.expect_eq(stats(sg)["cache"]["entries"], 6, "entries after refused clears")
    r = sg.request("DELETE", "/cache?namespace=ns%2Da")  # %-encoded "ns-a"
    h.expect_status(r, 200)
    obj = r.json()
    h.expect_eq((obj.get("deleted"), obj.get("namespace")), (3, "ns-a"), "clear ns-a")
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"]), (3, 3), "entries, vectors after clear")
    expect_state(chat(sg, "blue whales", headers={"X-Semgate-Namespace": "ns-b"}), "hit-exact",
                 "ns-b keeps its entries")
    expect_state(chat(sg, "blue whales", headers={"X-Semgate-Namespace": "ns-a"}), "miss",
                 "ns-a was cleared")
    r = sg.request("DELETE", "/cache")
    h.expect_status(r, 200)
    h.expect_eq(r.json().get("deleted"), 4, "clear all")
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries after clearing all")
    expect_state(chat(sg, "green beans", headers={"X-Semgate-Namespace": "ns-b"}), "miss",
                 "after clearing all")


def test_admin_auth():
    key = "adm-" + str(os.getpid())
    mock, sg = start_cached(config={"admin_key_env": "SG_IT_ADMIN_KEY"},
                            env={"SG_IT_ADMIN_KEY": key})
    r = chat(sg, h.unique("auth prompt"))
    expect_state(r, "miss")
    eid = r.header("X-Semgate-Cache-Id")
    paths = (("GET", "/stats"), ("GET", "/cache/entries"), ("GET", "/cache/entries/" + eid),
             ("DELETE", "/cache/entries/" + eid), ("DELETE", "/cache"))
    for method, path in paths:
        for hdr in (None, {"Authorization": "Bearer wrong"}, {"Authorization": key},
                    {"Authorization": "Bearer " + key + "x"}):
            r = sg.request(method, path, headers=hdr)
            h.expect_error(r, 401, code="unauthorized")
    h.expect_eq(stats(sg, {"Authorization": "Bearer " + key})["cache"]["entries"], 1,
                "entries (nothing deleted without the key)")
    good = {"Authorization": "Bearer " + key}
    for method, path in paths:
        r = sg.request(method, path, headers=good)
        h.expect_status(r, 200)
    # the proxied endpoints do not need the admin key
    expect_state(chat(sg, h.unique("no key needed")), "miss")


def test_admin_open_without_admin_key_env():
    # No admin_key_env at all: admin endpoints are open (on loopback). An
    # admin_key_env naming an unset variable refuses to start instead
    # (test_hostile_client.py).
    mock, sg = start_cached()
    stats(sg)
    h.expect_status(sg.request("GET", "/cache/entries"), 200)


def test_hit_counts_recorded():
    mock, sg = start_cached()
    prompt = h.unique("count my hits")
    r = chat(sg, prompt)
    eid = r.header("X-Semgate-Cache-Id")
    h.expect_eq(get_entry(sg, eid)["hits"], 0, "hits of a fresh entry")
    for _ in range(3):
        expect_state(chat(sg, prompt), "hit-exact")

    def counted():
        e = get_entry(sg, eid)
        return e if e["hits"] == 3 else None
    e = h.wait_for(counted, timeout=5, what="hits to reach 3")
    h.expect(e["last_hit"] >= e["created"], "last_hit %r before created %r", e["last_hit"],
             e["created"])


# --- embedders and indexes ----------------------------------------------------------------


def openai_embedder(mock_or_url, dim=64):
    url = mock_or_url if isinstance(mock_or_url, str) else mock_or_url.url
    return {"provider": "openai", "base_url": url, "model": "emb", "dim": dim}


def test_openai_embedder_semantic_hits():
    mock = h.Mock("--quiet", "--embed-dim", "64")
    cfg = h.base_config(mock)
    cfg["cache"] = {"threshold": 0.8, "embedder": openai_embedder(mock)}
    sg = h.Semgate(cfg)
    q = "please list the planets of the solar system in order"
    para = "list the planets of the solar system in order please"
    e0 = mock.stats()["embeddings"]
    h.expect_answer(chat(sg, q), q)
    e1 = mock.stats()["embeddings"]
    h.expect(e1 > e0, "no embedding call on a miss")
    r = chat(sg, para)
    expect_state(r, "hit-semantic", "same words in another order")
    h.expect_answer(r, q)
    h.expect(float(r.header("X-Semgate-Similarity")) >= 0.8, "similarity")
    r = chat(sg, "why is the sky blue during the day")
    expect_state(r, "miss", "unrelated question")
    st = mock.stats()
    h.expect_eq(st["embeddings"], e1 + 2, "embedding calls (one per semantic lookup)")
    n = st["embeddings"]
    expect_state(chat(sg, q), "hit-exact", "exact repeat")
    h.expect_eq(mock.stats()["embeddings"], n, "embedding calls for an exact hit")
    h.expect_eq(stats(sg)["embed_errors"], 0, "embed_errors")


def test_openai_embedder_unreachable():
    mock = h.Mock("--quiet")
    cfg = h.base_config(mock)
    url = "http://127.0.0.1:%d/v1" % h.closed_port()
    cfg["cache"] = {"embedder": dict(openai_embedder(url), timeout_ms=1000)}
    sg = h.Semgate(cfg)
    for i in range(2):
        prompt = h.unique("no embedder")
        r = chat(sg, prompt)
        h.expect_answer(r, prompt)
        expect_state(r, "miss", "request %d without an embedder" % i)
    h.expect(stats(sg)["embed_errors"] >= 2, "embed_errors %r", stats(sg)["embed_errors"])
    sg.assert_alive()


def test_openai_embedder_error_status():
    mock = h.Mock("--quiet")
    emb = h.Mock("--quiet", "--fail-status", "500")
    cfg = h.base_config(mock)
    cfg["cache"] = {"embedder": openai_embedder(emb)}
    sg = h.Semgate(cfg)
    prompt = h.unique("broken embedder")
    r = chat(sg, prompt)
    h.expect_answer(r, prompt)
    expect_state(r, "miss")
    h.expect(emb.stats()["requests"] >= 1, "the embedder was not asked")
    h.expect(stats(sg)["embed_errors"] >= 1, "embed_errors did not grow")
    r = chat(sg, h.unique("broken embedder again"), stream=True)
    h.expect_status(r, 200)
    h.expect_eq(state(r), "miss", "streamed request with a broken embedder")
    sg.assert_alive()


def test_hnsw_index():
    mock, sg = start_cached(cache={"index": "hnsw", "hnsw_m": 16, "hnsw_ef_search": 32,
                                   "threshold": 0.8})
    h.expect_eq(stats(sg)["cache"]["index_type"], "hnsw", "index_type")
    for p in ("How do I bake bread?", "how to change a car tyre", "best way to learn piano"):
        expect_state(chat(sg, p), "miss", p)
    expect_state(chat(sg, FRANCE), "miss")
    r = chat(sg, FRANCE_PARAPHRASE)
    expect_state(r, "hit-semantic", "paraphrase with hnsw")
    h.expect_answer(r, FRANCE)
    h.expect_eq(stats(sg)["cache"]["index_vectors"], 4, "index_vectors")


if __name__ == "__main__":
    h.main()
