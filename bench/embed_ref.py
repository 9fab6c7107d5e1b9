#!/usr/bin/env python3
"""embed_ref.py: the reference engines for build/embedbench, measured the same way.

  python embed_ref.py --engine st|ort --model DIR [--onnx FILE] --texts FILE [--limit N]
                      [--threads T] [--batch B[,B...]] [--warmup W] [--rounds R] [--sorted]
                      [--probe TEXT] [--probe-reps K]

Run with an interpreter that has torch (CPU), sentence-transformers, onnxruntime and
tokenizers (bench/setup_embed_bench.sh installs them into bench/.venv-bench; none of it is a semgate dependency).

  st   sentence-transformers on PyTorch: torch.set_num_threads(T), then per group of B texts
       model.encode(group, batch_size=B, normalize_embeddings=True).
  ort  ONNX Runtime on an fp32 ONNX export of the same model (input_ids, attention_mask ->
       mean-pooled, L2-normalised `emb`): intra_op_num_threads=T, inter_op_num_threads=1,
       all graph optimisations; texts tokenised with the `tokenizers` fast tokenizer of the
       model's tokenizer.json (its fixed padding to 128 replaced by padding to the longest
       text of the group, truncation at the model's max_seq_length).

Both time the whole text -> vector path, tokenisation included, over the first N texts of
FILE in consecutive groups of B (the file's order; --sorted: longest first, as encode()
orders a whole list), after W untimed texts. One JSON line per batch size, the same fields
as embedbench: texts/s by wall clock and by CPU time (resource.getrusage: all threads of
the process), CPU ms per text, per-call wall percentiles; with R rounds, medians.
"""
import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(sorted_v, p):
    if not sorted_v:
        return 0.0
    i = int(p * (len(sorted_v) - 1) + 0.5)
    return sorted_v[min(i, len(sorted_v) - 1)]


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["st", "ort"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--onnx")
    ap.add_argument("--texts", required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sorted", action="store_true")
    ap.add_argument("--probe")
    ap.add_argument("--probe-reps", type=int, default=1000)
    a = ap.parse_args()

    texts = []
    with open(a.texts, encoding="utf-8") as f:
        for line in f:
            texts.append(line.rstrip("\r\n"))
            if len(texts) == a.limit:
                break
    order = list(range(len(texts)))
    if a.sorted:
        order.sort(key=lambda i: (-len(texts[i]), i))
    batches = [int(b) for b in a.batch.split(",")]
    import numpy as np

    t0 = time.perf_counter()
    if a.engine == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(a.threads)
        model = SentenceTransformer(a.model, device="cpu")
        model.eval()
        max_len = model.max_seq_length

        def embed(group):
            with torch.inference_mode():
                return model.encode(group, batch_size=len(group), normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)

        desc = "sentence-transformers %s, torch %s (%d threads)" % (
            __import__("sentence_transformers").__version__, torch.__version__,
            torch.get_num_threads())
    else:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        with open(os.path.join(a.model, "sentence_bert_config.json")) as f:
            max_len = json.load(f).get("max_seq_length", 512)
        tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=max_len)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])

        def embed(group):
            enc = tok.encode_batch(group)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]

        desc = "onnxruntime %s fp32 (%s), %d intra-op threads" % (
            ort.__version__, os.path.basename(a.onnx), a.threads)
    load_s = time.perf_counter() - t0
    print("embed_ref: %s, loaded in %.0f ms; %d texts, max_seq_length %d" %
          (desc, load_s * 1000, len(texts), max_len), file=sys.stderr)

    for t in texts[:a.warmup]:
        embed([t])
    mb = max(batches)
    if mb > 1:
        k = min(len(order), 2 * mb)
        for i in range(0, k, mb):
            embed([texts[j] for j in order[i:i + mb]])

    def run(b):
        lat = []
        c0, w0 = cpu_s(), time.perf_counter()
        for i in range(0, len(order), b):
            group = [texts[j] for j in order[i:i + b]]
            s = time.perf_counter()
            embed(group)
            lat.append(time.perf_counter() - s)
        wall, cpu = time.perf_counter() - w0, cpu_s() - c0
        lat.sort()
        n = len(order)
        return [n / wall, n / cpu, cpu * 1000 / n, pct(lat, .5) * 1000, pct(lat, .9) * 1000,
                pct(lat, .99) * 1000, wall / len(lat) * 1000]

    acc = {b: [] for b in batches}
    for _ in range(a.rounds):
        for b in batches:
            acc[b].append(run(b))
    for b in batches:
        med = [median([r[c] for r in acc[b]]) for c in range(7)]
        print(json.dumps({
            "engine": a.engine, "threads": a.threads, "batch": b, "texts": len(texts),
            "sorted": int(a.sorted), "rounds": a.rounds, "texts_per_s": round(med[0], 1),
            "texts_per_cpu_s": round(med[1], 1), "cpu_ms_per_text": round(med[2], 3),
            "call_p50_ms": round(med[3], 3), "call_p90_ms": round(med[4], 3),
            "call_p99_ms": round(med[5], 3), "call_mean_ms": round(med[6], 3)}), flush=True)

    if a.probe:
        if a.engine == "st":
            nids = len(model.tokenizer(a.probe)["input_ids"])
        else:
            nids = len(tok.encode(a.probe).ids)
        for _ in range(20):
            embed([a.probe])
        lat = []
        c0 = cpu_s()
        for _ in range(a.probe_reps):
            s = time.perf_counter()
            embed([a.probe])
            lat.append(time.perf_counter() - s)
        c = cpu_s() - c0
        lat.sort()
        print(json.dumps({
            "engine": a.engine, "probe_chars": len(a.probe.encode()), "ids": nids,
            "threads": a.threads, "reps": a.probe_reps, "p50_us": round(pct(lat, .5) * 1e6, 1),
            "p90_us": round(pct(lat, .9) * 1e6, 1),
            "cpu_us_per_call": round(c * 1e6 / a.probe_reps, 1)}), flush=True)


if __name__ == "__main__":
    main()
