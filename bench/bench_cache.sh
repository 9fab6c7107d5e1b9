#!/usr/bin/env bash
# Cache-hit throughput through the real server:
#   bash bench/bench_cache.sh [--entries 100000] [--duration 10] [--build build]
# Builds a cache of N synthetic FAQ-style entries with build/cachebench (which also
# prints in-process lookup latency, recall and sizes), embedded with the local embedder
# (set in semgate's config too: the default is the model embedder; for that one, see
# bench/bench_cache_model.sh), starts semgate on it with the
# mock upstream, and runs wrk (64 connections, then 1) with paraphrased queries
# (semantic hits: never byte-identical to a stored prompt), then with one repeated
# prompt (exact hits). Loopback only; everything it starts is stopped on exit.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
entries=100000 duration=10 build=build
while [ $# -gt 0 ]; do
	case "$1" in
	--entries) entries=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	*) echo "usage: $0 [--entries N] [--duration S] [--build DIR]" >&2; exit 2 ;;
	esac
done
bdir=$top/$build
bench_name=bench-cache
. "$top/bench/common.sh"

echo "== building a cache of $entries entries (cachebench)"
"$bdir/cachebench" --path "$work/cache" --entries "$entries" --queries 1000 \
	--emit-queries "$work/queries.txt"
# cachebench removes nothing at the end: its cache is what semgate serves.
mock_port=$(free_port)
port=$(free_port)
"$bdir/mock-upstream" --host 127.0.0.1 --port "$mock_port" --quiet >/dev/null &
pids+=($!)
cat >"$work/semgate.json" <<JSON
{"listen":"127.0.0.1:$port","log_level":"warn",
 "models":[{"name":"m","deployments":[{"base_url":"http://127.0.0.1:$mock_port/v1"}]}],
 "cache":{"path":"$work/cache","max_entries":0,"max_bytes":0,"ttl_s":0,"verify":false,
  "embedder":{"provider":"local"}}}
JSON
start=$(date +%s.%N)
"$bdir/semgate" --config "$work/semgate.json" 2>"$work/semgate.log" &
sg=$!
pids+=($sg)
until curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do sleep 0.05; done
echo "semgate ready in $(echo "$(date +%s.%N) - $start" | bc) s on a cache of $entries entries"
grep -E "VmRSS" /proc/$sg/status
echo "== semantic hits, 64 connections"
QUERIES=$work/queries.txt timeout $((duration + 30)) wrk -t2 -c64 -d"${duration}s" \
	-s "$top/bench/wrk/semantic.lua" "http://127.0.0.1:$port/v1/chat/completions"
echo "== semantic hits, 1 connection"
QUERIES=$work/queries.txt timeout $((duration + 30)) wrk -t1 -c1 -d"${duration}s" --latency \
	-s "$top/bench/wrk/semantic.lua" "http://127.0.0.1:$port/v1/chat/completions"
echo "== exact hits, 64 connections"
echo "semgate exact hit benchmark prompt zebra quartz" >"$work/one.txt"
curl -fsS -o /dev/null -H 'Content-Type: application/json' \
	-d "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"$(cat "$work/one.txt")\"}]}" \
	"http://127.0.0.1:$port/v1/chat/completions"
QUERIES=$work/one.txt timeout $((duration + 30)) wrk -t2 -c64 -d"${duration}s" \
	-s "$top/bench/wrk/semantic.lua" "http://127.0.0.1:$port/v1/chat/completions"
echo "== semgate /stats"
curl -fsS "http://127.0.0.1:$port/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({"cache": s["cache"], "overall": s["overall"], "lookup_latency_us": s["lookup_latency_us"]}, indent=1))'
grep -E "VmRSS|VmHWM" /proc/$sg/status
