"""Upstream failures: unreachable, timeouts, error statuses (JSON and not),
resets, garbage, truncation, oversized replies. semgate answers each with the
right status and an OpenAI-shaped body, and keeps serving."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def chat(sg, prompt, **kw):
    return sg.post_json("/v1/chat/completions", h.chat_body(prompt), **kw)


def still_serving(sg):
    sg.assert_alive()
    p = h.unique("after the fault")
    r = chat(sg, p)
    if r.status == 200:
        h.expect_answer(r, p)
    return r


def direct(mock, prompt):
    """The mock's own reply to prompt (what semgate should pass through)."""
    body = h.chat_body(prompt, model=h.UPSTREAM_MODEL)
    return h.request(mock.host, mock.port, "POST", "/v1/chat/completions", body=body)


def test_upstream_unreachable():
    sg = h.Semgate(h.base_config(None, connect_timeout_ms=2000))
    for path, body in (("/v1/chat/completions", h.chat_body(h.unique())),
                       ("/v1/completions", {"model": h.MODEL, "prompt": "x"}),
                       ("/v1/embeddings", {"model": h.MODEL, "input": "x"})):
        r = sg.post_json(path, body)
        h.expect_error(r, 502, code="upstream_unreachable")
        h.expect(r.header("X-Request-Id"), "X-Request-Id missing on a 502")
    sg.assert_alive()


def test_upstream_timeout():
    mock, sg = h.start("--quiet", timeout_ms=500)
    r = chat(sg, h.unique("[[latency=5000]]"))
    h.expect_error(r, 504, code="upstream_timeout")
    still_serving(sg)


def test_upstream_slow_headers_timeout():
    mock, sg = h.start("--quiet", timeout_ms=500)
    r = chat(sg, h.unique("[[slow-headers=5000]]"))
    h.expect_error(r, 504, code="upstream_timeout")
    still_serving(sg)


def test_upstream_latency_within_timeout():
    mock, sg = h.start("--quiet", timeout_ms=10000)
    p = h.unique("[[latency=300]]")
    h.expect_answer(chat(sg, p), p)


def test_upstream_stream_timeout():
    # A stream that outlives the deployment's timeout ends with an error event
    # (or a 504 if nothing was sent yet), never a clean [DONE].
    mock, sg = h.start("--quiet", "--stream-chunks", "100", "--stream-interval-ms", "100",
                       timeout_ms=800)
    with sg.connect(timeout=30) as c:
        c.send(h.build_request("POST", "/v1/chat/completions",
                               body=h.chat_body(h.unique("long"), stream=True)))
        r = c.read_partial()
        if r.status == 200:
            h.expect(r.complete, "stream cut without the chunked terminator")
            events = r.events()
            h.expect(events and events[-1]["data"] != "[DONE]", "timed-out stream ended with [DONE]")
            h.expect("error" in json.loads(events[-1]["data"]), "no error event at the end")
        else:
            h.expect_error(r, 504, code="upstream_timeout")
    sg.assert_alive()


def test_upstream_error_json_passthrough():
    mock, sg = h.start("--quiet")
    for status in (500, 429, 400, 401, 503):
        p = h.unique("[[status=%d]]" % status)
        want = direct(mock, p)
        h.expect_eq(want.status, status, "mock's own status for [[status=%d]]" % status)
        r = chat(sg, p)
        h.expect_error(r, status, upstream=True)
        h.expect_eq(r.json(), want.json(), "body passed through for status %d" % status)
        h.expect(r.header("X-Request-Id"), "X-Request-Id missing")
        h.expect_eq(r.header("X-Semgate-Upstream"), "gpt-4o-mini/0", "X-Semgate-Upstream")
    still_serving(sg)


def test_upstream_retry_after():
    mock, sg = h.start("--quiet")
    r = chat(sg, h.unique("[[status=429]] [[retry-after=7]]"))
    h.expect_error(r, 429, upstream=True)
    still_serving(sg)


def test_upstream_error_text_body():
    mock, sg = h.start("--quiet")
    r = chat(sg, h.unique("[[status=503:text]]"))
    h.expect_error(r, 503)
    r = chat(sg, h.unique("[[status=500:text]]"))
    h.expect_error(r, 500)
    still_serving(sg)


def test_upstream_fail_status_flag():
    mock, sg = h.start("--quiet", "--fail-status", "500")
    r = chat(sg, h.unique())
    h.expect_error(r, 500, upstream=True)
    r = sg.post_json("/v1/embeddings", {"model": h.MODEL, "input": "x"})
    h.expect_error(r, 500, upstream=True)
    sg.assert_alive()


def test_upstream_reset():
    mock, sg = h.start("--quiet")
    r = chat(sg, h.unique("[[reset]]"))
    h.expect_error(r, 502)
    still_serving(sg)


def test_upstream_garbage():
    mock, sg = h.start("--quiet")
    r = chat(sg, h.unique("[[garbage]]"))
    h.expect_error(r, 502, code="upstream_invalid_response")
    still_serving(sg)


def test_upstream_truncated_reply():
    mock, sg = h.start("--quiet")
    r = chat(sg, h.unique("[[cut=1]]"))
    h.expect_error(r, 502)
    still_serving(sg)


def test_upstream_huge_reply_within_limit():
    mock, sg = h.start("--quiet")
    r = chat(sg, h.unique("[[huge=200000]]"))
    h.expect_status(r, 200)
    obj = r.json()
    h.expect(len(r.body) >= 200000, "huge reply only %d bytes", len(r.body))
    h.expect(obj["choices"][0]["message"]["content"], "empty content")


def test_upstream_reply_over_max_response_bytes():
    mock, sg = h.start("--quiet", limits={"max_response_bytes": 65536})
    r = chat(sg, h.unique("[[huge=1000000]]"))
    h.expect_error(r, 502)
    still_serving(sg)


def test_upstream_fault_keeps_client_connection():
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        for marker, status in (("[[status=500]]", 500), ("[[garbage]]", 502),
                               ("[[reset]]", 502), ("[[status=503:text]]", 503)):
            r = c.request("POST", "/v1/chat/completions", body=h.chat_body(h.unique(marker)))
            h.expect_error(r, status, upstream=(status == 500))
            if r.wants_close():
                return  # allowed, but then the rest cannot run on this connection
        p = h.unique()
        h.expect_answer(c.request("POST", "/v1/chat/completions", body=h.chat_body(p)), p)


def test_upstream_goes_away():
    mock = h.Mock("--quiet")
    cfg = h.base_config(mock)
    sg = h.Semgate(cfg)
    p = h.unique()
    h.expect_answer(chat(sg, p), p)
    mock.stop()
    h.expect_error(chat(sg, h.unique()), 502, code="upstream_unreachable")
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
