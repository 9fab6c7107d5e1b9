#!/usr/bin/env python3
"""Cache quality through the real server: the replay protocol of
../shared/data/README.md, end to end over HTTP.

  python3 bench/qqp_replay.py [--build build] [--data ../shared/data/qqp-dev.jsonl]
                              [--embedder local|model|static] [--model-path DIR]
                              [--static-path FILE] [--dim 128] [--verifier|--no-verifier]
                              [--thresholds 0.80:0.99:0.01] [--tsv FILE] [--best 0.90]
                              [--at 0.93,0.95] [--concurrency 8] [--index auto]

Starts the mock upstream and semgate (fresh cache, the chosen embedder), then:
1. sends every distinct `a` as a chat request with `Cache-Control: no-cache` (no lookup,
   forwarded and stored): each is answered by the mock with "mock answer to: <a>", and
   semgate stores it, so every distinct `a` is in the cache whatever its neighbours;
2. sends every `b` with `Cache-Control: no-store` and `X-Semgate-Threshold: 0`, so that the
   nearest cached entry of the scope is always returned along with its similarity
   (`X-Semgate-Similarity`, 1 for exact hits; with the verifier on, the verified score of
   the nearest entry by cosine) and the `a` it answers;
3. for each threshold t, a lookup is a hit when its similarity >= t; a hit is correct when
   the returned `a` is in b's cluster (label-1 pairs joined transitively).
Prints hits, precision, positive hit rate and negative false-hit rate per threshold;
--tsv writes the same curve as TSV, --best P prints the best positive hit rate among all
thresholds with precision >= P (every distinct similarity is tried, not only the grid).

Offline scoring of a threshold-0 lookup is "top-1 by cosine, then the verifier". At a real
threshold the server walks its candidates (up to SG_CACHE_CANDIDATES by cosine) and serves
the first whose verified score passes, so with the verifier on it can serve a second
candidate; --at T1,T2 sends every `b` again with X-Semgate-Threshold: T and scores what the
server actually served (one extra query pass per value).

Requests are sent on --concurrency connections at once (the model embedder embeds on a
thread pool in batches); the embedder's queue and timeout are set high so that no lookup is
skipped, and the run fails if /stats reports a skipped or failed embedding, or fewer cache
entries than distinct `a`. Loopback only; every process it starts is stopped on exit.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = "mock answer to: "


def find(parent, x):
    while parent.setdefault(x, x) != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def start(cmd, log, stdout=subprocess.PIPE):
    return subprocess.Popen(cmd, stdout=stdout, stderr=log, text=True)


def metrics(results, t, npos, nneg):
    """(hits, correct, precision, positive hit rate, negative false-hit rate) at t."""
    hits = correct = pos_ok = neg_false = 0
    for lab, sim, ok in results:
        if sim is None or sim < t:
            continue
        hits += 1
        correct += ok
        if lab == 1 and ok:
            pos_ok += 1
        elif lab == 0 and not ok:
            neg_false += 1
    return hits, correct, correct / hits if hits else 0.0, pos_ok / npos, neg_false / nneg


def best_at(results, p_min, npos, nneg):
    """Best positive hit rate over every threshold (each distinct similarity) whose
    precision is >= p_min: (threshold, hits, precision, phr, nfhr) or None."""
    scored = sorted((r for r in results if r[1] is not None), key=lambda r: -r[1])
    best = None
    hits = correct = pos_ok = neg_false = 0
    i = 0
    while i < len(scored):
        s = scored[i][1]
        while i < len(scored) and scored[i][1] == s:  # all ties enter together
            lab, _, ok = scored[i]
            hits += 1
            correct += ok
            pos_ok += lab == 1 and ok
            neg_false += lab == 0 and not ok
            i += 1
        prec = correct / hits
        if prec >= p_min and (best is None or pos_ok / npos > best[3]):
            best = (s, hits, prec, pos_ok / npos, neg_false / nneg)
    return best


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_parallel(items, fn, workers):
    """fn(conn_state, item) -> result, items spread over `workers` threads, order kept."""
    out = [None] * len(items)
    nxt = [0]
    lock = threading.Lock()
    errors = []

    def worker():
        state = {}
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(items) or errors:
                return
            try:
                out[i] = fn(state, items[i])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    ts = [threading.Thread(target=worker) for _ in range(max(1, workers))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return out


def main():
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(top, "build"))
    ap.add_argument("--data", default=os.path.join(top, "..", "shared", "data", "qqp-dev.jsonl"),
                    help="pairs as JSONL {a, b, label} (qqp-dev.jsonl, mrpc-dev.jsonl)")
    ap.add_argument("--thresholds", default="0.80:0.99:0.01", help="LO:HI:STEP")
    ap.add_argument("--index", default="auto")
    ap.add_argument("--embedder", choices=("local", "model", "static"), default="local")
    ap.add_argument("--model-path", default=os.path.join(top, "models", "all-minilm-l6-v2"),
                    help="model embedder: directory of the model")
    ap.add_argument("--static-path", default=None, help="static embedder: the table")
    ap.add_argument("--dim", type=int, default=128, help="local embedder: dimension")
    ap.add_argument("--verifier", action=argparse.BooleanOptionalAction, default=True,
                    help="cache.verifier (default on, as in semgate)")
    ap.add_argument("--embed-threads", type=int, default=0,
                    help="model embedder: cache.embedder.threads (0: semgate's default)")
    ap.add_argument("--max-batch", type=int, default=0,
                    help="model embedder: cache.embedder.max_batch (0: semgate's default)")
    ap.add_argument("--concurrency", type=int, default=8, help="connections in parallel")
    ap.add_argument("--tsv", default=None, help="write the curve as TSV to FILE")
    ap.add_argument("--best", type=float, default=0.90, metavar="P",
                    help="print the best positive hit rate at precision >= P over every "
                         "distinct similarity (negative: skip)")
    ap.add_argument("--at", default="",
                    help="comma-separated thresholds: query again with X-Semgate-Threshold: T "
                         "and score what the server served")
    ap.add_argument("--dump", default=None,
                    help="write one TSV line per pair (label, state, similarity, correct, b, "
                         "returned a) to FILE")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N pairs")
    args = ap.parse_args()
    if not os.path.exists(args.data):
        print("qqp_replay: %s not found: nothing to measure" % args.data)
        return 0
    pairs = [json.loads(l) for l in open(args.data, encoding="utf-8")]
    if args.limit:
        pairs = pairs[: args.limit]
    parent = {}
    for p in pairs:
        if p["label"] == 1:
            ra, rb = find(parent, p["a"]), find(parent, p["b"])
            if ra != rb:
                parent[ra] = rb
    lo, hi, step = (float(x) for x in args.thresholds.split(":"))
    thresholds = []
    t = lo
    while t <= hi + 1e-9:
        thresholds.append(round(t, 4))
        t += step
    at = [float(x) for x in args.at.split(",") if x.strip()]

    if args.embedder == "model":
        emb = {"provider": "model", "model_path": os.path.abspath(args.model_path),
               "queue_max": 1000000, "timeout_ms": 600000}
        if args.embed_threads:
            emb["threads"] = args.embed_threads
        if args.max_batch:
            emb["max_batch"] = args.max_batch
    elif args.embedder == "static":
        emb = {"provider": "static"}
        if args.static_path:
            emb["static_path"] = os.path.abspath(args.static_path)
    else:
        emb = {"provider": "local", "dim": args.dim}

    tmp = tempfile.mkdtemp(prefix="semgate-qqp.")
    log = open(os.path.join(tmp, "log"), "w")
    procs = []
    try:
        mock = start([os.path.join(args.build, "mock-upstream"), "--port", "0", "--quiet"], log)
        procs.append(mock)
        mock_port = int(mock.stdout.readline().rsplit(":", 1)[1])
        port = free_port()
        cfg = {
            "listen": "127.0.0.1:%d" % port, "log_level": "warn",
            "limits": {"max_connections": max(64, 4 * args.concurrency)},
            "models": [{"name": "m", "deployments": [
                {"base_url": "http://127.0.0.1:%d/v1" % mock_port}]}],
            "cache": {"path": os.path.join(tmp, "cache"), "index": args.index,
                      "max_entries": 0, "max_bytes": 0, "ttl_s": 0,
                      "verifier": args.verifier, "trust_client_headers": True,
                      "min_threshold": 0, "embedder": emb},
        }
        path = os.path.join(tmp, "semgate.json")
        json.dump(cfg, open(path, "w"))
        sg = start([os.path.join(args.build, "semgate"), "--config", path], log,
                   stdout=subprocess.DEVNULL)
        procs.append(sg)
        for _ in range(600):  # a model takes a moment to load
            if sg.poll() is not None:
                raise RuntimeError("semgate exited: see %s" % open(os.path.join(tmp, "log")).read())
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)

        def ask(state, text, headers):
            conn = state.get("conn")
            if conn is None:
                conn = state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=700)
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
            h = {"Content-Type": "application/json"}
            h.update(headers)
            try:
                conn.request("POST", "/v1/chat/completions", body, h)
                r = conn.getresponse()
                data = r.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                state["conn"] = None
                raise
            if r.status != 200:
                raise RuntimeError("status %d: %r" % (r.status, data[:200]))
            return r, json.loads(data)

        def fill(state, a):
            ask(state, a, {"Cache-Control": "no-cache"})

        def query(threshold):
            hdr = {"Cache-Control": "no-store", "X-Semgate-Threshold": "%g" % threshold}

            def q(state, p):
                r, resp = ask(state, p["b"], hdr)
                st = r.getheader("X-Semgate-Cache")
                if st not in ("hit-exact", "hit-semantic"):
                    return (p["label"], None, False, st, "")
                sim = 1.0 if st == "hit-exact" else float(r.getheader("X-Semgate-Similarity"))
                answered = resp["choices"][0]["message"]["content"][len(PREFIX):]
                ok = find(parent, answered) == find(parent, p["b"])
                return (p["label"], sim, ok, st, answered)
            return q

        t0 = time.time()
        distinct = list(dict.fromkeys(p["a"] for p in pairs))
        run_parallel(distinct, fill, args.concurrency)
        t_fill = time.time() - t0
        t0 = time.time()
        full = run_parallel(pairs, query(0), args.concurrency)
        t_query = time.time() - t0
        served = {}
        for t in at:
            served[t] = run_parallel(pairs, query(t), args.concurrency)
        st = json.loads(http_get(port, "/stats"))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    results = [(lab, sim, ok) for lab, sim, ok, _, _ in full]
    npos = sum(1 for p in pairs if p["label"] == 1)
    nneg = len(pairs) - npos
    entries = st.get("cache", {}).get("entries")
    print("data %s: pairs %d (label 1: %d, label 0: %d), distinct a: %d"
          % (os.path.basename(args.data), len(pairs), npos, nneg, len(distinct)))
    print("embedder %s%s, verifier %s, index %s, concurrency %d"
          % (args.embedder, " " + os.path.abspath(args.model_path) if args.embedder == "model"
             else " d%d" % args.dim if args.embedder == "local" else "",
             "on" if args.verifier else "off", args.index, args.concurrency))
    print("fill: %.1f s (%.0f req/s), queries: %.1f s (%.0f req/s), lookup latency p50 %.0f us p99 %.0f us"
          % (t_fill, len(distinct) / t_fill, t_query, len(pairs) / t_query,
             st["lookup_latency_us"]["p50"], st["lookup_latency_us"]["p99"]))
    print("stats: cache entries %s, embed_skipped %d, embed_errors %d, exact hits %d"
          % (entries, st["embed_skipped"], st["embed_errors"],
             sum(1 for r in full if r[3] == "hit-exact")))
    bad = st["embed_skipped"] or st["embed_errors"] or (entries is not None and entries != len(distinct)) \
        or any(r[1] is None for r in full)
    print("| threshold | hits | precision | positive hit rate | negative false-hit rate |")
    print("|---|---|---|---|---|")
    rows = []
    for t in thresholds:
        h, c, prec, phr, nfhr = metrics(results, t, npos, nneg)
        rows.append((t, h, c, prec, phr, nfhr))
        print("| %.2f | %d | %.3f | %.3f | %.3f |" % (t, h, prec, phr, nfhr))
    if args.best >= 0:
        b = best_at(results, args.best, npos, nneg)
        if b:
            print("best positive hit rate at precision >= %.2f: %.4f at threshold %.4f "
                  "(hits %d, precision %.4f, negative false-hit rate %.4f)"
                  % (args.best, b[3], b[0], b[1], b[2], b[4]))
        else:
            print("best positive hit rate at precision >= %.2f: none" % args.best)
    for t in at:
        res = [(lab, sim, ok) for lab, sim, ok, _, _ in served[t]]
        # what the server served at t: every hit has similarity >= t by construction
        h, c, prec, phr, nfhr = metrics(res, t, npos, nneg)
        print("served at X-Semgate-Threshold %.4f: hits %d, precision %.4f, positive hit rate "
              "%.4f, negative false-hit rate %.4f" % (t, h, prec, phr, nfhr))
    if args.tsv:
        with open(args.tsv, "w") as f:
            f.write("threshold\thits\tcorrect_hits\tprecision\tpositive_hit_rate\t"
                    "negative_false_hit_rate\n")
            for t, h, c, prec, phr, nfhr in rows:
                f.write("%.4f\t%d\t%d\t%.4f\t%.4f\t%.4f\n" % (t, h, c, prec, phr, nfhr))
    if args.dump:
        with open(args.dump, "w") as f:
            for p, (lab, sim, ok, st_, ans) in zip(pairs, full):
                f.write("%d\t%s\t%s\t%d\t%s\t%s\n" % (
                    lab, st_, "" if sim is None else "%.4f" % sim, ok,
                    p["b"].replace("\t", " ").replace("\n", " "),
                    ans.replace("\t", " ").replace("\n", " ")))
    if bad:
        print("qqp_replay: WARNING: some lookups were skipped or entries are missing; "
              "the figures are not the protocol's", file=sys.stderr)
        return 1
    return 0


def http_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    return c.getresponse().read()


if __name__ == "__main__":
    sys.exit(main())
