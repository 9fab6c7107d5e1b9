"""Integration-test harness for semgate (Python 3 standard library only).

Starts the real semgate binary ($SEMGATE_BIN) and the mock upstream ($MOCK_BIN)
on free ports with generated configs, speaks raw HTTP/1.1 over sockets, and
cleans up every process and temp dir it made, even when a test fails.

A test file defines test_* functions and ends with:

    if __name__ == "__main__":
        harness.main()

main() runs them in definition order, prints "PASS name" / "FAIL name" (with
the traceback), then "N passed, N failed", and exits 1 if any failed.
SG_TEST_FILTER=substr runs only the tests whose name contains substr.
"""

import atexit
import copy
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HOST = "127.0.0.1"
TEST_TIMEOUT_S = int(os.environ.get("SG_TEST_TIMEOUT", "90"))  # per test, hang guard
STARTUP_TIMEOUT_S = 10.0
IO_TIMEOUT_S = 15.0  # default socket timeout: generous, only guards against hangs
MODEL = "gpt-4o-mini"  # the model group name of the default config
UPSTREAM_MODEL = "mock-model"  # the deployment's model name in the default config


class TestFailure(AssertionError):
    pass


# --- process and temp-dir bookkeeping -------------------------------------------

_procs = []  # every child process started by this harness, killed at cleanup
_dirs = []  # every temp dir made by this harness, removed at cleanup


def _track_proc(p):
    _procs.append(p)
    return p


def make_temp_dir(prefix="sg-it-"):
    """A fresh temp dir, removed at the end of the current test."""
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.append(d)
    return d


def cleanup_all():
    """Kill every process we started and remove every temp dir we made."""
    while _procs:
        p = _procs.pop()
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
        try:
            p.wait(timeout=10)
        except Exception:
            pass
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                if f:
                    f.close()
            except Exception:
                pass
    while _dirs:
        shutil.rmtree(_dirs.pop(), ignore_errors=True)


def _bin(var):
    path = os.environ.get(var)
    if not path:
        raise TestFailure("%s is not set (run through ctest, or set it by hand)" % var)
    if not os.access(path, os.X_OK):
        raise TestFailure("%s=%s is not an executable file" % (var, path))
    return path


def semgate_bin():
    return _bin("SEMGATE_BIN")


def mock_bin():
    return _bin("MOCK_BIN")


def free_port(host=HOST):
    """A TCP port on host (127.0.0.1 unless given; "0.0.0.0" for one free on
    every address) that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def closed_port():
    """A port with nothing listening on it (connects are refused)."""
    return free_port()


def wait_for(pred, timeout=5.0, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TestFailure("timed out waiting for %s (last value: %r)" % (what, last))
        time.sleep(interval)


_prompt_seq = itertools.count(1)


def unique(prompt="hello"):
    """A prompt no other request in this run used (so no cache can answer it)."""
    return "%s #%d-%d-%d" % (prompt, os.getpid(), next(_prompt_seq), time.time_ns() % 1000000)


# --- the mock upstream -----------------------------------------------------------


class Mock:
    """The mock upstream: `$MOCK_BIN --port 0 ARGS...` on a port it picks.

    Use as a context manager or call stop(); the harness also kills it after
    each test. Attributes: host, port, url (…/v1 base URL), proc.
    """

    def __init__(self, *args, env=None):
        cmd = [mock_bin(), "--port", "0"] + [str(a) for a in args]
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.cmd = cmd
        self.proc = _track_proc(subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=full_env))
        self._out = []
        self._err = []
        line = self._read_first_line(STARTUP_TIMEOUT_S)
        # Keep draining both pipes so a chatty mock never blocks on a full pipe.
        threading.Thread(target=self._drain, args=(self.proc.stdout, self._out),
                         daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self._err),
                         daemon=True).start()
        prefix = "listening on "
        if not line.startswith(prefix):
            self.stop()
            raise TestFailure("mock printed %r, expected 'listening on HOST:PORT'; stderr:\n%s"
                              % (line, self.log()))
        hostport = line[len(prefix):].strip()
        host, _, port = hostport.rpartition(":")
        self.host = host.strip("[]") or HOST
        if self.host in ("0.0.0.0", "::", "*"):
            self.host = HOST
        self.port = int(port)
        self.url = "http://%s:%d/v1" % (self.host, self.port)

    def _read_first_line(self, timeout):
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise TestFailure("mock did not print its address within %.0f s" % timeout)
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                err = b""
                try:
                    err = self.proc.stderr.read() or b""
                except Exception:
                    pass
                self.stop()
                raise TestFailure("mock exited before printing its address (rc=%r): %s"
                                  % (self.proc.poll(), err.decode("utf-8", "replace")))
            buf += chunk
        line, _, rest = buf.partition(b"\n")
        if rest:
            self._out.append(rest)
        return line.decode("utf-8", "replace")

    @staticmethod
    def _drain(f, sink):
        try:
            for chunk in iter(lambda: f.read1(65536) if hasattr(f, "read1") else f.read(65536), b""):
                sink.append(chunk)
        except Exception:
            pass

    def log(self):
        return (b"".join(self._out) + b"".join(self._err)).decode("utf-8", "replace")

    def stats(self):
        r = request(self.host, self.port, "GET", "/mock/stats")
        if r.status != 200:
            raise TestFailure("GET /mock/stats -> %d %r" % (r.status, r.body))
        return r.json()

    def reset(self):
        r = request(self.host, self.port, "POST", "/mock/reset", body=b"")
        if r.status // 100 != 2:
            raise TestFailure("POST /mock/reset -> %d %r" % (r.status, r.body))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# --- semgate ---------------------------------------------------------------------


def base_config(mock=None, base_url=None, **deployment_extra):
    """The default test config: one model group `gpt-4o-mini` with one deployment
    on the mock (deployment model `mock-model`). Extra keyword arguments go into
    the deployment. Listen address and cache path are filled in by Semgate."""
    if base_url is None:
        base_url = mock.url if mock is not None else "http://127.0.0.1:%d/v1" % closed_port()
    dep = {"provider": "openai", "base_url": base_url, "model": UPSTREAM_MODEL}
    dep.update(deployment_extra)
    return {
        "log_level": "warn",
        "models": [{"name": MODEL, "deployments": [dep]}],
    }


class Semgate:
    """Runs `$SEMGATE_BIN --config FILE` on a free port.

    config: a dict, written as JSON to a fresh temp dir. `listen` is set to a
    free 127.0.0.1 port unless given; `cache.path` is set inside the temp dir
    unless given. env: extra environment variables (None as a value removes one).
    Waits until GET /healthz answers 200 (fails with the log if not).
    Attributes: host, port, proc, dir, config_path, config; log() returns
    stdout+stderr so far.
    """

    def __init__(self, config, env=None, wait=True, args=()):
        self.dir = make_temp_dir("sg-it-")
        self.config = copy.deepcopy(config)
        fixed_listen = "listen" in self.config
        cache = self.config.get("cache")
        if cache is None:
            self.config["cache"] = {"path": os.path.join(self.dir, "d")}
        elif isinstance(cache, dict) and "path" not in cache:
            cache["path"] = os.path.join(self.dir, "d")
        self.env = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.args = list(args)
        self.proc = None
        attempts = 1 if fixed_listen else 3
        for attempt in range(attempts):
            if not fixed_listen:
                self.config["listen"] = "%s:%d" % (HOST, free_port())
            self._start()
            if not wait:
                return
            try:
                self.wait_healthy(STARTUP_TIMEOUT_S)
                return
            except TestFailure:
                # Another process may have taken the "free" port: try another.
                if attempt + 1 < attempts and self.proc.poll() is not None:
                    continue
                raise

    def _start(self):
        host, _, port = self.config["listen"].rpartition(":")
        self.host = host.strip("[]") or HOST
        if self.host in ("0.0.0.0", "::"):
            self.host = HOST
        self.port = int(port)
        self.config_path = os.path.join(self.dir, "semgate.json")
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.log_path = os.path.join(self.dir, "semgate.log")
        self._logf = open(self.log_path, "ab")
        self.proc = _track_proc(subprocess.Popen(
            [semgate_bin(), "--config", self.config_path] + self.args,
            stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.dir))
        self._logf.close()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_healthy(self, timeout=STARTUP_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TestFailure("semgate exited with %r during startup; log:\n%s"
                                  % (self.proc.returncode, self.log()))
            try:
                r = request(self.host, self.port, "GET", "/healthz", timeout=2)
                if r.status == 200:
                    return
                last = "status %d" % r.status
            except (OSError, TestFailure) as e:
                last = repr(e)
            time.sleep(0.05)
        raise TestFailure("semgate not healthy within %.0f s (%s); log:\n%s"
                          % (timeout, last, self.log()))

    def assert_alive(self):
        """semgate is still running and answers GET /healthz with 200."""
        if self.proc.poll() is not None:
            raise TestFailure("semgate died (rc=%r); log:\n%s" % (self.proc.returncode, self.log()))
        r = request(self.host, self.port, "GET", "/healthz", timeout=10)
        if r.status != 200:
            raise TestFailure("/healthz -> %d %r; log:\n%s" % (r.status, r.body, self.log()))

    def url(self, path=""):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def connect(self, timeout=IO_TIMEOUT_S):
        return Conn(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=IO_TIMEOUT_S):
        return request(self.host, self.port, method, path, body=body, headers=headers,
                       timeout=timeout)

    def post_json(self, path, obj, headers=None, timeout=IO_TIMEOUT_S):
        return self.request("POST", path, body=obj, headers=headers, timeout=timeout)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("semgate did not exit within %d s; log:\n%s" % (timeout, self.log()))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def start(*mock_args, limits=None, config=None, env=None, **deployment_extra):
    """Start a mock (with mock_args) and a semgate proxying to it with the
    default config (plus limits, plus deployment_extra, then config's top-level
    keys). Returns (mock, semgate); both are cleaned up after the test."""
    mock = Mock(*mock_args)
    cfg = base_config(mock, **deployment_extra)
    if limits:
        cfg["limits"] = dict(limits)
    if config:
        cfg.update(config)
    return mock, Semgate(cfg, env=env)


def run_semgate(args, env=None, timeout=30, cwd=None):
    """Run semgate with args to completion: (returncode, stdout, stderr) as text."""
    full_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    p = _track_proc(subprocess.Popen([semgate_bin()] + list(args), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env, cwd=cwd))
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise TestFailure("semgate %s did not finish within %d s" % (" ".join(args), timeout))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# --- raw HTTP client -------------------------------------------------------------


class Headers:
    """Response headers: an ordered list of (name, value) pairs, looked up
    case-insensitively."""

    def __init__(self, pairs=None):
        self.pairs = list(pairs or [])

    def get(self, name, default=None):
        n = name.lower()
        for k, v in self.pairs:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name):
        n = name.lower()
        return [v for k, v in self.pairs if k.lower() == n]

    def __contains__(self, name):
        return self.get(name) is not None

    def __getitem__(self, name):
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __repr__(self):
        return "Headers(%r)" % (self.pairs,)


class Response:
    """A parsed HTTP response. body is bytes (de-chunked); chunked says whether
    Transfer-Encoding: chunked was used; complete whether the body ended
    properly (Content-Length reached / terminating 0-size chunk seen / EOF
    for a read-until-close body)."""

    def __init__(self, version, status, reason, headers):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = b""
        self.chunked = False
        self.complete = False
        self.chunks = []  # the body's chunks as received (chunked responses)
        self.trailers = Headers()

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as e:
            raise TestFailure("response body is not JSON (%s): %r" % (e, self.body[:500]))

    def events(self):
        return parse_sse(self.body)

    def wants_close(self):
        conn = (self.header("Connection") or "").lower()
        if "close" in conn:
            return True
        if self.version == "HTTP/1.0" and "keep-alive" not in conn:
            return True
        return False

    def __repr__(self):
        return "<Response %s %d %r body=%r>" % (self.version, self.status, self.headers.pairs,
                                                 self.body[:300])


class ConnectionClosed(TestFailure):
    pass


class Conn:
    """One client TCP connection with a read buffer, for byte-exact tests."""

    def __init__(self, host, port, timeout=IO_TIMEOUT_S):
        self.host = host
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def try_send(self, data):
        """send() that reports a reset/broken pipe as False instead of raising."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def send_until_reply(self, data, piece=16384):
        """Send data in pieces, stopping early once the server starts replying
        or stops reading (so an early error reply, e.g. 413, is read before
        the server's close can turn into a reset). True if everything was sent."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        for i in range(0, len(data), piece):
            r, _, _ = select.select([self.sock], [], [], 0)
            if r:
                self._fill()
                return False
            if not self.try_send(data[i:i + piece]):
                return False
        return True

    def _fill(self):
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_line(self, limit=1 << 20):
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise TestFailure("line too long in response")
            if not self._fill():
                raise ConnectionClosed("connection closed while reading a line (have %r)"
                                       % self.buf[:200])
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionClosed("connection closed with %d of %d bytes read"
                                       % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self):
        """Read a status line and headers; returns a Response without body."""
        line = self._read_line()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise TestFailure("bad status line %r" % line)
        try:
            status = int(parts[1])
        except ValueError:
            raise TestFailure("bad status code in %r" % line)
        pairs = []
        while True:
            h = self._read_line()
            if not h:
                break
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep:
                raise TestFailure("bad header line %r" % h)
            pairs.append((name.strip(), value.strip()))
        return Response(parts[0], status, parts[2] if len(parts) > 2 else "", Headers(pairs))

    def read_chunk(self, resp):
        """Read one chunk of a chunked body into resp; returns the data, or None
        after the terminating zero-size chunk (and trailers)."""
        size_line = self._read_line()
        size_s = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            raise TestFailure("bad chunk size line %r" % size_line)
        if size == 0:
            pairs = []
            while True:
                t = self._read_line()
                if not t:
                    break
                name, _, value = t.decode("latin-1").partition(":")
                pairs.append((name.strip(), value.strip()))
            resp.trailers = Headers(pairs)
            resp.complete = True
            return None
        data = self._read_exact(size)
        if self._read_exact(2) != b"\r\n":
            raise TestFailure("chunk data not followed by CRLF")
        resp.chunks.append(data)
        resp.body += data
        return data

    def read_body(self, resp, method="GET"):
        """Read resp's body per its framing (Content-Length, chunked or until close)."""
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            resp.complete = True
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if "chunked" in te:
            resp.chunked = True
            while self.read_chunk(resp) is not None:
                pass
        elif cl is not None:
            resp.body = self._read_exact(int(cl))
            resp.complete = True
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
            resp.complete = True
        return resp

    def read_response(self, method="GET", skip_continue=True):
        """Read one full response. 1xx interim responses are skipped unless
        skip_continue is False (then a 100 Continue is returned as is)."""
        while True:
            resp = self.read_head()
            if 100 <= resp.status < 200 and resp.status != 101:
                if skip_continue:
                    continue
                resp.complete = True
                return resp
            return self.read_body(resp, method)

    def read_partial(self, method="GET"):
        """Like read_response but tolerant of the connection closing mid-body:
        returns whatever arrived, with resp.complete False if the body was cut."""
        resp = self.read_head()
        try:
            self.read_body(resp, method)
        except ConnectionClosed:
            pass
        return resp

    def request(self, method, path, body=None, headers=None, version="HTTP/1.1"):
        self.send(build_request(method, path, body=body, headers=headers, host=self.host,
                                port=self.port, version=version))
        return self.read_response(method)

    def wait_closed(self, timeout=IO_TIMEOUT_S):
        """True if the peer closes the connection (EOF or reset) within timeout,
        discarding anything else it sends; False if it stays open."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    if not self._fill():
                        return True
                except socket.timeout:
                    return False
                except OSError:
                    self.eof = True
                    return True
            return True
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    def read_available(self, timeout=0.5):
        """Whatever bytes arrive within timeout (b"" if none)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            self._fill()
        except socket.timeout:
            pass
        finally:
            self.sock.settimeout(old)
        data, self.buf = self.buf, b""
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with a TCP reset (SO_LINGER 0), like a crashed client."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder))
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def build_request(method, path, body=None, headers=None, host=HOST, port=None,
                  version="HTTP/1.1"):
    """Bytes of an HTTP request. body: bytes, str, or a JSON-able object (sent
    as application/json). headers: dict or list of pairs; Host, Content-Type
    and Content-Length are added unless given (pass a None value to omit one)."""
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if body is not None and not isinstance(body, (bytes, bytearray, str)):
        body = json.dumps(body).encode("utf-8")
        if "content-type" not in names:
            hdrs.append(("Content-Type", "application/json"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    if "host" not in names:
        hdrs.insert(0, ("Host", "%s:%d" % (host, port) if port else host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    lines = ["%s %s %s" % (method, path, version)]
    lines += ["%s: %s" % (k, v) for k, v in hdrs if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (bytes(body) if body else b"")


def chunked(body, sizes=(7, 1, 64, 3)):
    """body encoded as a chunked request body, in chunks of cycling sizes."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    out = []
    i = 0
    for size in itertools.cycle(sizes):
        if i >= len(body):
            break
        piece = body[i:i + size]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        i += size
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def request(host, port, method, path, body=None, headers=None, timeout=IO_TIMEOUT_S,
            version="HTTP/1.1"):
    """One request on a fresh connection; returns the Response."""
    with Conn(host, port, timeout=timeout) as c:
        return c.request(method, path, body=body, headers=headers, version=version)


def parse_sse(data):
    """Parse a text/event-stream body into a list of events, each a dict with
    'data' (data lines joined by \\n) and, when present, 'event', 'id'.
    Comments (':' lines) are skipped; events without data are dropped."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    data = data.replace("\r\n", "\n").replace("\r", "\n")
    events = []
    cur = {}
    datas = []
    for line in data.split("\n"):
        if line == "":
            if datas:
                cur["data"] = "\n".join(datas)
                events.append(cur)
            cur, datas = {}, []
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            datas.append(value)
        elif field in ("event", "id", "retry"):
            cur[field] = value
    if datas:  # an unterminated final event: keep it, marked
        cur["data"] = "\n".join(datas)
        cur["unterminated"] = True
        events.append(cur)
    return events


def sse_content(events):
    """Concatenate choices[0].delta.content (chat) or choices[0].text
    (completions) over the JSON data events of a stream."""
    out = []
    for ev in events:
        if ev["data"] == "[DONE]":
            continue
        try:
            obj = json.loads(ev["data"])
        except ValueError:
            continue
        for ch in obj.get("choices") or []:
            delta = ch.get("delta") or {}
            if isinstance(delta.get("content"), str):
                out.append(delta["content"])
            elif isinstance(ch.get("text"), str):
                out.append(ch["text"])
    return "".join(out)


# --- request bodies and assertions ------------------------------------------------


def chat_body(prompt, model=MODEL, stream=False, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def expect(cond, msg, *args):
    if not cond:
        raise TestFailure(msg % args if args else msg)


def expect_eq(got, want, what="value"):
    if got != want:
        raise TestFailure("%s: expected %r, got %r" % (what, want, got))


def expect_status(resp, status):
    if resp.status != status:
        raise TestFailure("expected status %d, got %d; headers %r; body %r"
                          % (status, resp.status, resp.headers.pairs, resp.body[:1000]))


def expect_error(resp, status, code=None, type_=None, message_contains=None, upstream=False):
    """resp is an OpenAI-style error: status, JSON Content-Type,
    {"error":{"message":str,"type":str,"code":str|null}}. upstream=True: an
    upstream's error body passed through, whose code may be of any type."""
    expect_status(resp, status)
    ct = (resp.header("Content-Type") or "").lower()
    expect(ct.startswith("application/json"), "error Content-Type %r, want application/json", ct)
    obj = resp.json()
    expect(isinstance(obj, dict) and isinstance(obj.get("error"), dict),
           "error body is not {\"error\":{...}}: %r", obj)
    err = obj["error"]
    expect(isinstance(err.get("message"), str) and err["message"],
           "error.message missing or empty: %r", err)
    expect(isinstance(err.get("type"), str) and err["type"], "error.type missing: %r", err)
    expect("code" in err or upstream, "error.code missing: %r", err)
    expect(upstream or err["code"] is None or isinstance(err["code"], str),
           "error.code must be a string or null: %r", err)
    if code is not None:
        expect_eq(err["code"], code, "error.code")
    if type_ is not None:
        expect_eq(err["type"], type_, "error.type")
    if message_contains is not None:
        expect(message_contains in err["message"], "error.message %r does not mention %r",
               err["message"], message_contains)
    return err


def expect_answer(resp, prompt):
    """A 200 chat completion from the mock answering prompt."""
    expect_status(resp, 200)
    obj = resp.json()
    content = obj["choices"][0]["message"]["content"]
    expect_eq(content, "mock answer to: " + prompt, "choices[0].message.content")
    return obj


# --- the runner --------------------------------------------------------------------


class _Timeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Timeout("test exceeded %d s" % TEST_TIMEOUT_S)


def _on_term(signum, frame):
    cleanup_all()
    os._exit(128 + signum)


def main(module=None):
    """Run every test_* function of the calling module (or module)."""
    mod = module or sys.modules["__main__"]
    tests = [(name, fn) for name, fn in vars(mod).items()
             if name.startswith("test_") and callable(fn)]
    flt = os.environ.get("SG_TEST_FILTER")
    if flt:
        tests = [(n, f) for n, f in tests if flt in n]
    # A stray broken pipe must surface as an exception in the test, not kill us.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # Killed from outside (ctest timeout, Ctrl-C): take our children with us.
    atexit.register(cleanup_all)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    passed = failed = 0
    for name, fn in tests:
        ok = False
        try:
            signal.alarm(TEST_TIMEOUT_S)
            fn()
            ok = True
        except BaseException as e:
            signal.alarm(0)
            if isinstance(e, KeyboardInterrupt):
                cleanup_all()
                raise
            print("FAIL %s" % name)
            traceback.print_exc(file=sys.stdout)
        finally:
            signal.alarm(0)
            cleanup_all()
        if ok:
            passed += 1
            print("PASS %s" % name)
        else:
            failed += 1
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
