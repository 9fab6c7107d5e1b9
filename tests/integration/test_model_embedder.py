"""The `model` embedder in the server: a BERT-family encoder (the installed
default model, models/all-minilm-l6-v2, which `bash .ci/setup` installs) on
embedding threads with batching. Paraphrases hit; a busy embedder (full queue,
timeout) skips the semantic lookup without failing the request; a client that
leaves while its prompt waits is fine; a cache built with another embedder is
refused or rebuilt; bad model paths are refused with a clear message at start
and by --check."""

import json
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CHAT = "/v1/chat/completions"
MODEL_DIR = os.path.join(os.environ.get("SEMGATE_SRC", ""), "models", "all-minilm-l6-v2")


def need_model():
    if not os.path.isfile(os.path.join(MODEL_DIR, "model.safetensors")):
        raise h.TestFailure("no model at %s: run `bash .ci/setup` (it installs the default model)"
                            % MODEL_DIR)


def start(embedder=None, cache=None, mock_args=()):
    need_model()
    mock = h.Mock("--quiet", *mock_args)
    cfg = h.base_config(mock)
    cfg["cache"] = dict(cache or {})
    cfg["cache"]["embedder"] = dict({"provider": "model", "model_path": MODEL_DIR}, **(embedder or {}))
    return mock, h.Semgate(cfg)


def chat(sg, prompt, headers=None):
    return sg.post_json(CHAT, h.chat_body(prompt), headers=headers)


def cache_state(r):
    h.expect_status(r, 200)
    return r.header("X-Semgate-Cache")


def stats(sg):
    r = sg.request("GET", "/stats")
    h.expect_status(r, 200)
    return r.json()


def test_paraphrase_hits_and_unrelated_misses():
    """What the lexical embedder missed: a reworded question hits."""
    mock, sg = start(cache={"threshold": 0.8, "verifier": False})
    h.expect_eq(cache_state(chat(sg, "What is semgate?")), "miss", "first")
    r = chat(sg, "Tell me what semgate is")
    h.expect_eq(cache_state(r), "hit-semantic", "a paraphrase")
    h.expect_answer(r, "What is semgate?")
    h.expect_eq(cache_state(chat(sg, "How do I bake sourdough bread at home?")), "miss", "unrelated")
    st = stats(sg)
    e = st["embedder"]
    h.expect_eq(e["kind"], "model", "embedder kind")
    h.expect_eq(e["dim"], 384, "dimension")
    h.expect(e["embedded"] >= 3, "embedded %r", e)
    h.expect(e["id"].startswith("model/1:all-minilm-l6-v2:"), "identity %r", e["id"])
    h.expect_eq(e["queue_full"], 0, "queue_full")


def test_concurrent_requests_share_batches():
    """Requests arriving together are embedded together: every answer is
    right, and fewer batches than texts ran."""
    mock, sg = start(embedder={"batch_wait_us": 20000, "max_batch": 32},
                     cache={"threshold": 0.99})
    prompts = ["batching question number %d about topic %d" % (i, i * 7) for i in range(24)]
    results = [None] * len(prompts)

    def one(i):
        results[i] = chat(sg, prompts[i])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p, r in zip(prompts, results):
        h.expect(r is not None, "no answer for %r", p)
        h.expect_answer(r, p)
    e = stats(sg)["embedder"]
    h.expect(e["embedded"] >= len(prompts), "embedded %r", e)
    h.expect(e["batches"] < e["embedded"], "no batching: %r", e)


def test_full_queue_bypasses_semantic_lookup():
    """queue_max 1 and a thread that waits long for its batch to fill: the
    requests behind the first find the queue full. Each is still answered by
    the upstream (a miss), counted in /stats, never failed."""
    mock, sg = start(embedder={"queue_max": 1, "batch_wait_us": 300000, "threads": 1,
                               "max_batch": 64})
    prompts = ["queue full question %d" % i for i in range(8)]
    results = [None] * len(prompts)

    def one(i):
        results[i] = chat(sg, prompts[i])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p, r in zip(prompts, results):
        h.expect(r is not None, "no answer for %r", p)
        h.expect_answer(r, p)
        h.expect_eq(r.header("X-Semgate-Cache"), "miss", "state of %r" % p)
    st = stats(sg)
    h.expect(st["embedder"]["queue_full"] >= 1, "queue_full not counted: %r", st["embedder"])
    h.expect(st["embed_skipped"] >= st["embedder"]["queue_full"], "embed_skipped %r", st)
    h.expect_eq(st["embed_errors"], 0, "embed_errors")
    h.expect_eq(mock.stats()["chat"], len(prompts), "upstream calls")


def test_timeout_bypasses_semantic_lookup():
    """A text still queued after embedder.timeout_ms is given up: the request
    goes upstream as a miss, the timeout is counted."""
    mock, sg = start(embedder={"timeout_ms": 1, "batch_wait_us": 100000, "max_batch": 64})
    r = chat(sg, "a question that waits too long")
    h.expect_answer(r, "a question that waits too long")
    h.expect_eq(r.header("X-Semgate-Cache"), "miss", "state")
    st = stats(sg)
    h.expect(st["embedder"]["timeouts"] >= 1, "timeouts %r", st["embedder"])
    h.expect(st["embed_skipped"] >= 1, "embed_skipped %r", st)
    # it is stored all the same: the exact match still works
    h.expect_eq(cache_state(chat(sg, "a question that waits too long")), "hit-exact", "exact")


def test_client_leaving_while_queued():
    """Clients that close while their prompt waits for a batch cancel it; the
    server stays healthy and answers the next ones."""
    mock, sg = start(embedder={"batch_wait_us": 200000, "max_batch": 64})
    for i in range(6):
        body = json.dumps(h.chat_body("leaving client %d" % i)).encode()
        req = h.build_request("POST", CHAT, body, {"Content-Type": "application/json"},
                              port=sg.port)
        s = socket.create_connection((h.HOST, sg.port))
        s.sendall(req)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    r = chat(sg, "after the clients left")
    h.expect_answer(r, "after the clients left")
    h.wait_for(lambda: stats(sg)["embedder"]["queue_depth"] == 0, timeout=10,
               what="the queue to empty")
    sg.assert_alive()


def test_cache_from_another_embedder_refused_or_rebuilt():
    """A store made with the local embedder is refused by the model embedder
    (exit with a message), and dropped and rebuilt with cache.rebuild."""
    need_model()
    mock = h.Mock("--quiet")
    cfg = h.base_config(mock)
    cfg["cache"] = {"embedder": {"provider": "local"}}
    sg = h.Semgate(cfg)
    h.expect_eq(cache_state(chat(sg, "stored by the local embedder")), "miss", "first")
    path = sg.config["cache"]["path"]
    sg.stop()

    cfg2 = h.base_config(mock)
    cfg2["cache"] = {"path": path, "embedder": {"provider": "model", "model_path": MODEL_DIR}}
    sg2 = h.Semgate(cfg2, wait=False)
    rc = sg2.wait_exit(60)
    h.expect(rc != 0, "started on a cache made by another embedder")
    h.expect("embedder" in sg2.log() and "rebuild" in sg2.log(),
             "the refusal does not say why or what to do: %s", sg2.log())

    cfg2["cache"]["rebuild"] = True
    sg3 = h.Semgate(cfg2)
    h.expect_eq(cache_state(chat(sg3, "stored by the local embedder")), "miss",
                "after the rebuild the old entry is gone")
    h.expect_eq(stats(sg3)["embedder"]["kind"], "model", "kind")


def test_bad_model_path_refused_with_message():
    mock = h.Mock("--quiet")
    cfg = h.base_config(mock)
    missing = os.path.join(h.make_temp_dir(), "no-such-model")
    cfg["cache"] = {"embedder": {"provider": "model", "model_path": missing}}
    sg = h.Semgate(cfg, wait=False)
    rc = sg.wait_exit(30)
    h.expect(rc != 0, "started without its model")
    h.expect(missing in sg.log(), "the message does not name the path: %s", sg.log())
    h.expect(".ci/setup" in sg.log() and "--pull-model" in sg.log(),
             "the message does not say how to get a model: %s", sg.log())


def test_check_loads_the_model():
    need_model()
    d = h.make_temp_dir()
    good = os.path.join(d, "good.json")
    bad = os.path.join(d, "bad.json")
    base = {"models": [{"name": "m", "deployments": [{"base_url": "http://127.0.0.1:9/v1"}]}]}
    json.dump(dict(base, cache={"embedder": {"provider": "model", "model_path": MODEL_DIR}}),
              open(good, "w"))
    broken = os.path.join(d, "broken-model")
    os.makedirs(broken)
    open(os.path.join(broken, "config.json"), "w").write('{"model_type": "gpt2"}')
    json.dump(dict(base, cache={"embedder": {"provider": "model", "model_path": broken}}),
              open(bad, "w"))
    rc, out, err = h.run_semgate(["--check", good])
    h.expect_eq(rc, 0, "--check on a good model: " + out + err)
    h.expect("embedder: model all-minilm-l6-v2: 6 layers, hidden 384" in out, "output %r", out)
    rc, out, err = h.run_semgate(["--check", bad])
    h.expect_eq(rc, 1, "--check on a gpt2 config")
    h.expect("config.json" in out and "gpt2" in out, "the message: %r", out)


if __name__ == "__main__":
    h.main()
