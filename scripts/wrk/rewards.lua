-- wrk script: POST /rewards, one final reward per decision logged earlier in
-- the run (the predict_logging route's generated ids d1, d2, ... in hex, up
-- to QL_DECISIONS), each thread taking every THREADS-th id; past the last
-- one it starts over (those rewards are late: recorded, not learned).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua"
local c = require("common")

local decisions = tonumber(os.getenv("QL_DECISIONS") or error("set QL_DECISIONS"))
setup = c.setup

local offset = 0
local stride = 1
local k = 0

function init(args)
  offset = c.thread_number()
  stride = tonumber(os.getenv("QL_THREADS") or "2")
end

function request()
  local i = (offset + k * stride) % decisions + 1
  k = k + 1
  local body = string.format('{"model_id":"%s","decision_id":"d%x","value":%d,"final":true}',
    c.model, i, i % 3)
  return wrk.format("POST", "/rewards", c.headers, body)
end

done = c.done
