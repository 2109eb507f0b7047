"""HTTP A/B of source trees: req/s and server CPU per request behind ``commons-session serve``.

bench/ab_create.py compares trees in-process; what granian adds (the GIL hand-off, its
connection settings, the access line's write) only shows over a socket. Each tree serves from
its own process group, one worker (or ``--workers N``), with the bench's settings (or the defaults with
``--defaults``); wrk drives ``/healthz``, reads of 1,000 sessions and creates (a fresh Canvas
JWT each, for onboarded users), the trees interleaved round by round (A B A B ...), so drift on
a shared machine hits each alike. Stores are seeded by each tree's own code, so trees with
different schemas compare fairly.

Usage: .venv/bin/python bench/ab_http.py --tree old=/tmp/old --tree new=. [--op healthz --op read --op create]
    [--store sqlite --store redis] [--rounds 5] [--seconds 3] [--defaults] [--workers 2]
    [--env new:COMMONS_SESSION_LOG_LEVEL=warning]  (a tree may be named twice: --tree a=. --tree b=.)
``--store redis`` starts a throwaway redis-server on a free port. Needs wrk (make bench-tools).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import DEFAULTS, Processes, free_port, group_cpu, our_env, start_redis, wait_http  # noqa: E402

BIN = Path(sys.executable).parent
SEED = """
import asyncio, json, sys, time
from pathlib import Path
sys.path[:0] = [{bench!r}, {root!r}]
import ab_create
from sizing import CONTENTS
from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import SessionRecord
from commons_session.stores.factory import make_stores

meta = ab_create._seed(Path({db!r}), 1000)  # onboarded users (launched, terms accepted), 1,000 sessions
ids = meta.pop("sample")
Path({meta_path!r}).write_text(json.dumps(meta))

async def in_redis():
    stores = make_stores("sqlite:///" + {db!r}, {redis!r}, idle_timeout=86400, timeout=5)
    await stores.open()
    now, made = time.time(), []
    for i in range(1000):
        made.append(new_session_id())
        record = SessionRecord(hash_id(made[-1]), f"u{{i}}", 1, CONTENTS, now, now, now + 86400)
        await stores.sessions.create(record)
    await stores.close()
    return made

if {redis!r}:
    ids = asyncio.run(in_redis())
Path({ids_path!r}).write_text("\\n".join(ids) + "\\n")
"""


def _minter(meta: Path) -> Any:
    sys.path.insert(0, str(HERE.parent))  # tests/canvas.py, which the minter signs like
    from ab_create import _Tokens

    return _Tokens(json.loads(meta.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", required=True, help="name=DIR holding src/commons_session")
    parser.add_argument("--op", action="append", choices=["healthz", "read", "create"])
    parser.add_argument("--store", action="append", choices=["sqlite", "redis"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME:KEY=VALUE, a setting for one tree's servers only"
    )
    parser.add_argument(
        "--defaults", action="store_true", help="the service's defaults (access log on, touch 60 s)"
    )
    args = parser.parse_args()
    ops, stores = args.op or ["healthz", "read"], args.store or ["sqlite"]
    trees = dict(t.split("=", 1) for t in args.tree)
    tmp = Path(tempfile.mkdtemp(prefix="cs-ab-http-"))
    processes = Processes()
    procs: dict[tuple[str, str], tuple[subprocess.Popen[bytes], int]] = {}
    try:
        redis = start_redis(processes, tmp) if "redis" in stores else None
        for t, (name, tree) in enumerate(trees.items()):
            for s, store in enumerate(stores):
                db = tmp / f"{name}-{store}.db"
                url = redis.url(t * len(stores) + s) if redis is not None and store == "redis" else None
                env = our_env(db, url, **(DEFAULTS if args.defaults else {}))
                for setting in args.env:  # NAME:KEY=VALUE
                    target, _, key_value = setting.partition(":")
                    if target == name:
                        key, _, value = key_value.partition("=")
                        env[key] = value
                env["PYTHONPATH"] = str(Path(tree, "src").resolve())
                seed = SEED.format(
                    bench=str(HERE),
                    root=str(HERE.parent),
                    db=str(db),
                    redis=url,
                    meta_path=str(tmp / f"{name}-{store}.json"),
                    ids_path=str(tmp / f"{name}-{store}.ids"),
                )
                subprocess.run([sys.executable, "-c", seed], env=env, check=True)
                port, log = free_port(), tmp / f"{name}-{store}.log"
                serve = [str(BIN / "python"), "-m", "commons_session", "serve", "--host", "127.0.0.1"]
                serve += ["--workers", str(args.workers)]
                proc = processes.start([*serve, "--port", str(port)], env, log, tmp)
                procs[(name, store)] = (proc, port)
                wait_http(f"http://127.0.0.1:{port}", proc, log)
        results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        minters: dict[tuple[str, str], Any] = {}
        for rnd in range(args.rounds + 1):  # round 0 warms up
            for op in ops:
                for store in stores if op != "healthz" else stores[:1]:
                    for name in trees:
                        proc, port = procs[(name, store)]
                        cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds if rnd else 1}s"]
                        env = {
                            **os.environ,
                            "IDS": str(tmp / f"{name}-{store}.ids"),
                            "BENCH_LUA": str(HERE / "report.lua"),
                        }
                        if op == "create":
                            pool = tmp / "tokens.txt"
                            minter = minters.setdefault((name, store), _minter(tmp / f"{name}-{store}.json"))
                            pool.write_text(
                                "\n".join(minter.mint(3_000 * (args.seconds if rnd else 1))) + "\n"
                            )
                            env["TOKENS"] = str(pool)
                            cmd += ["-s", str(HERE / "create_session.lua"), f"http://127.0.0.1:{port}"]
                        elif op == "read":
                            cmd += ["-s", str(HERE / "read_session.lua"), f"http://127.0.0.1:{port}"]
                        else:
                            cmd += ["-s", str(HERE / "healthz.lua"), f"http://127.0.0.1:{port}/healthz"]
                        before = group_cpu(proc.pid)
                        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
                        cpu = group_cpu(proc.pid) - before
                        if "Non-2xx" in out or "Socket errors" in out or 'exhausted": 1' in out:
                            raise SystemExit(f"{name} {op}: error answers\n{out}")
                        rps = float(out.split("Requests/sec:")[1].split()[0])
                        if rnd:
                            results.setdefault((op, store, name), []).append(
                                (rps, cpu / (rps * args.seconds) * 1e6)
                            )
        setting = "defaults" if args.defaults else "bench settings"
        print(
            f"{args.workers} worker(s), {args.connections} connections, {setting},"
            f" median of {args.rounds} interleaved {args.seconds} s runs\n"
        )
        print("| operation | tree | req/s | CPU µs/req | runs (req/s) |")
        print("|---|---|--:|--:|---|")
        for (op, store, name), runs in results.items():
            label = f"{op} ({store})" if op != "healthz" else op
            rps, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            print(
                f"| {label} | {name} | {rps:,.0f} | {cpu:.0f} | {', '.join(f'{r[0]:,.0f}' for r in runs)} |"
            )
    finally:
        processes.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
