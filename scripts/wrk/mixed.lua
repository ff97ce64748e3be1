-- wrk script: delayed feedback as a product sends it, on a model that logs
-- its decisions. Each thread asks for decisions (POST /predict with its own
-- decision ids) and, once it has made QL_LAG of them (default 20,000), sends
-- every other request the final reward of its oldest unrewarded decision
-- (POST /rewards): the rewards trail the decisions by QL_LAG, so whether
-- they find their decision in memory or must read it from the file depends
-- on that lag and the server's model cache (a SQLite `cache_mb` below what
-- QL_LAG decisions take makes them late). The decision ids are `m`, the
-- thread's number and the decision's, so runs on a fresh model never clash.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua"
local c = require("common")

setup = c.setup

local offset = 0
local lag = 20000
local decided = 0
-- wrk calls request() once before the run to check the script
-- (script_verify_request), so a thread's first decision may never be
-- sent: the rewards start at the second.
local rewarded = 1
local k = 0

function init(args)
  offset = c.thread_number()
  lag = tonumber(os.getenv("QL_LAG") or "20000")
end

function request()
  k = k + 1
  if k % 2 == 0 and decided - rewarded >= lag then
    rewarded = rewarded + 1
    local body = string.format('{"model_id":"%s","decision_id":"m%d-%d","value":%d,"final":true}',
      c.model, offset, rewarded, rewarded % 3)
    return wrk.format("POST", "/rewards", c.headers, body)
  end
  decided = decided + 1
  local i = decided % c.n_states
  local body = string.format('{"model_id":"%s","state":%s,"decision_id":"m%d-%d"}',
    c.model, c.state(i), offset, decided)
  return wrk.format("POST", "/predict", c.headers, body)
end

done = c.done
