#!/usr/bin/env bash
# Hostile clients (issue 9), two semgate binaries interleaved in one run:
#   bash bench/bench_hostile.sh BIN_A BIN_B [--seconds 8] [--rounds 3] [--mock PATH]
#        [--rss-limit-mb 3072] [--cases "small big"]
#   bash bench/bench_hostile.sh BIN_A BIN_B --throughput [--rounds 3] [--duration 8] [--mock PATH]
#
# Attack mode (default). Per round, per case, A then B, each on a fresh mock and a fresh
# semgate (cache on, a new cache folder, log_level error, default limits: the same config
# for both, so no option the older binary would refuse):
# - one answer is cached: "small", the prompt "What is the capital of France?" (~300 bytes),
#   or "big", a prompt with the mock's marker [[huge=1000000]] (a 1 MB answer);
# - bench/tool_pipeline.c (compiled here into the scratch folder) opens ONE connection with
#   a 4 KiB SO_RCVBUF that pipelines that request as fast as the socket takes it and never
#   reads, while a probe on another keep-alive connection sends GET /healthz every 10 ms
#   and times it, and VmRSS is sampled every 100 ms; for --seconds, or until VmRSS passes
#   --rss-limit-mb (semgate is then stopped, SIGKILLed, and its peak reported as "> limit").
# Prints per round, binary and case: idle RSS (answer cached, before the attack), peak RSS
# (VmHWM), requests the attacker got in (bytes the kernel took / request size, so they
# include what sits in the socket buffers) and how many semgate looked up (its /stats),
# largest /healthz latency (the loop stall; ">=" when a probe was still unanswered at the
# end: its elapsed time) and p99; then the medians, B/A, and whether each peak is under
# 2x idle + 256 MiB (max_held_bytes' default).
#
# Throughput mode (--throughput): exact cache hits. Both binaries run at once (cache on,
# fresh folders) on one mock; the prompt of bench/wrk/chat.lua is cached on each, then
# per round wrk -t2 -c64 -d<duration>s -s bench/wrk/chat.lua on A, then on B; medians, B/A.
#
# Loopback only; everything started is stopped on exit.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
bin_a=$1 bin_b=$2; shift 2
seconds=8 rounds=3 duration=8 mode=attack limit_mb=3072 cases="small big"
mock_bin=$top/build/mock-upstream
while [ $# -gt 0 ]; do
	case "$1" in
	--seconds) seconds=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--mock) mock_bin=$2; shift 2 ;;
	--rss-limit-mb) limit_mb=$2; shift 2 ;;
	--cases) cases=$2; shift 2 ;;
	--throughput) mode=throughput; shift ;;
	*) echo "unknown option $1" >&2; usage ;;
	esac
done
for b in "$bin_a" "$bin_b" "$mock_bin"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 2; }; done
bench_name=hostile
. "$top/bench/common.sh"
# SIGKILL first: a semgate whose loop is stuck in a backlog would take SIGTERM only when
# it is through, growing all the while (and a stopped one would not take it at all).
# And exit on INT/TERM (common.sh's trap cleans up but would carry on).
hostile_cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; bench_cleanup; }
trap hostile_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

model=gpt-4o-mini
declare -A body=(
	[small]="{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]}"
	[big]="{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me everything [[huge=1000000]]\"}]}"
)
declare -A bin=([a]=$bin_a [b]=$bin_b)
declare -A name=([a]=A [b]=B)

# start_mock: sets mock_port, mock_pid
start_mock() {
	mock_port=$(free_port)
	"$mock_bin" --host 127.0.0.1 --port "$mock_port" --quiet >/dev/null 2>&1 &
	mock_pid=$!
	pids+=("$mock_pid")
	local i
	for i in $(seq 200); do
		curl -s -o /dev/null "http://127.0.0.1:$mock_port/" && return 0
		sleep 0.05
	done
	echo "mock did not start" >&2; exit 1
}
# start_semgate SIDE TAG: a fresh cache folder; sets sg_port, sg_pid
start_semgate() {
	local side=$1 tag=$2 i
	sg_port=$(free_port)
	printf '{"listen":"127.0.0.1:%s","log_level":"error","cache":{"path":"%s"},"models":[{"name":"%s","deployments":[{"base_url":"http://127.0.0.1:%s/v1"}]}]}\n' \
		"$sg_port" "$work/cache-$tag" "$model" "$mock_port" >"$work/$tag.json"
	"${bin[$side]}" --config "$work/$tag.json" 2>"$work/$tag.log" &
	sg_pid=$!
	pids+=("$sg_pid")
	for i in $(seq 400); do
		curl -fsS -o /dev/null "http://127.0.0.1:$sg_port/healthz" 2>/dev/null && return 0
		kill -0 "$sg_pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "semgate ${bin[$side]} did not start:" >&2; cat "$work/$tag.log" >&2; exit 1
}
# stop PID [kill]: SIGTERM, SIGKILL after 10 s; or SIGKILL at once
stop() {
	local p=$1 i
	if [ "${2:-}" != kill ]; then
		kill "$p" 2>/dev/null || true
		for i in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
	fi
	kill -9 "$p" 2>/dev/null || true
	{ wait "$p"; } 2>/dev/null || true	# (braces: no "Killed" notice from bash)
	forget "$p"
}
# forget PID: reaped, so its number is no longer ours to signal
forget() {
	local q keep=()
	for q in "${pids[@]}"; do [ "$q" = "$1" ] || keep+=("$q"); done
	pids=("${keep[@]}")
}
# cache PORT BODY: asks twice; the second answer must be an exact hit
cache_answer() {
	local port=$1 b=$2 i state
	for i in 1 2; do
		state=$(curl -fsS -o /dev/null -D - -H 'Content-Type: application/json' -d "$b" \
			"http://127.0.0.1:$port/v1/chat/completions" | tr -d '\r' |
			awk 'tolower($1) == "x-semgate-cache:" {print $2}')
	done
	[ "$state" = hit-exact ] || { echo "the answer was not cached (X-Semgate-Cache: $state)" >&2; exit 1; }
}
median() { sort -g "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# median_flag FILE: the median's flag (2nd field), 1 when that figure is a lower bound
median_flag() { sort -g "$1" | awk '{a[NR]=$2} END {print a[int((NR+1)/2)] + 0}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }'; }

if [ "$mode" = throughput ]; then
	start_mock
	declare -A port
	for side in a b; do
		start_semgate "$side" "tp-$side"
		port[$side]=$sg_port
		cache_answer "$sg_port" "${body[small]}"
		: >"$work/$side.rps"
	done
	echo "exact hits: wrk -t2 -c64 -d${duration}s -s bench/wrk/chat.lua, $rounds interleaved rounds"
	echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	for r in $(seq "$rounds"); do
		for side in a b; do
			out=$(timeout $((duration + 30)) wrk -t2 -c64 -d"${duration}s" -s "$top/bench/wrk/chat.lua" \
				"http://127.0.0.1:${port[$side]}/v1/chat/completions")
			rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
			other=$(echo "$out" | awk '/^bench: status_other/ {print $3}')
			hits=$(echo "$out" | awk '/^bench: x_semgate_cache/ {$1=$2=""; print}')
			sockerr=$(echo "$out" | awk '/Socket errors/' | tr -s ' ')
			echo "$rps" >>"$work/$side.rps"
			echo "round $r ${name[$side]}: $rps req/s; non-2xx $other; X-Semgate-Cache$hits${sockerr:+; $sockerr}"
		done
	done
	a=$(median "$work/a.rps") b=$(median "$work/b.rps")
	echo
	printf '%-34s %12s %12s %8s\n' "median of $rounds rounds" A B B/A
	printf '%-34s %12s %12s %8s\n' "exact hits, req/s, 64 connections" "$a" "$b" "$(ratio "$a" "$b")"
	echo "A: $bin_a"
	echo "B: $bin_b"
	exit 0
fi

tool=$work/tool_pipeline
cc -O2 -pthread -o "$tool" "$top/bench/tool_pipeline.c"
kv() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
mb() { awk -v k="$1" 'BEGIN { if (k < 0) print "-"; else printf "%.1f", k / 1024 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }
echo "attack: one connection pipelining the cached request for ${seconds} s, never reading (SO_RCVBUF 4096);"
echo "        GET /healthz every 10 ms on another; VmRSS every 100 ms; stop and SIGKILL past ${limit_mb} MB"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds"
for r in $(seq "$rounds"); do
	for c in $cases; do
		for side in a b; do
			tag=r$r-$c-$side
			start_mock
			start_semgate "$side" "$tag"
			start_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$sg_pid/status")
			cache_answer "$sg_port" "${body[$c]}"
			sleep 0.5
			"$tool" --port "$sg_port" --pid "$sg_pid" --body "${body[$c]}" --seconds "$seconds" \
				--rss-limit-mb "$limit_mb" --stop-over >"$work/$tag.out" &
			tp=$!
			pids+=("$tp")
			wait "$tp"
			forget "$tp"
			line=$(grep '^result ' "$work/$tag.out")
			over=$(kv "$line" over)
			served=-
			if [ "$over" = 1 ]; then	# the tool SIGSTOPped it
				alive="SIGKILLed past $limit_mb MB"
			elif curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$sg_port/healthz" 2>/dev/null; then
				alive="/healthz answered after the attack"
				# cache lookups counted by semgate, less the two that cached the answer
				served=$(curl -fsS -m 2 "http://127.0.0.1:$sg_port/stats" 2>/dev/null |
					python3 -c 'import json,sys; print(json.load(sys.stdin)["overall"]["requests"] - 2)' 2>/dev/null || echo -)
			elif [ -d "/proc/$sg_pid" ]; then
				alive="no /healthz answer within 2 s after the attack"
			else
				alive="exited"
			fi
			stop "$sg_pid" kill	# at once: a backlog would keep it growing
			stop "$mock_pid"
			rm -rf "$work/cache-$tag"
			idle=$(kv "$line" idle_kb) peak=$(kv "$line" peak_kb) reqs=$(kv "$line" requests)
			mx=$(kv "$line" probe_max_us) p99=$(kv "$line" probe_p99_us)
			# a probe still unanswered at the end: its elapsed time is a lower bound
			lb=$(kv "$line" probe_max_lower_bound) lb99=0 ge=
			[ "$lb" = 1 ] && ge=">= " && [ "$p99" = "$mx" ] && lb99=1
			echo "$idle" >>"$work/$c.$side.idle"; echo "$peak" >>"$work/$c.$side.peak"
			echo "$reqs" >>"$work/$c.$side.reqs"; echo "$mx $lb" >>"$work/$c.$side.max"
			echo "$p99 $lb99" >>"$work/$c.$side.p99"
			peak_s="$(mb "$peak") MB"; [ "$over" = 1 ] && peak_s="> $limit_mb MB ($(mb "$peak") MB when stopped)"
			echo "round $r $c ${name[$side]}: idle $(mb "$start_kb") MB at start, $(mb "$idle") MB before;" \
				"peak $peak_s; $reqs requests of $(kv "$line" req_bytes) bytes in $(kv "$line" attack_ms) ms" \
				"($served looked up by semgate, per /stats after the attack);" \
				"/healthz max $ge$(ms "$mx") ms, p99 $(ms "$p99") ms, p50 $(ms "$(kv "$line" probe_p50_us)") ms" \
				"($(kv "$line" probes) probes, in flight at the end $(ms "$(kv "$line" probe_inflight_us)") ms," \
				"non-200 $(kv "$line" probe_non200), probe error $(kv "$line" probe_err));" \
				"attacker error $(kv "$line" atk_err); RSS 1 s after the attacker closed" \
				"$(mb "$(kv "$line" after_close_kb)") MB; $alive" \
				"$(grep -v '^$' "$work/$tag.log" | head -3 | tr '\n' ' ')"
		done
	done
done
echo
printf '%-36s %14s %14s %8s\n' "median of $rounds rounds" A B B/A
for c in $cases; do
	for m in idle peak reqs max p99; do
		a=$(median "$work/$c.a.$m") b=$(median "$work/$c.b.$m")
		case $m in
		idle) label="idle RSS (MB)"; fa=$(mb "$a") fb=$(mb "$b") ;;
		peak) label="peak RSS (MB)"; fa=$(mb "$a") fb=$(mb "$b") ;;
		reqs) label="requests in"; fa=$a fb=$b ;;
		max) label="largest /healthz latency (ms)"; fa=$(ms "$a") fb=$(ms "$b") ;;
		p99) label="/healthz p99 (ms)"; fa=$(ms "$a") fb=$(ms "$b") ;;
		esac
		if [ "$m" = max ] || [ "$m" = p99 ]; then
			[ "$(median_flag "$work/$c.a.$m")" = 1 ] && fa=">= $fa"
			[ "$(median_flag "$work/$c.b.$m")" = 1 ] && fb=">= $fb"
		fi
		if [ "$m" = peak ]; then
			[ "$a" -gt $((limit_mb * 1024)) ] && fa="> $limit_mb"
			[ "$b" -gt $((limit_mb * 1024)) ] && fb="> $limit_mb"
		fi
		printf '%-36s %14s %14s %8s\n' "$c: $label" "$fa" "$fb" "$(ratio "$a" "$b")"
	done
	for side in a b; do
		i=$(median "$work/$c.$side.idle") p=$(median "$work/$c.$side.peak")
		t=$((2 * i + 256 * 1024))
		met=no; [ "$p" -lt "$t" ] && met=yes
		printf '%-36s %14s\n' "$c: ${name[$side]} peak < 2x idle + 256 MiB" "$met ($(mb "$t") MB)"
	done
done
echo "A: $bin_a"
echo "B: $bin_b"
