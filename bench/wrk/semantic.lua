-- Cycles through paraphrased queries (QUERIES file, one a line) as chat
-- requests with a per-request threshold low enough that each is a semantic
-- hit; counts X-Semgate-Cache values.
local queries = {}
local n, i = 0, 0
local counts = {}

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function init(args)
  for line in io.lines(os.getenv("QUERIES")) do
    n = n + 1
    queries[n] = '{"model":"m","messages":[{"role":"user","content":' .. json_str(line) .. '}]}'
  end
  i = math.random(n)
end

function request()
  i = i % n + 1
  -- wrk -H's headers (an Authorization key) go along
  local h = {["Content-Type"] = "application/json", ["X-Semgate-Threshold"] = os.getenv("THRESHOLD") or "0.8"}
  for k, v in pairs(wrk.headers) do
    if h[k] == nil then h[k] = v end
  end
  return wrk.format("POST", "/v1/chat/completions", h, queries[i])
end

function response(status, headers, body)
  local c = headers["X-Semgate-Cache"] or ("status-" .. status)
  counts[c] = (counts[c] or 0) + 1
end

function done(summary, latency, requests)
  for k, v in pairs(counts) do io.write(string.format("cache %s: %d\n", k, v)) end
end
