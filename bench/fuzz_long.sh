#!/usr/bin/env bash
# The long fuzz run: each libFuzzer target of tests/fuzz for MINUTES minutes
# on both cores (libFuzzer's -fork=2), one target after the other, then a
# table of what each did: executions, speed, coverage (edges), corpus size
# and crashes. CI only runs the short smoke (tests/fuzz/run.sh).
#
#   bash bench/fuzz_long.sh MINUTES [TARGET...]          (default: 10, all)
#
# Builds what is missing first (bash .ci/setup fuzz). The working corpus of
# each target lives outside the repository, in build-fuzz/corpus/TARGET/, and
# grows from run to run (it starts from tests/fuzz/corpus/TARGET/); crashes,
# leaks, timeouts and OOMs go to build-fuzz/crashes/TARGET/, logs to
# build-fuzz/logs/. A crash does not stop the run: the table counts them.
# Reproduce one with build-fuzz/fuzz/fuzz_TARGET FILE; worth keeping, it goes to
# tests/fuzz/crashes/ (never to the seed corpus, which CI runs).
#
# Environment: JOBS (parallel jobs, default: the number of cores),
# SEMGATE_FUZZ_FORGE=1 (cache_open forges index checksums: FAISS's reader
# and the HNSW searches then get arbitrary bytes, and crash within minutes
# until that is fixed: tests/fuzz/crashes/README.md),
# SEMGATE_FUZZ_BUILD (another build directory).
#
# To grow the seed corpus from a long run's (rarely: keep it small):
#   build-fuzz/fuzz/fuzz_T -merge=1 -max_len=4096 NEWDIR tests/fuzz/corpus/T build-fuzz/corpus/T
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bdir=${SEMGATE_FUZZ_BUILD:-$top/build-fuzz}
minutes=${1:-10}
shift || true
jobs=${JOBS:-$(nproc)}

if [ ! -f "$bdir/fuzz/targets.txt" ]; then
	bash "$top/.ci/setup" fuzz
fi
. "$top/tests/fuzz/common.sh"

mkdir -p "$bdir/logs"
summary="$bdir/logs/fuzz_long-$(date +%Y%m%d-%H%M%S).txt"
echo "fuzz_long: ${#targets[@]} targets x $minutes min, $jobs jobs each; table in $summary"
{
	echo "# bench/fuzz_long.sh $minutes ${*:-} ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?'), $jobs jobs)"
	printf '%-20s %11s %8s %7s %8s %7s %8s\n' target execs exec/s cov ft corpus crashes
} >"$summary"
for t in "${targets[@]}"; do
	bin="$bdir/fuzz/fuzz_$t"
	corpus="$bdir/corpus/$t"
	crashes="$bdir/crashes/$t"
	log="$bdir/logs/$t.log"
	mkdir -p "$corpus" "$crashes"
	args=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1
		-max_total_time=$((minutes * 60)) -timeout=10 -rss_limit_mb=2048
		-artifact_prefix="$crashes/")
	d=$(dict_of "$t")
	[ -n "$d" ] && args+=(-dict="$d")
	before=$(find "$crashes" -type f | wc -l)
	echo "fuzz_long: $t ..."
	"$bin" "${args[@]}" "$corpus" "$top/tests/fuzz/corpus/$t" >"$log" 2>&1 || true
	# fork mode's status lines: "#EXECS: cov: C ft: F corp: N exec/s S oom/timeout/crash: ..."
	last=$(grep -E '^#[0-9]+: cov: ' "$log" | tail -1) || true
	execs=$(sed -n 's/^#\([0-9]*\):.*/\1/p' <<<"$last")
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	speed=$(sed -n 's/.* exec\/s:\{0,1\} \([0-9]*\).*/\1/p' <<<"$last")
	found=$(($(find "$crashes" -type f | wc -l) - before))
	printf '%-20s %11s %8s %7s %8s %7s %8s\n' "$t" "${execs:--}" "${speed:--}" "${cov:--}" \
		"${ft:--}" "$(find "$corpus" -type f | wc -l)" "$found" | tee -a "$summary"
done
cat "$summary"
