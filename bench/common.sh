# Shared by the bench/*.sh scripts (sourced): wrk on hand, a scratch folder,
# free loopback ports, and every started process stopped on exit.
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
command -v bc >/dev/null || { apt-get update -q && apt-get install -y -q bc; }
work=$(mktemp -d "/tmp/semgate-${bench_name:-bench}.XXXXXX")
pids=()
bench_cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap bench_cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# An Authorization value of a key's shape for a side with auth off (which ignores it), so
# that both sides of a comparison parse the same request bytes.
bench_nokey="Bearer sg-aaaaaaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
# A key on the semgate at 127.0.0.1:$1 (admin key "bench-admin") with rpm, tpm,
# concurrency limits and a monthly budget far above any run, so that every request pays
# for every check, reservation and settlement and none is refused; prints the whole key.
bench_key() {
	curl -fsS -H 'Authorization: Bearer bench-admin' -H 'Content-Type: application/json' \
		-d '{"name":"bench","rpm":1000000000,"tpm":1000000000000,"max_concurrent":100000,"budget":{"max_usd":1000000000,"soft_usd":999999999,"period":"monthly"},"namespace":"default"}' \
		"http://127.0.0.1:$1/admin/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
