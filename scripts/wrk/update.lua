-- wrk script: POST /update over 1,000 array states (a random walk of
-- transitions between them), round robin per thread.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua"
local c = require("common")

local bodies = {}
local n = 0

function init(args)
  for i = 0, c.n_states - 1 do
    local action = i % 4
    local reward = (i % 7 == 0) and 1 or -0.01
    local done = (i % 50 == 49) and "true" or "false"
    bodies[i + 1] = wrk.format("POST", "/update", c.headers,
      string.format('{"model_id":"%s","state":%s,"action":%d,"reward":%s,"next_state":%s,"done":%s}',
        c.model, c.state(i), action, reward, c.state((i + 1) % c.n_states), done))
  end
  n = math.random(0, c.n_states - 1)
end

function request()
  n = n + 1
  return bodies[(n % c.n_states) + 1]
end

done = c.done
