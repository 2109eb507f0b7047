"""Client CPU per Redis store call: redis-py (what ``rediss://`` and Cluster still use) against the
lean pipelined client (``stores/resp.py``, what ``redis://`` uses), side by side.

Usage: .venv/bin/python bench/redis_client.py [--rounds 5] [--calls 2000]
Starts a throwaway redis-server on a free loopback port. Every figure is this process's CPU time
(``time.process_time``: user + system, so Redis' own work is not in it) per call, on uvloop as
``serve`` runs, the median over interleaved rounds (each round runs every side once, in turn) so
that a busy machine weighs on both sides alike. ``c=64`` runs 64 calls at once
(``asyncio.gather``) as a worker under load does.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.backends import redis_server

from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import SessionRecord
from commons_session.stores.redis import RedisCounter, RedisSessions, connect
from commons_session.stores.resp import LeanRedis

CONTENTS = {"userId": "5f0c2d7e9b6a4c1f8e3d2a1b0c9d8e7f", "roles": ["Instructor"], "userFullName": "Ada"}
SIDES = ("redis-py", "lean")
SEEDED = 1_000


def _record() -> SessionRecord:
    now = time.time()
    return SessionRecord(
        hash_id(new_session_id()),
        f"user{secrets.randbelow(300)}",
        1,
        CONTENTS,
        now,
        now,
        now + 43_200,
        "bench",
    )


async def _cpu_per_call(call: Callable[[], Awaitable[object]], calls: int, concurrency: int) -> float:
    """µs of CPU per call, ``concurrency`` calls in flight at a time."""
    start = time.process_time()
    if concurrency == 1:
        for _ in range(calls):
            await call()
    else:
        for _ in range(calls // concurrency):
            await asyncio.gather(*(call() for _ in range(concurrency)))
    return (time.process_time() - start) / calls * 1e6


async def measure(url: str, rounds: int, calls: int) -> dict[str, dict[str, list[float]]]:
    # The redis-py side is what ``connect`` gives a URL that LeanRedis does not take (an option
    # in the query string keeps the same server): the blocking pool of 100 behind ``RedisPy``.
    clients = {"redis-py": connect(url + "?health_check_interval=0", 5.0), "lean": connect(url, 5.0)}
    assert isinstance(clients["lean"], LeanRedis)
    sessions = {side: RedisSessions(client, idle_timeout=3_600) for side, client in clients.items()}
    counters = {
        side: RedisCounter(url if side == "lean" else url + "?health_check_interval=0") for side in SIDES
    }
    seeded = []
    for _ in range(SEEDED):
        record = _record()
        await sessions["lean"].create(record)
        seeded.append(record.id_hash)

    def get(side: str) -> Callable[[], Awaitable[object]]:
        return lambda: sessions[side].get(seeded[secrets.randbelow(SEEDED)])

    def create(side: str) -> Callable[[], Awaitable[object]]:
        return lambda: sessions[side].create(_record())

    def hit(side: str) -> Callable[[], Awaitable[object]]:
        return lambda: counters[side].hit("bench:" + str(secrets.randbelow(100)), 60.0)

    cases = {
        f"{name} c={c}": (make, c)
        for name, make in (("get", get), ("create", create), ("counter hit", hit))
        for c in (1, 64)
    }
    results: dict[str, dict[str, list[float]]] = {case: {side: [] for side in SIDES} for case in cases}
    for side in SIDES:  # warm up: connections, scripts loaded
        for make, c in cases.values():
            await _cpu_per_call(make(side), 128, c)
    for _ in range(rounds):
        for case, (make, c) in cases.items():
            for side in SIDES:
                results[case][side].append(await _cpu_per_call(make(side), calls, c))
    for client in clients.values():
        await client.close()
    for counter in counters.values():
        await counter.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2_048)
    options = parser.parse_args()
    with redis_server() as server, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(measure(server.url, options.rounds, options.calls))
    rounds, calls = options.rounds, options.calls
    print(f"client CPU µs per call: median (min) of {rounds} interleaved rounds of {calls} calls")
    print(f"| call | {' | '.join(SIDES)} | ratio of medians | runs ({'; '.join(SIDES)}) |")
    print("|---|--:|--:|--:|---|")
    for case, sides in results.items():
        medians = {side: statistics.median(values) for side, values in sides.items()}
        figures = " | ".join(f"{medians[side]:.0f} ({min(sides[side]):.0f})" for side in SIDES)
        runs = "; ".join(", ".join(f"{v:.0f}" for v in sides[side]) for side in SIDES)
        print(f"| {case} | {figures} | {medians['redis-py'] / medians['lean']:.1f}x | {runs} |")


if __name__ == "__main__":
    main()
