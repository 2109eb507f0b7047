"""Which HTTP server and which way of calling SQLite: measured side by side in one run.

Servers (one worker each, our real app): granian on asyncio's loop, granian on uvloop, uvicorn
with uvloop + httptools. Routes: /healthz (the ceiling) and GET /api/sessions/{id} on SQLite
with stored sessions. Load comes from wrk in a separate process; each figure is the median of
ROUNDS runs, interleaved server by server so machine drift hits every side alike.
Then the store call itself, in-process: sqlite3 on the loop thread vs the same call handed to a
thread (what aiosqlite does for every query).

Usage: .venv/bin/python bench/stack.py [--seconds 5] [--rounds 3] [--sessions 1000]
Needs: wrk (Debian package `wrk`), `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import SessionRecord
from commons_session.stores.sqlite import SqliteStores

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TARGET = "commons_session.http.app:create_app"

SERVERS = {
    "granian/asyncio": lambda port: [
        str(BIN / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--loop",
        "asyncio",
        "--no-ws",
        "--log-level",
        "warning",
        "--port",
        str(port),
        TARGET,
    ],
    "granian/uvloop": lambda port: [
        str(BIN / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--loop",
        "uvloop",
        "--no-ws",
        "--log-level",
        "warning",
        "--port",
        str(port),
        TARGET,
    ],
    "uvicorn/uvloop+httptools": lambda port: [
        str(BIN / "uvicorn"),
        "--factory",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--port",
        str(port),
        TARGET,
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(db: Path, count: int) -> list[str]:
    stores = SqliteStores(db)
    now = time.time()
    ids = []
    for i in range(count):
        sid = new_session_id()
        ids.append(sid)
        record = SessionRecord(
            hash_id(sid), f"user{i}", 1, {"userId": f"user{i}", "roles": ["Learner"]}, now, now, now + 86_400
        )
        asyncio.run(stores.sessions.create(record))
    asyncio.run(stores.close())
    return ids


def wrk(url: str, seconds: int, connections: int, script: Path | None, env: dict[str, str]) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, env=env, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} error responses from {url}:\n{out}")
    assert match, out
    return float(match.group(1))


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
        if proc.poll() is not None:
            break
    raise RuntimeError(f"server at {url} did not start")


def bench_servers(args: argparse.Namespace, db: Path, ids_file: Path) -> dict[str, dict[str, float]]:
    env = dict(
        os.environ,
        COMMONS_SESSION_DATABASE_URL=f"sqlite:///{db}",
        COMMONS_SESSION_LOG_LEVEL="warning",
        COMMONS_SESSION_TOUCH_INTERVAL="3600",
        IDS=str(ids_file),
        BENCH_LUA=str(HERE / "report.lua"),
    )
    runs: dict[str, dict[str, list[float]]] = {name: {"healthz": [], "read": []} for name in SERVERS}
    for _ in range(args.rounds):
        for name, command in SERVERS.items():
            port = free_port()
            proc = subprocess.Popen(
                command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, proc)
                wrk(url + "/healthz", 1, args.connections, None, env)  # warm-up
                runs[name]["healthz"].append(wrk(url + "/healthz", args.seconds, args.connections, None, env))
                runs[name]["read"].append(
                    wrk(url, args.seconds, args.connections, HERE / "read_session.lua", env)
                )
            finally:
                proc.terminate()
                proc.wait()
    return {n: {k: statistics.median(v) for k, v in r.items()} for n, r in runs.items()}


def bench_store_call(db: Path, ids: list[str], n: int = 20_000) -> dict[str, float]:
    stores = SqliteStores(db)
    hashes = [hash_id(ids[i % len(ids)]) for i in range(n)]

    def lookup(h: bytes) -> object:
        return stores.conn.execute("SELECT * FROM sessions WHERE id_hash = ?", (h,)).fetchone()

    async def direct() -> float:
        start = time.perf_counter()
        for h in hashes:
            lookup(h)
            await asyncio.sleep(0)  # the same one yield to the loop that an await costs
        return time.perf_counter() - start

    async def threaded() -> float:
        start = time.perf_counter()
        for h in hashes:
            await asyncio.to_thread(lookup, h)
        return time.perf_counter() - start

    results: dict[str, list[float]] = {"direct": [], "thread": []}
    for _ in range(3):
        results["direct"].append(asyncio.run(direct()))
        results["thread"].append(asyncio.run(threaded()))
    asyncio.run(stores.close())
    return {k: statistics.median(v) / n * 1e6 for k, v in results.items()}  # microseconds per call


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        ids = seed(db, args.sessions)
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        servers = bench_servers(args, db, ids_file)
        store = bench_store_call(db, ids)
    base = servers["uvicorn/uvloop+httptools"]
    print(
        f"\n# Server choice ({args.rounds} interleaved rounds x {args.seconds}s, "
        f"{args.connections} connections, {args.sessions} sessions, median req/s)\n"
    )
    print(
        "| server | /healthz req/s | read req/s | read / own healthz | healthz vs uvicorn | read vs uvicorn |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in servers.items():
        print(
            f"| {name} | {r['healthz']:.0f} | {r['read']:.0f} | {r['read'] / r['healthz']:.2f} | "
            f"{r['healthz'] / base['healthz']:.2f} | {r['read'] / base['read']:.2f} |"
        )
    print("\n# SQLite session lookup (in-process, microseconds per call, median of 3)\n")
    print("| call | us/call | ratio |")
    print("|---|---|---|")
    print(f"| sqlite3 on the loop thread | {store['direct']:.1f} | 1.00 |")
    print(
        f"| same query via asyncio.to_thread | {store['thread']:.1f} |"
        f" {store['thread'] / store['direct']:.1f} |"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "stack.json").write_text(
        json.dumps({"servers": servers, "store_us": store, "args": vars(args)}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
