#!/usr/bin/env bash
# Cache hits through the real server with the model embedder (all-MiniLM-L6-v2 in process):
#   bash bench/bench_cache_model.sh [--entries 100000] [--duration 10] [--build build]
#                                   [--rounds 2] [--threads "1 2"] [--cache DIR] [--no-local]
#                                   [--real-prompts]
# 1. builds a cache of N synthetic FAQ-style entries (bench/tool_cachebench.c's prompts)
#    embedded with the model's encoder in batches of 32 (build/cachebench --embedder model,
#    which also prints in-process lookup latency and recall), plus 10,000 paraphrased queries
#    (a stored prompt with its first word dropped). With --cache DIR the cache and queries
#    are kept in DIR (DIR/cache, DIR/queries.txt) and reused by later runs: the fill takes
#    N x ~5-10 ms of CPU. Every semgate below serves a fresh copy of the cache (it stores
#    its misses: a query it missed would be an exact hit in the next phase).
#    --real-prompts: the cache's first entries are the 36,643 distinct questions of
#    ../shared/data/qqp-dev.jsonl (read from there at run time, $QQP to point elsewhere; the
#    rest synthetic), and the queries are those questions with their first word dropped:
#    real English (14.6 WordPiece tokens a query on average) instead of the synthetic
#    pseudo-words (22.6 tokens a query, which a model embedder pays for token by token).
#    Use another --cache DIR than for the synthetic set.
# 2. for R rounds, interleaved: semgate with cache.embedder.provider "model" and
#    embedder.threads T for each T, and (unless --no-local) the local embedder on a cache of
#    N entries built the same way with it (as bench/bench_cache.sh does); each phase on a
#    freshly started semgate so that /stats covers that phase alone:
#      semantic hits, wrk -t2 -c64 (bench/wrk/semantic.lua, X-Semgate-Threshold 0.8)
#      semantic hits, wrk -t1 -c1
#      exact hits (one repeated prompt), wrk -t2 -c64
#    each with --latency and --timeout 10s (a request slower than wrk's default 2 s still
#    counts), semgate's CPU time over the run (/proc/PID/stat utime + stime: CPU ms per
#    request, which other load on the machine changes far less than req/s), then /stats
#    (which also counts the 4 untimed semantic lookups made first, or the exact prompt's
#    first request) (lookup_latency_us, the embedder section).
# 3. idle memory on an empty cache: semgate with the default model (two at once, to show
#    the shared file mapping) and with the local embedder: VmRSS, /proc/PID/smaps_rollup and
#    the model.safetensors mapping's Rss / Pss / Shared / Private from /proc/PID/smaps.
# Prints a summary table at the end. Loopback only; everything it starts is stopped on exit.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
entries=100000 duration=10 build=build rounds=2 threads_list="1 2" cache_dir="" local=1 real=0
while [ $# -gt 0 ]; do
	case "$1" in
	--entries) entries=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--threads) threads_list=$2; shift 2 ;;
	--cache) cache_dir=$2; shift 2 ;;
	--no-local) local=0; shift ;;
	--real-prompts) real=1; shift ;;
	*) echo "usage: $0 [--entries N] [--duration S] [--build DIR] [--rounds R] [--threads \"1 2\"] [--cache DIR] [--no-local] [--real-prompts]" >&2; exit 2 ;;
	esac
done
bdir=$top/$build
bench_name=bench-cache-model
. "$top/bench/common.sh"
MODEL=${MODEL:-$top/models/all-minilm-l6-v2}
res=$work/results
mkdir -p "$res"
echo "== $(git -C "$top" rev-parse --short HEAD 2>/dev/null) $(date -u +%FT%TZ); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. the caches
mdir=${cache_dir:-$work/model}
prompt_args=()
if [ "$real" = 1 ]; then
	qqp=${QQP:-$top/../shared/data/qqp-dev.jsonl}
	[ -s "$qqp" ] || { echo "$0: --real-prompts needs $qqp (or QQP=FILE)" >&2; exit 2; }
	mkdir -p "$mdir"
	python3 - "$qqp" "$mdir/prompts.txt" <<'PY'
import json, sys
qs = set()
for line in open(sys.argv[1], encoding="utf-8"):
    d = json.loads(line)
    for k in ("a", "b"):
        q = " ".join(d[k].split())  # one line each
        if q:
            qs.add(q)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.writelines(q + "\n" for q in sorted(qs))
PY
	prompt_args=(--prompts "$mdir/prompts.txt")
	echo "== real prompts: $(wc -l <"$mdir/prompts.txt") distinct questions of $qqp"
fi
if [ -d "$mdir/cache" ] && [ -s "$mdir/queries.txt" ]; then
	echo "== reusing the model-embedded cache in $mdir"
	[ -f "$mdir/cachebench.out" ] && cat "$mdir/cachebench.out"
else
	mkdir -p "$mdir"
	echo "== building a cache of $entries entries embedded with the model (cachebench --embedder model)"
	"$bdir/cachebench" --path "$mdir/cache" --entries "$entries" --queries 500 \
		--emit-queries "$mdir/queries.txt" --embedder model --model-path "$MODEL" \
		"${prompt_args[@]}" 2>&1 | tee "$mdir/cachebench.out"
fi
if [ "$local" = 1 ]; then
	echo "== building a cache of $entries entries with the local embedder (cachebench)"
	mkdir -p "$work/local"
	"$bdir/cachebench" --path "$work/local/cache" --entries "$entries" --queries 200 \
		--emit-queries "$work/local/queries.txt" "${prompt_args[@]}" |
		grep -E "^populate|^lookup|^disk" || true
fi

mock_port=$(free_port)
"$bdir/mock-upstream" --host 127.0.0.1 --port "$mock_port" --quiet >/dev/null &
pids+=($!)
echo "semgate exact hit benchmark prompt zebra quartz" >"$work/one.txt"

sg=""
start_sg() { # name cache-path embedder-json
	port=$(free_port)
	cat >"$work/$1.json" <<JSON
{"listen":"127.0.0.1:$port","log_level":"warn",
 "models":[{"name":"m","deployments":[{"base_url":"http://127.0.0.1:$mock_port/v1"}]}],
 "cache":{"path":"$2","max_entries":0,"max_bytes":0,"ttl_s":0,"verify":false,"embedder":$3}}
JSON
	"$bdir/semgate" --config "$work/$1.json" 2>>"$work/$1.log" &
	sg=$!
	pids+=($sg)
	for _ in $(seq 600); do
		curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
		kill -0 "$sg" 2>/dev/null || break
		sleep 0.1
	done
	echo "semgate ($1) did not start:" >&2
	cat "$work/$1.log" >&2
	exit 1
}
stop_sg() {
	kill "$sg" 2>/dev/null || true
	wait "$sg" 2>/dev/null || true
}
url() { echo "http://127.0.0.1:$port/v1/chat/completions"; }
stats() { curl -fsS "http://127.0.0.1:$port/stats" >"$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$sg/stat"; } # semgate's utime + stime
ask() { # prompt [threshold]: one request, answer discarded
	python3 -c 'import json,sys; print(json.dumps({"model":"m","messages":[{"role":"user","content":sys.argv[1]}]}))' "$1" |
		curl -fsS -o /dev/null -H 'Content-Type: application/json' \
			-H "X-Semgate-Threshold: ${2:-${THRESHOLD:-0.8}}" --data-binary @- "$(url)"
}
warm() { # 4 semantic lookups (the last queries of the file) before a timed semantic phase
	tail -n 4 "$1" | while IFS= read -r line; do ask "$line"; done
}
measure() { # out-prefix wrk-args...: wrk, semgate's CPU time over it, /stats after
	local o=$1 c0 c1
	shift
	c0=$(cpu_ticks)
	timeout $((duration + 60)) wrk "$@" | tee "$o.wrk"
	c1=$(cpu_ticks)
	echo "$((c1 - c0)) $(getconf CLK_TCK)" >"$o.cpu"
	stats "$o.json"
}

fresh() { # a pristine copy of cache $1 in $work/serve
	rm -rf "$work/serve"
	cp -a "$1" "$work/serve"
}
phases() { # name cache-path embedder-json queries round
	local n=$1 c=$2 e=$3 q=$4 r=$5 f
	f=$res/$n.r$r
	fresh "$c"
	start_sg "$n" "$work/serve" "$e"
	echo "== round $r, $n: semantic hits, 64 connections (load $(cut -d' ' -f1 /proc/loadavg))"
	warm "$q"
	QUERIES=$q measure "$f.sem64" -t2 -c64 -d"${duration}s" --timeout 10s --latency \
		-s "$top/bench/wrk/semantic.lua" "$(url)"
	stop_sg
	fresh "$c"
	start_sg "$n" "$work/serve" "$e"
	echo "== round $r, $n: semantic hits, 1 connection (load $(cut -d' ' -f1 /proc/loadavg))"
	warm "$q"
	QUERIES=$q measure "$f.sem1" -t1 -c1 -d"${duration}s" --timeout 10s --latency \
		-s "$top/bench/wrk/semantic.lua" "$(url)"
	stop_sg
	fresh "$c"
	start_sg "$n" "$work/serve" "$e"
	echo "== round $r, $n: exact hits, 64 connections (load $(cut -d' ' -f1 /proc/loadavg))"
	ask "$(cat "$work/one.txt")"
	QUERIES=$work/one.txt measure "$f.exact64" -t2 -c64 -d"${duration}s" --timeout 10s --latency \
		-s "$top/bench/wrk/semantic.lua" "$(url)"
	stop_sg
}

# 2. rounds
for r in $(seq 1 "$rounds"); do
	for t in $threads_list; do
		phases "model-t$t" "$mdir/cache" \
			"{\"provider\":\"model\",\"model_path\":\"$MODEL\",\"threads\":$t}" \
			"$mdir/queries.txt" "$r"
	done
	if [ "$local" = 1 ]; then
		phases local "$work/local/cache" '{"provider":"local"}' "$work/local/queries.txt" "$r"
	fi
done

# 3. idle memory on an empty cache
mem() { # label pid
	local p=$2
	{
		echo "[$1] pid $p"
		grep -E "^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem)" "/proc/$p/status"
		grep -E "^(Rss|Pss|Pss_Anon|Pss_File|Shared_Clean|Private_Clean|Private_Dirty)" "/proc/$p/smaps_rollup"
		awk '/model\.safetensors/ {on=1; print "mapping: " $0; next}
		     /^[0-9a-f]+-[0-9a-f]+ / {on=0}
		     on && /^(Size|Rss|Pss|Shared_Clean|Shared_Dirty|Private_Clean|Private_Dirty):/' "/proc/$p/smaps"
	} | tee -a "$res/memory.txt"
}
echo "== idle memory, empty cache"
start_sg mem-model "$work/empty-model" '{"provider":"model"}'
a=$sg
sleep 2
mem "model (default), alone" "$a"
start_sg mem-model2 "$work/empty-model2" '{"provider":"model"}'
b=$sg
sleep 2
mem "model (default), a second process mapping the same file" "$b"
mem "model (default), the first one again" "$a"
kill "$b"; wait "$b" 2>/dev/null || true
sg=$a; stop_sg
start_sg mem-local "$work/empty-local" '{"provider":"local"}'
sleep 2
mem "local" "$sg"
stop_sg

# summary
python3 - "$res" <<'EOF'
import glob, json, os, re, sys, statistics as st
res = sys.argv[1]
def us(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else float("nan")
def wrk(path):
    t = open(path).read()
    d = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)),
         "n": int(re.search(r"(\d+) requests in", t).group(1))}
    ticks, hz = open(path[:-4] + ".cpu").read().split()
    d["cpu_ms"] = int(ticks) * 1000.0 / int(hz) / max(d["n"], 1)
    for p in ("50", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % p, t, re.M)
        d["p" + p] = us(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    d["non2xx"] = int(m.group(1)) if m else 0
    return d
rows = {}
for f in sorted(glob.glob(os.path.join(res, "*.wrk"))):
    name, rnd, phase, _ = os.path.basename(f).rsplit(".", 3)
    d = wrk(f)
    s = json.load(open(f[:-4] + ".json"))
    d["lookup"] = s.get("lookup_latency_us", {})
    d["emb"] = s.get("embedder", {})
    d["embed_skipped"] = s.get("embed_skipped")
    o = s.get("overall", {})
    d["cache"] = {"exact": o.get("hits_exact", 0), "semantic": o.get("hits_semantic", 0),
                  "miss": o.get("misses", 0), "skipped": s.get("embed_skipped", 0)}
    rows.setdefault((name, phase), []).append(d)
med = lambda v: st.median(v) if v else float("nan")
print("\n| embedder | phase | req/s (each round) | median req/s | semgate CPU ms per request (median) | p50 / p90 / p99 ms (median) | /stats: exact, semantic hits, misses, embed_skipped (last round) | lookup_latency_us p50 / p90 / p99 (median) | embedder: mean_batch, queue_full, timeouts, busy_ms (last round) |")
print("|---|---|---|---|---|---|---|---|---|")
for (name, phase) in sorted(rows, key=lambda k: (k[1], k[0])):
    g = rows[(name, phase)]
    e = g[-1]["emb"]
    print("| %s | %s | %s | %.0f | %.3f | %.2f / %.2f / %.2f | %s | %.0f / %.0f / %.0f | %s |" % (
        name, phase, ", ".join("%.0f" % d["rps"] for d in g), med([d["rps"] for d in g]),
        med([d["cpu_ms"] for d in g]),
        med([d["p50"] for d in g]) / 1e3, med([d["p90"] for d in g]) / 1e3, med([d["p99"] for d in g]) / 1e3,
        "%(exact)d, %(semantic)d, %(miss)d, %(skipped)d" % g[-1]["cache"],
        med([d["lookup"].get("p50", 0) for d in g]), med([d["lookup"].get("p90", 0) for d in g]),
        med([d["lookup"].get("p99", 0) for d in g]),
        ("%.2f, %d, %d, %.0f" % (e.get("mean_batch", 0), e.get("queue_full", 0), e.get("timeouts", 0), e.get("busy_ms", 0))) if e else "-"))
EOF
if [ -n "$cache_dir" ]; then
	rm -rf "$cache_dir/results"
	cp -r "$res" "$cache_dir/results"
	echo "== raw results (wrk output, /stats, memory) in $cache_dir/results"
fi
echo "== load $(cut -d' ' -f1-3 /proc/loadavg)"
