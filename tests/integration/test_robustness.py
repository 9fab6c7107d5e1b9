"""Hostile and broken clients: semgate answers what it can with a clean error
and keeps serving (GET /healthz still answers 200 after each)."""

import json
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def post_raw(sg, body, path="/v1/chat/completions", timeout=30):
    with sg.connect(timeout=timeout) as c:
        c.send_until_reply(h.build_request("POST", path, body=body,
                                   headers={"Content-Type": "application/json"}))
        try:
            return c.read_partial()
        except h.ConnectionClosed:
            return None


def test_truncated_json():
    mock, sg = h.start("--quiet")
    full = json.dumps(h.chat_body("truncate me")).encode()
    for n in (1, 5, len(full) // 2, len(full) - 1):
        r = post_raw(sg, full[:n])
        h.expect(r is not None, "no response to truncated JSON")
        h.expect_error(r, 400, code="invalid_json")
    sg.assert_alive()


def test_huge_body_over_limit():
    mock, sg = h.start("--quiet", limits={"max_body_bytes": 1048576})
    big = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"A" * (5 << 20) + b'"}]}'
    r = post_raw(sg, big)
    h.expect(r is not None, "no response to a 5 MB body")
    h.expect_error(r, 413, code="body_too_large")
    sg.assert_alive()


def test_deeply_nested_json():
    mock, sg = h.start("--quiet")
    for body in (b"[" * 100000, b"[" * 100000 + b"]" * 100000,
                 b'{"model":"gpt-4o-mini","messages":' + b"[" * 100000 + b"]" * 100000 + b"}",
                 b'{"a":' * 50000 + b"1" + b"}" * 50000):
        r = post_raw(sg, body)
        h.expect(r is not None, "no response to deeply nested JSON")
        h.expect(r.status == 400, "status %d for deeply nested JSON", r.status)
        h.expect_error(r, 400)
        sg.assert_alive()


def test_invalid_utf8_in_json():
    mock, sg = h.start("--quiet")
    for bad in (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80"):
        body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x' + bad + b'"}]}'
        r = post_raw(sg, body)
        h.expect(r is not None, "no response to invalid UTF-8")
        h.expect_error(r, 400)
    sg.assert_alive()


def test_nul_bytes():
    mock, sg = h.start("--quiet")
    # A raw NUL inside a JSON string is invalid JSON.
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a\x00b"}]}'
    r = post_raw(sg, body)
    h.expect(r is not None, "no response to a NUL in JSON")
    h.expect_error(r, 400)
    # An escaped NUL is valid JSON: whatever semgate does, it answers and stays up.
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a\\u0000b"}]}'
    r = post_raw(sg, body)
    h.expect(r is not None, "no response to an escaped NUL")
    h.expect(r.status in (200, 400, 502), "status %d for an escaped NUL", r.status)
    if r.status != 200:
        h.expect_error(r, r.status)
    # NULs in the request line and headers.
    for raw in (b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
                b"\x00\x00\x00\x00\r\n\r\n"):
        with sg.connect() as c:
            c.try_send(raw)
            try:
                r = c.read_partial()
                h.expect_error(r, 400)
            except h.ConnectionClosed:
                pass
    sg.assert_alive()


def test_model_and_fields_with_odd_types():
    mock, sg = h.start("--quiet")
    for body in ({"model": None, "messages": [{"role": "user", "content": "x"}]},
                 {"model": h.MODEL, "messages": [None]},
                 {"model": h.MODEL, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
                 {"model": "x" * 100000, "messages": [{"role": "user", "content": "x"}]},
                 {"model": "", "messages": [{"role": "user", "content": "x"}]}):
        r = sg.post_json("/v1/chat/completions", body)
        h.expect(400 <= r.status < 500, "status %d for %r", r.status, str(body)[:100])
        h.expect_error(r, r.status)
    sg.assert_alive()


def test_random_binary_garbage():
    mock, sg = h.start("--quiet")
    rng = random.Random(1234)
    for i in range(30):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
        with sg.connect(timeout=5) as c:
            c.try_send(data)
            try:
                r = c.read_partial()
                h.expect(400 <= r.status < 500, "status %d for garbage #%d", r.status, i)
            except h.ConnectionClosed:
                pass  # closing without a reply is fine for garbage
            except (h.TestFailure, OSError):
                pass  # cut short or still waiting for more: no crash is what matters
    sg.assert_alive()


def test_random_garbage_after_valid_prefix():
    mock, sg = h.start("--quiet")
    rng = random.Random(99)
    for i in range(20):
        data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048))))
        with sg.connect(timeout=5) as c:
            c.try_send(data)
            try:
                c.read_available(0.3)
            except OSError:
                pass
    sg.assert_alive()


def test_half_request_then_close():
    mock, sg = h.start("--quiet")
    full = h.build_request("POST", "/v1/chat/completions", body=h.chat_body("half"))
    for cut in (5, 30, len(full) - 10):
        c = sg.connect()
        c.send(full[:cut])
        c.close()
        c = sg.connect()
        c.send(full[:cut])
        c.abort()
    sg.assert_alive()


def test_close_while_upstream_works():
    mock, sg = h.start("--quiet")
    for _ in range(5):
        c = sg.connect()
        c.send(h.build_request("POST", "/v1/chat/completions",
                               body=h.chat_body(h.unique("[[latency=300]]"))))
        c.abort()
    sg.assert_alive()
    p = h.unique()
    h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p)), p)


def test_many_connections_rapidly():
    mock, sg = h.start("--quiet")
    for i in range(300):
        c = h.Conn(sg.host, sg.port, timeout=10)
        if i % 3 == 0:
            c.abort()
        elif i % 3 == 1:
            c.close()
        else:
            c.try_send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            c.close()
    sg.assert_alive()


def test_many_concurrent_requests():
    mock, sg = h.start("--quiet")
    n = 50
    results = [None] * n
    prompts = [h.unique("parallel %d" % i) for i in range(n)]

    def worker(i):
        try:
            results[i] = sg.post_json("/v1/chat/completions", h.chat_body(prompts[i]), timeout=30)
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, r in enumerate(results):
        h.expect(isinstance(r, h.Response), "request %d failed: %r", i, r)
        h.expect_answer(r, prompts[i])


def test_unicode_roundtrip():
    mock, sg = h.start("--quiet")
    p = h.unique("héllo wörld — 你好 🌍 \"quoted\" \\ back\nslash")
    h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p)), p)


if __name__ == "__main__":
    h.main()
