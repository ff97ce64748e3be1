-- wrk script: POST /predict over 1,000 array states, round robin per thread.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua"
local c = require("common")

local bodies = {}
local n = 0

function init(args)
  for i = 0, c.n_states - 1 do
    bodies[i + 1] = wrk.format("POST", "/predict", c.headers,
      string.format('{"model_id":"%s","state":%s}', c.model, c.state(i)))
  end
  n = math.random(0, c.n_states - 1)
end

function request()
  n = n + 1
  return bodies[(n % c.n_states) + 1]
end

done = c.done
