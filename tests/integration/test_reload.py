"""Hot reload of the configuration: SIGHUP and POST /admin/reload read the
file again, validate all of it and swap it in as a new generation. New
requests use it; requests and streams in flight finish on the one they
started on; no connection is dropped; an unchanged deployment keeps its
health; options that cannot change at run time keep their value and are
reported by JSON path; an invalid file changes nothing and says why.
"""

import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

A = h.MODEL
B = "second-model"


def dep(mock, **extra):
    d = {"provider": "openai", "base_url": mock.url, "model": h.UPSTREAM_MODEL}
    d.update(extra)
    return d


def group(name, deps, **extra):
    g = {"name": name, "deployments": list(deps)}
    g.update(extra)
    return g


def rewrite(sg, **changes):
    """Write sg's config file again with changes to its top-level keys."""
    cfg = json.loads(json.dumps(sg.config))
    cfg.update(changes)
    with open(sg.config_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return cfg


def reload(sg):
    return sg.request("POST", "/admin/reload")


def stats(sg):
    r = sg.request("GET", "/stats")
    h.expect_status(r, 200)
    return r.json()


def chat(sg, prompt, model=A, stream=False, timeout=h.IO_TIMEOUT_S):
    return sg.post_json("/v1/chat/completions", h.chat_body(prompt, model=model, stream=stream),
                        timeout=timeout)


def chats(mock):
    return mock.stats()["chat"]


def start(models, **top):
    cfg = {"log_level": "info", "cache": {"enabled": False}, "models": models}
    cfg.update(top)
    return h.Semgate(cfg)


def test_reload_adds_a_model():
    m1, m2 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start([group(A, [dep(m1)])])
    h.expect_eq(stats(sg)["config"]["generation"], 1, "generation at start")
    r = chat(sg, "before")
    h.expect_answer(r, "before")
    h.expect_error(chat(sg, "x", model=B), 404, code="model_not_found")

    rewrite(sg, models=[group(A, [dep(m1)]), group(B, [dep(m2)])])
    r = reload(sg)
    h.expect_status(r, 200)
    rep = r.json()
    h.expect_eq(rep["reloaded"], True, "reloaded")
    h.expect_eq(rep["generation"], 2, "generation in the report")
    h.expect_eq(rep["models"], 2, "models in the report")
    h.expect_eq(rep["not_applied"], [], "options not applied")

    names = [m["id"] for m in sg.request("GET", "/v1/models").json()["data"]]
    h.expect_eq(names, [A, B], "/v1/models after the reload")
    before = chats(m2)
    h.expect_answer(chat(sg, "to b", model=B), "to b")
    h.expect_eq(chats(m2), before + 1, "requests m2 got for the new model")
    st = stats(sg)["config"]
    h.expect_eq(st["generation"], 2, "/stats generation")
    h.expect_eq(st["reloads"], 1, "/stats reloads")
    h.expect_eq(st["file"], sg.config_path, "/stats config file")
    h.expect(st["loaded_at_ms"] > 1.6e12, "loaded_at_ms is a unix time in ms: %r", st)
    h.expect("generation 2" in sg.log(), "log has no reload line:\n%s", sg.log())
    sg.assert_alive()


def test_reload_needs_admin_key_and_post():
    m = h.Mock("--quiet")
    sg = h.Semgate({"log_level": "warn", "cache": {"enabled": False},
                    "admin_key_env": "SG_TEST_ADMIN", "models": [group(A, [dep(m)])]},
                   env={"SG_TEST_ADMIN": "s3cret"})
    h.expect_error(reload(sg), 401, code="unauthorized")
    auth = {"Authorization": "Bearer s3cret"}
    r = sg.request("GET", "/admin/reload", headers=auth)
    h.expect_error(r, 405, code="method_not_allowed")
    r = sg.request("POST", "/admin/reload", headers=auth)
    h.expect_status(r, 200)
    h.expect_eq(r.json()["generation"], 2, "generation")


def test_invalid_file_changes_nothing():
    m1, m2 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start([group(A, [dep(m1)])])
    good = open(sg.config_path).read()

    with open(sg.config_path, "w") as f:
        f.write('{"models": [')  # cut short
    r = reload(sg)
    h.expect_status(r, 400)
    rep = r.json()
    h.expect_eq(rep["reloaded"], False, "reloaded")
    h.expect_eq(rep["generation"], 1, "generation after a refused reload")
    h.expect(len(rep["errors"]) >= 1, "no errors listed: %r", rep)

    # valid JSON, invalid content: every problem is named by its JSON path
    bad = json.loads(good)
    bad["models"] = [group(A, [dict(dep(m2), provider="acme")]), group(B, [])]
    with open(sg.config_path, "w") as f:
        json.dump(bad, f)
    r = reload(sg)
    h.expect_status(r, 400)
    errs = "\n".join(r.json()["errors"])
    h.expect("models[0].deployments[0].provider" in errs, "errors %r", errs)
    h.expect("models[1].deployments" in errs, "errors %r", errs)

    os.unlink(sg.config_path)
    r = reload(sg)
    h.expect_status(r, 400)

    # nothing changed: the old deployment still answers, the generation is 1
    before = chats(m1)
    h.expect_answer(chat(sg, "still here"), "still here")
    h.expect_eq(chats(m1), before + 1, "requests to the old deployment")
    h.expect_eq(chats(m2), 0, "requests to the rejected one")
    st = stats(sg)["config"]
    h.expect_eq((st["generation"], st["reloads"], st["reload_failures"]), (1, 0, 3),
                "generation, reloads, failures")
    h.expect("refused" in sg.log(), "no log line for the refused reload:\n%s", sg.log())
    sg.assert_alive()


def test_fixed_options_keep_their_value_and_are_reported():
    m = h.Mock("--quiet")
    sg = h.Semgate({"log_level": "info", "cache": {"embedder": {"provider": "local"}},
                    "models": [group(A, [dep(m)])]})
    h.expect_eq(chat(sg, "cached once").status, 200, "first request")
    r = chat(sg, "cached once")
    h.expect_eq(r.header("X-Semgate-Cache"), "hit-exact", "hit before the reload")

    cache = dict(sg.config["cache"])
    cache.update({"path": os.path.join(sg.dir, "elsewhere"), "threshold": 0.9,
                  "embedder": {"provider": "model"}})
    rewrite(sg, cache=cache, listen="127.0.0.1:%d" % h.free_port(),
            limits={"max_connections": 7, "max_body_bytes": 4096})
    r = reload(sg)
    h.expect_status(r, 200)
    kept = r.json()["not_applied"]
    h.expect_eq(sorted(kept), sorted(["listen", "limits.max_connections", "cache.path",
                                      "cache.embedder.provider"]), "not_applied")
    h.expect("cannot change while semgate runs" in sg.log(), "no warning:\n%s", sg.log())
    # the old listener, cache and embedder serve on; the live options changed
    r = chat(sg, "cached once")
    h.expect_eq(r.header("X-Semgate-Cache"), "hit-exact", "hit after the reload")
    h.expect_eq(stats(sg)["cache"]["threshold"], 0.9, "threshold took the new value")
    big = sg.post_json("/v1/chat/completions", h.chat_body("x" * 5000))
    h.expect_error(big, 413, code="body_too_large")


def test_sighup_reloads():
    m1, m2 = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start([group(A, [dep(m1)])])
    rewrite(sg, models=[group(A, [dep(m2)])])
    sg.signal(signal.SIGHUP)
    h.wait_for(lambda: stats(sg)["config"]["generation"] == 2, what="generation 2 after SIGHUP")
    h.expect_answer(chat(sg, "after hup"), "after hup")
    h.expect_eq((chats(m1), chats(m2)), (0, 1), "requests per mock")
    # a bad file on SIGHUP: logged, nothing changes, still running
    with open(sg.config_path, "w") as f:
        f.write("not json")
    sg.signal(signal.SIGHUP)
    h.wait_for(lambda: stats(sg)["config"]["reload_failures"] == 1, what="a refused reload")
    h.expect_eq(stats(sg)["config"]["generation"], 2, "generation after the bad SIGHUP")
    h.expect_answer(chat(sg, "after bad hup"), "after bad hup")
    sg.assert_alive()


def test_unchanged_deployment_keeps_its_health():
    bad, good = h.Mock("--quiet", "--fail-status", "503"), h.Mock("--quiet")
    g = dict(strategy="round-robin", circuit_failures=2, circuit_window_s=60, cooldown_s=300)
    sg = start([group(A, [dep(bad), dep(good)], **g)])
    for _ in range(10):
        p = h.unique()
        h.expect_answer(chat(sg, p), p)
        if stats(sg)["deployments"][A + "/0"]["state"] == "cooling":
            break
    h.expect_eq(stats(sg)["deployments"][A + "/0"]["state"], "cooling", "bad cooling")
    failed = chats(bad)
    # the same deployments, in the other order, one with a new weight and rpm
    rewrite(sg, models=[group(A, [dep(good, weight=2), dep(bad, rpm=1000)], **g)])
    h.expect_status(reload(sg), 200)
    deps = stats(sg)["deployments"]
    h.expect_eq(deps[A + "/1"]["state"], "cooling", "bad (now /1) after the reload")
    h.expect_eq(deps[A + "/1"]["errors"], failed, "bad's error count carried over")
    h.expect_eq(deps[A + "/0"]["state"], "healthy", "good (now /0)")
    for _ in range(6):
        p = h.unique()
        r = chat(sg, p)
        h.expect_answer(r, p)
        h.expect_eq(r.header("X-Semgate-Upstream"), A + "/0", "routed to the healthy one")
    h.expect_eq(chats(bad), failed, "requests sent to the cooling deployment")


def test_in_flight_request_finishes_on_its_generation():
    old, new = h.Mock("--quiet"), h.Mock("--quiet")
    sg = start([group(A, [dep(old)], max_attempts=1)])
    out = {}

    def slow():
        out["r"] = chat(sg, "[[latency=1500]] slow one", timeout=30)

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    h.wait_for(lambda: stats(sg)["upstream_in_flight"] == 1, what="the slow request in flight")
    # the model's deployments change while its request is in flight
    rewrite(sg, models=[group(A, [dep(new)], max_attempts=1)])
    h.expect_status(reload(sg), 200)
    p = h.unique()
    h.expect_answer(chat(sg, p), p)
    t.join(30)
    h.expect("r" in out, "the slow request did not finish")
    h.expect_answer(out["r"], "[[latency=1500]] slow one")
    h.expect_eq((chats(old), chats(new)), (1, 1), "requests per mock")
    sg.assert_alive()


def test_reload_under_load():
    """A client streaming and others sending while ten reloads happen:
    nothing dropped, nothing answered twice."""
    m1 = h.Mock("--quiet", "--stream-chunks", "40", "--stream-interval-ms", "25")
    m2 = h.Mock("--quiet", "--stream-chunks", "40", "--stream-interval-ms", "25")
    configs = [[group(A, [dep(m1)])], [group(A, [dep(m2)]), group(B, [dep(m1)])]]
    sg = start(configs[0], log_level="warn")
    stop = threading.Event()
    results, errors = [], []
    lock = threading.Lock()

    def streamer():
        while not stop.is_set():
            p = h.unique("stream")
            try:
                r = chat(sg, p, stream=True, timeout=30)
                evs = r.events()
                text = h.sse_content(evs)
                ok = r.status == 200 and r.complete and evs and evs[-1]["data"] == "[DONE]" \
                    and text == "mock answer to: " + p
                with lock:
                    results.append(("stream", ok, (r.status, text, evs[-1:])))
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))

    def sender():
        c = sg.connect()  # one keep-alive connection across the reloads
        while not stop.is_set():
            p = h.unique("send")
            try:
                body = json.dumps(h.chat_body(p)).encode()
                c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                       % len(body) + body)
                r = c.read_response("POST")
                ok = r.status == 200 and r.json()["choices"][0]["message"]["content"] == \
                    "mock answer to: " + p
                with lock:
                    results.append(("send", ok, (r.status, r.body[:300])))
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))
                return

    threads = [threading.Thread(target=streamer, daemon=True)] + \
        [threading.Thread(target=sender, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    sent_before = m1.stats()["chat"] + m2.stats()["chat"]
    for i in range(10):
        rewrite(sg, models=configs[(i + 1) % 2])
        r = reload(sg)
        h.expect_status(r, 200)
        h.wait_for(lambda n=len(results): len(results) > n, timeout=20,
                   what="a request answered after reload %d" % (i + 1))
        time.sleep(0.3)  # the streams (1 s each) span several reloads
    stop.set()
    for t in threads:
        t.join(40)
    h.expect(not errors, "requests failed during reloads: %r", errors[:5])
    bad = [r for r in results if not r[1]]
    h.expect(not bad, "%d of %d answers wrong or incomplete: %r", len(bad), len(results),
             bad[:3])
    h.expect(sum(r[0] == "stream" for r in results) >= 2, "fewer than 2 streams completed")
    h.expect_eq(stats(sg)["config"]["generation"], 11, "generation after ten reloads")
    # nothing answered twice: each answer came from exactly one upstream request
    upstream = m1.stats()["chat"] + m2.stats()["chat"] - sent_before
    h.expect(upstream <= len(results) + len(threads),
             "%d upstream requests for %d answers", upstream, len(results))
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
