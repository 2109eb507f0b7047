-- wrk script: the peer's read, GET /api/session with a random stored session's signed cookie.
-- COOKIES names a file of `connect.sid` cookie values, one per line, all of the same length.
local report = dofile(os.getenv("BENCH_LUA") or "bench/report.lua")
setup, done = report.setup, report.done

local cookies = assert(io.open(os.getenv("COOKIES"), "rb"))
local width = #cookies:read("*l") + 1
local count = math.floor(cookies:seek("end") / width)
math.randomseed(os.time() + count)

request = function()
  cookies:seek("set", (math.random(count) - 1) * width)
  return wrk.format("GET", "/api/session", { ["Cookie"] = "connect.sid=" .. cookies:read(width - 1) })
end
