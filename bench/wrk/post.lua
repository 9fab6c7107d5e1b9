-- wrk script for bench/bench_ab.sh and bench_cpu.sh: POST one fixed chat completion request,
-- nothing else. No response() hook: with one, wrk copies every response header into a Lua
-- table and calls Lua per response, which costs the client more than some of what the A/B
-- measures (a gateway that adds headers would look slower through the client's cost alone).
-- Non-2xx answers are still counted by wrk itself ("Non-2xx or 3xx responses").
--   wrk -t2 -c64 -d10s -s bench/wrk/post.lua http://127.0.0.1:PORT/v1/chat/completions
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France?"}]}'
wrk.headers["Content-Type"] = "application/json"
