-- wrk script: GET /api/sessions/{id} with a random stored id, presented in x-session-id.
-- The ids file (one per line) is named by the IDS environment variable.
local ids = {}
for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end
math.randomseed(os.time())

request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/api/sessions/" .. id, { ["x-session-id"] = id })
end
