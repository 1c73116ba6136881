-- wrk script: SendMessage over JSON/HTTP, every request with its own Idempotency-Key.
--
--   wrk -t2 -c8 -d10s -s bench/wrk/send_message.lua http://127.0.0.1:8080 -- \
--       <run id> <threads, as -t> <connections, as -c> <api key> <file of session ids, one a line> \
--       <turns per session> [content] [milliseconds between a connection's requests]
--
-- Conversations of a fixed length: thread t (of T) takes the session ids t, t+T, t+2T, ... of
-- the file as its pool. With n connections per thread, n sessions are in use at a time, one
-- request in n to each (about one session per connection); after <turns per session> turns
-- each, the thread moves on to its next n sessions. When the pool runs out it starts over
-- (done() reports it as "wrapped": those sessions then have longer histories).
-- Idempotency-Key = <run id>-<thread>-<counter>-<random>: unique across threads, runs and
-- warm-ups (the run id is fresh for every wrk invocation).
-- done() prints one line `BENCH_JSON {...}` with the counts and latency percentiles (us).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  run_id = args[1]
  local total_threads = tonumber(args[2])
  local connections = tonumber(args[3])
  local key = args[4]
  local file = assert(io.open(args[5], "r"))
  local all = {}
  for line in file:lines() do
    if line ~= "" then
      table.insert(all, line)
    end
  end
  file:close()
  turns_per_session = tonumber(args[6])
  local content = args[7] or "Hello! What can you tell me about my order?"
  -- Optional pacing: each connection waits this many milliseconds before its next request
  -- (a load below saturation). wrk looks for delay() after init, so it is defined only then.
  local pace = tonumber(args[8] or "0")
  if pace > 0 then
    function delay()
      return pace
    end
  end
  paths = {}
  for i = tid, #all, total_threads do
    table.insert(paths, "/v1/sessions/" .. all[i] .. "/messages")
  end
  if #paths == 0 then
    for i, s in ipairs(all) do
      paths[i] = "/v1/sessions/" .. s .. "/messages"
    end
  end
  -- wrk gives each thread connections / threads connections.
  per_thread = math.max(1, math.floor(connections / total_threads))
  body = '{"content": "' .. content .. '"}'
  headers = {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }
  counter = 0
  ok = 0
  non2xx = 0
  wrapped = 0
  math.randomseed(os.time() + tid * 7919)
end

function request()
  local n = counter
  counter = counter + 1
  local slot = n % per_thread
  local window = math.floor(n / (per_thread * turns_per_session))
  local index = window * per_thread + slot
  if index >= #paths then
    wrapped = 1
    index = index % #paths
  end
  headers["Idempotency-Key"] = string.format("%s-%d-%d-%08x", run_id, tid, counter, math.random(0, 0x7fffffff))
  return wrk.format("POST", paths[index + 1], headers, body)
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
  local total_ok, total_non2xx, any_wrapped = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_non2xx = total_non2xx + thread:get("non2xx")
    any_wrapped = math.max(any_wrapped, thread:get("wrapped"))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "ok": %d, "non2xx": %d, "wrapped": %s, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.duration, summary.requests, total_ok, total_non2xx, any_wrapped == 1 and "true" or "false",
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
