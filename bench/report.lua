-- Shared by the wrk scripts: done() prints one machine-readable line that bench/run.py parses:
--   BENCH {"requests": ..., "duration_us": ..., "p50_us": ..., "p99_us": ..., errors ..., "used": ...}
-- "used" is how many single-use items (tokens) the threads consumed, for scripts that count them.
local M = {}

M.threads = {}

function M.setup(thread)
  M.threads[#M.threads + 1] = thread
end

function M.done(summary, latency, requests)
  local used, exhausted = 0, 0
  for _, thread in ipairs(M.threads) do
    used = used + (thread:get("used") or 0)
    exhausted = exhausted + (thread:get("exhausted") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "used": %d, "exhausted": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, used, exhausted))
end

return M
