# Shared by the bench/*.sh scripts (sourced): wrk on hand, a scratch folder,
# free loopback ports, and every started process stopped on exit.
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
work=$(mktemp -d "/tmp/semgate-${bench_name:-bench}.XXXXXX")
pids=()
bench_cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap bench_cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
