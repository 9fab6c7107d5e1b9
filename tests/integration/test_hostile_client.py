"""Hostile clients (issue 9): one client must not take the gateway down.

Pipelining without reading, very long pipelines, slow clients at the
connection limit, floods of connections and per-client caps. Memory is
asserted as an upper bound on the process's peak RSS, never a time.
"""

import json
import os
import socket
import threading
import time

import harness as h


def rss_kb(pid, field="VmHWM"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise h.TestFailure("no %s in /proc/%d/status" % (field, pid))


def chat_req(prompt, headers=None):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return h.build_request("POST", "/v1/chat/completions",
                           body=json.dumps(h.chat_body(prompt)).encode(), headers=hdrs)


def answers(sg, path="/healthz"):
    """True when a new connection gets 200 for GET path (False on any failure:
    for waiting until semgate takes connections again)."""
    try:
        return h.request(sg.host, sg.port, "GET", path, timeout=5).status == 200
    except (OSError, h.TestFailure):
        return False


def connect_from(sg, src, timeout=h.IO_TIMEOUT_S):
    """A harness connection from source address src (any of 127.0.0.0/8 is
    this machine): distinct clients as semgate sees them."""
    c = h.Conn.__new__(h.Conn)
    c.host, c.port, c.buf, c.eof = sg.host, sg.port, b"", False
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.settimeout(timeout)
    c.sock.bind((src, 0))
    c.sock.connect((sg.host, sg.port))
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def flood_without_reading(sg, data, seconds, max_bytes):
    """Send data over and over on one connection without reading a byte, for
    up to `seconds` or `max_bytes`; returns (socket, bytes sent). semgate must
    stop reading (the send blocks) rather than queue answers without bound."""
    s = socket.create_connection((sg.host, sg.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + seconds
    block = memoryview(data * max(1, (256 << 10) // len(data)))
    off = 0  # a partial send goes on where it stopped: whole requests, in order
    while time.monotonic() < deadline and sent < max_bytes:
        try:
            k = s.send(block[off:])
            sent += k
            off = (off + k) % len(block)
        except BlockingIOError:
            time.sleep(0.005)
        except OSError as e:
            raise h.TestFailure("semgate dropped the pipelining client after %d bytes: %r"
                                % (sent, e))
    return s, sent


def test_pipelining_without_reading_memory_bounded():
    """Defect 1: a client pipelining requests for a cached answer and never
    reading made semgate queue a copy of the answer per request (136 MB ->
    1.16 GB in 8 s). Reading must stop above the connection's backlog mark."""
    mock, sg = h.start("--quiet")  # the default mark: 1 MiB
    p = h.unique("cached answer for the pipelining test " + "x" * 4000)
    h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p)), p)
    idle = rss_kb(sg.proc.pid, "VmRSS")
    s, sent = flood_without_reading(sg, chat_req(p), seconds=6, max_bytes=600 << 20)
    try:
        peak = rss_kb(sg.proc.pid)
        print("pipelined %d MB without reading: peak RSS %d kB (idle %d kB)"
              % (sent >> 20, peak, idle))
        # Each request is ~4.2 KB and its answer ~4.3 KB: without back-pressure
        # every request sent is an answer queued.
        h.expect(peak < idle + 64 * 1024,
                 "peak RSS %d kB after pipelining %d MB without reading (idle %d kB)",
                 peak, sent >> 20, idle)
        # The gateway still answers everybody else.
        h.expect_status(sg.request("GET", "/healthz"), 200)
        p2 = h.unique()
        h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p2)), p2)
    finally:
        s.close()
    sg.assert_alive()


def test_pipelining_big_answers_without_reading():
    """Defect 1 with 1 MB answers (2.5 GB and /healthz unanswered for 3 s):
    bounded too, and buffered upstream replies are not held twice."""
    mock, sg = h.start("--quiet")
    p = h.unique("big [[huge=1000000]]")
    r = sg.post_json("/v1/chat/completions", h.chat_body(p))
    h.expect_status(r, 200)
    h.expect(len(r.body) > 1000000, "answer of %d bytes, want over 1 MB", len(r.body))
    idle = rss_kb(sg.proc.pid, "VmRSS")
    s, sent = flood_without_reading(sg, chat_req(p), seconds=4, max_bytes=64 << 20)
    try:
        peak = rss_kb(sg.proc.pid)
        h.expect(peak < idle + 64 * 1024, "peak RSS %d kB (idle %d kB) with 1 MB answers",
                 peak, idle)
        h.expect_status(sg.request("GET", "/healthz"), 200)
    finally:
        s.close()
    # Misses too: each reply comes from the upstream and is queued once.
    s, sent = flood_without_reading(
        sg, chat_req(h.unique("big [[huge=1000000]]"), {"Cache-Control": "no-store, no-cache"}),
        seconds=4, max_bytes=16 << 20)
    try:
        peak = rss_kb(sg.proc.pid)
        h.expect(peak < idle + 64 * 1024, "peak RSS %d kB (idle %d kB) with 1 MB misses",
                 peak, idle)
    finally:
        s.close()
    sg.assert_alive()


def test_held_bytes_cap_sheds_new_work():
    """Defect 1: past limits.max_held_bytes (bytes held for all clients) new
    requests get 503 overloaded instead of memory growing; health is still
    answered, and once the output drains requests are served again."""
    mock, sg = h.start("--quiet", limits={"max_held_bytes": 4 << 20,
                                          "max_client_backlog_bytes": 1 << 20})
    p = h.unique("big [[huge=1000000]]")
    h.expect_status(sg.post_json("/v1/chat/completions", h.chat_body(p)), 200)
    socks = []
    try:
        # Eight clients that never read: each holds up to its backlog mark plus
        # one answer, together past the 4 MB cap.
        for _ in range(8):
            s, _ = flood_without_reading(sg, chat_req(p), seconds=0.5, max_bytes=8 << 20)
            socks.append(s)
        r = sg.post_json("/v1/chat/completions", h.chat_body(h.unique()))
        h.expect_error(r, 503, code="overloaded")
        h.expect_eq(r.header("Retry-After"), "1", "Retry-After of a shed request")
        h.expect_status(sg.request("GET", "/healthz"), 200)
        h.expect_status(sg.request("GET", "/readyz"), 200)
        # admin still answers, and says why
        st = sg.request("GET", "/stats").json()["server"]
        h.expect(st["held_bytes"] > 4 << 20 and st["shed_requests"] >= 1, "/stats: %r", st)
    finally:
        for s in socks:
            s.close()

    def served():
        r = sg.post_json("/v1/chat/completions", h.chat_body("after the drain"))
        return r.status == 200
    h.wait_for(served, timeout=15, what="requests served again once the clients left")
    sg.assert_alive()


def test_twenty_thousand_pipelined_answered_in_order():
    """Defect 2: 20,000 pipelined chat requests on one connection were reset
    after ~270 answers. Every one is answered, in order (each its own prompt,
    forwarded to the upstream). The lexical embedder: this is about the front
    end, and 20,000 model embeddings one after another take minutes."""
    mock, sg = h.start("--quiet", config={"cache": {"embedder": {"provider": "local"}}})
    n = 20000
    data = b"".join(chat_req("pipelined %d" % i, {"Cache-Control": "no-store"})
                    for i in range(n))
    with sg.connect(timeout=60) as c:
        errors = []

        def sender():
            try:
                c.sock.sendall(data)
            except OSError as e:
                errors.append(e)
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        for i in range(n):
            try:
                r = c.read_response("POST")
            except h.ConnectionClosed as e:
                raise h.TestFailure("connection closed after %d of %d answers: %s" % (i, n, e))
            if r.status != 200:
                raise h.TestFailure("request %d answered %d: %r" % (i, r.status, r.body[:200]))
            want = "mock answer to: pipelined %d" % i
            got = r.json()["choices"][0]["message"]["content"]
            if got != want:
                raise h.TestFailure("answer %d is %r, want %r (out of order)" % (i, got, want))
        t.join(30)
        h.expect(not errors, "sending failed: %r", errors)
        h.expect_status(c.request("GET", "/healthz"), 200)
    sg.assert_alive()


def test_slow_clients_at_limit_health_answered():
    """Weakness: slow clients holding every slot made /healthz 503. Health is
    answered beyond the limit; other requests there get 503; and a request
    arriving slower than limits.min_request_bytes_per_s gets 408 after its
    grace, freeing its slot."""
    mock, sg = h.start("--quiet", limits={"max_connections": 8, "health_connections": 4,
                                          "min_request_bytes_per_s": 200,
                                          "request_timeout_ms": 60000})
    slow = []
    try:
        for _ in range(8):
            c = sg.connect(timeout=30)
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            slow.append(c)
        # Every slot is held: health still answers, work is refused (each from
        # a client of its own: one client gets a share of the reserve only).
        with connect_from(sg, "127.0.0.11") as c:
            r = c.request("GET", "/healthz")
            h.expect_status(r, 200)
            h.expect(c.wait_closed(10), "a health connection beyond the limit stays open")
        with connect_from(sg, "127.0.0.12") as c:
            h.expect_status(c.request("GET", "/readyz"), 200)
        with connect_from(sg, "127.0.0.13") as c:
            r = c.request("POST", "/v1/chat/completions", body=h.chat_body("refused"))
            h.expect_error(r, 503, code="overloaded")
        # The slow ones are cut off once their rate counts (5 s grace).
        for c in slow:
            r = c.read_partial()
            h.expect_error(r, 408, code="request_timeout")
        # Their slots come back once the 408s are out (after a short linger).
        p = h.unique()
        h.wait_for(lambda: sg.post_json("/v1/chat/completions", h.chat_body(p)).status == 200,
                   timeout=15, what="a request served once the slow clients were cut off")
    finally:
        for c in slow:
            c.close()
    sg.assert_alive()


def test_connection_flood_beyond_limit():
    """Weakness: a flood of connections beyond the limit; each refusal logged
    a WARN line (a log-flood vector). semgate stays up, answers an
    orchestrator's health checks from another address while the flood holds
    its connections open, and rate-limits the lines."""
    mock, sg = h.start("--quiet", limits={"max_connections": 16, "health_connections": 8})
    held = []
    flood = []
    try:
        for _ in range(16):
            c = sg.connect()
            h.expect_status(c.request("GET", "/healthz"), 200)
            held.append(c)
        for _ in range(300):
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(5)
                s.bind(("127.0.0.2", 0))
                s.connect((sg.host, sg.port))
                flood.append(s)
            except OSError:
                pass
        time.sleep(0.5)
        # the flood is still open: the probe gets its answer all the same
        for _ in range(3):
            with connect_from(sg, "127.0.0.3") as c:
                h.expect_status(c.request("GET", "/healthz"), 200)
        for c in held:
            h.expect_status(c.request("GET", "/healthz"), 200)
    finally:
        for s in flood:
            s.close()
        for c in held:
            c.close()

    h.wait_for(lambda: answers(sg), timeout=10, what="a new connection after the flood")
    lines = [l for l in sg.log().splitlines() if "refusing a connection" in l]
    h.expect(0 < len(lines) <= 10, "%d 'refusing a connection' lines for 300 refusals",
             len(lines))
    sg.assert_alive()


def test_per_client_connection_cap():
    """Weakness: limits.max_connections_per_client caps what one address holds."""
    mock, sg = h.start("--quiet", limits={"max_connections_per_client": 3})
    conns = []
    try:
        for _ in range(3):
            c = sg.connect()
            h.expect_status(c.request("GET", "/healthz"), 200)
            conns.append(c)
        with sg.connect() as c:
            r = c.request("GET", "/v1/models")
            h.expect_error(r, 503, code="overloaded")
        conns.pop().close()

        h.wait_for(lambda: answers(sg, "/v1/models"), timeout=10,
                   what="a connection after one of the three closed")
    finally:
        for c in conns:
            c.close()
    sg.assert_alive()


def test_client_not_reading_is_closed():
    """A client that takes none of its answer for idle_timeout_ms is closed
    (it would otherwise hold its backlog, and an upstream, forever)."""
    mock, sg = h.start("--quiet", limits={"idle_timeout_ms": 1500})
    p = h.unique("big [[huge=1000000]]")
    h.expect_status(sg.post_json("/v1/chat/completions", h.chat_body(p)), 200)
    s, _ = flood_without_reading(sg, chat_req(p), seconds=0.5, max_bytes=8 << 20)
    try:
        def closed():
            return "took none of its" in sg.log()
        h.wait_for(closed, timeout=15, what="the non-reading client closed")
    finally:
        s.close()
    # The same for a last answer (Connection: close): its shutdown waits for
    # the output, which must not wait forever. (8 MB: more than the kernel's
    # socket buffers take.)
    before = sg.log().count("took none of its")
    s = socket.create_connection((sg.host, sg.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.sendall(chat_req(h.unique("bigger [[huge=8000000]]"), {"Connection": "close"}))
        h.wait_for(lambda: sg.log().count("took none of its") > before, timeout=15,
                   what="the non-reading client of a closing answer closed")
    finally:
        s.close()
    sg.assert_alive()


def semgate_with_fd_limit(cfg, soft, hard=None):
    """A Semgate started under `ulimit -n` (a wrapper that execs the real
    binary, so the process is semgate itself)."""
    d = h.make_temp_dir()
    wrapper = os.path.join(d, "semgate-limited")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nulimit -Sn %d || exit 99\n%sexec %s \"$@\"\n"
                % (soft, "ulimit -Hn %d || exit 99\n" % hard if hard else "", h.semgate_bin()))
    os.chmod(wrapper, 0o755)
    real = os.environ["SEMGATE_BIN"]
    os.environ["SEMGATE_BIN"] = wrapper
    try:
        return h.Semgate(cfg)
    finally:
        os.environ["SEMGATE_BIN"] = real


def test_fd_limit_checked_and_refusals_logged():
    """Weakness: connections beyond the process's file-descriptor limit were
    closed silently. At start max_connections is checked against
    RLIMIT_NOFILE (raised where allowed, warned otherwise), and connections
    refused for want of descriptors are logged, rate-limited."""
    cfg = h.base_config()
    cfg["limits"] = {"max_connections": 1000}
    sg = semgate_with_fd_limit(cfg, 64, 64)
    h.expect("file-descriptor limit (64, hard 64) is below" in sg.log(),
             "no warning about the fd limit: %s", sg.log())
    flood = []
    try:
        for _ in range(150):
            try:
                flood.append(socket.create_connection((sg.host, sg.port), timeout=5))
            except OSError:
                break
        h.wait_for(lambda: "connection limit of the file-descriptor limit" in sg.log(),
                   timeout=10, what="a log line for connections refused for want of descriptors")
    finally:
        for c in flood:
            c.close()
    lines = [l for l in sg.log().splitlines() if "refusing a connection" in l]
    h.expect(len(lines) <= 10, "%d refusal lines: not rate-limited", len(lines))
    h.wait_for(lambda: answers(sg), timeout=15, what="health after the flood")
    sg.assert_alive()
    # Where the hard limit allows, the soft one is raised instead.
    cfg2 = h.base_config()
    cfg2["log_level"] = "info"
    cfg2["limits"] = {"max_connections": 100}
    sg2 = semgate_with_fd_limit(cfg2, 64)
    h.expect("file-descriptor limit raised from 64" in sg2.log(), "no raise: %s", sg2.log())


def test_scope_collision_never_crosses():
    """Defect 3: a semantic lookup served any candidate of the index a 64-bit
    id chose, so a system prompt crafted to collide with tenant A's read A's
    answers and planted answers A was served. Here every id collides (a test
    hook cuts them to 0 bits): no request is ever answered from another scope,
    exactly or semantically, in either direction."""
    mock, sg = h.start("--quiet", config={"cache": {"threshold": 0.8}},
                       env={"SEMGATE_TEST_SCOPE_ID_BITS": "0"})
    h.expect("SEMGATE_TEST_SCOPE_ID_BITS" in sg.log(), "the test hook is not on")
    question = "what is the refund policy for annual plans"
    a = {"X-Semgate-Namespace": "tenant-a"}
    b = {"X-Semgate-Namespace": "tenant-b"}
    sys_b = {"role": "system", "content": "You are tenant B's bot."}
    ra = sg.post_json("/v1/chat/completions", h.chat_body(question), headers=a)
    h.expect_eq(ra.header("X-Semgate-Cache"), "miss", "tenant A's first request")
    ida = ra.header("X-Semgate-Cache-Id")
    h.expect_eq(sg.post_json("/v1/chat/completions", h.chat_body(question),
                             headers=a).header("X-Semgate-Cache"), "hit-exact", "A again")
    # B: same prompt, a paraphrase, and another system prompt: all misses
    # (no-store: each probe sees A's entry alone under the colliding ids)
    probes = (h.chat_body(question), h.chat_body("what's the refund policy for annual plans?"),
              {"model": h.MODEL, "messages": [sys_b, {"role": "user", "content": question}]})
    for body in probes:
        r = sg.post_json("/v1/chat/completions", body, headers=dict(b, **{"Cache-Control": "no-store"}))
        h.expect_eq(r.header("X-Semgate-Cache"), "miss", "tenant B on A's colliding id")
        h.expect(r.header("X-Semgate-Cache-Id") != ida, "B was given A's entry")
    # B plants answers under the same ids: A is still served its own
    for body in probes:
        r = sg.post_json("/v1/chat/completions", body, headers=b)
        h.expect(r.header("X-Semgate-Cache-Id") != ida, "B was given A's entry")
    for body in (h.chat_body(question), h.chat_body("what is the refund policy for annual plans?")):
        r = sg.post_json("/v1/chat/completions", body, headers=a)
        h.expect(r.header("X-Semgate-Cache") in ("hit-exact", "hit-semantic"),
                 "A's own question: %r", r.header("X-Semgate-Cache"))
        h.expect_eq(r.header("X-Semgate-Cache-Id"), ida, "the entry A was served")
    st = sg.request("GET", "/stats").json()["cache"]
    h.expect(st["scope_collisions"] > 0, "no collision counted: %r", st)
    sg.assert_alive()


def test_admin_key_env_unset_refuses_to_start():
    """Defect 4: admin_key_env naming an unset variable left every admin
    endpoint open and --check said OK. Both refuse now, naming the variable."""
    d = h.make_temp_dir()
    cfg = h.base_config()
    cfg["admin_key_env"] = "SG_TEST_ADMIN_KEY_UNSET"
    cfg["listen"] = "127.0.0.1:0"
    cfg["cache"] = {"path": os.path.join(d, "c")}
    path = os.path.join(d, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    env = {"SG_TEST_ADMIN_KEY_UNSET": None}
    rc, out, err = h.run_semgate(["--check", path], env=env)
    h.expect(rc == 1, "--check exit %d, want 1: %s%s", rc, out, err)
    h.expect("SG_TEST_ADMIN_KEY_UNSET" in out + err and "unset or empty" in out + err,
             "--check output does not name the variable: %s%s", out, err)
    rc, out, err = h.run_semgate(["--config", path], env=env, timeout=20)
    h.expect(rc != 0, "semgate started with the admin key variable unset")
    h.expect("SG_TEST_ADMIN_KEY_UNSET" in err, "start error does not name the variable: %s", err)
    rc, out, err = h.run_semgate(["--check", path], env={"SG_TEST_ADMIN_KEY_UNSET": "k"})
    h.expect(rc == 0, "--check with the variable set: %d %s%s", rc, out, err)


def test_admin_open_on_public_address_warns():
    """Weakness: admin endpoints open (no admin_key_env) on an address other
    than loopback are warned about loudly at start."""
    for attempt in range(3):
        cfg = h.base_config()
        # free on every address: a port free on 127.0.0.1 alone can be taken
        # on another one, and a fixed listen address gets no second try
        cfg["listen"] = "0.0.0.0:%d" % h.free_port("0.0.0.0")
        sg = h.Semgate(cfg, wait=False)
        try:
            sg.wait_healthy(h.STARTUP_TIMEOUT_S)
            break
        except h.TestFailure:
            taken = "address already in use" in sg.log()
            sg.stop()
            if not taken or attempt == 2:
                raise
    h.expect("admin endpoints are open to anyone" in sg.log(),
             "no warning for open admin endpoints on 0.0.0.0: %s", sg.log())
    sg.stop()
    sg2 = h.Semgate(h.base_config())
    h.expect("admin endpoints are open" not in sg2.log(), "warned on loopback: %s", sg2.log())


def test_check_nameless_model_with_fallbacks():
    """Defect 6: --check crashed (SIGSEGV) on a model without a name once any
    model had fallbacks."""
    d = h.make_temp_dir()
    cfg = h.base_config()
    cfg["models"].append({"fallbacks": [h.MODEL],
                          "deployments": [{"base_url": "http://127.0.0.1:1/v1"}]})
    cfg["models"][0]["fallbacks"] = ["nope"]
    path = os.path.join(d, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    rc, out, err = h.run_semgate(["--check", path])
    h.expect(rc == 1, "--check exit %d (want 1, an error; negative is a crash): %s%s",
             rc, out, err)
    h.expect("models[1].name" in out + err, "no error for the nameless model: %s%s", out, err)


def test_map_size_below_1gib_holds():
    """Defect 7: cache.map_size_mb below 1024 was ignored (16 grew to 1 GiB).
    The cap holds; a full store keeps serving (evicting the least recently
    used to make room) and /stats says so."""
    mock, sg = h.start("--quiet", config={"cache": {"map_size_mb": 16}})
    for i in range(60):
        p = h.unique("fill %d [[huge=400000]]" % i)
        r = sg.post_json("/v1/chat/completions", h.chat_body(p))
        h.expect_status(r, 200)
    data = os.path.join(sg.config["cache"]["path"], "data.mdb")
    size = os.path.getsize(data)
    h.expect(size <= 16 << 20, "data.mdb is %d bytes with map_size_mb 16", size)
    st = sg.request("GET", "/stats").json()["cache"]
    h.expect(st["evicted"] > 0 or st["store_failures"] > 0,
             "24 MB of answers in a 16 MB store: nothing evicted or refused: %r", st)
    h.expect("store_full" in st, "/stats has no store_full: %r", st)
    # still serving, and still caching what fits
    p = h.unique("small one")
    h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p)), p)
    r = sg.post_json("/v1/chat/completions", h.chat_body(p))
    h.expect_eq(r.header("X-Semgate-Cache"), "hit-exact", "X-Semgate-Cache of a repeat")
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
