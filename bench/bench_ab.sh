#!/usr/bin/env bash
# A/B of two semgate binaries, interleaved in one run:
#   bash bench/bench_ab.sh BIN_A BIN_B [--mode proxy|exact|semantic|all] [--rounds 3]
#        [--duration 8] [--build build] [--entries 2000] [--auth-b | --auth-ab] [--pin] [--together]
# --auth-b: side B runs with auth.mode "keys" and every request carries a key with rpm, tpm,
#   concurrency limits and a budget (all far above what the run reaches, so that each
#   request pays for every check, reservation and settlement and none is refused), on a
#   priced model (spend recorded); side A runs the same config with auth off. Pass the same
#   binary twice to measure what governance costs.
# --auth-ab: both sides as side B of --auth-b: two builds compared on the governed path.
# --auth-b-json JSON: merged into side B's "auth" object, e.g. '{"flush_ms":50}' with
#   --auth-ab and one binary twice: what a setting changes.
# Modes (all: the three in that order, each on its own pair of servers):
#   proxy     cache off, one model on the mock upstream: every request goes upstream.
#   exact     cache on (local embedder, a fresh cache dir per side), one repeated prompt
#             (bench/wrk/post.lua), primed by one request: every request is an exact hit.
#   semantic  cache on (local embedder), each side on its own copy of a cache of --entries
#             synthetic entries written by its own cachebench (the one next to BIN, else
#             --build's), wrk sending paraphrases of stored prompts (bench/wrk/semantic.lua,
#             queries from cachebench --emit-queries): semantic hits, never byte-identical.
# --pin: each semgate (every thread of it) on the last CPU, wrk and the mock upstream on the
#   others (taskset; needs 2 CPUs or more). On a 2-core machine an unpinned wrk takes a share
#   of the server's core that grows with what it parses (e.g. rate-limit headers), so req/s
#   measures the two together; pinned, the server has one core to itself and req/s is its own
#   throughput as long as its core is the busy one (the script prints both cores' use).
# --together: both servers loaded at once, each by its own wrk at 64 connections, so that
#   whatever the host does to the CPU during a round (steal, a busy SMT sibling, a frequency
#   change) it does to A and B alike. With --pin both share the last CPU, which the scheduler
#   divides evenly between two always-busy processes, so B/A of req/s is B/A of throughput
#   per unit of CPU. Also prints each side's CPU time per request (utime + stime of the
#   process over /stats' request count for the round). The 1-connection p50/p99 runs stay
#   one side at a time.
# Each round runs wrk at 64 connections (req/s) and at 1 connection (p50/p99) on A, then on
# B. Prints per-round figures, the medians, B/A of the medians, the median, lowest and
# highest per-round B/A (paired: what moves both sides from round to round drops out),
# and each side's own round-to-round range, then /stats's hit counters of each server
# (exact and semantic hits must dominate in their modes). --build is the dir
# with mock-upstream (relative to the repository root, or absolute).
# Exits 3 if wrk saw non-2xx responses or socket errors, 4 if a cache mode's hits were not
# of its kind. Loopback only; stops what it starts.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: $0 BIN_A BIN_B [--mode proxy|exact|semantic|all] [--rounds N] [--duration S] [--build DIR] [--entries N] [--auth-b | --auth-ab] [--auth-b-json JSON] [--pin] [--together]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
bin_a=$1 bin_b=$2; shift 2
rounds=3 duration=8 build=build mode=proxy entries=2000 auth_b=0 auth_a=0 pin=0 together=0 auth_b_json={}
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) rounds=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--mode) mode=$2; shift 2 ;;
	--entries) entries=$2; shift 2 ;;
	--auth-b) auth_b=1; shift ;;
	--auth-ab) auth_b=1 auth_a=1; shift ;;
	--auth-b-json) auth_b_json=$2; shift 2 ;;
	--pin) pin=1; shift ;;
	--together) together=1; shift ;;
	*) echo "unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
	esac
done
case "$mode" in
proxy | exact | semantic) modes=$mode ;;
all) modes="proxy exact semantic" ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
case "$build" in /*) bdir=$build ;; *) bdir=$top/$build ;; esac
bench_name=ab
. "$top/bench/common.sh"
declare -A bin=([a]=$bin_a [b]=$bin_b)
srv=() cli=()
if [ "$pin" = 1 ]; then
	ncpu=$(nproc)
	[ "$ncpu" -ge 2 ] || { echo "--pin needs 2 CPUs or more" >&2; exit 2; }
	command -v taskset >/dev/null || { apt-get update -q && apt-get install -y -q util-linux; }
	cpus=0
	[ "$ncpu" -gt 2 ] && cpus=0-$((ncpu - 2))
	srv=(taskset -c $((ncpu - 1))) cli=(taskset -c "$cpus")
fi
# Each CPU's use over $1 seconds, from /proc/stat: busy % (user, nice, system, irq, softirq)
# and, apart, steal % (time the hypervisor gave another guest; guest columns are already
# in user, so they are left out of the total).
cpu_busy() {
	local a b
	a=$(grep -E '^cpu[0-9]+ ' /proc/stat); sleep "$1"; b=$(grep -E '^cpu[0-9]+ ' /proc/stat)
	paste <(echo "$a") <(echo "$b") | awk '{n = NF / 2; t = 0; for (i = 2; i <= 9; i++) t += $(n + i) - $i
		idle = $(n + 5) + $(n + 6) - $5 - $6; steal = $(n + 9) - $9
		printf "%s%s %.0f%% (steal %.0f%%)", (NR > 1 ? ", " : ""), $1, 100 * (t - idle - steal) / t, 100 * steal / t}'
}
export SG_BENCH_ADMIN=bench-admin SG_BENCH_SECRET=bench-secret-0123456789
declare -A authv
auth_hdr=()
# auth_hdr: the Authorization header side $1's requests carry, if any
ah() { auth_hdr=(); [ "$auth_b" = 0 ] || auth_hdr=(-H "Authorization: ${authv[$1]}"); }
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "A: $bin_a"
echo "B: $bin_b"
echo "modes: $modes; $rounds rounds of ${duration} s per wrk run; mock: $bdir/mock-upstream"
[ "$pin" = 1 ] && echo "pinned: semgate on CPU ${srv[2]}, wrk and the mock on CPU ${cli[2]}"

mock=$(free_port)
"${cli[@]}" "$bdir/mock-upstream" --host 127.0.0.1 --port "$mock" --quiet >/dev/null & pids+=($!)
declare -A port pid
wait_ready() { # side: until /healthz answers, 60 s at most, or the process died
	local i
	for i in $(seq 1200); do
		curl -fsS "http://127.0.0.1:${port[$1]}/healthz" >/dev/null 2>&1 && return 0
		kill -0 "${pid[$1]}" 2>/dev/null || { echo "semgate $1 exited; log:" >&2; cat "$work/$1.log" >&2; exit 1; }
		sleep 0.05
	done
	echo "semgate $1 not ready after 60 s" >&2; exit 1
}
chat='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France?"}]}'
# Writes the configs of mode $1 and anything the cache needs; sets lua and queries.
prepare() {
	local m=$1 side cb
	for side in a b; do
		port[$side]=$(free_port)
		case "$m" in
		proxy)
			printf '{"listen":"127.0.0.1:%s","log_level":"error","cache":{"enabled":false},"models":[{"name":"gpt-4o-mini","deployments":[{"base_url":"http://127.0.0.1:%s/v1"}]}]}\n' \
				"${port[$side]}" "$mock" >"$work/$side.json" ;;
		exact)
			rm -rf "$work/exact-$side"
			printf '{"listen":"127.0.0.1:%s","log_level":"error","cache":{"path":"%s","embedder":{"provider":"local"}},"models":[{"name":"gpt-4o-mini","deployments":[{"base_url":"http://127.0.0.1:%s/v1"}]}]}\n' \
				"${port[$side]}" "$work/exact-$side" "$mock" >"$work/$side.json" ;;
		semantic)
			cb=$(dirname "${bin[$side]}")/cachebench
			[ -x "$cb" ] || cb=$bdir/cachebench
			rm -rf "$work/sem-$side"
			echo "side $side: $cb --entries $entries"
			"$cb" --path "$work/sem-$side" --entries "$entries" --queries 1000 \
				--emit-queries "$work/queries-$side.txt" >"$work/cachebench-$side.log" 2>&1 ||
				{ cat "$work/cachebench-$side.log" >&2; exit 1; }
			grep -E '^(lookup|disk)' "$work/cachebench-$side.log" | sed 's/^/  /'
			printf '{"listen":"127.0.0.1:%s","log_level":"error","models":[{"name":"m","deployments":[{"base_url":"http://127.0.0.1:%s/v1"}]}],"cache":{"path":"%s","max_entries":0,"max_bytes":0,"ttl_s":0,"verify":false,"embedder":{"provider":"local"}}}\n' \
				"${port[$side]}" "$mock" "$work/sem-$side" >"$work/$side.json" ;;
		esac
	done
	if [ "$auth_b" = 1 ]; then # prices on both sides; keys, limits, budget on B
		for side in a b; do
			python3 - "$work/$side.json" "$side" "$work/auth-$m-$side" "$auth_a" "$auth_b_json" <<'PY'
import json, sys
path, side, adir, auth_a = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
extra = json.loads(sys.argv[5])
c = json.load(open(path))
for mo in c["models"]:
    mo["input_per_mtok"] = 0.15
    mo["output_per_mtok"] = 0.6
if side == "b" or auth_a:
    c["admin_key_env"] = "SG_BENCH_ADMIN"
    c["auth"] = {"mode": "keys", "secret_env": "SG_BENCH_SECRET", "path": adir}
    if side == "b":
        c["auth"].update(extra)
json.dump(c, open(path, "w"))
PY
		done
	fi
	lua=$top/bench/wrk/post.lua
	if [ "$m" = semantic ]; then
		lua=$top/bench/wrk/semantic.lua
		cmp -s "$work/queries-a.txt" "$work/queries-b.txt" &&
			echo "both cachebench runs emitted the same $(wc -l <"$work/queries-a.txt") queries" ||
			echo "note: the two cachebench runs emitted different queries; each side gets its own"
	fi
}
start() {
	local side
	for side in a b; do
		"${srv[@]}" "${bin[$side]}" --config "$work/$side.json" 2>"$work/$side.log" & pid[$side]=$!; pids+=($!)
	done
	for side in a b; do wait_ready $side; done
	authv=()
	if [ "$auth_b" = 1 ]; then
		authv[b]="Bearer $(bench_key "${port[b]}")"
		authv[a]=${authv[b]} # side A, auth off, ignores it (the same request bytes)
		[ "$auth_a" = 0 ] || authv[a]="Bearer $(bench_key "${port[a]}")"
	fi
	if [ "$1" = exact ]; then # the one miss, stored before wrk starts
		for side in a b; do
			ah "$side"
			curl -fsS -o /dev/null -H 'Content-Type: application/json' "${auth_hdr[@]}" -d "$chat" "$(url $side)"
			for i in $(seq 200); do
				[ "$(stats_field $side 'c["cache"]["entries"]')" -ge 1 ] && break
				sleep 0.05
			done
		done
	fi
}
stop() {
	local side
	for side in a b; do kill "${pid[$side]}" 2>/dev/null || true; wait "${pid[$side]}" 2>/dev/null || true; done
}
url() { echo "http://127.0.0.1:${port[$1]}/v1/chat/completions"; }
stats_field() { curl -fsS -H "Authorization: Bearer $SG_BENCH_ADMIN" "http://127.0.0.1:${port[$1]}/stats" | python3 -c "import json,sys; c=json.load(sys.stdin); print($2)"; }
us() { awk '{v=$2; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000000} print v}'; }
# wrk's own error lines: non-2xx/3xx responses and socket errors, summed.
errs() { awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}'; }
# A process's CPU time so far (utime + stime, all threads), in clock ticks.
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The same split four ways: user and system time of the event-loop thread, then of all the
# other threads (libuv's pool: vector search, spend writes; embedding threads).
proc_split() {
	awk -v me="$1" '{t = FILENAME; sub(/\/stat$/, "", t); sub(/.*\//, "", t)
		if (t == me) {lu += $14; ls += $15} else {ou += $14; os += $15}}
		END {print lu + 0, ls + 0, ou + 0, os + 0}' /proc/"$1"/task/*/stat
}
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
status=0
summary=$work/summary.txt
: >"$summary"
for m in $modes; do
	echo
	echo "== mode $m (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	prepare "$m"
	start "$m"
	export QUERIES=""
	for side in a b; do : >"$work/$m.$side.rps"; : >"$work/$m.$side.p50"; : >"$work/$m.$side.p99"; echo 0 >"$work/$m.$side.err"; done
	for side in a b; do : >"$work/$m.$side.cpu"; done
	for r in $(seq "$rounds"); do
		if [ "$together" = 1 ]; then
			declare -A n0 c0 s0 wp
			for side in a b; do
				n0[$side]=$(stats_field $side 'c["overall"]["requests"]')
				c0[$side]=$(proc_cpu "${pid[$side]}")
				s0[$side]=$(proc_split "${pid[$side]}")
			done
			busy=$work/busy
			: >"$busy"
			[ "$pin" = 1 ] && { sleep "$(echo "$duration / 4" | bc -l)"; cpu_busy "$(echo "$duration / 2" | bc -l)" >"$busy"; } &
			bp=$!
			for side in a b; do
				[ "$m" = semantic ] && export QUERIES=$work/queries-$side.txt
				ah "$side"
				timeout $((duration + 30)) "${cli[@]}" wrk -t1 -c64 -d"${duration}s" "${auth_hdr[@]}" -s "$lua" "$(url $side)" >"$work/wrk.$side" &
				wp[$side]=$!
			done
			for side in a b; do wait "${wp[$side]}"; done
			wait $bp 2>/dev/null || true
			line=""
			for side in a b; do
				n=$(( $(stats_field $side 'c["overall"]["requests"]') - n0[$side] ))
				# (with the cache off /stats counts no request: wrk's count then)
				[ "$n" -gt 0 ] || n=$(awk '/requests in/ {print $1}' "$work/wrk.$side")
				c=$(( $(proc_cpu "${pid[$side]}") - c0[$side] ))
				cpu=$(echo "$c * 1000000 / $(getconf CLK_TCK) / $n" | bc -l)
				rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.$side")
				e=$(( $(cat "$work/$m.$side.err") + $(errs <"$work/wrk.$side") ))
				echo "$e" >"$work/$m.$side.err"
				echo "$rps" >>"$work/$m.$side.rps"; echo "$cpu" >>"$work/$m.$side.cpu"
				split=$(paste <(echo "${s0[$side]}" | tr ' ' '\n') <(proc_split "${pid[$side]}" | tr ' ' '\n') |
					awk -v n="$n" -v hz="$(getconf CLK_TCK)" '{v[NR] = ($2 - $1) * 1000000 / hz / n}
						END {printf "loop %.1f user + %.1f sys, others %.1f + %.1f", v[1], v[2], v[3], v[4]}')
				line="$line$(printf '%s %s req/s, %.2f us CPU/req (%s); ' "$side" "$rps" "$cpu" "$split")"
			done
			echo "round $r together: $line$([ -s "$busy" ] && echo "busy: $(cat "$busy")")"
			for side in a b; do
				[ "$m" = semantic ] && export QUERIES=$work/queries-$side.txt
				ah "$side"
				out=$(timeout $((duration + 30)) "${cli[@]}" wrk -t1 -c1 -d"${duration}s" --latency "${auth_hdr[@]}" -s "$lua" "$(url $side)")
				p50=$(echo "$out" | grep -E '^ +50%' | us) p99=$(echo "$out" | grep -E '^ +99%' | us)
				e=$(( $(cat "$work/$m.$side.err") + $(echo "$out" | errs) ))
				echo "$e" >"$work/$m.$side.err"
				echo "$p50" >>"$work/$m.$side.p50"; echo "$p99" >>"$work/$m.$side.p99"
				echo "round $r $side: p50 ${p50} us, p99 ${p99} us at 1"
			done
			continue
		fi
		for side in a b; do
			[ "$m" = semantic ] && export QUERIES=$work/queries-$side.txt
			busy=$work/busy
			: >"$busy"
			[ "$pin" = 1 ] && { sleep "$(echo "$duration / 4" | bc -l)"; cpu_busy "$(echo "$duration / 2" | bc -l)" >"$busy"; } &
			ah "$side"
			out1=$(timeout $((duration + 30)) "${cli[@]}" wrk -t2 -c64 -d"${duration}s" "${auth_hdr[@]}" -s "$lua" "$(url $side)")
			wait $! 2>/dev/null || true
			out=$(timeout $((duration + 30)) "${cli[@]}" wrk -t1 -c1 -d"${duration}s" --latency "${auth_hdr[@]}" -s "$lua" "$(url $side)")
			rps=$(echo "$out1" | awk '/Requests\/sec/ {print $2}')
			p50=$(echo "$out" | grep -E '^ +50%' | us) p99=$(echo "$out" | grep -E '^ +99%' | us)
			e=$(( $(cat "$work/$m.$side.err") + $(echo "$out1" | errs) + $(echo "$out" | errs) ))
			echo "$e" >"$work/$m.$side.err"
			echo "$rps" >>"$work/$m.$side.rps"; echo "$p50" >>"$work/$m.$side.p50"; echo "$p99" >>"$work/$m.$side.p99"
			echo "round $r $side: $rps req/s at 64 connections$([ -s "$busy" ] && echo " (busy: $(cat "$busy"))"); p50 ${p50} us, p99 ${p99} us at 1"
		done
	done
	echo
	printf '%-22s %10s %10s %6s %6s %15s %19s %19s\n' "$m, $rounds rounds" "median A" "median B" "B/A" "paired" "B/A min-max" "A min-max" "B min-max"
	figs="rps p50 p99"
	[ "$together" = 1 ] && figs="rps cpu p50 p99"
	for k in $figs; do
		f="%.0f"; [ "$k" = cpu ] && f="%.2f"
		a=$(median "$work/$m.a.$k" | awk -v f="$f" '{printf f, $1}') b=$(median "$work/$m.b.$k" | awk -v f="$f" '{printf f, $1}')
		# per-round B/A (B's round r over A's round r), lowest and highest
		rr=$(paste "$work/$m.a.$k" "$work/$m.b.$k" | awk '{r=$2/$1; if (NR==1||r<lo) lo=r; if (NR==1||r>hi) hi=r} END {printf "%.2f-%.2f", lo, hi}')
		# the median of the per-round B/A: rounds are pairs (with --together, loaded at
		# once), so this one leaves out what moves both sides from round to round
		paste "$work/$m.a.$k" "$work/$m.b.$k" | awk '{printf "%.6f\n", $2/$1}' >"$work/$m.ratio.$k"
		pr=$(median "$work/$m.ratio.$k")
		ra=$(sort -n "$work/$m.a.$k" | awk -v f="$f" 'NR==1 {lo=$1} {hi=$1} END {printf f "-" f, lo, hi}')
		rb=$(sort -n "$work/$m.b.$k" | awk -v f="$f" 'NR==1 {lo=$1} {hi=$1} END {printf f "-" f, lo, hi}')
		ratio=$(echo "$(median "$work/$m.b.$k") / $(median "$work/$m.a.$k")" | bc -l)
		printf '%-22s %10s %10s %6.2f %6.3f %15s %19s %19s\n' "$k" "$a" "$b" "$ratio" "$pr" "$rr" "$ra" "$rb"
		printf '%-9s %-4s %10s %10s %6.2f %6.3f %11s %19s %19s\n' "$m" "$k" "$a" "$b" "$ratio" "$pr" "$rr" "$ra" "$rb" >>"$summary"
	done
	for side in a b; do
		line=$(stats_field $side '"; ".join(["%s %s" % (k, c.get("overall", {}).get(k, "-")) for k in ("requests", "hits_exact", "hits_semantic", "misses", "bypasses")] + ["cache entries %s" % c.get("cache", {}).get("entries", "-")])')
		e=$(cat "$work/$m.$side.err")
		echo "$side /stats: $line; wrk non-2xx + socket errors: $e"
		[ "$e" -eq 0 ] || status=3
		if [ "$m" != proxy ]; then
			kind=hits_$m
			ok=$(stats_field $side "int(c['overall']['$kind'] >= 0.99 * c['overall']['requests'])")
			[ "$ok" = 1 ] || { echo "  $side: $kind do not dominate: these are not $m-hit figures" >&2; [ $status -ne 0 ] || status=4; }
		fi
	done
	stop
done
echo
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "summary (req/s; cpu: us of semgate CPU per request, --together only; p50/p99 in us at 1 connection; B/A: of the medians; paired: the median of the per-round B/A; B/A min-max: per-round ratios; A, B min-max: each side's range over rounds)"
printf '%-9s %-4s %10s %10s %6s %6s %11s %19s %19s\n' mode fig "median A" "median B" "B/A" "paired" "B/A min-max" "A min-max" "B min-max"
cat "$summary"
echo "A: $bin_a"
echo "B: $bin_b"
exit $status
