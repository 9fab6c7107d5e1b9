#!/usr/bin/env bash
# Speed and memory benchmark: the mock upstream measured directly, through
# semgate, and through Portkey's open-source gateway (Node.js), all on
# 127.0.0.1, with wrk and bench/wrk/chat.lua. Prints a table of the figures
# against semgate's targets; --record appends it to bench/RESULTS.md.
#
#   bash bench/bench.sh [--duration S] [--build DIR] [--repeat N] [--warmup S]
#                       [--connections N] [--record] [--no-portkey]
#
# Run from anywhere; paths are relative to the repository root. Installs wrk
# (Debian) and Portkey (npm, cached in bench/.portkey) when missing. Every load
# loop is bounded by wrk's -d plus a timeout(1) guard; every process it starts
# is stopped on exit, Ctrl-C or failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmdline="bash bench/bench.sh $*"

duration=10          # seconds per measured wrk run
build=build          # build directory holding semgate and mock-upstream
repeat=1             # rounds; each figure is the median over rounds
warmup=3             # seconds of unmeasured load per target before round 1
conns=64             # connections for the throughput runs
record=0
with_portkey=1
portkey_version=${PORTKEY_VERSION:-1.15.2}

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--duration) duration=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--warmup) warmup=$2; shift 2 ;;
	--connections) conns=$2; shift 2 ;;
	--record) record=1; shift ;;
	--no-portkey) with_portkey=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
done
for v in duration repeat conns; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: --$v must be a positive integer" >&2; exit 2; }
done
[[ $warmup =~ ^[0-9]+$ ]] || { echo "bench: --warmup must be an integer" >&2; exit 2; }
case $build in /*) bdir=$build ;; *) bdir=$root/$build ;; esac
semgate_bin=$bdir/semgate
mock_bin=$bdir/mock-upstream
lua=$root/bench/wrk/chat.lua
pk_dir=$root/bench/.portkey
pk_entry=$pk_dir/node_modules/@portkey-ai/gateway/build/start-server.js

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for f in "$semgate_bin" "$mock_bin"; do
	[ -x "$f" ] || die "$f not found: build it with
  cmake -S . -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build $build -j2 --target semgate mock-upstream"
done

# ---- tools -------------------------------------------------------------------

apt_updated=0
apt_install() { # PACKAGE: install from Debian, refreshing the lists only if needed
	[ "$(id -u)" = 0 ] || die "$1 is missing; install it (apt-get install $1) or run as root"
	log "installing $1 (apt-get)"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null; then
		[ $apt_updated = 1 ] && die "apt-get install $1 failed"
		apt-get update -q >/dev/null && apt_updated=1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null ||
			die "apt-get install $1 failed"
	fi
}
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v timeout >/dev/null || die "timeout(1) (coreutils) is missing"

if [ $with_portkey = 1 ]; then
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		die "node and npm are needed for the Portkey comparison (or pass --no-portkey)"
	fi
	# A local install rather than a bare `npx -y @portkey-ai/gateway`: it is the
	# same package from the same registry, but cached here for later runs and
	# started as one node process whose memory we can read.
	installed=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
		"$pk_dir/node_modules/@portkey-ai/gateway/package.json" 2>/dev/null | head -1 || true)
	if [ ! -f "$pk_entry" ] || [ "$installed" != "$portkey_version" ]; then
		log "installing @portkey-ai/gateway@$portkey_version into bench/.portkey (npm)"
		mkdir -p "$pk_dir"
		timeout 300 npm install --prefix "$pk_dir" --no-audit --no-fund --loglevel=error \
			"@portkey-ai/gateway@$portkey_version" >&2 || die "npm install @portkey-ai/gateway failed"
	fi
	[ -f "$pk_entry" ] || die "$pk_entry missing after npm install"
fi

# ---- processes ---------------------------------------------------------------

work=$(mktemp -d /tmp/semgate-bench.XXXXXX)
mock_pid='' semgate_pid='' semcache_pid='' portkey_pid='' wrk_pid=''
keep_work=0

stop() { # PID: TERM, then KILL after 3 s
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	declare -F isolate >/dev/null && isolate none # a stopped process would not see TERM
	stop "$wrk_pid"
	stop "$portkey_pid"
	stop "$semgate_pid"
	stop "$semcache_pid"
	stop "$mock_pid"
	if [ $rc != 0 ] || [ $keep_work = 1 ]; then
		log "logs kept in $work (semgate*.log, portkey.log, mock.log, wrk-*.txt)"
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { # a port nobody listens on now (closed again before we use it)
	node -e 'const s=require("net").createServer();
s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000))
}
wait_http() { # URL SECONDS PID NAME: poll until URL answers 2xx
	local url=$1 tries=$(($2 * 10)) pid=$3 name=$4
	for _ in $(seq $tries); do
		kill -0 "$pid" 2>/dev/null || die "$name exited during start-up; see $work/$name.log"
		curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
		sleep 0.1
	done
	die "$name not ready after $2 s ($url); see $work/$name.log"
}
mem_kb() { # PID FIELD: VmRSS or VmHWM of a live process, in kB
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
alive() { # PID NAME: fail loudly if a server died under load
	kill -0 "$1" 2>/dev/null && return 0
	local rc=0
	wait "$1" 2>/dev/null || rc=$?
	log "$2 died (exit status $rc); last lines of its log:"
	tail -n 40 "$work/$2.log" >&2 || true
	exit 1
}

: >"$work/mock.log"
"$mock_bin" --host 127.0.0.1 --port 0 --quiet >>"$work/mock.log" 2>&1 &
mock_pid=$!
for _ in $(seq 50); do
	mock_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/mock.log")
	[ -n "$mock_port" ] && break
	kill -0 "$mock_pid" 2>/dev/null || die "mock-upstream exited; see $work/mock.log"
	sleep 0.1
done
[ -n "$mock_port" ] || die "mock-upstream did not print its port; see $work/mock.log"
mock_base=http://127.0.0.1:$mock_port/v1

# Two semgate instances on the same mock. "semgate" has its cache off: the
# proxy path, which the latency and throughput targets are about. "semgate-cache"
# has it on; wrk repeats one prompt, so after the first request it measures
# cache hits (the upstream is never called). Each writes its own log.
start_semgate() { # NAME CACHE_ENABLED: sets started_pid, started_port
	local port
	port=$(free_port)
	cat >"$work/$1.json" <<JSON
{"listen":"127.0.0.1:$port","log_level":"warn",
 "models":[{"name":"gpt-4o-mini","deployments":[{"provider":"openai",
   "base_url":"$mock_base","model":"gpt-4o-mini"}]}],
 "cache":{"enabled":$2,"path":"$work/$1-data","threshold":0.9}}
JSON
	"$semgate_bin" --config "$work/$1.json" >"$work/$1.log" 2>&1 &
	started_pid=$!
	started_port=$port
	wait_http "http://127.0.0.1:$port/healthz" 30 "$started_pid" "$1"
}
start_semgate semgate false
semgate_pid=$started_pid sg_port=$started_port
start_semgate semgate-cache true
semcache_pid=$started_pid sgc_port=$started_port
sleep 0.5
sg_idle_kb=$(mem_kb "$semgate_pid" VmRSS)
sgc_idle_kb=$(mem_kb "$semcache_pid" VmRSS)

pk_port='' pk_idle_kb=0
if [ $with_portkey = 1 ]; then
	pk_port=$(free_port)
	# --headless: no web console (and no request log kept for it); the gateway
	# answers on every interface, but we only send to 127.0.0.1, and its
	# custom-host check trusts 127.0.0.1 by default (TRUSTED_CUSTOM_HOSTS).
	(cd "$pk_dir" && exec node "$pk_entry" --port="$pk_port" --headless) >"$work/portkey.log" 2>&1 &
	portkey_pid=$!
	wait_http "http://127.0.0.1:$pk_port/" 60 "$portkey_pid" portkey
	sleep 0.5
	pk_idle_kb=$(mem_kb "$portkey_pid" VmRSS)
fi

# ---- load ----------------------------------------------------------------------

targets="direct semgate semgate-cache"
[ $with_portkey = 1 ] && targets="$targets portkey"
url_of() {
	case $1 in
	direct) echo "$mock_base/chat/completions" ;;
	semgate) echo "http://127.0.0.1:$sg_port/v1/chat/completions" ;;
	semgate-cache) echo "http://127.0.0.1:$sgc_port/v1/chat/completions" ;;
	portkey) echo "http://127.0.0.1:$pk_port/v1/chat/completions" ;;
	esac
}
hdrs_of() { # Portkey routes on its headers; the others get the same bearer token
	printf '%s\n' -H "Authorization: Bearer dummy"
	if [ "$1" = portkey ]; then
		printf '%s\n' -H "x-portkey-provider: openai" -H "x-portkey-custom-host: $mock_base"
	fi
}
pid_of() {
	case $1 in
	direct) echo "$mock_pid" ;;
	semgate) echo "$semgate_pid" ;;
	semgate-cache) echo "$semcache_pid" ;;
	portkey) echo "$portkey_pid" ;;
	esac
}

to_us() { # "69.00us" | "1.82ms" | "2.01s" -> integer microseconds
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
		printf "%d\n", n + 0.5 }'
}

# isolate TARGET: only that gateway runs (the others are stopped with SIGSTOP
# until their turn; "none" continues all). On two CPUs shared by wrk, the mock
# and four servers, one target's after-effects (Node's garbage collector after
# Portkey's load, another instance's timers) would otherwise land in the next
# target's figures, p99 above all. The mock always runs.
isolate() {
	local t p
	for t in semgate semgate-cache portkey; do
		p=$(pid_of "$t")
		[ -n "$p" ] || continue
		if [ "$1" = none ] || [ "$1" = "$t" ]; then
			kill -CONT "$p" 2>/dev/null || true
		else
			kill -STOP "$p" 2>/dev/null || true
		fi
	done
}

# wrk_run NAME TARGET THREADS CONNS SECONDS [--latency]: runs wrk, leaves its
# output in $work/wrk-NAME.txt and sets rps, non2xx, sock_err, p50, p99.
wrk_run() {
	local name=$1 target=$2 t=$3 c=$4 d=$5 out=$work/wrk-$1.txt
	local -a hdrs
	mapfile -t hdrs < <(hdrs_of "$target")
	shift 5
	isolate "$target"
	# In the background with `wait`, so a signal reaches our trap at once.
	timeout $((d + 30)) wrk -t"$t" -c"$c" -d"${d}s" --timeout 5s "$@" -s "$lua" "${hdrs[@]}" \
		"$(url_of "$target")" >"$out" 2>&1 &
	wrk_pid=$!
	wait "$wrk_pid" || die "wrk failed for $target; see $out"
	wrk_pid=''
	alive "$(pid_of "$target")" "$target"
	rps=$(awk '/^Requests\/sec:/ { printf "%d\n", $2 + 0.5 }' "$out")
	local n2 other
	n2=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
	other=$(awk '/^bench: status_other/ { print $3 }' "$out")
	non2xx=$((${n2:-0} > ${other:-0} ? ${n2:-0} : ${other:-0}))
	sock_err=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
	sock_err=${sock_err:-0}
	cache_states=$(sed -n 's/^bench: x_semgate_cache //p' "$out")
	p50=$(awk '/^bench: latency_us/ { print $4 }' "$out")
	p99=$(awk '/^bench: latency_us/ { print $6 }' "$out")
	# Fallback for a wrk without done(): its own, rounded, distribution lines.
	[ -n "$p50" ] || p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$out")")
	[ -n "$p99" ] || p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
	[ -n "$rps" ] || die "no Requests/sec in $out"
}

median() { # numbers... -> median (mean of the middle two for an even count)
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print 0; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 + 0.5 }'
}

declare -A RPS P50 P99 ERRS
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
ntargets=$(wc -w <<<"$targets")
est=$((ntargets * (warmup + repeat * (2 * duration + 2))))
log "mock :$mock_port, semgate :$sg_port (cache off), semgate-cache :$sgc_port${pk_port:+, portkey :$pk_port}; load average $load_before"
log "about $((est / 60)) min $((est % 60)) s of load: $repeat round(s) of ${duration} s runs"
if awk -v l="${load_before%% *}" 'BEGIN { exit !(l >= 1) }'; then
	log "warning: load average ${load_before%% *} before start: other work shares the CPUs, latencies (p99 most) will be noisy"
fi

if [ "$warmup" -gt 0 ]; then
	for t in $targets; do
		wrk_run "warmup-$t" "$t" 2 "$conns" "$warmup"
	done
fi
for r in $(seq "$repeat"); do
	# Interleave the targets so slow drift in the machine's load hits all alike.
	for t in $targets; do
		wrk_run "rps-$t-$r" "$t" 2 "$conns" "$duration"
		RPS[$t]+="$rps "
		ERRS[$t]=$((${ERRS[$t]:-0} + non2xx + sock_err))
		log "round $r: $t ${rps} req/s at $conns connections, non-2xx $non2xx, socket errors $sock_err${cache_states:+, cache $cache_states}"
		sleep 1
	done
	for t in $targets; do
		wrk_run "lat-$t-$r" "$t" 1 1 "$duration" --latency
		P50[$t]+="$p50 "
		P99[$t]+="$p99 "
		ERRS[$t]=$((${ERRS[$t]:-0} + non2xx + sock_err))
		log "round $r: $t p50 ${p50} us, p99 ${p99} us at 1 connection, non-2xx $non2xx, socket errors $sock_err${cache_states:+, cache $cache_states}"
		sleep 1
	done
done

isolate none
sg_after_kb=$(mem_kb "$semgate_pid" VmRSS)
sg_peak_kb=$(mem_kb "$semgate_pid" VmHWM)
sgc_after_kb=$(mem_kb "$semcache_pid" VmRSS)
sgc_peak_kb=$(mem_kb "$semcache_pid" VmHWM)
pk_after_kb=0 pk_peak_kb=0
if [ $with_portkey = 1 ]; then
	pk_after_kb=$(mem_kb "$portkey_pid" VmRSS)
	pk_peak_kb=$(mem_kb "$portkey_pid" VmHWM)
fi

# ---- report --------------------------------------------------------------------

for t in $targets; do
	# shellcheck disable=SC2086 # word splitting of the collected samples is intended
	{ RPS[$t]=$(median ${RPS[$t]}); P50[$t]=$(median ${P50[$t]}); P99[$t]=$(median ${P99[$t]}); }
done
add50=$((P50[semgate] - P50[direct]))
add99=$((P99[semgate] - P99[direct]))
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f\n", a / b; else print "n/a" }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'; }
met() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo NO; fi; }
sg_vs_direct=$(ratio "${RPS[semgate]}" "${RPS[direct]}")
sg_vs_pk=n/a
[ $with_portkey = 1 ] && sg_vs_pk=$(ratio "${RPS[semgate]}" "${RPS[portkey]}")

cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
machine="$(nproc) CPUs ($cpu_model), $(uname -sr); wrk, semgate, mock and Portkey share them"
sg_version=$("$semgate_bin" --version 2>/dev/null | head -1 || true)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$root" status --porcelain -- src cache index include CMakeLists.txt 2>/dev/null)" ] &&
	commit="$commit + uncommitted changes"

row() { printf '%-34s %10s %10s %14s %10s\n' "$@"; }
trow() { printf '%-34s %12s %-12s %s\n' "$@"; }
report=$(
	echo "Measured on 127.0.0.1: mock upstream direct, through semgate (cache off; cache on, all hits)$([ $with_portkey = 1 ] && echo ", through Portkey $portkey_version")"
	echo "Machine: $machine"
	echo "Load average before the run: $load_before; runs of ${duration} s, median of $repeat round(s)"
	echo "semgate: ${sg_version:-?} at $commit"
	echo
	row "" direct semgate "semgate cache" portkey
	row "" "" "(proxy)" "(hits)" ""
	row "req/s, $conns connections" "${RPS[direct]}" "${RPS[semgate]}" "${RPS[semgate-cache]}" "${RPS[portkey]:--}"
	row "p50 latency, 1 connection (us)" "${P50[direct]}" "${P50[semgate]}" "${P50[semgate-cache]}" "${P50[portkey]:--}"
	row "p99 latency, 1 connection (us)" "${P99[direct]}" "${P99[semgate]}" "${P99[semgate-cache]}" "${P99[portkey]:--}"
	row "non-2xx + socket errors (all runs)" "${ERRS[direct]}" "${ERRS[semgate]}" "${ERRS[semgate-cache]}" "${ERRS[portkey]:--}"
	row "RSS idle after start (MB)" - "$(mb "$sg_idle_kb")" "$(mb "$sgc_idle_kb")" "$([ $with_portkey = 1 ] && mb "$pk_idle_kb" || echo -)"
	row "RSS after load (MB)" - "$(mb "$sg_after_kb")" "$(mb "$sgc_after_kb")" "$([ $with_portkey = 1 ] && mb "$pk_after_kb" || echo -)"
	row "peak RSS, VmHWM (MB)" - "$(mb "$sg_peak_kb")" "$(mb "$sgc_peak_kb")" "$([ $with_portkey = 1 ] && mb "$pk_peak_kb" || echo -)"
	echo
	trow "semgate target (proxy path)" value target met
	trow "added p50 over direct (us)" "$add50" "<= 60" "$(met "$add50 <= 60")"
	trow "added p99 over direct (us)" "$add99" "<= 250" "$(met "$add99 <= 250")"
	trow "req/s at $conns connections" "${RPS[semgate]}" ">= 15000" "$(met "${RPS[semgate]} >= 15000")"
	if [ $with_portkey = 1 ]; then
		trow "req/s vs Portkey" "${sg_vs_pk}x" ">= 15x" "$(met "$sg_vs_pk >= 15")"
	fi
	trow "idle RSS, cache on (MB)" "$(mb "$sgc_idle_kb")" "< 30" "$(met "$sgc_idle_kb < 30 * 1024")"
	trow "idle RSS, cache off (MB)" "$(mb "$sg_idle_kb")" "< 30" "$(met "$sg_idle_kb < 30 * 1024")"
	trow "no errors under load" "$((ERRS[semgate] + ERRS[semgate-cache]))" "0" "$(met "${ERRS[semgate]} + ${ERRS[semgate-cache]} == 0")"
	trow "req/s vs direct (info)" "$sg_vs_direct" "" ""
)
echo
echo "$report"

if [ $record = 1 ]; then
	{
		echo
		echo "## $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo
		echo "Command: \`$cmdline\`"
		echo
		echo '```'
		echo "$report"
		echo '```'
	} >>"$root/bench/RESULTS.md"
	log "appended to bench/RESULTS.md"
fi

# A server that answered errors is a failed benchmark, whatever its speed.
for t in $targets; do
	if [ "${ERRS[$t]}" != 0 ]; then
		log "warning: $t had ${ERRS[$t]} non-2xx responses or socket errors; wrk outputs kept"
		keep_work=1
	fi
done
[ "${ERRS[semgate]}" = 0 ] && [ "${ERRS[semgate-cache]}" = 0 ] || exit 3
