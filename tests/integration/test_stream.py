"""Streaming chat completions: SSE pass-through, mid-stream upstream cuts,
client disconnects cancelling the upstream transfer, concurrent streams."""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def stream_req(prompt, model=h.MODEL, headers=None):
    return h.build_request("POST", "/v1/chat/completions",
                           body=h.chat_body(prompt, model=model, stream=True), headers=headers)


def expect_sse_head(r):
    h.expect_status(r, 200)
    ct = (r.header("Content-Type") or "").lower()
    h.expect(ct.startswith("text/event-stream"), "Content-Type %r, want text/event-stream", ct)
    te = (r.header("Transfer-Encoding") or "").lower()
    h.expect("chunked" in te, "Transfer-Encoding %r, want chunked", te)
    h.expect(r.header("Content-Length") is None, "Content-Length on a stream")


def expect_complete_stream(r, prompt):
    expect_sse_head(r)
    h.expect(r.complete, "stream did not end with the chunked terminator")
    events = r.events()
    h.expect(events, "no SSE events")
    h.expect_eq(events[-1]["data"], "[DONE]", "last event")
    h.expect_eq(sum(1 for e in events if e["data"] == "[DONE]"), 1, "number of [DONE] events")
    for e in events[:-1]:
        obj = json.loads(e["data"])
        h.expect("error" not in obj, "error event in a good stream: %r", obj)
    h.expect_eq(h.sse_content(events), "mock answer to: " + prompt, "reassembled content")
    return events


def test_stream_basic():
    mock, sg = h.start("--quiet", "--stream-chunks", "8")
    p = h.unique("stream please")
    with sg.connect() as c:
        c.send(stream_req(p))
        r = c.read_response()
        events = expect_complete_stream(r, p)
        h.expect(len(events) >= 3, "only %d events for an 8-chunk stream", len(events))
        h.expect(r.header("X-Request-Id"), "X-Request-Id missing on a stream")
        h.expect_eq(r.header("X-Semgate-Upstream"), "gpt-4o-mini/0", "X-Semgate-Upstream")
        first = json.loads(events[0]["data"])
        h.expect_eq(first.get("object"), "chat.completion.chunk", "object of the first chunk")
        # The connection is reusable after a stream.
        p2 = h.unique()
        h.expect_answer(c.request("POST", "/v1/chat/completions", body=h.chat_body(p2)), p2)
    st = mock.stats()
    h.expect(st["streams_completed"] >= 1, "mock did not complete a stream: %r", st)
    h.expect_eq(st["last_model"], h.UPSTREAM_MODEL, "model sent upstream")


def test_stream_events_arrive_incrementally():
    # 10 chunks 500 ms apart: the first event must reach us while the mock is
    # still streaming (semgate must not buffer the whole reply).
    mock, sg = h.start("--quiet", "--stream-chunks", "10", "--stream-interval-ms", "500")
    p = h.unique("incremental")
    with sg.connect(timeout=30) as c:
        c.send(stream_req(p))
        r = c.read_head()
        expect_sse_head(r)
        r.chunked = True
        while not any(e["data"] != "[DONE]" for e in h.parse_sse(r.body)):
            h.expect(c.read_chunk(r) is not None, "stream ended before any event")
        st = mock.stats()
        h.expect_eq(st["streams_completed"], 0,
                    "streams the mock had completed when the first event arrived")
        while c.read_chunk(r) is not None:
            pass
        expect_complete_stream(r, p)


def test_stream_mid_stream_cut():
    mock, sg = h.start("--quiet", "--stream-chunks", "10")
    p = h.unique("cut me [[cut=3]]")
    with sg.connect(timeout=30) as c:
        c.send(stream_req(p))
        r = c.read_partial()
        expect_sse_head(r)
        h.expect(r.complete, "cut stream did not end with the chunked terminator: %r", r.body[-200:])
        events = r.events()
        h.expect(events, "no events at all")
        last = events[-1]
        h.expect(last["data"] != "[DONE]", "a cut stream ended with [DONE] (silent clean end)")
        h.expect(not last.get("unterminated"), "the error event is not terminated by a blank line")
        obj = json.loads(last["data"])
        err = obj.get("error")
        h.expect(isinstance(err, dict), "last event is not an error event: %r", obj)
        h.expect(isinstance(err.get("message"), str) and err["message"], "error.message: %r", err)
        h.expect(isinstance(err.get("type"), str) and err["type"], "error.type: %r", err)
        h.expect("code" in err, "error.code missing: %r", err)
        h.expect(all(e["data"] != "[DONE]" for e in events), "[DONE] in a cut stream")
    sg.assert_alive()


def test_stream_cut_before_first_event():
    mock, sg = h.start("--quiet", "--stream-chunks", "10")
    p = h.unique("cut early [[cut=0]]")
    with sg.connect(timeout=30) as c:
        c.send(stream_req(p))
        r = c.read_partial()
        if r.status == 200:
            # Headers already went out: the stream must end with an error event.
            h.expect(r.complete, "stream not terminated properly")
            events = r.events()
            h.expect(events and "error" in json.loads(events[-1]["data"]),
                     "no error event at the end: %r", r.body[-300:])
        else:
            h.expect_error(r, 502)
    sg.assert_alive()


def test_client_disconnect_cancels_upstream():
    mock, sg = h.start("--quiet", "--stream-chunks", "200", "--stream-interval-ms", "100")
    p = h.unique("long stream")
    c = sg.connect(timeout=30)
    try:
        c.send(stream_req(p))
        r = c.read_head()
        expect_sse_head(r)
        h.expect(c.read_chunk(r) is not None, "stream ended at once")
    finally:
        c.abort()
    h.wait_for(lambda: mock.stats()["streams_aborted"] >= 1, timeout=10,
               what="the mock to see the upstream stream aborted")
    sg.assert_alive()
    # Other clients are still served, streaming and not.
    p2 = h.unique()
    h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p2)), p2)


def test_client_graceful_close_cancels_upstream():
    mock, sg = h.start("--quiet", "--stream-chunks", "200", "--stream-interval-ms", "100")
    for i in range(3):
        c = sg.connect(timeout=30)
        try:
            c.send(stream_req(h.unique("close %d" % i)))
            r = c.read_head()
            expect_sse_head(r)
            c.read_chunk(r)
        finally:
            c.close()
    h.wait_for(lambda: mock.stats()["streams_aborted"] >= 3, timeout=15,
               what="all three upstream streams aborted")
    sg.assert_alive()


def test_disconnect_before_headers_cancels_upstream():
    # The client leaves while semgate waits for the upstream's first byte
    # (1.5 s); unattended, the stream would then run for 50 x 100 ms.
    mock, sg = h.start("--quiet", "--stream-chunks", "50", "--stream-interval-ms", "100")
    c = sg.connect()
    c.send(stream_req(h.unique("[[slow-headers=1500]]")))
    h.wait_for(lambda: mock.stats()["chat"] >= 1, timeout=10, what="the request to reach the mock")
    c.abort()
    sg.assert_alive()
    time.sleep(2.5)  # past the upstream's header delay
    # Either the request was cancelled before the stream began, or the started
    # stream is aborted: it must never run to completion for nobody.
    h.wait_for(lambda: (lambda st: st["streams_aborted"] >= 1 or st["streams_started"] == 0)(
        mock.stats()), timeout=15, what="the abandoned transfer to be cancelled")
    time.sleep(6)  # longer than the whole stream would take
    st = mock.stats()
    h.expect_eq(st["streams_completed"], 0, "streams completed for a gone client")


def test_concurrent_streams():
    mock, sg = h.start("--quiet", "--stream-chunks", "10", "--stream-interval-ms", "20")
    n = 8
    results = [None] * n
    prompts = [h.unique("concurrent %d" % i) for i in range(n)]

    def worker(i):
        try:
            with sg.connect(timeout=30) as c:
                c.send(stream_req(prompts[i]))
                results[i] = c.read_response()
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, r in enumerate(results):
        h.expect(isinstance(r, h.Response), "stream %d failed: %r", i, r)
        expect_complete_stream(r, prompts[i])


def test_stream_with_upstream_error_status():
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        c.send(stream_req(h.unique("[[status=429]]")))
        r = c.read_response()
        h.expect_error(r, 429, upstream=True)
    sg.assert_alive()


def test_stream_upstream_unreachable():
    sg = h.Semgate(h.base_config(None))
    with sg.connect() as c:
        c.send(stream_req(h.unique()))
        h.expect_error(c.read_response(), 502, code="upstream_unreachable")


def test_stream_pipelined_after_stream():
    mock, sg = h.start("--quiet", "--stream-chunks", "5")
    p1, p2 = h.unique("s1"), h.unique("s2")
    with sg.connect() as c:
        c.send(stream_req(p1) + h.build_request("GET", "/healthz") + stream_req(p2))
        expect_complete_stream(c.read_response(), p1)
        h.expect_status(c.read_response(), 200)
        expect_complete_stream(c.read_response(), p2)


def test_stream_false_is_not_streamed():
    mock, sg = h.start("--quiet")
    p = h.unique()
    body = h.chat_body(p)
    body["stream"] = False
    r = sg.post_json("/v1/chat/completions", body)
    h.expect_answer(r, p)
    h.expect("event-stream" not in (r.header("Content-Type") or ""), "stream:false was streamed")


def read_stream_body(c, r):
    """The de-chunked body of the stream whose head r was read from c, gathered
    in a list (a 6 MB body grown by += would take seconds); r.complete is set."""
    parts = []
    while True:
        size_line = c._read_line()
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while c._read_line():
                pass
            r.complete = True
            break
        parts.append(c._read_exact(size))
        h.expect(c._read_exact(2) == b"\r\n", "chunk data not followed by CRLF")
    return b"".join(parts)


def test_stream_backpressure_no_duplicates_or_loss():
    # Regression: a client that reads slowly makes semgate's socket back up past
    # its 1 MB high-water mark, which pauses the upstream transfer; the bytes of
    # the delivery that triggered the pause were once relayed twice on resume.
    # 4000 chunks of a 6 MB answer: any duplicated or lost chunk changes the
    # reassembled length.
    n = 6000000
    mock, sg = h.start("--quiet", "--stream-chunks", "4000")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    s.settimeout(60)
    c = h.Conn.__new__(h.Conn)
    c.host, c.port, c.sock, c.buf, c.eof = sg.host, sg.port, s, b"", False
    try:
        s.connect((sg.host, sg.port))
        c.send(stream_req(h.unique("[[huge=%d]] big stream" % n)))
        time.sleep(2)  # let semgate's socket back up and the upstream pause
        r = c.read_head()
        expect_sse_head(r)
        body = read_stream_body(c, r)
    finally:
        c.close()
    h.expect(r.complete, "stream did not end with the chunked terminator")
    events = h.parse_sse(body)
    h.expect(events, "no SSE events")
    h.expect_eq(events[-1]["data"], "[DONE]", "last event")
    h.expect_eq(sum(1 for e in events if e["data"] == "[DONE]"), 1, "number of [DONE] events")
    ids = set()
    for e in events[:-1]:
        try:
            obj = json.loads(e["data"])
        except ValueError:
            raise h.TestFailure("event is not JSON (bytes duplicated or lost?): %r..."
                                % e["data"][:200])
        h.expect("error" not in obj, "error event in a good stream: %r", obj)
        ids.add(obj.get("id"))
    h.expect_eq(len(ids), 1, "distinct completion ids in one stream")
    content = h.sse_content(events)
    h.expect_eq(len(content), n, "reassembled content length (longer = duplicated chunks)")
    h.expect(content == "x" * n, "reassembled content is not %d x's", n)
    st = mock.stats()
    h.expect_eq(st["streams_completed"], 1, "streams the mock completed")
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
