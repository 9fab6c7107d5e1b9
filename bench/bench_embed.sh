#!/usr/bin/env bash
# The model embedder's encoder against PyTorch (sentence-transformers) and ONNX Runtime,
# in one run, interleaved:
#   bash bench/bench_embed.sh [--build build] [--rounds 3] [--limit 1000] [--limit2 250]
#                             [--no-rows] [--rows-only] [--out FILE.jsonl]
# Texts: the first N `a` questions of $QQP (default /work/shared/data/qqp-dev.jsonl, read in
# place; written one a line to a scratch file). For each round, for 1 and 2 threads, runs
#   build/embedbench (semgate's encoder, sg_encoder_embed, OpenBLAS at T threads)
#   bench/embed_ref.py --engine st   (sentence-transformers on torch, torch.set_num_threads(T))
#   bench/embed_ref.py --engine ort  (ONNX Runtime, fp32 export, intra_op_num_threads=T)
# one after another (the order rotates every round), each at batch 1 then batch 32 over the
# same texts, tokenisation included; at 1 thread each also times one 16-token prompt alone.
# The 2-thread runs take the first --limit2 of the texts: on a busy 2-core machine PyTorch
# with 2 threads runs ~40x slower than with 1 (each parallel region waits for its second
# thread to be scheduled), and 1,000 texts at batch 1 took over half an hour.
# Then the SEMGATE_GEMM_NT_ROWS sweep: embedbench at 1 thread, batches 1/2/4/8, with the
# values 0 16 24 32 48 64 interleaved in each round; and the crossover itself: the 16-id
# prompt repeated in batches of 1..6 (exactly 16..96 rows), sgemm always (0) against the
# kernel always (256).
# Prints medians over the rounds (wall and CPU time) and the ratios, per-round ratios' medians.
# Needs $PY (default bench/.venv-bench/bin/python) with torch, sentence-transformers,
# onnxruntime, tokenizers, and $ONNX (default bench/.onnx/all-MiniLM-L6-v2.onnx, the fp32
# export of all-MiniLM-L6-v2): `bash bench/setup_embed_bench.sh` makes both (pinned versions;
# --setup here runs it first when either is missing). --build DIR: relative to the
# repository's top, or absolute.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=build rounds=3 limit=1000 limit2=250 rows=1 main=1 out="" setup=0
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--limit) limit=$2; shift 2 ;;
	--limit2) limit2=$2; shift 2 ;;
	--no-rows) rows=0; shift ;;
	--rows-only) main=0; shift ;;
	--out) out=$2; shift 2 ;;
	--setup) setup=1; shift ;;
	*) echo "usage: $0 [--build DIR] [--rounds R] [--limit N] [--limit2 N] [--no-rows] [--rows-only] [--out FILE] [--setup]" >&2; exit 2 ;;
	esac
done
case "$build" in /*) bdir=$build ;; *) bdir=$top/$build ;; esac
PY=${PY:-$top/bench/.venv-bench/bin/python}
ONNX=${ONNX:-$top/bench/.onnx/all-MiniLM-L6-v2.onnx}
ready() { [ -s "$ONNX" ] && [ -x "$PY" ] &&
	"$PY" -c 'import torch, sentence_transformers, onnxruntime, tokenizers' 2>/dev/null; }
if [ "$main" = 1 ] && ! ready; then
	if [ "$setup" = 1 ]; then
		bash "$top/bench/setup_embed_bench.sh" --venv "$(dirname "$(dirname "$PY")")" --onnx "$ONNX"
	else
		echo "$0: PY=$PY (with torch, sentence-transformers, onnxruntime, tokenizers) or ONNX=$ONNX is missing:" >&2
		echo "  run bash bench/setup_embed_bench.sh first (or pass --setup)" >&2
		exit 1
	fi
fi
[ -x "$bdir/embedbench" ] || { echo "$0: no $bdir/embedbench: build it (cmake --build $build --target embedbench)" >&2; exit 1; }
QQP=${QQP:-/work/shared/data/qqp-dev.jsonl}
MODEL=${MODEL:-$top/models/all-minilm-l6-v2}
# 16 ids with [CLS] and [SEP] in all-MiniLM-L6-v2's WordPiece (each tool prints its count)
PROBE=${PROBE:-"What is the best way to learn machine learning on my own time?"}
work=$(mktemp -d /tmp/semgate-bench-embed.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
[ -n "$out" ] || out=$work/results.jsonl
: >"$out"

python3 - "$QQP" "$limit" >"$work/texts.txt" <<'EOF'
import json, sys
n = int(sys.argv[2])
with open(sys.argv[1], encoding="utf-8") as f:
    for i, line in enumerate(f):
        if i == n:
            break
        print(" ".join(json.loads(line)["a"].split()))
EOF
echo "== $(wc -l <"$work/texts.txt") texts from $QQP; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(git -C "$top" rev-parse --short HEAD 2>/dev/null) $(date -u +%FT%TZ)"

tag() { # add fields to every JSON line of stdin
	python3 -c 'import json,sys
extra=json.loads(sys.argv[1])
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"):
        d=json.loads(l); d.update(extra); print(json.dumps(d), flush=True)' "$1"
}

run_engine() { # engine threads round
	local e=$1 t=$2 r=$3 probe=() n=$limit
	[ "$t" = 1 ] && probe=(--probe "$PROBE" --probe-reps 300)
	[ "$t" = 1 ] || n=$((limit2 < limit ? limit2 : limit))
	local load; load=$(cut -d' ' -f1 /proc/loadavg)
	if [ "$e" = semgate ]; then
		"$bdir/embedbench" --model "$MODEL" --texts "$work/texts.txt" --limit "$n" \
			--threads "$t" --batch 1,32 "${probe[@]}" 2>>"$work/log"
	else
		"$PY" "$top/bench/embed_ref.py" --engine "$e" --model "$MODEL" --onnx "$ONNX" \
			--texts "$work/texts.txt" --limit "$n" --threads "$t" --batch 1,32 \
			"${probe[@]}" 2>>"$work/log"
	fi | tag "{\"round\":$r,\"set\":\"engines\",\"load\":$load}" | tee -a "$out"
}

if [ "$main" = 1 ]; then
	engines=(semgate st ort)
	for r in $(seq 1 "$rounds"); do
		for t in 1 2; do
			for i in 0 1 2; do
				run_engine "${engines[$(( (i + r - 1) % 3 ))]}" "$t" "$r"
			done
		done
	done
fi

if [ "$rows" = 1 ]; then
	vals=(0 16 24 32 48 64)
	for r in $(seq 1 "$rounds"); do
		for i in "${!vals[@]}"; do
			v=${vals[$(( (i + r - 1) % ${#vals[@]} ))]}
			load=$(cut -d' ' -f1 /proc/loadavg)
			SEMGATE_GEMM_NT_ROWS=$v "$bdir/embedbench" --model "$MODEL" --texts "$work/texts.txt" \
				--limit $((limit < 400 ? limit : 400)) --threads 1 --batch 1,2,4,8 2>>"$work/log" |
				tag "{\"round\":$r,\"set\":\"rows\",\"rows\":$v,\"load\":$load}" | tee -a "$out"
		done
	done
	for _ in $(seq 240); do echo "$PROBE"; done >"$work/probe.txt"
	for r in $(seq 1 "$rounds"); do
		for v in 0 256; do
			load=$(cut -d' ' -f1 /proc/loadavg)
			SEMGATE_GEMM_NT_ROWS=$v "$bdir/embedbench" --model "$MODEL" --texts "$work/probe.txt" \
				--limit 240 --threads 1 --batch 1,2,3,4,5,6 --warmup 16 2>>"$work/log" |
				tag "{\"round\":$r,\"set\":\"xover\",\"rows\":$v,\"load\":$load}" | tee -a "$out"
		done
	done
fi
grep -h -E "^embedbench:|^embed_ref:" "$work/log" | sort -u

python3 - "$out" <<'EOF'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda v: st.median(v) if v else float("nan")
eng = [d for d in rows if d["set"] == "engines" and "batch" in d]
names = {"semgate": "semgate (C, OpenBLAS)", "st": "PyTorch (sentence-transformers)",
         "ort": "ONNX Runtime (fp32)"}
if eng:
    print("\n| engine | threads | batch | texts/s (wall) | texts/s (CPU) | CPU ms/text | p50 / p90 / p99 ms (per call) |")
    print("|---|---|---|---|---|---|---|")
    for t in (1, 2):
        for b in (1, 32):
            for e in ("semgate", "st", "ort"):
                g = [d for d in eng if d["engine"] == e and d["threads"] == t and d["batch"] == b]
                if not g:
                    continue
                print("| %s | %d | %d | %.1f | %.1f | %.2f | %.1f / %.1f / %.1f |" % (
                    names[e], t, b, med([d["texts_per_s"] for d in g]),
                    med([d["texts_per_cpu_s"] for d in g]), med([d["cpu_ms_per_text"] for d in g]),
                    med([d["call_p50_ms"] for d in g]), med([d["call_p90_ms"] for d in g]),
                    med([d["call_p99_ms"] for d in g])))
    print("\n| threads | batch | semgate / PyTorch (wall) | (CPU) | semgate / ONNX Runtime (wall) | (CPU) |")
    print("|---|---|---|---|---|---|")
    for t in (1, 2):
        for b in (1, 32):
            cells = []
            for other in ("st", "ort"):
                for k in ("texts_per_s", "texts_per_cpu_s"):
                    rs = []
                    for r in sorted({d["round"] for d in eng}):
                        a = [d[k] for d in eng if d["round"] == r and d["engine"] == "semgate" and d["threads"] == t and d["batch"] == b]
                        o = [d[k] for d in eng if d["round"] == r and d["engine"] == other and d["threads"] == t and d["batch"] == b]
                        if a and o:
                            rs.append(a[0] / o[0])
                    cells.append("%.2fx (%s)" % (med(rs), ", ".join("%.2f" % x for x in rs)) if rs else "-")
            print("| %d | %d | %s |" % (t, b, " | ".join(cells)))
    pr = [d for d in rows if d["set"] == "engines" and "p50_us" in d]
    if pr:
        print("\n16-token prompt alone, 1 thread (median over rounds of each run's p50 / CPU per call):\n")
        print("| engine | ids | p50 µs | p90 µs | CPU µs per call |")
        print("|---|---|---|---|---|")
        for e in ("semgate", "st", "ort"):
            g = [d for d in pr if d["engine"] == e]
            if g:
                print("| %s | %d | %.0f | %.0f | %.0f |" % (names[e], g[0]["ids"], med([d["p50_us"] for d in g]),
                      med([d["p90_us"] for d in g]), med([d["cpu_us_per_call"] for d in g])))
rw = [d for d in rows if d["set"] == "rows"]
if rw:
    vals = sorted({d["rows"] for d in rw})
    print("\nSEMGATE_GEMM_NT_ROWS sweep, 1 thread: texts/s by CPU time (by wall clock), medians over rounds\n")
    print("| batch | " + " | ".join(str(v) for v in vals) + " |")
    print("|---|" + "---|" * len(vals))
    for b in sorted({d["batch"] for d in rw}):
        cells = []
        for v in vals:
            g = [d for d in rw if d["rows"] == v and d["batch"] == b]
            cells.append("%.1f (%.1f)" % (med([d["texts_per_cpu_s"] for d in g]), med([d["texts_per_s"] for d in g])))
        print("| %d | %s |" % (b, " | ".join(cells)))
xo = [d for d in rows if d["set"] == "xover"]
if xo:
    print("\nCrossover: batches of the 16-id prompt, CPU ms per call (medians over rounds)\n")
    print("| rows | sgemm (0) | own kernel (256) | kernel / sgemm |")
    print("|---|---|---|---|")
    for b in sorted({d["batch"] for d in xo}):
        a = med([d["cpu_ms_per_text"] * b for d in xo if d["batch"] == b and d["rows"] == 0])
        k = med([d["cpu_ms_per_text"] * b for d in xo if d["batch"] == b and d["rows"] == 256])
        print("| %d | %.2f | %.2f | %.2f |" % (16 * b, a, k, k / a))
EOF
echo "== raw results: $out; load $(cut -d' ' -f1-3 /proc/loadavg)"
