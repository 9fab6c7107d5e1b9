"""The semantic cache on disk: entries, vectors and index across restarts
(SIGTERM and SIGKILL), embedder mismatches, --rebuild-cache, and corrupt or
unusable cache paths."""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CHAT = "/v1/chat/completions"

FRANCE = "What is the capital of France?"
FRANCE_PARAPHRASE = "what is the capital city of France"
PLANETS = "please list the planets of the solar system in order"
PLANETS_PARAPHRASE = "list the planets of the solar system in order please"


# --- helpers -----------------------------------------------------------------------


def cache_config(mock, **cache):
    """The default config with the cache in a fresh dir that outlives one
    semgate process (removed at the end of the test)."""
    cfg = h.base_config(mock)
    cfg["cache"] = dict(cache)
    cfg["cache"].setdefault("path", os.path.join(h.make_temp_dir("sg-it-cache-"), "cache"))
    return cfg


def state(resp):
    return resp.header("X-Semgate-Cache")


def expect_state(resp, want, what="X-Semgate-Cache"):
    h.expect_status(resp, 200)
    h.expect_eq(state(resp), want, what)


def chat(sg, prompt, headers=None, **extra):
    return sg.post_json(CHAT, h.chat_body(prompt, **extra), headers=headers)


def stats(sg):
    r = sg.request("GET", "/stats")
    h.expect_status(r, 200)
    return r.json()


def stop_gracefully(sg):
    sg.signal(signal.SIGTERM)
    rc = sg.wait_exit(30)
    h.expect_eq(rc, 0, "exit code after SIGTERM")


def expect_refused(cfg, *mentions, args=()):
    """semgate with cfg exits 1 at startup (not a signal) and its output
    mentions every string of mentions (case-insensitively). Returns the log."""
    sg = h.Semgate(cfg, wait=False, args=args)
    rc = sg.wait_exit(30)
    log = sg.log()
    h.expect(rc == 1, "exit code %r, want 1 (negative = killed by a signal); log:\n%s", rc, log)
    for m in mentions:
        h.expect(m.lower() in log.lower(), "startup error does not mention %r:\n%s", m, log)
    return log


def data_file(cfg):
    return os.path.join(cfg["cache"]["path"], "data.mdb")


def expect_rebuilt(cfg):
    """`--rebuild-cache` on cfg's cache (which semgate refused) must work, not
    just not crash: semgate starts and stays up, its log says the cache opened
    with 0 entries, /stats shows it empty, it stores and then hits (exact and
    semantic), SIGTERM exits 0, and the rebuilt cache reopens without the
    flag with what was stored."""
    path = cfg["cache"]["path"]
    sg = h.Semgate(dict(cfg, log_level="info"), wait=False, args=["--rebuild-cache"])
    if not _healthy_soon(sg):
        raise h.TestFailure("--rebuild-cache did not bring semgate up (exit code %r); log:\n%s"
                            % (sg.proc.poll(), sg.log()))
    log = sg.log()
    h.expect("cache at %s: 0 entries" % path in log,
             "no 'cache at %s: 0 entries' line after --rebuild-cache; log:\n%s", path, log)
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"]), (0, 0), "entries, vectors after rebuild")
    miss = chat(sg, FRANCE)
    expect_state(miss, "miss", "after --rebuild-cache")
    h.expect(miss.header("X-Semgate-Cache-Id"), "the rebuilt cache did not store the miss")
    expect_state(chat(sg, FRANCE), "hit-exact", "repeat in the rebuilt cache")
    expect_state(chat(sg, FRANCE_PARAPHRASE, headers={"X-Semgate-Threshold": "0.8"}),
                 "hit-semantic", "paraphrase in the rebuilt cache")
    sg.assert_alive()
    stop_gracefully(sg)
    sg = h.Semgate(cfg)
    expect_state(chat(sg, FRANCE), "hit-exact", "after reopening the rebuilt cache")
    stop_gracefully(sg)


def fill_and_stop(mock, cfg, prompts=(FRANCE, "How do I bake bread?")):
    """Start semgate on cfg, store prompts, stop it with SIGTERM."""
    sg = h.Semgate(cfg)
    for p in prompts:
        expect_state(chat(sg, p), "miss", p)
    stop_gracefully(sg)
    h.expect(os.path.exists(data_file(cfg)), "no data.mdb in %s: %r", cfg["cache"]["path"],
             os.listdir(cfg["cache"]["path"]))


# --- restarts ------------------------------------------------------------------------


def restart_keeps_cache(index):
    mock = h.Mock("--quiet")
    cfg = cache_config(mock, threshold=0.8, index=index)
    sg = h.Semgate(cfg)
    miss = chat(sg, FRANCE)
    expect_state(miss, "miss")
    eid = miss.header("X-Semgate-Cache-Id")
    for p in ("How do I bake bread?", "best way to learn piano"):
        expect_state(chat(sg, p), "miss", p)
    before = chat(sg, FRANCE_PARAPHRASE)
    expect_state(before, "hit-semantic", "paraphrase before the restart")
    sim = before.header("X-Semgate-Similarity")
    st0 = stats(sg)["cache"]
    stop_gracefully(sg)

    sg = h.Semgate(cfg)
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"], st["index_type"]),
                (st0["entries"], st0["index_vectors"], index), "entries, vectors, index type")
    n = mock.stats()["chat"]
    r = chat(sg, FRANCE)
    expect_state(r, "hit-exact", "exact repeat after the restart")
    h.expect_answer(r, FRANCE)
    h.expect_eq(r.header("X-Semgate-Cache-Id"), eid, "cache id after the restart")
    r = chat(sg, FRANCE_PARAPHRASE)
    expect_state(r, "hit-semantic", "paraphrase after the restart")
    h.expect_answer(r, FRANCE)
    h.expect_eq(r.header("X-Semgate-Similarity"), sim, "similarity after the restart")
    h.expect_eq(mock.stats()["chat"], n, "upstream chat requests after the restart")
    # still writable after the restart
    expect_state(chat(sg, "why is the sea salty"), "miss")
    expect_state(chat(sg, "why is the sea salty"), "hit-exact")


def test_restart_keeps_entries_flat():
    restart_keeps_cache("flat")


def test_restart_keeps_entries_hnsw():
    restart_keeps_cache("hnsw")


def test_restart_keeps_entries_auto():
    restart_keeps_cache("auto")


def test_restart_openai_embedder_no_reembedding():
    mock = h.Mock("--quiet", "--embed-dim", "64")
    emb = {"provider": "openai", "base_url": mock.url, "model": "emb", "dim": 64}
    cfg = cache_config(mock, threshold=0.8, embedder=emb)
    sg = h.Semgate(cfg)
    expect_state(chat(sg, PLANETS), "miss")
    for p in ("why is the sky blue during the day", "how many legs does a spider have"):
        expect_state(chat(sg, p), "miss", p)
    r = chat(sg, PLANETS_PARAPHRASE)
    expect_state(r, "hit-semantic", "paraphrase before the restart")
    sim = r.header("X-Semgate-Similarity")
    stop_gracefully(sg)

    e0 = mock.stats()["embeddings"]
    sg = h.Semgate(cfg)
    h.expect_eq(stats(sg)["cache"]["index_vectors"], 3, "index_vectors after the restart")
    h.expect_eq(mock.stats()["embeddings"], e0, "embedding calls during the restart")
    expect_state(chat(sg, PLANETS), "hit-exact", "exact repeat after the restart")
    h.expect_eq(mock.stats()["embeddings"], e0, "embedding calls for an exact hit")
    r = chat(sg, PLANETS_PARAPHRASE)
    expect_state(r, "hit-semantic", "paraphrase after the restart")
    h.expect_eq(r.header("X-Semgate-Similarity"), sim, "similarity after the restart")
    h.expect_eq(mock.stats()["embeddings"], e0 + 1, "embedding calls (the query only)")
    h.expect_eq(stats(sg)["embed_errors"], 0, "embed_errors")


def test_restart_keeps_deletions_hits_and_ttl():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock, threshold=0.99)
    sg = h.Semgate(cfg)
    gone = chat(sg, "a question to delete")
    expect_state(gone, "miss")
    kept = chat(sg, "a question to keep")
    expect_state(kept, "miss")
    short = chat(sg, "a question that expires soon", headers={"X-Semgate-TTL": "2"})
    expect_state(short, "miss")
    ent = sg.request("GET", "/cache/entries/" + short.header("X-Semgate-Cache-Id")).json()
    for _ in range(2):
        expect_state(chat(sg, "a question to keep"), "hit-exact")
    h.expect_status(sg.request("DELETE", "/cache/entries/" + gone.header("X-Semgate-Cache-Id")),
                    200)
    stop_gracefully(sg)

    sg = h.Semgate(cfg)
    r = sg.request("GET", "/cache/entries/" + kept.header("X-Semgate-Cache-Id"))
    h.expect_status(r, 200)
    h.expect_eq(r.json()["hits"], 2, "hits of the kept entry after the restart")
    h.expect_error(sg.request("GET", "/cache/entries/" + gone.header("X-Semgate-Cache-Id")), 404)
    expect_state(chat(sg, "a question to delete", headers={"Cache-Control": "no-store"}),
                 "miss", "deleted entry after the restart")
    # the TTL counts from creation, not from the restart
    h.wait_for(lambda: time.time() >= ent["expires"] + 1.2, timeout=10, interval=0.1,
               what="the TTL to pass")
    expect_state(chat(sg, "a question that expires soon"), "miss", "expired after the restart")
    expect_state(chat(sg, "a question to keep"), "hit-exact", "kept entry")


def test_sigkill_during_writes():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock, threshold=0.99, checkpoint_interval_s=1)
    sg = h.Semgate(cfg)
    done = []  # (prompt, id) of every request answered in full with a cache id
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            prompt = "durable write number %d about topic %d" % (i, i * 7919 % 10007)
            i += 1
            try:
                r = chat(sg, prompt)
            except Exception:
                return  # semgate was killed
            if r.status == 200 and r.complete and state(r) == "miss" and \
                    r.header("X-Semgate-Cache-Id"):
                done.append((prompt, r.header("X-Semgate-Cache-Id")))
            elif r.status != 200:
                errors.append((prompt, r.status, r.body[:200]))

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        h.wait_for(lambda: len(done) >= 150, timeout=60, interval=0.02,
                   what="150 stored writes")
        sg.signal(signal.SIGKILL)
        rc = sg.wait_exit(10)
    finally:
        stop.set()
        t.join(20)
    h.expect_eq(rc, -signal.SIGKILL, "semgate's fate")
    h.expect(not errors, "requests failed before the kill: %r", errors[:3])
    stored = list(done)

    sg = h.Semgate(cfg)
    st = stats(sg)["cache"]
    h.expect(st["entries"] >= len(stored), "entries %d < %d acknowledged writes",
             st["entries"], len(stored))
    h.expect_eq(st["index_vectors"], st["entries"], "index_vectors vs entries after the crash")
    n = mock.stats()["chat"]
    missing = []
    for prompt, eid in stored:
        r = chat(sg, prompt)
        h.expect_status(r, 200)
        if state(r) != "hit-exact" or r.header("X-Semgate-Cache-Id") != eid:
            missing.append((prompt, eid, state(r), r.header("X-Semgate-Cache-Id")))
    h.expect(not missing, "%d of %d acknowledged writes lost or changed, e.g. %r",
             len(missing), len(stored), missing[:3])
    h.expect_eq(mock.stats()["chat"], n, "upstream chat requests for acknowledged writes")
    expect_state(chat(sg, "a new question after the crash"), "miss")
    expect_state(chat(sg, "a new question after the crash"), "hit-exact")
    stop_gracefully(sg)


# --- embedder mismatch and rebuild -------------------------------------------------------


def test_answers_while_a_checkpoint_is_saved():
    """Index checkpoints are saved off the event loop. A test hook
    (SEMGATE_TEST_CHECKPOINT_HOLD) holds the saver after it serialised an
    index, for as long as a file exists: meanwhile /stats says a save is in
    progress, and exact hits, semantic hits (the index being saved is searched
    as it was) and misses are answered; what is stored meanwhile is an exact
    hit at once and found semantically once the save is done. A kill -9 in the
    middle of the next save loses nothing that was answered."""
    mock = h.Mock("--quiet")
    hold = os.path.join(h.make_temp_dir("sg-it-hold-"), "hold")
    open(hold, "w").close()
    cfg = cache_config(mock, threshold=0.8, checkpoint_interval_s=1)
    sg = h.Semgate(cfg, env={"SEMGATE_TEST_CHECKPOINT_HOLD": hold})
    for p in (FRANCE, "How do I bake bread?", "best way to learn piano"):
        expect_state(chat(sg, p), "miss", p)
    h.wait_for(lambda: stats(sg)["cache"]["checkpoint_in_progress"], timeout=15,
               what="a checkpoint to start")

    for i in range(20):
        expect_state(chat(sg, FRANCE), "hit-exact", "exact hit %d during the save" % i)
    expect_state(chat(sg, FRANCE_PARAPHRASE), "hit-semantic", "paraphrase during the save")
    expect_state(chat(sg, PLANETS), "miss", "stored during the save")
    expect_state(chat(sg, PLANETS), "hit-exact", "entry stored during the save")
    # not in the index being saved yet (not stored either: no-store)
    expect_state(chat(sg, PLANETS_PARAPHRASE, headers={"Cache-Control": "no-store"}), "miss",
                 "paraphrase of an entry stored during the save")
    h.expect_status(sg.request("GET", "/healthz"), 200)
    st = stats(sg)["cache"]
    h.expect(st["checkpoint_in_progress"] is True, "the save is still held: %r", st)
    h.expect_eq(st["entries"], 4, "entries during the save")

    os.unlink(hold)
    h.wait_for(lambda: not stats(sg)["cache"]["checkpoint_in_progress"], timeout=15,
               what="the checkpoint to finish")
    h.expect(isinstance(stats(sg)["cache"]["checkpoint_last_ms"], int), "checkpoint_last_ms")
    r = chat(sg, PLANETS_PARAPHRASE, headers={"Cache-Control": "no-store"})
    expect_state(r, "hit-semantic", "paraphrase once the save is done")
    h.expect_answer(r, PLANETS)

    # kill -9 while the next save is held
    open(hold, "w").close()
    sea = chat(sg, "why is the sea salty")
    expect_state(sea, "miss")
    h.wait_for(lambda: stats(sg)["cache"]["checkpoint_in_progress"], timeout=15,
               what="another checkpoint to start")
    expect_state(chat(sg, "how do bees make honey"), "miss")
    n = mock.stats()["chat"]
    sg.signal(signal.SIGKILL)
    sg.wait_exit(30)
    os.unlink(hold)

    sg = h.Semgate(cfg)
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"]), (6, 6), "entries, vectors after kill -9")
    for p in (FRANCE, PLANETS, "why is the sea salty", "how do bees make honey"):
        expect_state(chat(sg, p), "hit-exact", p + " after kill -9")
    expect_state(chat(sg, FRANCE_PARAPHRASE), "hit-semantic", "paraphrase after kill -9")
    expect_state(chat(sg, PLANETS_PARAPHRASE), "hit-semantic", "paraphrase after kill -9")
    h.expect_eq(mock.stats()["chat"], n, "upstream chat requests after the restart")


def test_embedder_dim_mismatch_refused():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock, embedder={"provider": "local", "dim": 384})
    fill_and_stop(mock, cfg)
    other = dict(cfg, cache=dict(cfg["cache"], embedder={"provider": "local", "dim": 128}))
    expect_refused(other, "embedder", "--rebuild-cache")
    # the original config still opens the untouched cache
    sg = h.Semgate(cfg)
    expect_state(chat(sg, FRANCE), "hit-exact", "with the original embedder")
    stop_gracefully(sg)
    # --rebuild-cache starts over with the new embedder
    sg = h.Semgate(other, args=["--rebuild-cache"])
    st = stats(sg)["cache"]
    h.expect_eq((st["entries"], st["index_vectors"]), (0, 0), "entries, vectors after rebuild")
    expect_state(chat(sg, FRANCE), "miss", "after --rebuild-cache")
    expect_state(chat(sg, FRANCE_PARAPHRASE, headers={"X-Semgate-Threshold": "0.8"}),
                 "hit-semantic", "semantic search with the new embedder")
    stop_gracefully(sg)
    # and the rebuilt cache is now the new embedder's: it reopens without the flag
    sg = h.Semgate(other)
    expect_state(chat(sg, FRANCE), "hit-exact", "after reopening the rebuilt cache")


def test_embedder_provider_mismatch_refused():
    mock = h.Mock("--quiet", "--embed-dim", "64")
    cfg = cache_config(mock, embedder={"provider": "local", "dim": 64})
    fill_and_stop(mock, cfg)
    emb = {"provider": "openai", "base_url": mock.url, "model": "emb", "dim": 64}
    other = dict(cfg, cache=dict(cfg["cache"], embedder=emb))
    expect_refused(other, "embedder", "--rebuild-cache")
    h.expect_eq(mock.stats()["embeddings"], 0, "embedding calls by a refused start")


def test_rebuild_config_option():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock, embedder={"dim": 384})
    fill_and_stop(mock, cfg)
    other = dict(cfg, cache=dict(cfg["cache"], embedder={"dim": 256}, rebuild=True))
    sg = h.Semgate(other)
    h.expect_eq(stats(sg)["cache"]["entries"], 0, "entries after rebuild: true")
    expect_state(chat(sg, FRANCE), "miss")
    expect_state(chat(sg, FRANCE), "hit-exact", "repeat in the rebuilt cache")


# --- corrupt and unusable paths ---------------------------------------------------------


def test_corrupt_data_random_bytes():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock)
    fill_and_stop(mock, cfg)
    path = data_file(cfg)
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    expect_refused(cfg, cfg["cache"]["path"])
    expect_rebuilt(cfg)


def test_corrupt_data_truncated():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock)
    fill_and_stop(mock, cfg, prompts=["truncation victim %d" % i for i in range(20)])
    path = data_file(cfg)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    expect_refused(cfg, cfg["cache"]["path"])
    expect_rebuilt(cfg)


def test_corrupt_data_header_zeroed():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock)
    fill_and_stop(mock, cfg)
    with open(data_file(cfg), "r+b") as f:
        f.write(b"\0" * 8192)  # both LMDB meta pages
    expect_refused(cfg, cfg["cache"]["path"])
    expect_rebuilt(cfg)


def test_corrupt_data_empty_file():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock)
    fill_and_stop(mock, cfg)
    with open(data_file(cfg), "r+b") as f:
        f.truncate(0)
    rc_sg = h.Semgate(cfg, wait=False)
    rc = rc_sg.wait_exit(30) if not _healthy_soon(rc_sg) else None
    if rc is not None:
        h.expect(rc == 1, "exit code %r for an empty data.mdb, want 1 or a fresh start; log:\n%s",
                 rc, rc_sg.log())
        expect_rebuilt(cfg)
    else:
        # treated as a new cache: it must work
        expect_state(chat(rc_sg, FRANCE), "miss", "empty data.mdb as a fresh cache")
        expect_state(chat(rc_sg, FRANCE), "hit-exact")


def _healthy_soon(sg):
    try:
        sg.wait_healthy(h.STARTUP_TIMEOUT_S)
        return True
    except h.TestFailure:
        return False


def test_cache_path_is_regular_file():
    mock = h.Mock("--quiet")
    d = h.make_temp_dir("sg-it-cache-")
    path = os.path.join(d, "not-a-dir")
    with open(path, "w") as f:
        f.write("hello\n")
    cfg = cache_config(mock, path=path)
    expect_refused(cfg, path)
    with open(path) as f:
        h.expect_eq(f.read(), "hello\n", "the file semgate refused")


def test_cache_path_unwritable_parent():
    if os.geteuid() == 0:
        return  # root writes anywhere: nothing to test
    mock = h.Mock("--quiet")
    d = h.make_temp_dir("sg-it-cache-")
    os.chmod(d, 0o500)
    try:
        expect_refused(cache_config(mock, path=os.path.join(d, "sub")))
    finally:
        os.chmod(d, 0o700)


def test_corrupt_then_rebuild():
    mock = h.Mock("--quiet")
    cfg = cache_config(mock)
    fill_and_stop(mock, cfg)
    path = data_file(cfg)
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    expect_refused(cfg, cfg["cache"]["path"])
    # --rebuild-cache is the documented way out of a refused cache: it must
    # work (a failed rebuild fails this test), and a second one too
    expect_rebuilt(cfg)
    expect_rebuilt(cfg)


if __name__ == "__main__":
    h.main()
