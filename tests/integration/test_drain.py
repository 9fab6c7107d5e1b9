"""Graceful shutdown: on SIGTERM/SIGINT semgate stops accepting, lets in-flight
requests and streams finish (up to limits.drain_timeout_ms), then exits 0."""

import os
import signal
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def refuses_connections(sg):
    try:
        s = socket.create_connection((sg.host, sg.port), timeout=2)
    except OSError:
        return True
    # Accepted by the kernel backlog of a listener that is still open? Then a
    # request on it must not be served normally.
    try:
        s.sendall(h.build_request("GET", "/healthz"))
        s.settimeout(2)
        data = s.recv(4096)
        return not data.startswith(b"HTTP/1.1 200")
    except OSError:
        return True
    finally:
        s.close()


def start_stream(sg, prompt):
    c = sg.connect(timeout=60)
    c.send(h.build_request("POST", "/v1/chat/completions",
                           body=h.chat_body(prompt, stream=True)))
    r = c.read_head()
    h.expect_status(r, 200)
    r.chunked = True
    h.expect(c.read_chunk(r) is not None, "stream ended at once")
    return c, r


def finish_stream(c, r):
    while c.read_chunk(r) is not None:
        pass
    return r


def drain_with_stream(sig):
    mock, sg = h.start("--quiet", "--stream-chunks", "15", "--stream-interval-ms", "200",
                       limits={"drain_timeout_ms": 30000})
    p = h.unique("drain me")
    c, r = start_stream(sg, p)
    try:
        sg.signal(sig)
        h.wait_for(lambda: refuses_connections(sg), timeout=10,
                   what="new connections to be refused while draining")
        finish_stream(c, r)
        h.expect(r.complete, "stream not terminated properly")
        events = r.events()
        h.expect(events and events[-1]["data"] == "[DONE]",
                 "stream did not complete with [DONE] during drain: %r", r.body[-300:])
        h.expect_eq(h.sse_content(events), "mock answer to: " + p, "streamed content")
    finally:
        c.close()
    rc = sg.wait_exit(30)
    h.expect_eq(rc, 0, "exit code after drain")


def test_sigterm_drains_stream():
    drain_with_stream(signal.SIGTERM)


def test_sigint_drains_stream():
    drain_with_stream(signal.SIGINT)


def test_sigterm_idle_exits_zero():
    mock, sg = h.start("--quiet")
    sg.assert_alive()
    sg.signal(signal.SIGTERM)
    h.expect_eq(sg.wait_exit(20), 0, "exit code")


def test_sigint_idle_exits_zero():
    mock, sg = h.start("--quiet")
    sg.signal(signal.SIGINT)
    h.expect_eq(sg.wait_exit(20), 0, "exit code")


def test_sigterm_finishes_inflight_request():
    mock, sg = h.start("--quiet", limits={"drain_timeout_ms": 30000})
    p = h.unique("[[latency=1500]]")
    result = {}

    def worker():
        try:
            result["r"] = sg.post_json("/v1/chat/completions", h.chat_body(p), timeout=30)
        except BaseException as e:
            result["e"] = e

    t = threading.Thread(target=worker)
    t.start()
    h.wait_for(lambda: mock.stats()["chat"] >= 1, timeout=10, what="the request to reach the mock")
    sg.signal(signal.SIGTERM)
    t.join(40)
    h.expect("r" in result, "in-flight request failed during drain: %r", result.get("e"))
    h.expect_answer(result["r"], p)
    h.expect_eq(sg.wait_exit(30), 0, "exit code")


def test_readyz_while_draining():
    # New connections are refused while draining, so ask on a keep-alive
    # connection opened before the signal. semgate may close idle keep-alive
    # connections when it starts draining; if it answers, it must say 503.
    mock, sg = h.start("--quiet", "--stream-chunks", "15", "--stream-interval-ms", "200",
                       limits={"drain_timeout_ms": 30000})
    ka = sg.connect(timeout=20)
    h.expect_status(ka.request("GET", "/readyz"), 200)
    c, r = start_stream(sg, h.unique("keep busy"))
    try:
        sg.signal(signal.SIGTERM)
        h.wait_for(lambda: refuses_connections(sg), timeout=10, what="draining")
        if ka.try_send(h.build_request("GET", "/readyz")):
            try:
                rr = ka.read_response()
                h.expect_status(rr, 503)
                h.expect_eq(rr.json().get("status") != "ready", True, "readyz body says ready")
            except h.ConnectionClosed:
                pass
        finish_stream(c, r)
        h.expect(r.events() and r.events()[-1]["data"] == "[DONE]", "stream cut by the drain")
    finally:
        c.close()
        ka.close()
    h.expect_eq(sg.wait_exit(30), 0, "exit code")


def test_readyz_pipelined_behind_inflight_request():
    # A /readyz pipelined behind a slow request is parsed before the signal and
    # answered after it: if semgate answers it at all, it must say 503.
    mock, sg = h.start("--quiet", limits={"drain_timeout_ms": 30000})
    p = h.unique("[[latency=1500]]")
    with sg.connect(timeout=30) as c:
        c.send(h.build_request("POST", "/v1/chat/completions", body=h.chat_body(p))
               + h.build_request("GET", "/readyz"))
        h.wait_for(lambda: mock.stats()["chat"] >= 1, timeout=10,
                   what="the request to reach the mock")
        sg.signal(signal.SIGTERM)
        h.expect_answer(c.read_response(), p)
        try:
            rr = c.read_response()
            h.expect_status(rr, 503)
        except h.ConnectionClosed:
            pass
    h.expect_eq(sg.wait_exit(30), 0, "exit code")


def test_drain_timeout_cuts_long_stream():
    mock, sg = h.start("--quiet", "--stream-chunks", "1000", "--stream-interval-ms", "100",
                       limits={"drain_timeout_ms": 1000})
    c, r = start_stream(sg, h.unique("endless"))
    try:
        sg.signal(signal.SIGTERM)
        rc = sg.wait_exit(30)
        h.expect_eq(rc, 0, "exit code after the drain timeout")
        try:
            finish_stream(c, r)
        except h.ConnectionClosed:
            pass
        events = r.events()
        h.expect(not events or events[-1]["data"] != "[DONE]",
                 "a 100 s stream completed within the drain")
    finally:
        c.close()


if __name__ == "__main__":
    h.main()
