#!/usr/bin/env bash
# The fuzz smoke run: every libFuzzer target of tests/fuzz for a fixed short
# time, starting from its seed corpus (tests/fuzz/corpus/TARGET/). Fails on
# any crash, sanitizer report, leak, timeout or out-of-memory.
#
#   bash tests/fuzz/run.sh [SECONDS [TARGET...]]     (default: 4 s each, all)
#
# Targets run side by side, one per core (JOBS=N to change that).
# Needs the fuzz build: bash .ci/setup fuzz (build-fuzz/; another with
# SEMGATE_FUZZ_BUILD=DIR). What a run finds is not added to the seed corpus:
# it goes to a scratch corpus in build-fuzz/smoke/TARGET/, crashes to
# build-fuzz/smoke/TARGET-crash-* (reproduce with build-fuzz/fuzz/fuzz_TARGET
# FILE). For long runs, see bench/fuzz_long.sh.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
bdir=${SEMGATE_FUZZ_BUILD:-$top/build-fuzz}
secs=${1:-4}
shift || true

. "$top/tests/fuzz/common.sh"

work="$bdir/smoke"
mkdir -p "$work"
par=${JOBS:-$(nproc)}

# Run target $1 on its seeds; the result line goes to $work/$1.result, and
# the exit status says whether it passed.
run_one() {
	local t=$1 bin="$bdir/fuzz/fuzz_$1" seeds="$top/tests/fuzz/corpus/$1" log="$work/$1.log"
	local rc=0 execs speed cov ft d result
	if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
		printf '%-20s %s\n' "$t" "FAILED: no $bin or no $seeds" >"$work/$t.result"
		return 1
	fi
	rm -rf "${work:?}/$t" "$work/$t"-crash-* "$work/$t"-leak-* "$work/$t"-timeout-* \
		"$work/$t"-oom-*
	mkdir -p "$work/$t"
	local args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
		-artifact_prefix="$work/$t-")
	d=$(dict_of "$t")
	[ -n "$d" ] && args+=(-dict="$d")
	"$bin" "${args[@]}" "$work/$t" "$seeds" >"$log" 2>&1 || rc=$?
	# (a target that died early printed none of these)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2) || true
	ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2) || true
	result=ok
	[ $rc -eq 0 ] || result="FAILED (exit $rc): log $log"
	{
		printf '%-20s %9s %8s %7s %7s  %s\n' "$t" "${execs:--}" "${speed:--}" "${cov:--}" \
			"${ft:--}" "$result"
		if [ $rc -ne 0 ]; then
			{ grep -E 'ERROR|SUMMARY|FUZZ_CHECK|Test unit written|^    #[0-9]' "$log" ||
				tail -20 "$log"; } | head -40 | sed 's/^/    /'
		fi
	} >"$work/$t.result"
	return $rc
}

# As many targets at a time as there are cores (JOBS), each on one.
for t in "${targets[@]}"; do
	while [ "$(jobs -rp | wc -l)" -ge "$par" ]; do
		wait -n || true
	done
	run_one "$t" &
done
wait || true

passed=0
failed=0
printf '%-20s %9s %8s %7s %7s  %s\n' target execs exec/s cov ft result
for t in "${targets[@]}"; do
	cat "$work/$t.result"
	if head -1 "$work/$t.result" | grep -q ' ok$'; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
