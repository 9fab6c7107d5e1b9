# Shared by tests/fuzz/run.sh and bench/fuzz_long.sh (sourced, with $top and
# $bdir set and the targets' names given as arguments): the targets to run,
# each target's dictionary, and the sanitizers' settings.

if [ ! -f "$bdir/fuzz/targets.txt" ]; then
	echo "fuzz: no fuzz build in $bdir (bash .ci/setup fuzz)" >&2
	exit 1
fi
if [ $# -gt 0 ]; then
	targets=("$@")
else
	mapfile -t targets < <(grep -v '^$' "$bdir/fuzz/targets.txt")
fi

# The dictionary of a target: its input's tokens.
dict_of() {
	case "$1" in
	http) echo "$top/tests/fuzz/dict/http.dict" ;;
	*_stream | sse) echo "$top/tests/fuzz/dict/sse.dict" ;;
	store | cache_open) ;;
	safetensors) echo "$top/tests/fuzz/dict/json.dict" ;;
	*) echo "$top/tests/fuzz/dict/json.dict" ;;
	esac
}

# Sanitizers: stop at the first report, with a symbolised stack.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$top/tests/fuzz/lsan.supp:print_suppressions=0}
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && ! command -v llvm-symbolizer >/dev/null; then
	for s in /usr/lib/llvm-*/bin/llvm-symbolizer; do
		[ -x "$s" ] && export ASAN_SYMBOLIZER_PATH=$s
	done
fi
