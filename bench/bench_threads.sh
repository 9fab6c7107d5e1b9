#!/usr/bin/env bash
# What having a second thread at all costs a semgate whose loop thread is the
# only one (the cache off, auth off: the pass-through baseline of issue 12),
# and how much of it is the kernel's: the same binary on both sides of
# bench_ab.sh --mode proxy --pin --together, B started with an LD_PRELOAD
# library whose constructor starts one thread that only sleeps.
#
#   bash bench/bench_threads.sh [BIN] [--rounds N] [--duration S] [--build DIR]
#
# Two runs: (1) A plain, B with the idle thread; (2) A with the idle thread,
# B with an idle thread that first gives itself its own file-descriptor table
# (unshare(CLONE_FILES)), so that the loop's process shares none: what (2)
# wins back is the kernel's cost of a shared table (every system call on a
# descriptor takes and drops a reference), the rest of (1) is the C
# library's (cancellation points around blocking calls, glibc's malloc
# locking its arena once a second thread exists).
# BIN defaults to build/semgate. The libraries are built in a temporary
# directory with cc and removed at exit.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/build/semgate
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
	bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
	shift
fi
[ -x "$bin" ] || { echo "no semgate at $bin" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/idle.c" <<'EOF'
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
static void *idle(void *arg)
{
#ifdef OWN_FILES
	unshare(CLONE_FILES); /* (started before main: no descriptor but stdio to copy) */
#endif
	(void)arg;
	for (;;)
		pause();
	return NULL;
}
__attribute__((constructor)) static void start(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, idle, NULL) == 0)
		pthread_detach(t);
}
EOF
cc -O2 -shared -fPIC -o "$work/idle.so" "$work/idle.c" -lpthread
cc -O2 -shared -fPIC -DOWN_FILES -o "$work/idle_own.so" "$work/idle.c" -lpthread
for v in idle idle_own; do
	printf '#!/bin/sh\nLD_PRELOAD=%s exec %s "$@"\n' "$work/$v.so" "$bin" >"$work/sg-$v"
	chmod +x "$work/sg-$v"
done

echo "== (1) A: $bin alone; B: the same with one idle thread"
bash "$top/bench/bench_ab.sh" "$bin" "$work/sg-idle" --mode proxy --pin --together "$@"
echo
echo "== (2) A: with an idle thread; B: with an idle thread that has its own descriptor table"
bash "$top/bench/bench_ab.sh" "$work/sg-idle" "$work/sg-idle_own" --mode proxy --pin --together "$@"
