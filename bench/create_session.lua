-- wrk script: POST {"jwt_token": ...} to CREATE_PATH (ours: /api/sessions, the peer: /api/login),
-- each request with the next never-used Canvas JWT from the file TOKENS (one per line). Every
-- token is used at most once; when the file runs out the script says so (the harness then
-- repeats the run with a larger pool) instead of replaying a token.
local report = dofile(os.getenv("BENCH_LUA") or "bench/report.lua")
setup, done = report.setup, report.done

local tokens = assert(io.open(os.getenv("TOKENS"), "rb"))
local path = os.getenv("CREATE_PATH") or "/api/sessions"
local headers = { ["Content-Type"] = "application/json" }
used, exhausted = 0, 0

request = function()
  local token = tokens:read("*l")
  if token == nil or token == "" then
    exhausted = 1
    return wrk.format("GET", "/bench-token-pool-exhausted")
  end
  used = used + 1
  return wrk.format("POST", path, headers, '{"jwt_token":"' .. token .. '"}')
end
