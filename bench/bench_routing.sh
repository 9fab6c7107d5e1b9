#!/usr/bin/env bash
# Failure handling under load:
#   bash bench/bench_routing.sh [--duration 10] [--build build]
# Two mocks: one healthy, one answering 503 to every request. semgate (cache off) serves a
# model group over both; wrk (64 connections) measures throughput and errors, against the
# same semgate on a group with only the healthy deployment (the healthy figure), in the
# same run. Loopback only; everything it starts is stopped on exit.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
duration=10 build=build
while [ $# -gt 0 ]; do
	case "$1" in
	--duration) duration=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	*) echo "usage: $0 [--duration S] [--build DIR]" >&2; exit 2 ;;
	esac
done
bdir=$top/$build
bench_name=bench-routing
. "$top/bench/common.sh"
good=$(free_port) bad=$(free_port) port=$(free_port)
"$bdir/mock-upstream" --host 127.0.0.1 --port "$good" --quiet >/dev/null & pids+=($!)
"$bdir/mock-upstream" --host 127.0.0.1 --port "$bad" --fail-status 503 --quiet >/dev/null & pids+=($!)
cat >"$work/semgate.json" <<JSON
{"listen":"127.0.0.1:$port","log_level":"error","cache":{"enabled":false},
 "models":[
  {"name":"healthy","deployments":[{"base_url":"http://127.0.0.1:$good/v1","model":"gpt-4o-mini"}]},
  {"name":"half-failing","strategy":"round-robin","deployments":[
    {"base_url":"http://127.0.0.1:$bad/v1","model":"gpt-4o-mini"},
    {"base_url":"http://127.0.0.1:$good/v1","model":"gpt-4o-mini"}]}]}
JSON
"$bdir/semgate" --config "$work/semgate.json" 2>"$work/semgate.log" & pids+=($!)
until curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do sleep 0.05; done
cat >"$work/chat.lua" <<'LUA'
local model = os.getenv("MODEL")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"What is the capital of France?"}]}'
local non200 = 0
function response(status) if status ~= 200 then non200 = non200 + 1 end end
function done(summary) io.write(string.format("non-200 responses: %d of %d\n", non200, summary.requests)) end
LUA
run() {
	MODEL=$1 timeout $((duration + 30)) wrk -t2 -c64 -d"${duration}s" -s "$work/chat.lua" \
		"http://127.0.0.1:$port/v1/chat/completions" | grep -E "Requests/sec|non-200|Socket errors"
}
echo "== healthy group (one healthy deployment)"
run healthy
echo "== group of two, one answering 503 to everything"
run half-failing
echo "== deployment health after the run"
curl -fsS "http://127.0.0.1:$port/stats" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["deployments"], indent=1))'
