"""Routing and resilience: strategies, priorities, rate limits, failover
across deployments and fallback models, retries with backoff and
Retry-After, context-window fallbacks, circuit breaking with cooldown and a
single probe, streaming failover, and that no request is lost or answered
twice while a deployment fails.

Several mocks play the deployments: one started with --fail-status, one
healthy, one killed mid-test, one slow. Where a deployment must fail on one
request and not on the next (Retry-After, the circuit's probe, resets of one
deployment only), a small in-process upstream (FakeUpstream) plays it.

Nothing here asserts an upper bound on time: a backoff or Retry-After is
checked by a lower bound on the elapsed time only.
"""

import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

A = h.MODEL  # the model group clients name
B = "fallback-b"
C = "fallback-c"


# --- configs ------------------------------------------------------------------------


def dep(target, **extra):
    """A deployment on target: a Mock, a FakeUpstream, or a base URL."""
    url = target if isinstance(target, str) else target.url
    d = {"provider": "openai", "base_url": url, "model": h.UPSTREAM_MODEL}
    d.update(extra)
    return d


def dead_url():
    return "http://127.0.0.1:%d/v1" % h.closed_port()


def group(name, deps, **extra):
    g = {"name": name, "deployments": list(deps)}
    g.update(extra)
    return g


def config(*groups):
    return {"log_level": "warn", "cache": {"enabled": False}, "models": list(groups)}


def start(*groups):
    return h.Semgate(config(*groups))


# --- requests -----------------------------------------------------------------------


def chat(sg, prompt, model=A, stream=False, timeout=h.IO_TIMEOUT_S):
    return sg.post_json("/v1/chat/completions", h.chat_body(prompt, model=model, stream=stream),
                        timeout=timeout)


def ask(sg, model=A, timeout=h.IO_TIMEOUT_S):
    """One unique chat request that must be answered 200 by a mock; returns the Response."""
    p = h.unique()
    r = chat(sg, p, model=model, timeout=timeout)
    h.expect_answer(r, p)
    return r


def upstream_of(r):
    return r.header("X-Semgate-Upstream")


def attempts_of(r):
    v = r.header("X-Semgate-Attempts")
    h.expect(v is not None, "X-Semgate-Attempts missing; headers %r", r.headers.pairs)
    try:
        return int(v)
    except ValueError:
        raise h.TestFailure("X-Semgate-Attempts %r is not a number" % v)


def expect_routed(r, upstream, attempts, fallback=None):
    h.expect_eq(upstream_of(r), upstream, "X-Semgate-Upstream")
    h.expect_eq(attempts_of(r), attempts, "X-Semgate-Attempts")
    h.expect_eq(r.header("X-Semgate-Fallback"), fallback, "X-Semgate-Fallback")


def chats(target):
    """Chat requests a Mock or FakeUpstream has seen."""
    if isinstance(target, FakeUpstream):
        return target.count()
    return target.stats()["chat"]


def stats(sg):
    r = sg.request("GET", "/stats")
    h.expect_status(r, 200)
    return r.json()


def dep_stats(sg, dep_id):
    deps = stats(sg).get("deployments")
    h.expect(isinstance(deps, dict), "/stats has no \"deployments\" object")
    h.expect(dep_id in deps, "/stats deployments has no %r: %r", dep_id, sorted(deps))
    return deps[dep_id]


def concurrently(fns, timeout=60):
    """Run every fn at once, each in its own thread; returns their results in
    order (an exception a fn raised is returned in its place)."""
    results = [None] * len(fns)
    start_gate = threading.Event()

    def run(i, fn):
        start_gate.wait()
        try:
            results[i] = fn()
        except BaseException as e:  # reported by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, fn), daemon=True)
               for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    start_gate.set()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
        h.expect(not t.is_alive(), "a concurrent request did not finish within %d s", timeout)
    return results


# --- an in-process upstream whose behaviour changes per request -----------------------


_fakes = []


class FakeUpstream:
    """A minimal OpenAI-style upstream on a free port. behave(n, body) decides
    the reply to the n-th chat request (n from 0; body is the parsed JSON):
      "ok"                         a chat completion "mock answer to: <prompt>"
      ("ok", delay_ms)             the same, after a delay
      ("status", code, obj, hdrs)  an error status with a JSON body and headers
      "reset"                      the connection reset, nothing sent
      "truncate"                   half a reply (Content-Length not reached), then close
    behave may be swapped at any time (fake.behave = ...). times holds each
    request's arrival time (time.monotonic()). Stopped after each test."""

    def __init__(self, behave="ok"):
        self.behave = behave
        self.times = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((h.HOST, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "http://%s:%d/v1" % (h.HOST, self.port)
        self.conns = []
        self.stopped = False
        _fakes.append(self)
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.times)

    def stop(self):
        self.stopped = True
        for s in [self.sock] + self.conns:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_request(c, buf):
        while b"\r\n\r\n" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                return None, buf
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(buf) < length:
            chunk = c.recv(65536)
            if not chunk:
                return None, buf
            buf += chunk
        return (head, buf[:length]), buf[length:]

    def _serve(self, c):
        buf = b""
        try:
            while not self.stopped:
                req, buf = self._read_request(c, buf)
                if req is None:
                    return
                head, body = req
                try:
                    obj = json.loads(body.decode("utf-8")) if body else {}
                except ValueError:
                    obj = {}
                with self.lock:
                    n = len(self.times)
                    self.times.append(time.monotonic())
                action = self.behave(n, obj) if callable(self.behave) else self.behave
                if not self._reply(c, obj, action):
                    return
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _reply(self, c, obj, action):
        """Send the reply for action; False when the connection is done."""
        kind = action[0] if isinstance(action, tuple) else action
        if kind == "reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return False
        if kind == "status":
            _, status, err, hdrs = action
            payload = json.dumps(err).encode("utf-8")
            extra = "".join("%s: %s\r\n" % kv for kv in (hdrs or {}).items())
            c.sendall(("HTTP/1.1 %d Error\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n%s\r\n" % (status, len(payload), extra))
                      .encode("latin-1") + payload)
            return True
        if kind == "ok" and isinstance(action, tuple):
            time.sleep(action[1] / 1000.0)
        msgs = obj.get("messages") or [{}]
        prompt = msgs[-1].get("content", "") if isinstance(msgs[-1], dict) else ""
        payload = json.dumps({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
            "model": obj.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "mock answer to: " + prompt}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }).encode("utf-8")
        head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % len(payload)).encode("latin-1")
        if kind == "truncate":
            c.sendall(head + payload[:len(payload) // 2])
            c.close()
            return False
        c.sendall(head + payload)
        return True


def _cleanup_with_fakes(_orig=h.cleanup_all):
    while _fakes:
        _fakes.pop().stop()
    _orig()


# The harness's runner calls cleanup_all after every test: stop our fakes too.
h.cleanup_all = _cleanup_with_fakes


def error_status(code, message=None, err_code=None):
    return ("status", code, {"error": {"message": message or "fake %d" % code,
                                       "type": "server_error", "code": err_code}}, None)


CONTEXT_ERROR = ("status", 400, {"error": {
    "message": "This model's maximum context length is 8192 tokens. However, your messages "
               "resulted in 9000 tokens.",
    "type": "invalid_request_error", "param": "messages",
    "code": "context_length_exceeded"}}, None)


# --- config validation --------------------------------------------------------------


def check(cfg):
    tmp = h.make_temp_dir()
    path = os.path.join(tmp, "c.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    rc, out, err = h.run_semgate(["--check", path], cwd=tmp)
    lines = [ln.strip() for ln in (out + "\n" + err).splitlines() if ln.strip()]
    return rc, out, lines


def expect_check_error(cfg, path, contains=None):
    rc, out, lines = check(cfg)
    h.expect(rc == 1, "--check exit %r, want 1; output:\n%s", rc, "\n".join(lines))
    hits = [ln for ln in lines if ln.startswith(path + ":")]
    h.expect(hits, "no error line starting with %r; output:\n%s", path + ":", "\n".join(lines))
    if contains:
        h.expect(any(contains in ln for ln in hits), "no %r in %r", contains, hits)


def test_check_valid_routing_config():
    url = dead_url()
    cfg = config(
        group(A, [dep(url, weight=3, priority=0, rpm=100, tpm=100000,
                      input_per_mtok=0.15, output_per_mtok=0.6),
                  dep(url, provider="azure", api_version="2024-06-01", weight=1, priority=1),
                  dep(url, provider="anthropic", api_version="2023-06-01"),
                  dep(url, provider="gemini")],
              strategy="least-busy", fallbacks=[B, C], context_fallbacks=[C], max_attempts=4,
              budget_ms=60000, backoff_ms=50, max_backoff_ms=2000, circuit_failures=3,
              circuit_window_s=10, cooldown_s=5, input_per_mtok=1, output_per_mtok=2),
        group(B, [dep(url)], strategy="cost"),
        group(C, [dep(url)]))
    for s in ("weighted", "round-robin", "least-busy", "latency", "cost", "usage"):
        cfg["models"][1]["strategy"] = s
        rc, out, lines = check(cfg)
        h.expect(rc == 0 and "configuration OK" in out,
                 "strategy %s: --check exit %r; output:\n%s", s, rc, "\n".join(lines))


def test_check_unknown_fallback():
    url = dead_url()
    cfg = config(group(A, [dep(url)], fallbacks=[B, "nope"]), group(B, [dep(url)]))
    expect_check_error(cfg, "models[0].fallbacks[1]", 'no model named "nope"')


def test_check_unknown_context_fallback():
    url = dead_url()
    cfg = config(group(A, [dep(url)]), group(B, [dep(url)], context_fallbacks=["missing"]))
    expect_check_error(cfg, "models[1].context_fallbacks[0]", "missing")


def test_check_self_fallback():
    url = dead_url()
    cfg = config(group(A, [dep(url)], fallbacks=[A]))
    expect_check_error(cfg, "models[0].fallbacks[0]")


def test_check_bad_strategy_and_ranges():
    url = dead_url()
    expect_check_error(config(group(A, [dep(url)], strategy="fastest")), "models[0].strategy")
    expect_check_error(config(group(A, [dep(url)], max_attempts=0)), "models[0].max_attempts")
    expect_check_error(config(group(A, [dep(url)], fallbacks="b")), "models[0].fallbacks")
    expect_check_error(config(group(A, [dep(url, weight=-1)])),
                       "models[0].deployments[0].weight")
    expect_check_error(config(group(A, [dep(url, rpm=-5)])), "models[0].deployments[0].rpm")
    expect_check_error(config(group(A, [dep(url, provider="bedrock")])),
                       "models[0].deployments[0].provider")


# --- response headers and priorities --------------------------------------------------


def test_routing_headers_single_deployment():
    mock = h.Mock("--quiet")
    sg = start(group(A, [dep(mock)]))
    r = ask(sg)
    expect_routed(r, A + "/0", 1)


def test_priority_lower_first():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(m0, priority=1), dep(m1, priority=0)]))
    for _ in range(10):
        expect_routed(ask(sg), A + "/1", 1)
    h.expect_eq((chats(m0), chats(m1)), (0, 10), "chats on (priority 1, priority 0)")


# --- failover within a group and to fallback models -----------------------------------


def test_failover_to_next_deployment():
    bad, good = h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet")
    sg = start(group(A, [dep(bad, priority=0), dep(good, priority=1)]))
    r = ask(sg)
    expect_routed(r, A + "/1", 2)
    h.expect_eq((chats(bad), chats(good)), (1, 1), "chats on (failing, healthy)")


def test_failover_from_unreachable_deployment():
    good = h.Mock("--quiet")
    sg = start(group(A, [dep(dead_url(), priority=0, connect_timeout_ms=2000),
                         dep(good, priority=1)]))
    expect_routed(ask(sg), A + "/1", 2)


def test_failover_from_timeout():
    slow, good = h.Mock("--quiet", "--latency-ms", "5000"), h.Mock("--quiet")
    sg = start(group(A, [dep(slow, priority=0, timeout_ms=300), dep(good, priority=1)]))
    expect_routed(ask(sg), A + "/1", 2)
    h.expect_eq(chats(slow), 1, "requests that reached the slow deployment")


def test_failover_from_reset_and_truncation():
    for action in ("reset", "truncate"):
        fake, good = FakeUpstream(action), h.Mock("--quiet")
        sg = start(group(A, [dep(fake, priority=0), dep(good, priority=1)]))
        r = ask(sg)
        h.expect_eq(upstream_of(r), A + "/1", "X-Semgate-Upstream after a %s" % action)
        h.expect_eq(attempts_of(r), 2, "X-Semgate-Attempts after a %s" % action)
        h.expect_eq(fake.count(), 1, "requests the %s deployment got" % action)
        sg.stop()


def test_failover_on_every_retryable_status():
    for status in (429, 500, 502, 503, 504, 408, 401, 403):
        bad, good = h.Mock("--quiet", "--fail-status", status), h.Mock("--quiet")
        sg = start(group(A, [dep(bad, priority=0), dep(good, priority=1)]))
        r = chat(sg, h.unique())
        h.expect(r.status == 200, "status %d was not failed over: got %d %r",
                 status, r.status, r.body[:300])
        h.expect_eq(upstream_of(r), A + "/1", "X-Semgate-Upstream after a %d" % status)
        h.expect_eq(attempts_of(r), 2, "X-Semgate-Attempts after a %d" % status)
        sg.stop()
        bad.stop()
        good.stop()


def test_client_errors_not_retried():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    fb = h.Mock("--quiet")
    sg = start(group(A, [dep(m0, priority=0), dep(m1, priority=1)], fallbacks=[B]),
               group(B, [dep(fb)]))
    for status in (400, 404, 422):
        p = h.unique("[[status=%d]]" % status)
        want = h.request(m0.host, m0.port, "POST", "/v1/chat/completions",
                         body=h.chat_body(p, model=h.UPSTREAM_MODEL))
        m0.reset()
        r = chat(sg, p)
        h.expect_error(r, status, upstream=True)
        h.expect_eq(r.json(), want.json(), "body of the %d passed through" % status)
        h.expect_eq(attempts_of(r), 1, "X-Semgate-Attempts for a %d" % status)
        h.expect_eq((chats(m0), chats(m1), chats(fb)), (1, 0, 0),
                    "chats (dep 0, dep 1, fallback) for a %d" % status)
        m0.reset()


def test_fallback_models_in_order():
    a, b, c = (h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet", "--fail-status", "500"),
               h.Mock("--quiet"))
    sg = start(group(A, [dep(a)], fallbacks=[B, C], max_attempts=3),
               group(B, [dep(b, model="model-b")]),
               group(C, [dep(c, model="model-c")]))
    r = ask(sg)
    expect_routed(r, C + "/0", 3, fallback=C)
    h.expect_eq((chats(a), chats(b), chats(c)), (1, 1, 1), "chats on (A, B, C)")
    h.expect_eq(b.stats()["last_model"], "model-b", "model sent to fallback B")
    h.expect_eq(c.stats()["last_model"], "model-c", "model sent to fallback C")


def test_fallback_after_group_exhausted():
    a0, a1 = h.Mock("--quiet", "--fail-status", "502"), h.Mock("--quiet", "--fail-status", "429")
    b = h.Mock("--quiet")
    sg = start(group(A, [dep(a0), dep(a1)], fallbacks=[B], max_attempts=3),
               group(B, [dep(b)]))
    r = ask(sg)
    expect_routed(r, B + "/0", 3, fallback=B)
    h.expect_eq((chats(a0), chats(a1), chats(b)), (1, 1, 1), "chats on (A/0, A/1, B)")


def test_no_fallback_header_when_group_answers():
    a, b = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(a)], fallbacks=[B]), group(B, [dep(b)]))
    expect_routed(ask(sg), A + "/0", 1)
    h.expect_eq(chats(b), 0, "chats on the fallback")
    # The fallback model can still be asked directly, and is then no fallback.
    expect_routed(ask(sg, model=B), B + "/0", 1)


def test_context_fallback():
    small, big = FakeUpstream(CONTEXT_ERROR), h.Mock("--quiet")
    other = h.Mock("--quiet")
    sg = start(group(A, [dep(small)], fallbacks=[B], context_fallbacks=[C]),
               group(B, [dep(other)]),
               group(C, [dep(big, model="big-model")]))
    r = ask(sg)
    h.expect_eq(upstream_of(r), C + "/0", "X-Semgate-Upstream")
    h.expect_eq(r.header("X-Semgate-Fallback"), C, "X-Semgate-Fallback")
    h.expect_eq(big.stats()["last_model"], "big-model", "model sent to the context fallback")
    h.expect_eq(chats(other), 0, "chats on the ordinary fallback")


def test_context_error_without_context_fallbacks_passes_through():
    small, other = FakeUpstream(CONTEXT_ERROR), h.Mock("--quiet")
    sg = start(group(A, [dep(small)], fallbacks=[B]), group(B, [dep(other)]))
    r = chat(sg, h.unique())
    err = h.expect_error(r, 400, upstream=True)
    h.expect_eq(err.get("code"), "context_length_exceeded", "error.code passed through")
    h.expect_eq(attempts_of(r), 1, "X-Semgate-Attempts")
    h.expect_eq((small.count(), chats(other)), (1, 0), "chats on (A, ordinary fallback)")


# --- giving up, backoff, Retry-After, budget ----------------------------------------------


def test_all_failing_uses_max_attempts_with_backoff():
    b0, b1 = h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet", "--fail-status", "503")
    sg = start(group(A, [dep(b0), dep(b1)], max_attempts=5, backoff_ms=200,
                     max_backoff_ms=10000, circuit_failures=1000))
    p = h.unique()
    want = h.request(b0.host, b0.port, "POST", "/v1/chat/completions",
                     body=h.chat_body(p, model=h.UPSTREAM_MODEL))
    b0.reset()
    t0 = time.monotonic()
    r = chat(sg, p, timeout=60)
    elapsed_ms = (time.monotonic() - t0) * 1000
    h.expect_error(r, 503, upstream=True)
    h.expect_eq(r.json(), want.json(), "the last failure's body")
    h.expect_eq(attempts_of(r), 5, "X-Semgate-Attempts")
    h.expect_eq(chats(b0) + chats(b1), 5, "chats on both deployments")
    # Rounds of 2, 2, 1 attempts: two waits, of 200 then 400 ms, each at least halved by jitter.
    h.expect(elapsed_ms >= 300, "5 attempts over 3 rounds took only %.0f ms", elapsed_ms)


def test_give_up_unreachable_is_502():
    sg = start(group(A, [dep(dead_url(), connect_timeout_ms=2000),
                         dep(dead_url(), connect_timeout_ms=2000)],
                     max_attempts=3, backoff_ms=10, circuit_failures=1000))
    r = chat(sg, h.unique())
    h.expect_error(r, 502, code="upstream_unreachable")
    deps = stats(sg)["deployments"]
    h.expect_eq(deps[A + "/0"]["requests"] + deps[A + "/1"]["requests"], 3,
                "attempts counted in /stats")
    # Like on a passed-through upstream error, the header tells how many attempts were made.
    h.expect_eq(attempts_of(r), 3, "X-Semgate-Attempts")


def test_give_up_timeout_is_504():
    slow = h.Mock("--quiet", "--latency-ms", "5000")
    sg = start(group(A, [dep(slow, timeout_ms=300)], max_attempts=2, backoff_ms=10,
                     circuit_failures=1000))
    r = chat(sg, h.unique(), timeout=60)
    h.expect_error(r, 504, code="upstream_timeout")
    h.expect_eq(chats(slow), 2, "requests that reached the slow deployment")
    h.expect_eq(attempts_of(r), 2, "X-Semgate-Attempts")


def test_retry_after_honoured_then_success():
    fake = FakeUpstream(lambda n, body: ("status", 429, {"error": {
        "message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}},
        {"Retry-After": "1"}) if n == 0 else "ok")
    sg = start(group(A, [dep(fake)], max_attempts=2, backoff_ms=10, circuit_failures=1000))
    t0 = time.monotonic()
    r = ask(sg, timeout=60)
    elapsed = time.monotonic() - t0
    h.expect_eq(attempts_of(r), 2, "X-Semgate-Attempts")
    h.expect_eq(fake.count(), 2, "requests the deployment got")
    gap = fake.times[1] - fake.times[0]
    h.expect(gap >= 0.95, "second attempt came %.3f s after the 429 (Retry-After: 1)", gap)
    h.expect(elapsed >= 0.95, "answered after %.3f s despite Retry-After: 1", elapsed)


def test_retry_after_marker_on_only_deployment():
    mock = h.Mock("--quiet")
    sg = start(group(A, [dep(mock)], max_attempts=2, backoff_ms=10, circuit_failures=1000))
    t0 = time.monotonic()
    r = chat(sg, h.unique("[[status=429]] [[retry-after=1]]"), timeout=60)
    elapsed = time.monotonic() - t0
    h.expect_error(r, 429, upstream=True)
    h.expect_eq(attempts_of(r), 2, "X-Semgate-Attempts")
    h.expect_eq(chats(mock), 2, "requests the deployment got")
    h.expect(elapsed >= 0.95, "2 attempts took %.3f s despite Retry-After: 1", elapsed)


def test_budget_stops_retries():
    bad = h.Mock("--quiet", "--fail-status", "500")
    sg = start(group(A, [dep(bad)], max_attempts=5, budget_ms=1000, backoff_ms=8000,
                     max_backoff_ms=8000, circuit_failures=1000))
    r = chat(sg, h.unique(), timeout=60)
    h.expect_error(r, 500, upstream=True)
    n = attempts_of(r)
    h.expect(n < 5, "a backoff of >= 4 s within budget_ms 1000 still made %d attempts", n)
    h.expect_eq(chats(bad), n, "requests the deployment got")


# --- circuit breaking -------------------------------------------------------------------


def cool_down(sg, dep_id, tries=20):
    """Send requests until /stats shows dep_id cooling; each must be answered."""
    for _ in range(tries):
        ask(sg)
        if dep_stats(sg, dep_id)["state"] == "cooling":
            return
    raise h.TestFailure("%s never went cooling; /stats: %r" % (dep_id, stats(sg)))


def test_stats_deployments_shape():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet", "--fail-status", "500")
    sg = start(group(A, [dep(m0, priority=0), dep(m1, priority=1)]),
               group(B, [dep(m0)]))
    deps = stats(sg)["deployments"]
    h.expect_eq(sorted(deps), sorted([A + "/0", A + "/1", B + "/0"]), "deployment ids")
    for d in deps.values():
        for k in ("state", "requests", "errors", "in_flight", "latency_ms_ewma",
                  "latency_ms_mean", "rpm_used", "tpm_used", "cooldown_remaining_ms"):
            h.expect(k in d, "deployment stats lack %r: %r", k, d)
        h.expect_eq(d["state"], "healthy", "state at start")
    for _ in range(3):
        ask(sg)
    r = chat(sg, h.unique("[[status=500]]"))
    h.expect_status(r, 500)
    d0 = dep_stats(sg, A + "/0")
    h.expect(d0["requests"] >= 4 and d0["errors"] >= 1, "A/0 stats after 3 ok + a 500: %r", d0)
    h.expect_eq(d0["in_flight"], 0, "in_flight when idle")
    h.expect(d0["latency_ms_mean"] > 0, "no latency recorded: %r", d0)
    h.expect(d0["rpm_used"] >= 4, "rpm_used %r after >= 4 requests", d0["rpm_used"])


def test_circuit_opens_and_traffic_avoids_it():
    bad, good = h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet")
    sg = start(group(A, [dep(bad), dep(good)], strategy="round-robin", circuit_failures=3,
                     circuit_window_s=60, cooldown_s=30))
    cool_down(sg, A + "/0")
    d = dep_stats(sg, A + "/0")
    h.expect_eq(chats(bad), 3, "failures it took to cool the deployment")
    h.expect(d["cooldown_remaining_ms"] > 0, "cooling with no cooldown left: %r", d)
    h.expect_eq(d["errors"], 3, "errors in /stats")
    for _ in range(20):
        expect_routed(ask(sg), A + "/1", 1)
    h.expect_eq(chats(bad), 3, "requests sent to the cooling deployment")


def test_last_deployment_never_cools():
    # Cooling the only usable deployment of a group would turn every request
    # into a 503 without trying: it keeps taking traffic (and failing honestly).
    bad = h.Mock("--quiet", "--fail-status", "503")
    sg = start(group(A, [dep(bad)], max_attempts=2, backoff_ms=10, circuit_failures=2,
                     cooldown_s=60))
    r = chat(sg, h.unique())
    h.expect_error(r, 503, upstream=True)
    h.expect_eq(dep_stats(sg, A + "/0")["state"], "healthy", "state after 2 failures")
    r = chat(sg, h.unique())
    h.expect_error(r, 503, upstream=True)
    h.expect_eq(chats(bad), 4, "requests sent")


def test_no_healthy_upstream_when_all_cooling_or_limited():
    # One deployment cools down, the other is at its rpm limit: nothing is usable.
    bad, good = h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet")
    sg = start(group(A, [dep(bad), dep(good, rpm=1)], strategy="round-robin", max_attempts=2,
                     backoff_ms=10, circuit_failures=1, cooldown_s=60))
    expect_routed(ask(sg), A + "/1", 2)  # A/0 fails and cools, A/1 answers (its 1 rpm)
    h.expect_eq(dep_stats(sg, A + "/0")["state"], "cooling", "state after a failure")
    r = chat(sg, h.unique())
    h.expect_error(r, 503, code="no_healthy_upstream")
    h.expect_eq(chats(bad), 1, "requests sent while cooling")


def test_circuit_probe_failure_cools_again_then_success_heals():
    fake, good = FakeUpstream(error_status(503)), h.Mock("--quiet")
    sg = start(group(A, [dep(fake), dep(good)], strategy="round-robin", circuit_failures=2,
                     circuit_window_s=60, cooldown_s=1))
    cool_down(sg, A + "/0")
    before = fake.count()
    h.wait_for(lambda: dep_stats(sg, A + "/0")["state"] == "probing", timeout=15,
               what="A/0 probing after its cooldown")
    # The probe fails: the request is still answered, and the deployment cools again.
    expect_routed(ask(sg), A + "/1", 2)
    h.expect_eq(fake.count(), before + 1, "probe requests")
    h.expect_eq(dep_stats(sg, A + "/0")["state"], "cooling", "state after a failed probe")
    # Next time the probe succeeds and the deployment is healthy again.
    fake.behave = "ok"
    h.wait_for(lambda: dep_stats(sg, A + "/0")["state"] == "probing", timeout=15,
               what="A/0 probing again")
    expect_routed(ask(sg), A + "/0", 1)
    h.expect_eq(dep_stats(sg, A + "/0")["state"], "healthy", "state after a good probe")
    h.expect_eq(fake.count(), before + 2, "requests to A/0 after two probes")
    # Healthy again, it shares the traffic.
    ups = [upstream_of(ask(sg)) for _ in range(6)]
    h.expect(ups.count(A + "/0") >= 2, "healed deployment gets no traffic: %r", ups)


def test_circuit_single_probe_under_concurrency():
    fake, good = FakeUpstream(error_status(500)), h.Mock("--quiet")
    sg = start(group(A, [dep(fake), dep(good)], strategy="round-robin", circuit_failures=2,
                     circuit_window_s=60, cooldown_s=1))
    cool_down(sg, A + "/0")
    before = fake.count()
    fake.behave = ("ok", 1500)  # the probe will succeed, slowly
    h.wait_for(lambda: dep_stats(sg, A + "/0")["state"] == "probing", timeout=15,
               what="A/0 probing")
    results = concurrently([lambda: chat(sg, h.unique(), timeout=60) for _ in range(12)])
    for r in results:
        if isinstance(r, BaseException):
            raise r
        h.expect_status(r, 200)
    h.expect_eq(fake.count() - before, 1, "requests sent to the probing deployment")
    h.expect_eq(sum(upstream_of(r) == A + "/0" for r in results), 1, "answers from the probe")
    h.expect_eq(dep_stats(sg, A + "/0")["state"], "healthy", "state after the probe")


# --- strategies -------------------------------------------------------------------------


def test_weighted_distribution():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(m0, weight=1), dep(m1, weight=3)], strategy="weighted"))
    n = 400
    for _ in range(n):
        ask(sg)
    c0, c1 = chats(m0), chats(m1)
    h.expect_eq(c0 + c1, n, "requests on both mocks")
    # Expected 100 : 300; binomial sd ~ 8.7, so these bounds are ~5 sd wide.
    h.expect(55 <= c0 <= 145, "weight 1:3 gave %d:%d", c0, c1)


def test_default_strategy_is_weighted_by_default_weight():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(m0), dep(m1)]))
    for _ in range(200):
        ask(sg)
    c0, c1 = chats(m0), chats(m1)
    h.expect(c0 + c1 == 200 and 50 <= c0 <= 150, "equal weights gave %d:%d", c0, c1)


def test_round_robin_alternates():
    mocks = [h.Mock("--quiet") for _ in range(3)]
    sg = start(group(A, [dep(m) for m in mocks], strategy="round-robin"))
    ups = [upstream_of(ask(sg)) for _ in range(12)]
    first = ups[:3]
    h.expect_eq(sorted(first), sorted(A + "/%d" % i for i in range(3)), "first three upstreams")
    h.expect_eq(ups, first * 4, "round-robin order")
    h.expect_eq([chats(m) for m in mocks], [4, 4, 4], "chats per mock")


def test_least_busy_avoids_slow_deployment():
    slow, fast = h.Mock("--quiet", "--latency-ms", "500"), h.Mock("--quiet")
    sg = start(group(A, [dep(slow), dep(fast)], strategy="least-busy"))

    def worker():
        return [upstream_of(ask(sg, timeout=60)) for _ in range(25)]

    results = concurrently([worker for _ in range(4)], timeout=120)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    ups = [u for r in results for u in r]
    n_slow = ups.count(A + "/0")
    h.expect_eq(len(ups), 100, "answers")
    # Equal sharing would give the slow one ~50; least-busy keeps it to a few.
    h.expect(n_slow <= 25, "least-busy sent %d of 100 requests to the slow deployment", n_slow)
    h.expect_eq(chats(slow) + chats(fast), 100, "chats on both mocks")


def test_latency_prefers_fast_deployment():
    slow, fast = h.Mock("--quiet", "--latency-ms", "200"), h.Mock("--quiet")
    sg = start(group(A, [dep(slow), dep(fast)], strategy="latency"))
    n = 80
    for _ in range(n):
        ask(sg, timeout=60)
    c_slow, c_fast = chats(slow), chats(fast)
    h.expect_eq(c_slow + c_fast, n, "chats on both mocks")
    h.expect(c_slow >= 1, "the slow deployment was never measured")
    h.expect(c_fast >= 0.75 * n, "latency strategy sent only %d of %d to the fast one", c_fast, n)
    d_slow, d_fast = dep_stats(sg, A + "/0"), dep_stats(sg, A + "/1")
    h.expect(d_slow["latency_ms_ewma"] > d_fast["latency_ms_ewma"],
             "EWMA slow %r <= fast %r", d_slow["latency_ms_ewma"], d_fast["latency_ms_ewma"])


def test_cost_picks_cheapest():
    mocks = [h.Mock("--quiet") for _ in range(3)]
    sg = start(group(A, [dep(mocks[0], input_per_mtok=5, output_per_mtok=15),
                         dep(mocks[1], input_per_mtok=0.15, output_per_mtok=0.6),
                         dep(mocks[2])],  # the group's price: 2.5 / 10
                     strategy="cost", input_per_mtok=2.5, output_per_mtok=10))
    for _ in range(20):
        expect_routed(ask(sg), A + "/1", 1)
    h.expect_eq([chats(m) for m in mocks], [0, 20, 0], "chats per mock")


def test_cost_fails_over_to_next_cheapest():
    mocks = [h.Mock("--quiet"), h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet")]
    sg = start(group(A, [dep(mocks[0], input_per_mtok=5, output_per_mtok=15),
                         dep(mocks[1], input_per_mtok=0.1, output_per_mtok=0.1),
                         dep(mocks[2], input_per_mtok=1, output_per_mtok=1)],
                     strategy="cost", circuit_failures=1000))
    expect_routed(ask(sg), A + "/2", 2)
    h.expect_eq([chats(m) for m in mocks], [0, 1, 1], "chats per mock")


def test_usage_respects_rpm():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(m0, rpm=5), dep(m1, rpm=5)], strategy="usage"))
    for _ in range(10):
        ask(sg)
    h.expect_eq((chats(m0), chats(m1)), (5, 5), "chats per deployment under rpm 5 + 5")
    r = chat(sg, h.unique())
    h.expect_error(r, 503, code="no_healthy_upstream")
    h.expect_eq((chats(m0), chats(m1)), (5, 5), "chats after the 11th request")
    h.expect_eq(dep_stats(sg, A + "/0")["rpm_used"], 5, "rpm_used")


def test_rpm_limit_spills_to_next_priority():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(m0, priority=0, rpm=2), dep(m1, priority=1)]))
    ups = [upstream_of(ask(sg)) for _ in range(6)]
    h.expect_eq(ups, [A + "/0"] * 2 + [A + "/1"] * 4, "upstreams with rpm 2 on priority 0")


def test_tpm_limit():
    mock = h.Mock("--quiet")
    sg = start(group(A, [dep(mock, tpm=1)]))
    ask(sg)
    h.expect(dep_stats(sg, A + "/0")["tpm_used"] >= 1, "tpm_used not counted")
    h.expect_error(chat(sg, h.unique()), 503, code="no_healthy_upstream")
    h.expect_eq(chats(mock), 1, "chats past the tpm limit")


# --- streaming ------------------------------------------------------------------------


def stream(sg, prompt):
    with sg.connect(timeout=30) as c:
        c.send(h.build_request("POST", "/v1/chat/completions",
                               body=h.chat_body(prompt, stream=True)))
        return c.read_partial()


def expect_clean_stream(r, prompt):
    h.expect_status(r, 200)
    h.expect("text/event-stream" in (r.header("Content-Type") or ""),
             "Content-Type %r", r.header("Content-Type"))
    h.expect(r.complete, "stream did not end cleanly")
    events = r.events()
    h.expect(events and events[-1]["data"] == "[DONE]", "stream does not end with [DONE]")
    for ev in events:
        h.expect("error" not in ev["data"][:20], "error event in a good stream: %r", ev)
    h.expect_eq(h.sse_content(events), "mock answer to: " + prompt, "streamed content")


def test_stream_falls_back_before_first_byte():
    good = h.Mock("--quiet")
    sg = start(group(A, [dep(dead_url(), priority=0, connect_timeout_ms=2000),
                         dep(good, priority=1)]))
    p = h.unique("stream me")
    r = stream(sg, p)
    expect_clean_stream(r, p)
    expect_routed(r, A + "/1", 2)
    h.expect_eq(good.stats()["streams_completed"], 1, "streams the healthy mock completed")


def test_stream_falls_back_on_error_status_and_to_fallback_model():
    bad, b = h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet")
    sg = start(group(A, [dep(bad)], fallbacks=[B]), group(B, [dep(b)]))
    p = h.unique("stream me")
    r = stream(sg, p)
    expect_clean_stream(r, p)
    expect_routed(r, B + "/0", 2, fallback=B)


def test_stream_error_event_after_content():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(m0, priority=0), dep(m1, priority=1)], fallbacks=[B]),
               group(B, [dep(m1)]))
    r = stream(sg, h.unique("[[cut=2]] stream me"))
    h.expect_status(r, 200)
    events = r.events()
    h.expect(events, "no events at all")
    h.expect(events[-1]["data"] != "[DONE]", "cut stream ended with [DONE]")
    last = json.loads(events[-1]["data"])
    h.expect(isinstance(last, dict) and "error" in last, "last event is no error: %r", last)
    h.expect(h.sse_content(events[:-1]), "no content before the error event")
    h.expect_eq(m0.stats()["streams_cut"], 1, "streams cut on dep 0")
    h.expect_eq(chats(m1), 0, "retries after content was sent")


# --- no request lost, none answered twice -------------------------------------------------


def test_concurrent_requests_none_lost_none_duplicated():
    bad, good = h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet")
    sg = start(group(A, [dep(bad), dep(good)], circuit_failures=1000000))
    n = 200
    prompts = [h.unique("concurrent") for _ in range(n)]
    results = concurrently([lambda p=p: (p, chat(sg, p, timeout=60)) for p in prompts],
                           timeout=120)
    total_attempts = 0
    for res in results:
        if isinstance(res, BaseException):
            raise res
        p, r = res
        h.expect_answer(r, p)
        h.expect_eq(upstream_of(r), A + "/1", "X-Semgate-Upstream")
        total_attempts += attempts_of(r)
    c_bad, c_good = chats(bad), chats(good)
    h.expect_eq(c_good, n, "answers from the healthy mock (each request once)")
    h.expect_eq(c_bad + c_good, total_attempts, "chats on both mocks vs X-Semgate-Attempts")
    h.expect(c_bad > 0, "the failing deployment got no traffic at all")
    sg.assert_alive()


def test_full_success_with_one_failing_deployment():
    # Default circuit settings: the failing deployment soon cools and is skipped.
    bad, good = h.Mock("--quiet", "--fail-status", "500"), h.Mock("--quiet")
    sg = start(group(A, [dep(bad), dep(good)]))
    ok = 0
    for _ in range(100):
        if chat(sg, h.unique()).status == 200:
            ok += 1
    h.expect_eq(ok, 100, "successful answers of 100")


def test_full_success_when_a_deployment_dies_mid_test():
    m0, m1 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start(group(A, [dep(m0, connect_timeout_ms=2000), dep(m1, connect_timeout_ms=2000)],
                     strategy="round-robin"))
    ups = [upstream_of(ask(sg)) for _ in range(10)]
    h.expect_eq(set(ups), {A + "/0", A + "/1"}, "upstreams before the kill")
    m0.stop()
    for _ in range(60):
        expect_routed_ok = ask(sg)
        h.expect_eq(upstream_of(expect_routed_ok), A + "/1", "X-Semgate-Upstream after the kill")
    # Streams too.
    p = h.unique("stream after the kill")
    expect_clean_stream(stream(sg, p), p)


# --- regressions --------------------------------------------------------------------------


def test_disconnect_mid_transfer_does_not_affect_other_client():
    # Regression: a client leaving while its upstream transfer was in flight
    # left a pointer to the cancelled transfer behind; the pool handed that
    # handle to the next client's transfer, which the stale pointer then
    # cancelled (the other client never got an answer). It needs A's close and
    # B's request in the same loop iteration, so it is tried several times.
    mock = h.Mock("--quiet")
    sg = start(group(A, [dep(mock)]))
    for i in range(8):
        a, b = sg.connect(), sg.connect(timeout=h.IO_TIMEOUT_S)
        try:
            a.send(h.build_request("POST", "/v1/chat/completions",
                                   body=h.chat_body(h.unique("leaver %d [[latency=2000]]" % i))))
            time.sleep(0.2)  # A's transfer is in flight (the upstream takes 2 s)
            pb = h.unique("stayer %d [[latency=300]]" % i)
            req_b = h.build_request("POST", "/v1/chat/completions", body=h.chat_body(pb))
            a.close()
            b.send(req_b)  # right after A's close: both events in one loop iteration
            try:
                r = b.read_response()
            except (OSError, h.TestFailure) as e:
                raise h.TestFailure("round %d: client B got no answer after client A left "
                                    "mid-transfer: %r" % (i, e))
            h.expect_answer(r, pb)
        finally:
            a.close()
            b.close()
    sg.assert_alive()
    ask(sg)


def test_huge_retry_after_gives_up_at_once():
    # Regression: Retry-After was multiplied into milliseconds before being
    # compared with the budget; a huge value overflowed into a short (or
    # endless) wait. It must end the request with the 429 after one attempt.
    fake = FakeUpstream(("status", 429, {"error": {
        "message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}},
        {"Retry-After": "18446744073710"}))
    sg = start(group(A, [dep(fake)], max_attempts=3, circuit_failures=1000))
    try:
        r = chat(sg, h.unique(), timeout=10)
    except OSError as e:  # socket.timeout included
        raise h.TestFailure("no answer within 10 s after a 429 with Retry-After "
                            "18446744073710: %r" % e)
    h.expect_error(r, 429, upstream=True)
    h.expect_eq(attempts_of(r), 1, "X-Semgate-Attempts")
    h.expect_eq(fake.count(), 1, "requests the deployment got")
    sg.assert_alive()


def test_context_fallback_retry_stays_on_context_fallback():
    # Regression: a retry round after a context-window error restarted at the
    # origin model (which had refused the request as too long) instead of the
    # context fallback. The fallback fails once with a retryable 503, then
    # answers: the origin must have seen exactly one request.
    small = FakeUpstream(CONTEXT_ERROR)
    big = FakeUpstream(lambda n, body: error_status(503) if n == 0 else "ok")
    other = h.Mock("--quiet")
    sg = start(group(A, [dep(small)], fallbacks=[B], context_fallbacks=[C], max_attempts=3,
                     backoff_ms=10, circuit_failures=1000),
               group(B, [dep(other)]),
               group(C, [dep(big, model="big-model")], circuit_failures=1000))
    p = h.unique("long prompt")
    r = chat(sg, p, timeout=30)
    h.expect_answer(r, p)
    h.expect_eq(upstream_of(r), C + "/0", "X-Semgate-Upstream")
    h.expect_eq(r.header("X-Semgate-Fallback"), C, "X-Semgate-Fallback")
    h.expect_eq((small.count(), big.count(), chats(other)), (1, 2, 0),
                "chats on (origin, context fallback, ordinary fallback)")
    h.expect_eq(attempts_of(r), 3, "X-Semgate-Attempts")


if __name__ == "__main__":
    h.main()
