"""HTTP/1.1 on the client side: keep-alive, pipelining, chunked request bodies,
Expect: 100-continue, HTTP/1.0, every limit, malformed HTTP."""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def chat_req(prompt, **kw):
    return h.build_request("POST", "/v1/chat/completions", body=h.chat_body(prompt), **kw)


def expect_closed_after(c, what):
    h.expect(c.wait_closed(10), "connection not closed after %s", what)


# --- keep-alive, pipelining, HTTP/1.0 -------------------------------------------------


def test_keep_alive_default():
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        for i in range(5):
            p = h.unique("ka %d" % i)
            r = c.request("POST", "/v1/chat/completions", body=h.chat_body(p))
            h.expect_answer(r, p)
            h.expect(not r.wants_close(), "response %d asks to close: %r", i, r.headers.pairs)
        h.expect_status(c.request("GET", "/healthz"), 200)
        h.expect_status(c.request("GET", "/v1/models"), 200)


def test_pipelining_in_order():
    mock, sg = h.start("--quiet")
    prompts = [h.unique("slow [[latency=300]]"), h.unique("fast one"), h.unique("fast two")]
    with sg.connect() as c:
        data = b"".join([chat_req(prompts[0]),
                         h.build_request("GET", "/healthz"),
                         chat_req(prompts[1]),
                         h.build_request("GET", "/v1/models"),
                         chat_req(prompts[2])])
        c.send(data)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response()
        r5 = c.read_response()
        h.expect_answer(r1, prompts[0])
        h.expect_eq(r2.json(), {"status": "ok"}, "2nd pipelined response")
        h.expect_answer(r3, prompts[1])
        h.expect_eq(r4.json()["object"], "list", "4th pipelined response")
        h.expect_answer(r5, prompts[2])
        # Still usable afterwards.
        h.expect_status(c.request("GET", "/healthz"), 200)


def test_pipelining_split_across_sends():
    mock, sg = h.start("--quiet")
    p1, p2 = h.unique("a"), h.unique("b")
    data = chat_req(p1) + chat_req(p2)
    with sg.connect() as c:
        # Cut in the middle of the second request's headers.
        cut = len(chat_req(p1)) + 20
        c.send(data[:cut])
        time.sleep(0.2)
        c.send(data[cut:])
        h.expect_answer(c.read_response(), p1)
        h.expect_answer(c.read_response(), p2)


def test_byte_at_a_time():
    mock, sg = h.start("--quiet")
    p = h.unique("dribble")
    data = chat_req(p)
    with sg.connect() as c:
        for i in range(len(data)):
            c.send(data[i:i + 1])
        h.expect_answer(c.read_response(), p)


def test_connection_close_header():
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        c.send(h.build_request("GET", "/healthz", headers={"Connection": "close"}))
        r = c.read_response()
        h.expect_status(r, 200)
        expect_closed_after(c, "Connection: close")


def test_http10():
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        c.send(h.build_request("GET", "/healthz", version="HTTP/1.0"))
        r = c.read_response()
        h.expect_status(r, 200)
        h.expect_eq(r.json(), {"status": "ok"}, "body")
        expect_closed_after(c, "an HTTP/1.0 reply")
    with sg.connect() as c:
        c.send(h.build_request("GET", "/healthz", version="HTTP/1.0",
                               headers={"Connection": "keep-alive"}))
        r = c.read_response()
        h.expect_status(r, 200)
        h.expect(not r.wants_close(), "HTTP/1.0 keep-alive reply says close: %r", r.headers.pairs)
        p = h.unique()
        c.send(chat_req(p, version="HTTP/1.0", headers={"Connection": "keep-alive"}))
        h.expect_answer(c.read_response(), p)


def test_query_and_odd_paths():
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        r = c.request("GET", "/healthz?probe=1")
        h.expect_status(r, 200)
        r = c.request("GET", "/v1/../healthz")
        h.expect(r.status in (200, 400, 404), "status %d for a dot-dot path", r.status)
    sg.assert_alive()


# --- request bodies -----------------------------------------------------------------


def test_chunked_request_body():
    mock, sg = h.start("--quiet")
    p = h.unique("chunky")
    body = h.chunked(json.dumps(h.chat_body(p)))
    req = h.build_request("POST", "/v1/chat/completions", body=body,
                          headers={"Content-Type": "application/json",
                                   "Transfer-Encoding": "chunked"})
    with sg.connect() as c:
        c.send(req)
        h.expect_answer(c.read_response(), p)
        # The connection stays usable after a chunked body.
        p2 = h.unique()
        h.expect_answer(c.request("POST", "/v1/chat/completions", body=h.chat_body(p2)), p2)


def test_chunked_with_extensions_and_trailers():
    mock, sg = h.start("--quiet")
    p = h.unique("ext")
    raw = json.dumps(h.chat_body(p)).encode()
    half = len(raw) // 2
    body = (b"%x;name=value\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: yes\r\n\r\n"
            % (half, raw[:half], len(raw) - half, raw[half:]))
    req = h.build_request("POST", "/v1/chat/completions", body=body,
                          headers={"Content-Type": "application/json",
                                   "Transfer-Encoding": "chunked"})
    with sg.connect() as c:
        c.send(req)
        h.expect_answer(c.read_response(), p)


def test_expect_100_continue():
    mock, sg = h.start("--quiet")
    p = h.unique("expecting")
    body = json.dumps(h.chat_body(p)).encode()
    head = h.build_request("POST", "/v1/chat/completions", body=body,
                           headers={"Content-Type": "application/json",
                                    "Expect": "100-continue"})
    head = head[:len(head) - len(body)]
    with sg.connect() as c:
        c.send(head)
        r = c.read_response(skip_continue=False)
        h.expect_eq(r.status, 100, "interim status before the body is sent")
        h.expect_eq(r.version, "HTTP/1.1", "version of the 100 response")
        c.send(body)
        h.expect_answer(c.read_response(), p)


def test_expect_100_continue_chunked():
    mock, sg = h.start("--quiet")
    p = h.unique("expecting chunks")
    with sg.connect() as c:
        c.send(h.build_request("POST", "/v1/chat/completions", headers={
            "Content-Type": "application/json", "Transfer-Encoding": "chunked",
            "Expect": "100-continue"}))
        r = c.read_response(skip_continue=False)
        h.expect_eq(r.status, 100, "interim status")
        c.send(h.chunked(json.dumps(h.chat_body(p))))
        h.expect_answer(c.read_response(), p)


# --- limits -------------------------------------------------------------------------


def test_body_limit_content_length():
    mock, sg = h.start("--quiet", limits={"max_body_bytes": 4096})
    with sg.connect() as c:
        big = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * 8000 + b'"}]}'
        c.send_until_reply(h.build_request("POST", "/v1/chat/completions", body=big,
                                   headers={"Content-Type": "application/json"}))
        r = c.read_partial()
        h.expect_error(r, 413, code="body_too_large")
        expect_closed_after(c, "413")
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")
    sg.assert_alive()


def test_body_limit_detected_from_content_length_up_front():
    # Only the headers are sent: the 413 must not wait for the body.
    mock, sg = h.start("--quiet", limits={"max_body_bytes": 4096})
    with sg.connect() as c:
        c.send(h.build_request("POST", "/v1/chat/completions", headers={
            "Content-Type": "application/json", "Content-Length": "1000000"}))
        h.expect_error(c.read_partial(), 413, code="body_too_large")
        expect_closed_after(c, "413")
    sg.assert_alive()


def test_body_limit_exact_size_accepted():
    mock, sg = h.start("--quiet", limits={"max_body_bytes": 4096})
    p = h.unique()
    raw = json.dumps(h.chat_body(p)).encode()
    raw = raw + b" " * (4096 - len(raw))  # trailing whitespace is valid JSON
    h.expect_eq(len(raw), 4096, "body size")
    r = sg.request("POST", "/v1/chat/completions", body=raw,
                   headers={"Content-Type": "application/json"})
    h.expect_answer(r, p)
    r = sg.request("POST", "/v1/chat/completions", body=raw + b" ",
                   headers={"Content-Type": "application/json"})
    h.expect_error(r, 413, code="body_too_large")


def test_body_limit_expect_100_continue():
    mock, sg = h.start("--quiet", limits={"max_body_bytes": 4096})
    with sg.connect() as c:
        c.send(h.build_request("POST", "/v1/chat/completions", headers={
            "Content-Type": "application/json", "Content-Length": "100000",
            "Expect": "100-continue"}))
        r = c.read_partial()
        h.expect(r.status != 100, "semgate said 100 Continue to a body over the limit")
        h.expect_error(r, 413, code="body_too_large")
        expect_closed_after(c, "413")
    sg.assert_alive()


def test_body_limit_chunked():
    mock, sg = h.start("--quiet", limits={"max_body_bytes": 4096})
    raw = (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"y" * 20000
           + b'"}]}')
    with sg.connect() as c:
        c.send(h.build_request("POST", "/v1/chat/completions", headers={
            "Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
        c.send_until_reply(h.chunked(raw, sizes=(1000,)), piece=1006)
        r = c.read_partial()
        h.expect_error(r, 413, code="body_too_large")
        expect_closed_after(c, "413")
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")
    sg.assert_alive()


def test_header_bytes_limit():
    mock, sg = h.start("--quiet", limits={"max_header_bytes": 2048})
    with sg.connect() as c:
        c.send_until_reply(h.build_request("GET", "/healthz", headers={"X-Big": "a" * 4000}))
        r = c.read_partial()
        h.expect_error(r, 431)
    with sg.connect() as c:
        # Many small headers that add up past the limit.
        hdrs = [("X-H%d" % i, "v" * 100) for i in range(40)]
        c.send_until_reply(h.build_request("GET", "/healthz", headers=hdrs))
        h.expect_error(c.read_partial(), 431)
    # Just under the limit is fine.
    r = sg.request("GET", "/healthz", headers={"X-Ok": "a" * 1000})
    h.expect_status(r, 200)
    sg.assert_alive()


def test_header_count_limit():
    mock, sg = h.start("--quiet", limits={"max_headers": 10})
    with sg.connect() as c:
        hdrs = [("X-N%d" % i, "1") for i in range(20)]
        c.send_until_reply(h.build_request("GET", "/healthz", headers=hdrs))
        h.expect_error(c.read_partial(), 431)
    hdrs = [("X-N%d" % i, "1") for i in range(5)]
    h.expect_status(sg.request("GET", "/healthz", headers=hdrs), 200)
    sg.assert_alive()


def test_url_limit():
    mock, sg = h.start("--quiet", limits={"max_url_bytes": 1024})
    with sg.connect() as c:
        c.send_until_reply(h.build_request("GET", "/healthz?q=" + "a" * 3000))
        h.expect_error(c.read_partial(), 414)
    h.expect_status(sg.request("GET", "/healthz?q=" + "a" * 500), 200)
    sg.assert_alive()


def test_request_timeout_headers():
    mock, sg = h.start("--quiet", limits={"request_timeout_ms": 500})
    with sg.connect(timeout=20) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        r = c.read_partial()
        h.expect_error(r, 408)
        expect_closed_after(c, "408")
    sg.assert_alive()


def test_request_timeout_body():
    mock, sg = h.start("--quiet", limits={"request_timeout_ms": 500})
    with sg.connect(timeout=20) as c:
        c.send(h.build_request("POST", "/v1/chat/completions", headers={
            "Content-Type": "application/json", "Content-Length": "200"}) + b'{"model":')
        r = c.read_partial()
        h.expect_error(r, 408)
        expect_closed_after(c, "408")
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")
    sg.assert_alive()


def test_request_timeout_trickle():
    # A client that keeps sending a byte now and then still has to finish in time.
    mock, sg = h.start("--quiet", limits={"request_timeout_ms": 800})
    with sg.connect(timeout=20) as c:
        c.send(b"GET /healthz HTTP/1.1\r\n")
        got = b""
        for _ in range(100):
            if not c.try_send(b"X-Slow: 1\r\n"):
                break
            got += c.read_available(0.1)
            if got or c.eof:
                break
        got += c.buf
        c.buf = b""
        h.expect(got.startswith(b"HTTP/1.1 408"), "trickling client got %r, want a 408", got[:200])
    sg.assert_alive()


def test_idle_timeout_closes_silently():
    mock, sg = h.start("--quiet", limits={"idle_timeout_ms": 500})
    with sg.connect(timeout=20) as c:
        h.expect_status(c.request("GET", "/healthz"), 200)
        c.settimeout(15)
        data = b""
        while True:
            try:
                chunk = c.sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                raise h.TestFailure("idle keep-alive connection not closed")
            if not chunk:
                break
            data += chunk
        h.expect_eq(data, b"", "bytes sent on an idle connection before closing it")
    sg.assert_alive()


def test_max_connections():
    mock, sg = h.start("--quiet", limits={"max_connections": 4})
    conns = []
    try:
        for _ in range(4):
            c = sg.connect()
            conns.append(c)
            h.expect_status(c.request("GET", "/healthz"), 200)
        # Beyond the limit health is still answered (limits.health_connections),
        # anything else gets 503; either way the connection then closes.
        extra = sg.connect()
        conns.append(extra)
        extra.try_send(h.build_request("GET", "/healthz"))
        r = extra.read_partial()
        h.expect_status(r, 200)
        h.expect(extra.wait_closed(10), "the over-limit connection was not closed")
        extra = sg.connect()
        conns.append(extra)
        extra.try_send(h.build_request("GET", "/v1/models"))
        r = extra.read_partial()
        h.expect_error(r, 503, code="overloaded")
        h.expect(extra.wait_closed(10), "the over-limit connection was not closed")
        for c in conns[:4]:
            h.expect_status(c.request("GET", "/healthz"), 200)
        p = h.unique()
        h.expect_answer(conns[0].request("POST", "/v1/chat/completions",
                                         body=h.chat_body(p)), p)
        # Closing one frees a slot.
        conns[1].close()

        def fresh_ok():
            try:
                return h.request(sg.host, sg.port, "GET", "/healthz", timeout=5).status == 200
            except (OSError, h.TestFailure):
                return False
        h.wait_for(fresh_ok, timeout=10, what="a new connection after one closed")
    finally:
        for c in conns:
            c.close()


# --- malformed HTTP --------------------------------------------------------------


def malformed_result(sg, data):
    """None if data gets a 400 JSON error and then the connection closes,
    else what happened instead."""
    with sg.connect(timeout=10) as c:
        c.try_send(data)
        try:
            r = c.read_partial()
            h.expect_error(r, 400)
            h.expect(c.wait_closed(10), "connection not closed after the 400")
        except (h.TestFailure, OSError) as e:
            return "%r: %s" % (data, str(e).splitlines()[0] if str(e) else repr(e))
    return None


def expect_all_400_close(sg, cases):
    failures = [f for f in (malformed_result(sg, d) for d in cases) if f]
    h.expect(not failures, "%d of %d malformed requests not answered 400 + close:\n%s",
             len(failures), len(cases), "\n".join(failures))
    sg.assert_alive()


def test_malformed_request_line():
    mock, sg = h.start("--quiet", limits={"request_timeout_ms": 3000})
    expect_all_400_close(sg, [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /healthz HTTP/9.9x\r\nHost: x\r\n\r\n",
        b"GET /healthz FTP/1.1\r\nHost: x\r\n\r\n",
        b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /heal thz HTTP/1.1\r\nHost: x\r\n\r\n"])


def test_malformed_headers():
    mock, sg = h.start("--quiet", limits={"request_timeout_ms": 3000})
    expect_all_400_close(sg, [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\nhello!",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"])


def test_malformed_chunks():
    # A short request timeout so a parser waiting for data that never comes
    # shows up as a (wrong) 408 instead of a hang.
    mock, sg = h.start("--quiet", limits={"request_timeout_ms": 3000})
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    expect_all_400_close(sg, [head + body for body in (
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcdef\r\n0\r\n\r\n",  # chunk longer than its size
        b"-1\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcXX0\r\n\r\n")])  # no CRLF after the chunk data
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")


def test_pipelined_backlog_behind_slow_request_never_dropped():
    # Regression: while a slow request is handled, pipelined bytes are
    # buffered; past the buffer's cap they were once silently dropped (and the
    # client waited forever for their answers). One 1.5 s chat request, then
    # 15,000 pipelined GET /healthz (several MB): every one must be answered,
    # in order (each carries its own X-Request-Id), and the connection must
    # stay usable.
    mock, sg = h.start("--quiet")
    n = 15000
    p = h.unique("slow head of line [[latency=1500]]")
    pad = "p" * 200
    gets = b"".join(h.build_request("GET", "/healthz?i=%d" % i,
                                    headers={"X-Request-Id": "pipe-%d" % i, "X-Pad": pad})
                    for i in range(n))
    h.expect(len(gets) > 3 * (1 << 20), "pipelined bytes %d, want over 3 MB", len(gets))
    data = chat_req(p, headers={"X-Request-Id": "pipe-head"}) + gets
    with sg.connect(timeout=30) as c:
        sent = []

        def sender():
            # Sent while we read: semgate stops reading at its mark, and its
            # answers must be drained for it to go on.
            try:
                c.sock.sendall(data)
                sent.append(True)
            except OSError as e:
                sent.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        r = c.read_response()
        h.expect_answer(r, p)
        h.expect_eq(r.header("X-Request-Id"), "pipe-head", "X-Request-Id of the first answer")
        statuses = {}
        for i in range(n):
            try:
                r = c.read_response()
            except h.ConnectionClosed as e:
                raise h.TestFailure("connection closed after %d of %d pipelined answers: %s"
                                    % (i, n, e))
            statuses[r.status] = statuses.get(r.status, 0) + 1
            if r.status != 200:
                raise h.TestFailure("pipelined GET %d answered %d: %r" % (i, r.status, r))
            if r.header("X-Request-Id") != "pipe-%d" % i:
                raise h.TestFailure("answer %d has X-Request-Id %r (lost or out of order)"
                                    % (i, r.header("X-Request-Id")))
        t.join(30)
        h.expect(sent == [True], "sending the pipeline failed: %r", sent)
        h.expect_eq(statuses, {200: n}, "statuses of the pipelined answers")
        # Nothing extra, and the connection is still usable.
        h.expect_eq(c.buf, b"", "bytes after the last expected answer")
        h.expect_status(c.request("GET", "/healthz"), 200)
    h.expect_eq(mock.stats()["chat"], 1, "chat requests that reached the mock")
    sg.assert_alive()


def test_header_names_in_any_case():
    # Header names match whatever the case of their letters (RFC 9110 5.1),
    # and only a name of the same letters: one that differs in one does not.
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        r = c.request("POST", "/v1/chat/completions", body=h.chat_body(h.unique("case")),
                      headers={"x-REQUEST-iD": "case-1"})
        h.expect_eq(r.header("X-Request-Id"), "case-1", "X-Request-Id sent as x-REQUEST-iD")
        r = c.request("POST", "/v1/chat/completions", body=h.chat_body(h.unique("case")),
                      headers={"X-Request-Ie": "case-2"})
        h.expect(r.header("X-Request-Id") not in (None, "case-2"),
                 "X-Request-Ie taken for X-Request-Id: %r", r.header("X-Request-Id"))
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
