#!/usr/bin/env bash
# Cache quality of the model embedder through the server (bench/qqp_replay.py), for
# bench/QUALITY.md "The model embedder (all-MiniLM-L6-v2 in process)".
#
#   bash bench/quality_model.sh [OUT]      # OUT: results directory (default /tmp/semgate-quality-model)
#
# Env: BUILD (default build-q), DATA (default ../shared/data), L3 (paraphrase-MiniLM-L3-v2
# directory, default /work/research/models/paraphrase-MiniLM-L3-v2), CONC (connections, 16),
# THREADS (cache.embedder.threads, 2), RUNS (which runs, default all: "l6 l3 local").
# For each dataset (qqp-dev, mrpc-dev) and each run it writes OUT/<run>__<data>.{log,tsv,dump}:
# the console table, the curve at 0.70..0.99 step 0.01 and one line per pair.
# Build first: cmake -S . -B build-q -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
#              cmake --build build-q -j2 --target semgate mock-upstream
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/semgate-quality-model}
build=${BUILD:-$top/build-q}
data=${DATA:-$top/../shared/data}
l6=$top/models/all-minilm-l6-v2
l3=${L3:-/work/research/models/paraphrase-MiniLM-L3-v2}
conc=${CONC:-16}
threads=${THREADS:-2}
runs=${RUNS:-l6 l3 local}
mkdir -p "$out"
rc=0
for ds in qqp-dev mrpc-dev; do
	[ -f "$data/$ds.jsonl" ] || { echo "no $data/$ds.jsonl: skipped"; continue; }
	for run in $runs; do
		case $run in
		l6) cfgs=("L6-off --embedder model --model-path $l6 --no-verifier"
		          "L6-on --embedder model --model-path $l6 --verifier") ;;
		l3) cfgs=("L3-off --embedder model --model-path $l3 --no-verifier"
		          "L3-on --embedder model --model-path $l3 --verifier") ;;
		local) cfgs=("local-on --embedder local --dim 128 --verifier") ;;
		*) echo "unknown run $run"; exit 2 ;;
		esac
		for c in "${cfgs[@]}"; do
			set -- $c
			name=$1
			shift
			echo "== $name $ds $(date -u +%H:%M:%S)"
			python3 "$top/bench/qqp_replay.py" --build "$build" --data "$data/$ds.jsonl" \
				--thresholds 0.70:0.99:0.01 --concurrency "$conc" --embed-threads "$threads" \
				--tsv "$out/${name}__$ds.tsv" --dump "$out/${name}__$ds.dump" "$@" \
				> "$out/${name}__$ds.log" 2>&1 || rc=1
			grep -E "^(data|embedder|fill|stats|best|served)" "$out/${name}__$ds.log"
		done
	done
done
exit $rc
