-- wrk script for bench/bench.sh: POST one fixed chat completion request and
-- count response statuses, so a run that "succeeds" on error pages is caught.
--   wrk -t2 -c64 -d10s -s bench/wrk/chat.lua http://127.0.0.1:PORT/v1/chat/completions
-- Extra headers (e.g. Portkey's routing headers) are passed with wrk -H.
-- done() prints machine-readable lines, all latencies in microseconds:
--   bench: requests N
--   bench: status_2xx N
--   bench: status_other N (CODE:COUNT ...)
--   bench: latency_us p50 P p99 P mean M max X
--   bench: x_semgate_cache hit:N miss:N ... (semgate's cache header, when present)

wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France?"}]}'
wrk.headers["Content-Type"] = "application/json"

-- Each wrk thread runs its own Lua state; done() runs in the main one and
-- reads the per-thread counters through these thread handles.
local threads = {}

function setup(thread)
	table.insert(threads, thread)
end

function init(args)
	ok = 0       -- 2xx responses seen by this thread
	other = {}   -- status code -> count, for everything else
	cache = {}   -- X-Semgate-Cache value -> count
end

function response(status, headers, body)
	if status >= 200 and status < 300 then
		ok = ok + 1
	else
		other[status] = (other[status] or 0) + 1
	end
	local c = headers["X-Semgate-Cache"] or headers["x-semgate-cache"]
	if c then
		cache[c] = (cache[c] or 0) + 1
	end
end

function done(summary, latency, requests)
	local total_ok, total_other, merged, cached = 0, 0, {}, {}
	for _, t in ipairs(threads) do
		total_ok = total_ok + t:get("ok")
		for state, n in pairs(t:get("cache")) do
			cached[state] = (cached[state] or 0) + n
		end
		for code, n in pairs(t:get("other")) do
			merged[code] = (merged[code] or 0) + n
			total_other = total_other + n
		end
	end
	local codes = {}
	for code, n in pairs(merged) do
		table.insert(codes, string.format("%d:%d", code, n))
	end
	table.sort(codes)
	io.write(string.format("bench: requests %d\n", summary.requests))
	io.write(string.format("bench: status_2xx %d\n", total_ok))
	io.write(string.format("bench: status_other %d (%s)\n", total_other, table.concat(codes, " ")))
	local states = {}
	for state, n in pairs(cached) do
		table.insert(states, string.format("%s:%d", state, n))
	end
	table.sort(states)
	if #states > 0 then
		io.write(string.format("bench: x_semgate_cache %s\n", table.concat(states, " ")))
	end
	-- wrk records latency in microseconds; these are the figures behind its
	-- "Latency Distribution" lines, without their rounding.
	io.write(string.format("bench: latency_us p50 %d p99 %d mean %.1f max %d\n",
		latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
