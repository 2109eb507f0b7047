"""Scaling out: one instance against two on PostgreSQL + Redis (issue 14).

Two ``commons-session serve`` processes (one worker each) share one PostgreSQL database (the
records: institution, users, terms, audit rows) and one Redis (sessions, single-use markers,
rate-limit counters), as a deployment behind a load balancer does. wrk drives the reads and the
creates against one instance (``-c64``) and against both at once (a wrk of ``-c32`` each, their
req/s summed), interleaved round by round. The CPU columns say where the time went: both
servers, the PostgreSQL server's processes, Redis.

It needs the machine's PostgreSQL (``COMMONS_SESSION_BENCH_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; a database of its own is created and
dropped). bench/run.py calls ``measure`` as one of its steps; standalone:
``.venv/bin/python bench/scale_out.py [--seconds 3] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from ab_create import _Tokens  # noqa: E402
from run import Processes, Redis, free_port, group_cpu, our_env, start_redis, wait_http  # noqa: E402
from seeding import onboard  # noqa: E402

ADMIN_URL = os.environ.get(
    "COMMONS_SESSION_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BIN = Path(sys.executable).parent
SESSIONS = 1_000
USERS = 100


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = "cs_bench_" + secrets.token_hex(6)
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_cpu() -> float:
    """CPU seconds used so far by every ``postgres`` process of the machine (the server is not
    ours to start, so it is found by name)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            if name.startswith("postgres"):
                total += int(fields[11]) + int(fields[12])
    return total / tick


@dataclass
class Row:
    rps: list[float] = field(default_factory=list)
    server_us: list[float] = field(default_factory=list)
    postgres_us: list[float] = field(default_factory=list)
    redis_us: list[float] = field(default_factory=list)


def seed(database_url: str, redis_url: str, ids: Path, sessions: int = SESSIONS) -> dict[str, object]:
    """Onboarded users in PostgreSQL, ``sessions`` sessions in Redis; the token minter's input."""
    from sizing import CONTENTS

    from commons_session.domain.ids import hash_id, new_session_id
    from commons_session.domain.models import SessionRecord
    from commons_session.stores.factory import make_stores

    population = onboard(Path("unused"), USERS, "Scale U", database_url=database_url)

    async def stored() -> list[str]:
        stores = make_stores(database_url, redis_url, idle_timeout=86_400, timeout=10)
        await stores.open()
        now, made = time.time(), []
        for i in range(sessions):
            made.append(new_session_id())
            user_id, institution_id = population.user_ids[i % USERS], population.institution_id
            record = SessionRecord(
                hash_id(made[-1]), user_id, institution_id, CONTENTS, now, now, now + 86_400
            )
            await stores.sessions.create(record)
        await stores.close()
        return made

    ids.write_text("\n".join(asyncio.run(stored())) + "\n")
    return {
        "consumer_key": population.canvas.consumer_key,
        "secret": population.canvas.secret,
        "users": [(p.lti_user_id, p.canvas_user_id, p.name) for p in population.users],
    }


def _wrk(port: int, op: str, connections: int, seconds: int, env: dict[str, str]) -> subprocess.Popen[str]:
    script = HERE / ("read_session.lua" if op == "read" else "create_session.lua")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})


def _rps(out: str, what: str) -> float:
    if "Non-2xx" in out or "Socket errors" in out or 'exhausted": 1' in out:
        raise SystemExit(f"scale-out {what}: error answers\n{out}")
    return float(out.split("Requests/sec:")[1].split()[0])


def measure(
    tmp: Path,
    procs: Processes,
    redis: Redis,
    redis_pgid: int,
    *,
    seconds: int,
    rounds: int,
    sessions: int = SESSIONS,
    connections: int = 64,
    db: int = 15,
) -> dict[str, Row]:
    """{"read, one instance": Row, "read, two instances": ..., "create, ...": ...}."""
    results: dict[str, Row] = {}
    with postgres_database() as database_url:
        redis_url = redis.url(db)
        ids = tmp / "scale-ids.txt"
        minter = _Tokens(seed(database_url, redis_url, ids, sessions))
        instances = []
        for n in range(2):
            env = our_env(tmp / "unused.db", redis_url)
            env["COMMONS_SESSION_DATABASE_URL"] = database_url
            port, log = free_port(), tmp / f"scale-{n}.log"
            serve = [str(BIN / "commons-session"), "serve", "--host", "127.0.0.1", "--port", str(port)]
            proc = procs.start(serve, env, log, tmp)
            wait_http(f"http://127.0.0.1:{port}", proc, log)
            instances.append((proc, port))
        for rnd in range(rounds + 1):  # the first round warms up
            for op in ("read", "create"):
                for count in (1, 2):
                    used = instances[:count]
                    env_for = []
                    for i in range(count):
                        env = {"IDS": str(ids), "BENCH_LUA": str(HERE / "report.lua")}
                        if op == "create":
                            pool = tmp / f"scale-tokens-{i}.txt"
                            pool.write_text("\n".join(minter.mint(2_500 * (seconds if rnd else 1))) + "\n")
                            env["TOKENS"] = str(pool)
                        env_for.append(env)
                    before = [group_cpu(p.pid) for p, _ in used]
                    pg_before, redis_before = postgres_cpu(), group_cpu(redis_pgid)
                    run_for = seconds if rnd else 1
                    wrks = [
                        _wrk(port, op, 64 // count, run_for, e)
                        for (_, port), e in zip(used, env_for, strict=True)
                    ]
                    outs = [w.communicate()[0] for w in wrks]
                    server = sum(group_cpu(p.pid) - b for (p, _), b in zip(used, before, strict=True))
                    pg, rd = postgres_cpu() - pg_before, group_cpu(redis_pgid) - redis_before
                    rps = sum(_rps(o, f"{op} x{count}") for o in outs)
                    if rnd:
                        row = results.setdefault(
                            f"{op}, {'one instance' if count == 1 else 'two instances'}", Row()
                        )
                        done = rps * run_for
                        row.rps.append(rps)
                        row.server_us.append(server / done * 1e6)
                        row.postgres_us.append(pg / done * 1e6)
                        row.redis_us.append(rd / done * 1e6)
        for proc, _ in instances:
            procs.stop(proc)
    return results


def table(results: dict[str, Row]) -> str:
    """The report's table: medians, and the cores the servers and stores kept busy."""
    rows = [
        "| operation | instances | req/s | two / one | servers' CPU µs/req | PostgreSQL CPU µs/req"
        " | Redis CPU µs/req | cores busy (servers + stores) | runs (req/s) |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for key, r in results.items():
        op, instances = key.split(", ")
        rps = statistics.median(r.rps)
        server, pg, rd = (statistics.median(x) for x in (r.server_us, r.postgres_us, r.redis_us))
        versus = f"{ratio(results, op):.2f}" if instances == "two instances" else ""
        rows.append(
            f"| {op} | {instances} | {rps:,.0f} | {versus} | {server:.0f} | {pg:.0f} | {rd:.0f} |"
            f" {(server + pg + rd) * rps / 1e6:.2f} | {', '.join(f'{x:,.0f}' for x in r.rps)} |"
        )
    return "\n".join(rows)


def ratio(results: dict[str, Row], op: str) -> float:
    return statistics.median(results[f"{op}, two instances"].rps) / statistics.median(
        results[f"{op}, one instance"].rps
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cs-scale-out-"))
    procs = Processes()
    try:
        redis = start_redis(procs, tmp)
        results = measure(tmp, procs, redis, procs.started[0].pid, seconds=args.seconds, rounds=args.rounds)
        print(table(results))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
