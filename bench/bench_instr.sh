#!/usr/bin/env bash
# Instructions per request: semgate under valgrind's callgrind while wrk sends
# one request at a time, for the proxy path (cache off), exact cache hits and
# semantic cache hits (a 2,000-entry cache written by cachebench, the local
# embedder: the model embedder's start under valgrind would take minutes). Instruction counts do not depend on what else the machine is doing,
# so unlike the timings of bench.sh they compare builds exactly.
#   bash bench/bench_instr.sh [--build build] [--duration 8] [--semgate PATH] [--auth]
# (--semgate: another semgate binary, e.g. an older build, on the same mock;
#  --auth: auth.mode "keys", every request with a key that has rpm, tpm, concurrency
#  limits and a budget far above the run, on a priced model: what governance costs;
#  --keep DIR: keep the callgrind profiles there, e.g. to compare two runs function by
#  function with callgrind_annotate)
# Prints, per path: requests, instructions in the event loop (startup
# excluded: libuv's uv_run, inclusive) plus those of the worker threads (the
# vector search runs on libuv's pool), and their quotient.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=build duration=8 bin= auth=0 keep=
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--semgate) bin=$2; shift 2 ;;
	--auth) auth=1; shift ;;
	--keep) keep=$2; shift 2 ;;
	*) echo "usage: $0 [--build DIR] [--duration S] [--semgate PATH] [--auth] [--keep DIR]" >&2; exit 2 ;;
	esac
done
bin=${bin:-$top/$build/semgate}
bench_name=instr
. "$top/bench/common.sh"
command -v valgrind >/dev/null || { apt-get update -q && apt-get install -y -q valgrind; }

mock=$(free_port)
"$top/$build/mock-upstream" --host 127.0.0.1 --port "$mock" --quiet >/dev/null &
pids+=($!)

measure() { # name (a file name), label, cache json, model, wrk script
	local name=$1 label=$2 cache=$3 model=$4 lua=$5 port out sg
	port=$(free_port)
	out=$work/$name.callgrind
	# busy polling off: its spinning between requests would be counted too,
	# and that depends on timing, not on the work a request needs
	printf '{"listen":"127.0.0.1:%s","log_level":"error","limits":{"busy_poll_us":0},"cache":%s,"models":[{"name":"%s","deployments":[{"base_url":"http://127.0.0.1:%s/v1"}]}]}\n' \
		"$port" "$cache" "$model" "$mock" >"$work/$name.json"
	if [ "$auth" = 1 ]; then
		python3 - "$work/$name.json" "$work/auth-$name" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for m in c["models"]:
    m["input_per_mtok"], m["output_per_mtok"] = 0.15, 0.6
c["admin_key_env"] = "SG_BENCH_ADMIN"
c["auth"] = {"mode": "keys", "secret_env": "SG_BENCH_SECRET", "path": sys.argv[2]}
json.dump(c, open(sys.argv[1], "w"))
PY
	fi
	SG_BENCH_ADMIN=bench-admin SG_BENCH_SECRET=bench-secret-0123456789 valgrind --tool=callgrind --callgrind-out-file="$out" \
		"$bin" --config "$work/$name.json" 2>"$work/$name.log" &
	sg=$!
	pids+=($sg)
	for _ in $(seq 1 200); do
		curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
		sleep 0.1
	done
	# the same request bytes either way (as clients send their provider key with auth off)
	local n hdr=(-H "Authorization: $bench_nokey")
	if [ "$auth" = 1 ]; then
		hdr=(-H "Authorization: Bearer $(bench_key "$port")")
	fi
	n=$(wrk -t1 -c1 -d"${duration}s" "${hdr[@]}" -s "$top/bench/wrk/$lua" \
		"http://127.0.0.1:$port/v1/chat/completions" | awk '/requests in/ {print $1}')
	kill -TERM "$sg"
	wait "$sg" 2>/dev/null || true
	local ir th
	ir=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
		awk '/uv_run \[/ && !done {gsub(",", "", $1); print $1; done = 1}')
	th=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
		awk '/start_thread \[/ && !done {gsub(",", "", $1); print $1; done = 1}')
	[ -z "$keep" ] || { mkdir -p "$keep" && cp "$out" "$keep/"; }
	printf '%-28s %8s requests  %14s instructions  %8.0f per request\n' \
		"$label" "$n" "$((ir + ${th:-0}))" "$(echo "($ir + ${th:-0}) / $n" | bc -l)"
}

echo "$bin: $("$bin" --version 2>/dev/null | head -1) (tree at $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?'))$([ "$auth" = 1 ] && echo ', auth.mode keys')"
measure proxy "proxy (cache off)" '{"enabled":false}' gpt-4o-mini chat.lua
# wrk repeats one prompt: every request after the first is an exact hit
measure hits "exact hits (cache on)" \
	"{\"path\":\"$work/cache\",\"embedder\":{\"provider\":\"local\"}}" gpt-4o-mini chat.lua
"$top/$build/cachebench" --path "$work/sem" --entries 2000 --queries 1000 \
	--emit-queries "$work/queries.txt" >/dev/null 2>&1
export QUERIES=$work/queries.txt
measure semantic "semantic hits (cache on)" \
	"{\"path\":\"$work/sem\",\"max_entries\":0,\"max_bytes\":0,\"ttl_s\":0,\"verify\":false,\"embedder\":{\"provider\":\"local\"}}" \
	m semantic.lua
