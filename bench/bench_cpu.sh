#!/usr/bin/env bash
# CPU time per request of semgate and of the load generator, side by side, exact cache hits:
#   bash bench/bench_cpu.sh [--rounds 6] [--duration 3] [--build build] SPEC...
# SPEC is NAME=BIN:AUTH[:ENV]: a semgate binary, its auth ("off", or a JSON object merged
# into auth.mode "keys", e.g. {} or {"record_spend":false}) and optionally one VAR=VALUE
# for its environment. Every side runs at once on one mock upstream, a cache primed by one
# request, and wrk (-t2 -c64, bench/wrk/post.lua) sends every side the same Authorization
# header (a key with rpm, tpm, concurrency limits and a budget far above the run when auth
# is on; a dummy one when off). Sides take turns, one wrk run each per round.
# Prints per round and side: req/s, semgate's CPU µs per request (utime + stime of the
# process, every thread, from /proc/PID/stat) and wrk's (its rusage, through bash's time),
# then the medians. Unlike req/s, CPU per request says who pays for what: on a 2-core
# machine wrk shares the cores, so req/s follows the sum of the two.
# Example (what keys cost, against auth off, one binary):
#   bash bench/bench_cpu.sh off=build/semgate:off keys=build/semgate:{}
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rounds=6 duration=3 build=build specs=()
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) rounds=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	-*) echo "usage: $0 [--rounds N] [--duration S] [--build DIR] NAME=BIN:AUTH[:ENV]..." >&2; exit 2 ;;
	*) specs+=("$1"); shift ;;
	esac
done
[ ${#specs[@]} -gt 0 ] || { echo "$0: no SPEC (NAME=BIN:AUTH[:ENV])" >&2; exit 2; }
bench_name=cpu
. "$top/bench/common.sh"

mock=$(free_port)
"$top/$build/mock-upstream" --host 127.0.0.1 --port "$mock" --quiet >/dev/null &
pids+=($!)
chat='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France?"}]}'
names=() ports=() hdrs=() spids=()
for spec in "${specs[@]}"; do
	name=${spec%%=*} rest=${spec#*=}
	bin=${rest%%:*} rest=${rest#*:}
	auth=$rest envv=
	case "$rest" in
	off:*|\{*\}:*) auth=${rest%:*} envv=${rest##*:} ;;
	esac
	port=$(free_port) dir=$work/$name
	mkdir -p "$dir"
	python3 - "$dir" "$mock" "$port" "$auth" <<'PY'
import json, sys
d, mock, port, auth = sys.argv[1:5]
c = {"listen": "127.0.0.1:" + port, "log_level": "error",
     "cache": {"path": d + "/cache", "embedder": {"provider": "local"}},
     "models": [{"name": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.6,
                 "deployments": [{"base_url": "http://127.0.0.1:%s/v1" % mock}]}]}
if auth != "off":
    c["admin_key_env"] = "SG_BENCH_ADMIN"
    c["auth"] = {"mode": "keys", "secret_env": "SG_BENCH_SECRET", "path": d + "/auth"}
    c["auth"].update(json.loads(auth))
json.dump(c, open(d + "/c.json", "w"))
PY
	env ${envv:+"$envv"} SG_BENCH_ADMIN=bench-admin SG_BENCH_SECRET=bench-secret-0123456789 \
		"$bin" --config "$dir/c.json" >/dev/null 2>"$dir/log" &
	pids+=($!) spids+=($!)
	for _ in $(seq 1 200); do
		curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
		sleep 0.1
	done
	h="Authorization: $bench_nokey"
	if [ "$auth" != off ]; then
		h="Authorization: Bearer $(bench_key "$port")"
	fi
	curl -fsS -o /dev/null -H "$h" -H 'Content-Type: application/json' -d "$chat" \
		"http://127.0.0.1:$port/v1/chat/completions"
	names+=("$name") ports+=("$port") hdrs+=("$h")
done

tck=$(getconf CLK_TCK)
results=$work/results
: >"$results"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
	line="round $r:"
	for j in "${!names[@]}"; do
		pid=${spids[$j]}
		c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
		TIMEFORMAT='WRKCPU %U %S'
		out=$({ time wrk -t2 -c64 -d"${duration}s" -H "${hdrs[$j]}" -s "$top/bench/wrk/post.lua" \
			"http://127.0.0.1:${ports[$j]}/v1/chat/completions"; } 2>&1)
		c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
		n=$(awk '/requests in/ {print $1}' <<<"$out")
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		wcpu=$(awk '/WRKCPU/ {print $2 + $3}' <<<"$out")
		sg_us=$(echo "($c1 - $c0) / $tck * 1000000 / $n" | bc -l)
		wrk_us=$(echo "$wcpu * 1000000 / $n" | bc -l)
		printf '%s %s %s %s\n' "${names[$j]}" "$rps" "$sg_us" "$wrk_us" >>"$results"
		line+=$(printf ' %s %.0f req/s, semgate %.2f us, wrk %.2f us;' "${names[$j]}" "$rps" "$sg_us" "$wrk_us")
	done
	echo "$line"
done
echo
python3 - "$results" "${names[@]}" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
print("%-10s %10s %14s %12s %10s" % ("side", "req/s", "semgate us/req", "wrk us/req", "sum"))
for name in sys.argv[2:]:
    r = [x for x in rows if x[0] == name]
    rps, sg, wk = (st.median(float(x[i]) for x in r) for i in (1, 2, 3))
    print("%-10s %10.0f %14.2f %12.2f %10.2f" % (name, rps, sg, wk, sg + wk))
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
