#!/usr/bin/env python3
"""Cache quality through the real server: the replay protocol of
../shared/data/README.md, end to end over HTTP.

  python3 bench/qqp_replay.py [--build build] [--data ../shared/data/qqp-dev.jsonl]
                              [--thresholds 0.80:0.99:0.01] [--index auto] [--dim 128]
                              [--no-verifier]

Starts the mock upstream and semgate (fresh cache, local embedder), then:
1. sends every distinct `a` as a chat request: each is a miss the mock answers with
   "mock answer to: <a>", and semgate stores it;
2. sends every `b` with `Cache-Control: no-store` and `X-Semgate-Threshold: 0`, so that the
   nearest cached entry of the scope is always returned along with its similarity
   (`X-Semgate-Similarity`, 1 for exact hits) and the `a` it answers;
3. for each threshold t, a lookup is a hit when its similarity >= t; a hit is correct when
   the returned `a` is in b's cluster (label-1 pairs joined transitively).
Prints hits, precision, positive hit rate and negative false-hit rate per threshold.
Loopback only; every process it starts is stopped on exit.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PREFIX = "mock answer to: "


def find(parent, x):
    while parent.setdefault(x, x) != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def start(cmd, log):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)


def main():
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(top, "build"))
    ap.add_argument("--data", default=os.path.join(top, "..", "shared", "data", "qqp-dev.jsonl"))
    ap.add_argument("--thresholds", default="0.80:0.99:0.01")
    ap.add_argument("--index", default="auto")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--no-verifier", action="store_true", help="cosine only")
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

    tmp = tempfile.mkdtemp(prefix="semgate-qqp.")
    log = open(os.path.join(tmp, "log"), "w")
    procs = []
    try:
        mock = start([os.path.join(args.build, "mock-upstream"), "--port", "0", "--quiet"], log)
        procs.append(mock)
        mock_port = int(mock.stdout.readline().rsplit(":", 1)[1])
        cfg = {
            "listen": "127.0.0.1:0", "log_level": "warn",
            "models": [{"name": "m", "deployments": [
                {"base_url": "http://127.0.0.1:%d/v1" % mock_port}]}],
            "cache": {"path": os.path.join(tmp, "cache"), "index": args.index,
                      "max_entries": 0, "max_bytes": 0, "ttl_s": 0,
                      "verifier": not args.no_verifier,
                      "embedder": {"provider": "local", "dim": args.dim}},
        }
        # semgate logs its port; ask the OS for a free one instead to keep it simple
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        cfg["listen"] = "127.0.0.1:%d" % port
        path = os.path.join(tmp, "semgate.json")
        json.dump(cfg, open(path, "w"))
        sg = start([os.path.join(args.build, "semgate"), "--config", path], log)
        procs.append(sg)
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def ask(text, headers):
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
            h = {"Content-Type": "application/json"}
            h.update(headers)
            conn.request("POST", "/v1/chat/completions", body, h)
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError("status %d: %r" % (r.status, data[:200]))
            return r, json.loads(data)

        t0 = time.time()
        distinct = list(dict.fromkeys(p["a"] for p in pairs))
        for a in distinct:
            ask(a, {})
        t_fill = time.time() - t0
        results = []  # (label, similarity or None, correct)
        t0 = time.time()
        for p in pairs:
            r, resp = ask(p["b"], {"Cache-Control": "no-store", "X-Semgate-Threshold": "0"})
            state = r.getheader("X-Semgate-Cache")
            if state not in ("hit-exact", "hit-semantic"):
                results.append((p["label"], None, False))
                continue
            sim = 1.0 if state == "hit-exact" else float(r.getheader("X-Semgate-Similarity"))
            answered = resp["choices"][0]["message"]["content"][len(PREFIX):]
            correct = find(parent, answered) == find(parent, p["b"])
            results.append((p["label"], sim, correct))
        t_query = time.time() - t0
        stats = json.loads(http_get(port, "/stats"))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    npos = sum(1 for p in pairs if p["label"] == 1)
    nneg = len(pairs) - npos
    print("pairs %d (label 1: %d, label 0: %d), distinct a: %d" % (len(pairs), npos, nneg, len(distinct)))
    print("fill: %.1f s (%.0f req/s), queries: %.1f s (%.0f req/s), lookup latency p50 %.0f us p99 %.0f us"
          % (t_fill, len(distinct) / t_fill, t_query, len(pairs) / t_query,
             stats["lookup_latency_us"]["p50"], stats["lookup_latency_us"]["p99"]))
    print("| threshold | hits | precision | positive hit rate | negative false-hit rate |")
    print("|---|---|---|---|---|")
    for t in thresholds:
        hits = [(lab, ok) for lab, sim, ok in results if sim is not None and sim >= t]
        correct = sum(1 for _, ok in hits if ok)
        pos_ok = sum(1 for lab, ok in hits if lab == 1 and ok)
        neg_false = sum(1 for lab, ok in hits if lab == 0 and not ok)
        print("| %.2f | %d | %.3f | %.3f | %.3f |" % (
            t, len(hits), correct / len(hits) if hits else 0.0, pos_ok / npos, neg_false / nneg))
    return 0


def http_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    return c.getresponse().read()


if __name__ == "__main__":
    sys.exit(main())
