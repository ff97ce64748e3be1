-- Shared by predict.lua and update.lua: 1,000 array states, auth header,
-- and a summary line (req/s, p50/p99 latency) the load-test script parses.
local M = {}

M.token = os.getenv("QL_TOKEN") or error("set QL_TOKEN")
M.model = os.getenv("QL_MODEL") or error("set QL_MODEL")
M.n_states = tonumber(os.getenv("QL_STATES") or "1000")

function M.state(i)
  -- 1,000 distinct 2-D array states: [i mod 40, floor(i / 40)]
  return string.format("[%d,%d]", i % 40, math.floor(i / 40))
end

M.headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. M.token,
}

-- Numbers each wrk thread (wrk's setup(), in the main Lua state): a script
-- sets `setup = c.setup` and reads its thread's number with c.thread_number()
-- in init().
local threads = 0
function M.setup(thread)
  thread:set("number", threads)
  threads = threads + 1
end

function M.thread_number()
  return tonumber(wrk.thread:get("number")) or 0
end

function M.done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    "RESULT requests=%d seconds=%.2f rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx_or_errors=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, errors))
end

return M
