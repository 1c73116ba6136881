-- wrk script: OpenAI-compatible chat completions over JSON/HTTP, stateless (no session, no key).
--
--   wrk -t2 -c8 -d10s -s bench/wrk/chat_completions.lua http://127.0.0.1:8080 -- \
--       <api key> <model (agents/agt_...)> [content]
--
-- Every request is the same small conversation, as an application's SDK sends it: nothing is
-- read or written for it but the turn itself (the agent's config, cached; the usage event).
-- done() prints one line `BENCH_JSON {...}` with the counts and latency percentiles (us).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local key = args[1]
  local model = args[2]
  local content = args[3] or "Hello! Could you tell me where my order is and when it will arrive?"
  body = '{"model": "' .. model .. '", "messages": [{"role": "user", "content": "' .. content .. '"}]}'
  headers = {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }
  ok = 0
  non2xx = 0
end

function request()
  return wrk.format("POST", "/v1/chat/completions", headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    non2xx = non2xx + 1
    if non2xx <= 3 then
      io.stderr:write("non-2xx " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local total_ok, total_non2xx = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_non2xx = total_non2xx + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "ok": %d, "non2xx": %d, "wrapped": false, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.duration, summary.requests, total_ok, total_non2xx,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
