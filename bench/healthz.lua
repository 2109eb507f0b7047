-- wrk script: the plain request wrk is given (the /healthz ceiling), reported like the others.
local report = dofile(os.getenv("BENCH_LUA") or "bench/report.lua")
setup, done = report.setup, report.done
