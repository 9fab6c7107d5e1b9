#!/usr/bin/env bash
# Runs semgate on its built-in default configuration with the mock upstream
# standing in for a provider on 127.0.0.1:9000. Ctrl-C stops both.
#   bench/demo.sh [BUILD_DIR]
set -euo pipefail
bdir=${1:-$(cd "$(dirname "$0")/.." && pwd)/build}

"$bdir/mock-upstream" --host 127.0.0.1 --port 9000 --quiet &
mock=$!
semgate_pid=
cleanup() {
	[ -n "$semgate_pid" ] && kill -TERM "$semgate_pid" 2>/dev/null && wait "$semgate_pid" 2>/dev/null
	kill -TERM "$mock" 2>/dev/null
	wait "$mock" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$bdir/semgate" &
semgate_pid=$!
for _ in $(seq 50); do
	curl -fsS --max-time 1 http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
	kill -0 "$semgate_pid" 2>/dev/null || break
	sleep 0.1
done
if ! kill -0 "$semgate_pid" 2>/dev/null ||
	! curl -fsS --max-time 1 http://127.0.0.1:8080/healthz >/dev/null 2>&1; then
	# its own message (a busy port, a cache made by another version...) is above
	echo "semgate did not start; see its message above" >&2
	exit 1
fi
cat <<MSG

semgate is listening on http://127.0.0.1:8080 (built-in config: semgate --print-default-config),
forwarding model "gpt-4o-mini" to the mock upstream on http://127.0.0.1:9000/v1.
Send a first request:

  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is semgate?"}]}'

Point any OpenAI client at it by changing only its base URL to http://127.0.0.1:8080/v1.
Ctrl-C stops semgate and the mock.
MSG
wait "$semgate_pid"
