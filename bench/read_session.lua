-- wrk script: GET /api/sessions/{id} with a random stored id, presented in x-session-id.
-- IDS names a file of ids, one per line, all of the same length: a request seeks to a random
-- line instead of loading the file, so a million ids cost no start-up time.
local report = dofile(os.getenv("BENCH_LUA") or "bench/report.lua")
setup, done = report.setup, report.done

local ids = assert(io.open(os.getenv("IDS"), "rb"))
local width = #ids:read("*l") + 1
local count = math.floor(ids:seek("end") / width)
math.randomseed(os.time() + count)

request = function()
  ids:seek("set", (math.random(count) - 1) * width)
  local id = ids:read(width - 1)
  return wrk.format("GET", "/api/sessions/" .. id, { ["x-session-id"] = id })
end
