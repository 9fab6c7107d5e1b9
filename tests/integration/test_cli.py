"""semgate's command line: --version, --help, unknown options, --check and
config validation (every error printed, each starting with its JSON path)."""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def valid_config(tmp):
    return {
        "listen": "127.0.0.1:%d" % h.free_port(),
        "log_level": "warn",
        "limits": {
            "max_body_bytes": 1048576, "max_header_bytes": 16384, "max_headers": 100,
            "max_url_bytes": 8192, "request_timeout_ms": 30000, "idle_timeout_ms": 60000,
            "max_connections": 10000, "drain_timeout_ms": 10000,
            "max_response_bytes": 16777216,
        },
        "models": [
            {"name": "gpt-4o-mini",
             "deployments": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                              "api_key_env": "OPENAI_API_KEY", "model": "mock-model",
                              "headers": {"X-Extra": "1"}, "connect_timeout_ms": 5000,
                              "timeout_ms": 60000}]},
        ],
        "cache": {"path": os.path.join(tmp, "d"), "threshold": 0.9},
    }


def minimal_config():
    return {"models": [{"name": "m", "deployments": [{"base_url": "http://127.0.0.1:9/v1"}]}]}


def write(tmp, obj_or_text, name="c.json"):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text, indent=2))
    return path


def check(obj_or_text):
    tmp = h.make_temp_dir()
    path = write(tmp, obj_or_text)
    rc, out, err = h.run_semgate(["--check", path], cwd=tmp)
    return rc, out, err


def error_lines(out, err):
    return [ln.strip() for ln in (out + "\n" + err).splitlines() if ln.strip()]


def expect_invalid(obj_or_text, *paths):
    """--check fails (exit 1) and prints, for each path, a line starting with
    'path:'. Returns all output lines."""
    rc, out, err = check(obj_or_text)
    lines = error_lines(out, err)
    h.expect(rc == 1, "--check exit code %r, want 1; output:\n%s", rc, "\n".join(lines))
    h.expect("configuration OK" not in out, "invalid config reported OK:\n%s", out)
    for p in paths:
        # A trailing "*" accepts a deeper path too ("headers*": "headers.X-A:").
        if p.endswith("*"):
            ok = any(ln.startswith(p[:-1]) and ":" in ln for ln in lines)
        else:
            ok = any(ln.startswith(p + ":") for ln in lines)
        h.expect(ok, "no error line starting with %r; output:\n%s", p + ":", "\n".join(lines))
    return lines


def project_version():
    src = os.environ.get("SEMGATE_SRC")
    if not src:
        return None
    try:
        with open(os.path.join(src, "CMakeLists.txt")) as f:
            m = re.search(r"project\(semgate\s+VERSION\s+([0-9.]+)", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


# --- options -----------------------------------------------------------------------


def test_version():
    rc, out, err = h.run_semgate(["--version"])
    h.expect_eq(rc, 0, "exit code")
    line = out.strip().splitlines()[0] if out.strip() else ""
    h.expect(re.match(r"^semgate \S+$", line), "--version printed %r", out)
    v = project_version()
    if v:
        h.expect_eq(line, "semgate " + v, "--version output")


def test_help():
    rc, out, err = h.run_semgate(["--help"])
    h.expect_eq(rc, 0, "exit code")
    h.expect("usage" in out.lower(), "--help does not print usage on stdout: %r", out)
    for opt in ("--config", "--check", "--version", "--help"):
        h.expect(opt in out, "--help does not mention %s: %r", opt, out)


def test_unknown_option():
    rc, out, err = h.run_semgate(["--no-such-option"])
    h.expect_eq(rc, 2, "exit code")
    h.expect("usage" in err.lower(), "unknown option: no usage on stderr: %r", err)


# --- --check -------------------------------------------------------------------------


def test_check_valid_full():
    tmp = h.make_temp_dir()
    rc, out, err = h.run_semgate(["--check", write(tmp, valid_config(tmp))], cwd=tmp)
    h.expect(rc == 0, "--check exit %r; stdout %r stderr %r", rc, out, err)
    h.expect("configuration OK" in out, "--check stdout %r", out)


def test_check_valid_minimal():
    rc, out, err = check(minimal_config())
    h.expect(rc == 0, "--check exit %r; stdout %r stderr %r", rc, out, err)
    h.expect("configuration OK" in out, "--check stdout %r", out)


def test_check_does_not_start_server():
    tmp = h.make_temp_dir()
    cfg = valid_config(tmp)
    port = int(cfg["listen"].rsplit(":", 1)[1])
    rc, out, err = h.run_semgate(["--check", write(tmp, cfg)], cwd=tmp, timeout=20)
    h.expect_eq(rc, 0, "exit code")
    try:
        h.request("127.0.0.1", port, "GET", "/healthz", timeout=1)
        raise h.TestFailure("something answers on the listen port after --check")
    except OSError:
        pass


def test_check_bad_base_url():
    cfg = minimal_config()
    cfg["models"][0]["deployments"][0]["base_url"] = "ftp://example.com/v1"
    lines = expect_invalid(cfg, "models[0].deployments[0].base_url")
    h.expect(any("http" in ln for ln in lines if ln.startswith("models[0].deployments[0].base_url")),
             "base_url error does not say it must be http(s): %r", lines)
    cfg["models"][0]["deployments"][0]["base_url"] = "not a url"
    expect_invalid(cfg, "models[0].deployments[0].base_url")


def test_check_threshold_range():
    for bad in (1.5, -0.1):
        cfg = minimal_config()
        cfg["cache"] = {"threshold": bad}
        lines = expect_invalid(cfg, "cache.threshold")
        h.expect(any("[0" in ln and "1]" in ln for ln in lines),
                 "cache.threshold error does not give the range: %r", lines)
    for good in (0, 1, 0.5):
        cfg = minimal_config()
        cfg["cache"] = {"threshold": good}
        rc, out, err = check(cfg)
        h.expect(rc == 0, "threshold %r rejected: %s %s", good, out, err)


def test_check_bad_listen():
    for bad in ("nonsense", "127.0.0.1:99999", "127.0.0.1:"):
        cfg = minimal_config()
        cfg["listen"] = bad
        expect_invalid(cfg, "listen")


def test_check_wrong_types():
    cfg = minimal_config()
    cfg["limits"] = {"max_body_bytes": "big"}
    expect_invalid(cfg, "limits.max_body_bytes")
    cfg = minimal_config()
    cfg["models"][0]["deployments"][0]["timeout_ms"] = "slow"
    expect_invalid(cfg, "models[0].deployments[0].timeout_ms")
    cfg = minimal_config()
    cfg["models"][0]["deployments"][0]["headers"] = {"X-A": 1}
    expect_invalid(cfg, "models[0].deployments[0].headers*")
    cfg = minimal_config()
    cfg["models"] = {"name": "m"}
    expect_invalid(cfg, "models")
    cfg = minimal_config()
    cfg["limits"] = {"max_connections": -5}
    expect_invalid(cfg, "limits.max_connections")


def test_check_unknown_keys():
    cfg = minimal_config()
    cfg["bogus"] = 1
    expect_invalid(cfg, "bogus")
    cfg = minimal_config()
    cfg["limits"] = {"max_body_byte": 10}
    expect_invalid(cfg, "limits.max_body_byte")
    cfg = minimal_config()
    cfg["models"][0]["deployments"][0]["apikey"] = "sk-secret"
    expect_invalid(cfg, "models[0].deployments[0].apikey")
    cfg = minimal_config()
    cfg["models"][0]["nam"] = "x"
    expect_invalid(cfg, "models[0].nam")


def test_check_missing_required():
    expect_invalid({"listen": "127.0.0.1:8080"}, "models")
    expect_invalid({"models": [{"deployments": [{"base_url": "http://127.0.0.1:9/v1"}]}]},
                   "models[0].name")
    expect_invalid({"models": [{"name": "m"}]}, "models[0].deployments")
    expect_invalid({"models": [{"name": "m", "deployments": [{"model": "x"}]}]},
                   "models[0].deployments[0].base_url")


def test_check_reports_every_error():
    cfg = minimal_config()
    cfg["models"].append({"name": "second",
                          "deployments": [{"base_url": "http://127.0.0.1:9/v1"},
                                          {"base_url": "gopher://x"}]})
    cfg["cache"] = {"threshold": 7}
    cfg["listen"] = "nonsense"
    cfg["unknown_top"] = True
    expect_invalid(cfg, "models[1].deployments[1].base_url", "cache.threshold", "listen",
                   "unknown_top")


def test_check_invalid_json_names_line():
    text = '{\n  "models": [\n    {"name": "m",, "deployments": []}\n  ]\n}\n'
    rc, out, err = check(text)
    h.expect_eq(rc, 1, "exit code")
    both = out + err
    h.expect(re.search(r"line\D{0,3}3\b", both, re.I) or re.search(r":3:\d+", both),
             "invalid JSON error does not name line 3: %r", both)
    h.expect(re.search(r"col", both, re.I) or re.search(r":3:\d+", both),
             "invalid JSON error does not name the column: %r", both)


def test_check_not_an_object():
    rc, out, err = check("[1, 2, 3]")
    h.expect_eq(rc, 1, "exit code")
    rc, out, err = check("")
    h.expect_eq(rc, 1, "exit code (empty file)")


def test_check_missing_file():
    tmp = h.make_temp_dir()
    rc, out, err = h.run_semgate(["--check", os.path.join(tmp, "nope.json")], cwd=tmp)
    h.expect_eq(rc, 1, "exit code")
    h.expect((out + err).strip(), "no message for a missing file")


def test_config_invalid_refuses_to_start():
    tmp = h.make_temp_dir()
    cfg = minimal_config()
    cfg["listen"] = "127.0.0.1:%d" % h.free_port()
    cfg["cache"] = {"threshold": 2, "path": os.path.join(tmp, "d")}
    rc, out, err = h.run_semgate(["--config", write(tmp, cfg)], cwd=tmp, timeout=20)
    h.expect(rc != 0, "semgate started with an invalid config (rc %r)", rc)
    h.expect("cache.threshold" in out + err, "startup error does not name cache.threshold: %r",
             out + err)


def test_config_runs():
    mock = h.Mock("--quiet")
    sg = h.Semgate(h.base_config(mock))
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
