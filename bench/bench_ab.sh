#!/usr/bin/env bash
# A/B of two semgate binaries on the proxy path, interleaved in one run:
#   bash bench/bench_ab.sh BIN_A BIN_B [--rounds 3] [--duration 8] [--build build]
# Both serve one model on the same mock upstream with the cache off; each round runs
# wrk at 64 connections (req/s) and at 1 connection (p50/p99) on A, then on B.
# Prints per-round figures and the medians. Loopback only; stops what it starts.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 BIN_A BIN_B [--rounds N] [--duration S] [--build DIR]" >&2; exit 2; }
bin_a=$1 bin_b=$2; shift 2
rounds=3 duration=8 build=build
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) rounds=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
bench_name=ab
. "$top/bench/common.sh"
mock=$(free_port)
"$top/$build/mock-upstream" --host 127.0.0.1 --port "$mock" --quiet >/dev/null & pids+=($!)
declare -A port
for side in a b; do
	port[$side]=$(free_port)
	printf '{"listen":"127.0.0.1:%s","log_level":"error","cache":{"enabled":false},"models":[{"name":"gpt-4o-mini","deployments":[{"base_url":"http://127.0.0.1:%s/v1"}]}]}\n' \
		"${port[$side]}" "$mock" >"$work/$side.json"
done
"$bin_a" --config "$work/a.json" & pids+=($!)
"$bin_b" --config "$work/b.json" & pids+=($!)
for side in a b; do
	until curl -fsS "http://127.0.0.1:${port[$side]}/healthz" >/dev/null 2>&1; do sleep 0.05; done
done
lua=$top/bench/wrk/chat.lua
url() { echo "http://127.0.0.1:${port[$1]}/v1/chat/completions"; }
us() { awk '{v=$2; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000000} print v}'; }
for side in a b; do : >"$work/$side.rps"; : >"$work/$side.p50"; : >"$work/$side.p99"; done
for r in $(seq "$rounds"); do
	for side in a b; do
		rps=$(timeout $((duration + 30)) wrk -t2 -c64 -d"${duration}s" -s "$lua" "$(url $side)" | awk '/Requests\/sec/ {print $2}')
		out=$(timeout $((duration + 30)) wrk -t1 -c1 -d"${duration}s" --latency -s "$lua" "$(url $side)")
		p50=$(echo "$out" | grep -E '^ +50%' | us) p99=$(echo "$out" | grep -E '^ +99%' | us)
		echo "$rps" >>"$work/$side.rps"; echo "$p50" >>"$work/$side.p50"; echo "$p99" >>"$work/$side.p99"
		echo "round $r $side: $rps req/s at 64 connections; p50 ${p50} us, p99 ${p99} us at 1"
	done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
printf '%-28s %12s %12s %8s\n' "median of $rounds rounds" "A" "B" "B/A"
for m in rps p50 p99; do
	a=$(median "$work/a.$m") b=$(median "$work/b.$m")
	printf '%-28s %12s %12s %8.2f\n' "$m" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
echo "A: $bin_a"
echo "B: $bin_b"
