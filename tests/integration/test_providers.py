"""Provider translation end to end: a plain OpenAI chat request through
semgate to deployments whose provider is "anthropic", "gemini" or "azure".

The mock upstream speaks Anthropic's Messages API and Gemini's
generateContent in their own wire formats and validates requests about as
strictly as those providers do, so a 200 from it proves semgate's
translation was accepted. Each test checks what the client gets back
(OpenAI chat.completion, chat.completion.chunk SSE, OpenAI-shaped errors)
and, through GET /mock/stats, what reached the upstream (which endpoint,
which headers).

Error tests set max_attempts 1 on the model group so no retry hides the
status. Only the cache test enables the cache.
"""

import json
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

A = h.MODEL  # the model group clients name
B = "fallback-b"
CHAT = "/v1/chat/completions"

# The keys semgate reads from its environment (api_key_env), one per provider.
KEY_ENV = {"anthropic": "SG_PT_ANTHROPIC_KEY", "gemini": "SG_PT_GEMINI_KEY",
           "azure": "SG_PT_AZURE_KEY"}
KEYS = {"anthropic": "sk-ant-test-0123", "gemini": "AIza-test-4567", "azure": "az-test-89ab"}
ENV = {KEY_ENV[p]: KEYS[p] for p in KEY_ENV}

LOOKUP_TOOL = {"type": "function", "function": {
    "name": "lookup", "description": "Look something up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                   "required": ["q"]}}}


# --- configs ------------------------------------------------------------------------


def mock_base(mock):
    """The mock's origin, without the /v1 the OpenAI-style url carries."""
    return "http://%s:%d" % (mock.host, mock.port)


def anthropic(mock, **extra):
    d = {"provider": "anthropic", "base_url": mock_base(mock),
         "api_key_env": KEY_ENV["anthropic"], "model": "claude-x", "api_version": "2023-06-01"}
    d.update(extra)
    return d


def gemini(mock, **extra):
    d = {"provider": "gemini", "base_url": mock_base(mock), "api_key_env": KEY_ENV["gemini"],
         "model": "gemini-x"}
    d.update(extra)
    return d


def azure(target, **extra):
    """An Azure deployment on a Mock or a Recorder (both have .url ending in /v1)."""
    d = {"provider": "azure", "base_url": target.url, "api_key_env": KEY_ENV["azure"],
         "model": h.UPSTREAM_MODEL, "api_version": "2024-10-21"}
    d.update(extra)
    return d


DEPLOY = {"anthropic": anthropic, "gemini": gemini}


def group(name, deps, **extra):
    g = {"name": name, "deployments": list(deps)}
    g.update(extra)
    return g


def config(*groups, cache=None):
    return {"log_level": "warn", "cache": cache if cache is not None else {"enabled": False},
            "models": list(groups)}


def start(*groups, cache=None, env=None):
    full_env = dict(ENV)
    full_env.update(env or {})
    return h.Semgate(config(*groups, cache=cache), env=full_env)


def start_one(provider, *mock_args, env=None, **group_extra):
    """A mock and a semgate whose group A has one deployment of provider on it,
    with max_attempts 1 (no retry hides an error)."""
    mock = h.Mock("--quiet", *mock_args)
    group_extra.setdefault("max_attempts", 1)
    sg = start(group(A, [DEPLOY[provider](mock)], **group_extra), env=env)
    return mock, sg


def upstream_count(mock, provider):
    """Requests the mock got in provider's format."""
    return mock.stats()["messages" if provider == "anthropic" else "gemini"]


# --- requests and assertions ----------------------------------------------------------


def chat(sg, prompt, stream=False, **extra):
    body = prompt if isinstance(prompt, dict) else h.chat_body(prompt, stream=stream, **extra)
    return sg.post_json(CHAT, body)


def expect_completion(r, prompt):
    """A 200 OpenAI chat.completion answering prompt, finish_reason stop, with usage."""
    obj = h.expect_answer(r, prompt)
    ct = (r.header("Content-Type") or "").lower()
    h.expect(ct.startswith("application/json"), "Content-Type %r", ct)
    h.expect_eq(obj.get("object"), "chat.completion", "object")
    h.expect(isinstance(obj.get("id"), str) and obj["id"], "id missing: %r", obj)
    h.expect(isinstance(obj.get("created"), int), "created missing: %r", obj)
    h.expect(isinstance(obj.get("model"), str) and obj["model"], "model missing: %r", obj)
    h.expect_eq(len(obj["choices"]), 1, "number of choices")
    ch = obj["choices"][0]
    h.expect_eq(ch.get("index"), 0, "choices[0].index")
    h.expect_eq(ch["message"].get("role"), "assistant", "message.role")
    h.expect_eq(ch.get("finish_reason"), "stop", "finish_reason")
    expect_usage(obj.get("usage"))
    return obj


def expect_usage(u):
    h.expect(isinstance(u, dict), "usage missing: %r", u)
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        h.expect(isinstance(u.get(k), int) and u[k] > 0, "usage.%s: %r", k, u)
    h.expect_eq(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"],
                "usage.total_tokens")


def stream_objects(r):
    """The JSON events of an OpenAI stream that ended with data: [DONE]."""
    h.expect_status(r, 200)
    ct = (r.header("Content-Type") or "").lower()
    h.expect(ct.startswith("text/event-stream"), "stream Content-Type %r", ct)
    evs = r.events()
    h.expect(evs, "no SSE events in %r", r.body[:500])
    h.expect_eq(evs[-1]["data"], "[DONE]", "last event")
    h.expect(not evs[-1].get("unterminated"), "[DONE] event not terminated by a blank line")
    objs = []
    for ev in evs[:-1]:
        try:
            obj = json.loads(ev["data"])
        except ValueError:
            raise h.TestFailure("SSE data is not JSON: %r" % ev["data"][:300])
        h.expect("error" not in obj, "error event in a good stream: %r", obj)
        h.expect_eq(obj.get("object"), "chat.completion.chunk", "chunk object")
        h.expect(isinstance(obj.get("id"), str) and obj["id"], "chunk id missing: %r", obj)
        objs.append(obj)
    h.expect(objs, "no chunks before [DONE]")
    h.expect_eq(len({o["id"] for o in objs}), 1, "distinct chunk ids")
    return objs


def finish_reasons(objs):
    return [c["finish_reason"] for o in objs for c in o.get("choices") or []
            if c.get("finish_reason")]


def expect_stream(r, prompt, include_usage=False):
    """A 200 stream of chat.completion.chunk events answering prompt."""
    objs = stream_objects(r)
    h.expect_eq(h.sse_content(r.events()), "mock answer to: " + prompt, "streamed content")
    h.expect_eq(finish_reasons(objs), ["stop"], "finish_reasons in the stream")
    roles = [c["delta"]["role"] for o in objs for c in o.get("choices") or []
             if c.get("delta", {}).get("role")]
    h.expect(roles and set(roles) == {"assistant"}, "delta roles %r", roles)
    if include_usage:
        h.expect_eq(objs[-1].get("choices"), [], "choices of the usage chunk")
        expect_usage(objs[-1].get("usage"))
    return objs


def tool_body(prompt, stream=False):
    return h.chat_body(prompt, stream=stream, tools=[LOOKUP_TOOL])


def expect_tool_call(r, prompt):
    """A 200 chat.completion whose message is one call of lookup({"q": ...})."""
    h.expect_status(r, 200)
    obj = r.json()
    h.expect_eq(obj.get("object"), "chat.completion", "object")
    ch = obj["choices"][0]
    h.expect_eq(ch.get("finish_reason"), "tool_calls", "finish_reason")
    calls = ch["message"].get("tool_calls")
    h.expect(isinstance(calls, list) and len(calls) == 1, "tool_calls %r", calls)
    call = calls[0]
    h.expect(isinstance(call.get("id"), str) and call["id"], "tool call id: %r", call)
    h.expect_eq(call.get("type"), "function", "tool call type")
    h.expect_eq(call["function"].get("name"), "lookup", "function name")
    args = call["function"].get("arguments")
    h.expect(isinstance(args, str), "arguments must be a JSON string: %r", args)
    h.expect_eq(json.loads(args), {"q": prompt}, "arguments")
    content = ch["message"].get("content")
    h.expect(content in (None, ""), "content next to a tool call: %r", content)
    return call


def expect_streamed_tool_call(r, prompt):
    """A stream whose deltas assemble to one call of lookup({"q": ...})."""
    objs = stream_objects(r)
    calls = {}
    for o in objs:
        for c in o.get("choices") or []:
            for tc in c.get("delta", {}).get("tool_calls") or []:
                h.expect(isinstance(tc.get("index"), int), "tool_calls delta without index: %r", tc)
                cur = calls.setdefault(tc["index"], {"id": None, "name": None, "args": ""})
                if tc.get("id"):
                    h.expect(cur["id"] is None, "tool call id sent twice: %r", tc)
                    cur["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    h.expect(cur["name"] is None, "function name sent twice: %r", tc)
                    cur["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    cur["args"] += fn["arguments"]
    h.expect_eq(sorted(calls), [0], "tool call indexes")
    call = calls[0]
    h.expect(call["id"], "streamed tool call has no id: %r", call)
    h.expect_eq(call["name"], "lookup", "streamed function name")
    h.expect_eq(json.loads(call["args"]), {"q": prompt}, "streamed arguments")
    h.expect_eq(finish_reasons(objs), ["tool_calls"], "finish_reasons in the stream")
    return call


def expect_stream_error_event(r, prompt):
    """A stream the upstream cut: 200, maybe some content, then an error event
    and no [DONE]."""
    h.expect_status(r, 200)
    evs = r.events()
    h.expect(evs, "no events in the cut stream: %r", r.body[:500])
    h.expect(all(ev["data"] != "[DONE]" for ev in evs), "a cut stream said [DONE]: %r",
             r.body[-300:])
    last = evs[-1]
    h.expect(not last.get("unterminated"), "the error event is not terminated: %r", last)
    try:
        err = json.loads(last["data"]).get("error")
    except ValueError:
        raise h.TestFailure("last event is not JSON: %r" % last["data"][:300])
    h.expect(isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"],
             "last event is not an error event: %r", last["data"][:300])
    content = h.sse_content(evs)
    h.expect(("mock answer to: " + prompt).startswith(content),
             "content before the cut %r is not a prefix of the answer", content)
    return err


def multi_turn(prompt):
    """A conversation with a system prompt, a tool call and its result."""
    return {"model": A, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": json.dumps({"q": "paris weather"})}},
            {"id": "call_2", "type": "function",
             "function": {"name": "lookup", "arguments": json.dumps({"q": "paris time"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "14:00"},
        {"role": "assistant", "content": "Sunny, 21C at 14:00."},
        {"role": "user", "content": [{"type": "text", "text": prompt}]},
    ], "tools": [LOOKUP_TOOL], "temperature": 0.2, "max_tokens": 100}


# --- an in-process upstream that records the request line --------------------------


_recorders = []


class Recorder:
    """A minimal OpenAI-style upstream that records each request's line and
    headers (the mock does not report the query string) and answers a chat
    completion "mock answer to: <last message>"."""

    def __init__(self):
        self.requests = []  # (request line, {lower-case header: value})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((h.HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "http://%s:%d/v1" % (h.HOST, self.port)
        self.stopped = False
        _recorders.append(self)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            n = int(hdrs.get("content-length", "0"))
            while len(body) < n:
                chunk = c.recv(65536)
                if not chunk:
                    return
                body += chunk
            self.requests.append((lines[0], hdrs))
            obj = json.loads(body[:n].decode("utf-8"))
            prompt = obj["messages"][-1]["content"]
            payload = json.dumps({
                "id": "chatcmpl-rec", "object": "chat.completion", "created": 0,
                "model": obj.get("model", "rec"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": "mock answer to: " + prompt}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }).encode("utf-8")
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        except (OSError, ValueError, KeyError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass


def _cleanup_with_recorders(_orig=h.cleanup_all):
    while _recorders:
        _recorders.pop().stop()
    _orig()


# The harness's runner calls cleanup_all after every test: stop our recorders too.
h.cleanup_all = _cleanup_with_recorders


# --- plain answers ----------------------------------------------------------------------


def test_anthropic_chat():
    mock, sg = start_one("anthropic")
    p = h.unique("hello anthropic")
    expect_completion(chat(sg, p), p)
    st = mock.stats()
    h.expect_eq((st["messages"], st["chat"], st["gemini"]), (1, 0, 0),
                "(messages, chat, gemini) requests on the mock")
    h.expect_eq(st["last_model"], "claude-x", "model sent to anthropic")


def test_gemini_chat():
    mock, sg = start_one("gemini")
    p = h.unique("hello gemini")
    expect_completion(chat(sg, p), p)
    st = mock.stats()
    h.expect_eq((st["gemini"], st["chat"], st["messages"]), (1, 0, 0),
                "(gemini, chat, messages) requests on the mock")
    h.expect_eq(st["last_model"], "gemini-x", "model in the gemini URL")


def test_anthropic_stream():
    mock, sg = start_one("anthropic", "--stream-chunks", "5")
    p = h.unique("stream anthropic")
    expect_stream(chat(sg, p, stream=True), p)
    p = h.unique("stream anthropic with usage")
    expect_stream(chat(sg, p, stream=True, stream_options={"include_usage": True}), p,
                  include_usage=True)
    st = mock.stats()
    h.expect_eq((st["messages"], st["streams_completed"]), (2, 2),
                "(messages, streams_completed) on the mock")


def test_gemini_stream():
    mock, sg = start_one("gemini", "--stream-chunks", "5")
    p = h.unique("stream gemini")
    expect_stream(chat(sg, p, stream=True), p)
    p = h.unique("stream gemini with usage")
    expect_stream(chat(sg, p, stream=True, stream_options={"include_usage": True}), p,
                  include_usage=True)
    st = mock.stats()
    h.expect_eq((st["gemini"], st["streams_completed"]), (2, 2),
                "(gemini, streams_completed) on the mock")


# --- tool calls -------------------------------------------------------------------------


def test_anthropic_tool_call():
    mock, sg = start_one("anthropic")
    p = h.unique("weather? [[tool=lookup]]")
    expect_tool_call(sg.post_json(CHAT, tool_body(p)), p)


def test_gemini_tool_call():
    mock, sg = start_one("gemini")
    p = h.unique("weather? [[tool=lookup]]")
    expect_tool_call(sg.post_json(CHAT, tool_body(p)), p)


def test_anthropic_tool_call_stream():
    mock, sg = start_one("anthropic", "--stream-chunks", "4")
    p = h.unique("weather? [[tool=lookup]]")
    expect_streamed_tool_call(sg.post_json(CHAT, tool_body(p, stream=True)), p)


def test_gemini_tool_call_stream():
    mock, sg = start_one("gemini", "--stream-chunks", "4")
    p = h.unique("weather? [[tool=lookup]]")
    expect_streamed_tool_call(sg.post_json(CHAT, tool_body(p, stream=True)), p)


# --- errors -----------------------------------------------------------------------------


def test_anthropic_error_statuses():
    mock, sg = start_one("anthropic")
    for marker, status in ((429, 429), (500, 500), (529, 503)):
        for stream in (False, True):
            r = chat(sg, h.unique("fail [[status=%d]]" % marker), stream=stream)
            h.expect_error(r, status, message_contains="mock injected %d" % marker)
    h.expect_eq(mock.stats()["messages"], 6, "anthropic requests (no retries)")
    sg.assert_alive()


def test_gemini_error_statuses():
    mock, sg = start_one("gemini")
    for status in (429, 500, 503):
        for stream in (False, True):
            r = chat(sg, h.unique("fail [[status=%d]]" % status), stream=stream)
            h.expect_error(r, status, message_contains="mock injected %d" % status)
    h.expect_eq(mock.stats()["gemini"], 6, "gemini requests (no retries)")
    sg.assert_alive()


def test_error_types_are_openai_types():
    # A 429 is a rate_limit_error and a 500 a server_error, whichever provider said it.
    for provider in ("anthropic", "gemini"):
        mock, sg = start_one(provider)
        r = chat(sg, h.unique("fail [[status=429]]"))
        h.expect_error(r, 429, type_="rate_limit_error")
        r = chat(sg, h.unique("fail [[status=500]]"))
        h.expect_error(r, 500, type_="server_error")
        sg.stop()
        mock.stop()


def test_anthropic_stream_cut_ends_with_error_event():
    mock, sg = start_one("anthropic", "--stream-chunks", "6")
    p = h.unique("cut me [[cut=2]]")
    with sg.connect() as c:
        c.send(h.build_request("POST", CHAT, body=h.chat_body(p, stream=True)))
        r = c.read_partial()
    expect_stream_error_event(r, p)
    h.expect_eq(mock.stats()["streams_cut"], 1, "streams the mock cut")
    sg.assert_alive()


def test_gemini_stream_cut_ends_with_error_event():
    mock, sg = start_one("gemini", "--stream-chunks", "6")
    p = h.unique("cut me [[cut=2]]")
    with sg.connect() as c:
        c.send(h.build_request("POST", CHAT, body=h.chat_body(p, stream=True)))
        r = c.read_partial()
    expect_stream_error_event(r, p)
    h.expect_eq(mock.stats()["streams_cut"], 1, "streams the mock cut")
    sg.assert_alive()


# --- keys and headers -------------------------------------------------------------------


def test_anthropic_key_and_version_headers():
    mock, sg = start_one("anthropic", "--require-key", KEYS["anthropic"])
    p = h.unique("keyed anthropic")
    expect_completion(chat(sg, p), p)
    hdrs = {k.lower(): v for k, v in mock.stats()["last_headers"].items()}
    h.expect_eq(hdrs.get("x-api-key"), KEYS["anthropic"], "x-api-key")
    h.expect_eq(hdrs.get("anthropic-version"), "2023-06-01", "anthropic-version")
    h.expect("authorization" not in hdrs, "Authorization sent to anthropic: %r",
             hdrs.get("authorization"))
    h.expect("x-goog-api-key" not in hdrs, "x-goog-api-key sent to anthropic")


def test_gemini_key_header():
    mock, sg = start_one("gemini", "--require-key", KEYS["gemini"])
    p = h.unique("keyed gemini")
    expect_completion(chat(sg, p), p)
    p = h.unique("keyed gemini stream")
    expect_stream(chat(sg, p, stream=True), p)
    hdrs = {k.lower(): v for k, v in mock.stats()["last_headers"].items()}
    h.expect_eq(hdrs.get("x-goog-api-key"), KEYS["gemini"], "x-goog-api-key")
    h.expect("authorization" not in hdrs, "Authorization sent to gemini: %r",
             hdrs.get("authorization"))
    h.expect("x-api-key" not in hdrs, "x-api-key sent to gemini")


def test_wrong_or_missing_key_fails():
    for provider in ("anthropic", "gemini"):
        for env in ({KEY_ENV[provider]: "wrong-key"}, {KEY_ENV[provider]: None}):
            mock, sg = start_one(provider, "--require-key", KEYS[provider], env=env)
            r = chat(sg, h.unique("bad key"))
            what = "%s with %s=%r" % (provider, KEY_ENV[provider], env[KEY_ENV[provider]])
            h.expect(r.status in (400, 401, 403), "%s: status %d, want 400/401/403; body %r",
                     what, r.status, r.body[:300])
            h.expect_error(r, r.status)
            h.expect_eq(upstream_count(mock, provider), 1, what + ": requests on the mock")
            sg.stop()
            mock.stop()


def test_azure_api_key_header():
    mock = h.Mock("--quiet")
    sg = start(group(A, [azure(mock)], max_attempts=1))
    p = h.unique("hello azure")
    expect_completion(chat(sg, p), p)
    p = h.unique("stream azure")
    expect_stream(chat(sg, p, stream=True), p)
    st = mock.stats()
    h.expect_eq(st["chat"], 2, "OpenAI-format chat requests on the mock")
    hdrs = {k.lower(): v for k, v in st["last_headers"].items()}
    h.expect_eq(hdrs.get("api-key"), KEYS["azure"], "api-key header")
    h.expect("authorization" not in hdrs, "Authorization sent to azure: %r",
             hdrs.get("authorization"))


def test_azure_api_version_query():
    rec = Recorder()
    sg = start(group(A, [azure(rec)], max_attempts=1))
    p = h.unique("azure query")
    h.expect_answer(chat(sg, p), p)
    h.expect_eq(len(rec.requests), 1, "requests on the recorder")
    line, hdrs = rec.requests[0]
    h.expect_eq(line, "POST /v1/chat/completions?api-version=2024-10-21 HTTP/1.1",
                "request line")
    h.expect_eq(hdrs.get("api-key"), KEYS["azure"], "api-key header")
    h.expect("authorization" not in hdrs, "Authorization sent to azure")


# --- translation of richer requests -----------------------------------------------------


def test_anthropic_system_and_tool_results_translate():
    mock, sg = start_one("anthropic")
    p = h.unique("and tomorrow?")
    expect_completion(sg.post_json(CHAT, multi_turn(p)), p)
    h.expect_eq(mock.stats()["messages"], 1, "anthropic requests")
    # Two system messages, and a conversation that ends with a tool result.
    body = multi_turn(p)
    body["messages"].insert(1, {"role": "system", "content": "Answer in English."})
    del body["messages"][-2:]
    r = sg.post_json(CHAT, body)
    h.expect_status(r, 200)
    h.expect(r.json()["choices"][0]["message"]["content"].startswith("mock answer to: "),
             "reply to a conversation ending in tool results: %r", r.body[:300])
    # Streamed, too.
    expect_stream(sg.post_json(CHAT, dict(multi_turn(p), stream=True)), p)


def test_gemini_system_and_tool_results_translate():
    mock, sg = start_one("gemini")
    p = h.unique("and tomorrow?")
    expect_completion(sg.post_json(CHAT, multi_turn(p)), p)
    h.expect_eq(mock.stats()["gemini"], 1, "gemini requests")
    body = multi_turn(p)
    body["messages"].insert(1, {"role": "system", "content": "Answer in English."})
    del body["messages"][-2:]
    r = sg.post_json(CHAT, body)
    h.expect_status(r, 200)
    h.expect(r.json()["choices"][0]["message"]["content"].startswith("mock answer to: "),
             "reply to a conversation ending in tool results: %r", r.body[:300])
    expect_stream(sg.post_json(CHAT, dict(multi_turn(p), stream=True)), p)


def test_unsupported_for_provider():
    mock, sg = start_one("anthropic")
    r = chat(sg, h.unique("two please"), n=2)
    h.expect_error(r, 400, code="unsupported_for_provider", type_="invalid_request_error")
    r = chat(sg, h.unique("two please"), n=2, stream=True)
    h.expect_error(r, 400, code="unsupported_for_provider")
    h.expect_eq(mock.stats()["messages"], 0, "anthropic requests for n=2")
    sg.stop()
    mock.stop()

    mock, sg = start_one("gemini")
    body = h.chat_body(h.unique("custom tool"),
                       tools=[{"type": "custom", "custom": {"name": "grep"}}])
    h.expect_error(sg.post_json(CHAT, body), 400, code="unsupported_for_provider")
    h.expect_eq(mock.stats()["gemini"], 0, "gemini requests for a custom tool")
    sg.assert_alive()


# --- the cache and routing on top of providers ------------------------------------------


def test_cache_on_top_of_anthropic():
    mock = h.Mock("--quiet", "--stream-chunks", "4")
    sg = start(group(A, [anthropic(mock)], max_attempts=1), cache={})
    p = h.unique("cache me")
    r = chat(sg, p)
    expect_completion(r, p)
    h.expect_eq(r.header("X-Semgate-Cache"), "miss", "first request")
    r = chat(sg, p)
    expect_completion(r, p)
    h.expect_eq(r.header("X-Semgate-Cache"), "hit-exact", "identical request")
    h.expect_eq(mock.stats()["messages"], 1, "anthropic requests after a hit")
    # The stored JSON replays as a stream.
    r = chat(sg, p, stream=True)
    h.expect_eq(r.header("X-Semgate-Cache"), "hit-exact", "stream of a stored answer")
    expect_stream(r, p)
    # A streamed miss is stored and replays as a stream.
    q = h.unique("cache my stream")
    r = chat(sg, q, stream=True)
    h.expect_eq(r.header("X-Semgate-Cache"), "miss", "streamed miss")
    expect_stream(r, q)

    def stored():
        r = chat(sg, q, stream=True)
        return r if r.header("X-Semgate-Cache") == "hit-exact" else None
    r = h.wait_for(stored, timeout=5, what="the streamed answer to be stored")
    expect_stream(r, q)
    h.expect_eq(mock.stats()["messages"], 2, "anthropic requests after the stream hits")


def test_fallback_across_providers():
    bad = h.Mock("--quiet", "--fail-status", "503")
    good = h.Mock("--quiet", "--stream-chunks", "3")
    sg = start(group(A, [anthropic(bad, priority=0), gemini(good, priority=1)]))
    p = h.unique("fall over")
    r = chat(sg, p)
    expect_completion(r, p)
    h.expect_eq(r.header("X-Semgate-Upstream"), A + "/1", "X-Semgate-Upstream")
    h.expect_eq(r.header("X-Semgate-Attempts"), "2", "X-Semgate-Attempts")
    p = h.unique("fall over streamed")
    r = chat(sg, p, stream=True)
    expect_stream(r, p)
    h.expect_eq(r.header("X-Semgate-Upstream"), A + "/1", "X-Semgate-Upstream (stream)")
    h.expect(bad.stats()["messages"] >= 1, "the anthropic deployment was not tried")
    h.expect_eq(good.stats()["gemini"], 2, "gemini requests")


def test_fallback_model_on_another_provider():
    bad = h.Mock("--quiet", "--fail-status", "500")
    good = h.Mock("--quiet")
    sg = start(group(A, [gemini(bad)], max_attempts=2, fallbacks=[B]),
               group(B, [anthropic(good)]))
    p = h.unique("fall back to b")
    r = chat(sg, p)
    expect_completion(r, p)
    h.expect_eq(r.header("X-Semgate-Upstream"), B + "/0", "X-Semgate-Upstream")
    h.expect_eq(r.header("X-Semgate-Fallback"), B, "X-Semgate-Fallback")
    h.expect_eq((bad.stats()["gemini"], good.stats()["messages"]), (1, 1),
                "(gemini, anthropic) requests")


if __name__ == "__main__":
    h.main()
