"""Why a SQLite read costs more behind granian than in-process: measured, not guessed.

In-process, the SQLite lookup is ~10 µs of a ~55 µs read; behind granian the read costs ~180 µs
of server CPU against ~70 for /healthz. The suspect is the GIL: sqlite3 releases it around every
step of a statement, and granian's Rust thread, which needs the GIL to hand each new request to
Python, takes it there, so every lookup costs two thread switches. Three servers answer the same
reads of 1,000 stored sessions, interleaved round by round:

- ``granian``: ``commons-session serve`` as shipped;
- ``granian, rows in memory``: the same code, except ``SqlSessions.get`` keeps each row it read
  in a dict and never asks SQLite again (a copy of the source tree, patched in a temporary
  directory; an experiment only, never a way to serve, since another process's logout would go
  unseen);
- ``uvicorn``: the same app on uvicorn (uvloop + httptools), whose single thread never competes
  for the GIL.

If the GIL hand-off is the cost, the in-memory rows close most of the gap on granian, and
uvicorn's read costs less CPU than granian's although its /healthz does not.

Usage: .venv/bin/python bench/read_cost.py [--seconds 3] [--rounds 3] [--connections 64]
Needs wrk (make bench-tools).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import free_port, group_cpu  # noqa: E402
from sizing import CONTENTS  # noqa: E402

from commons_session.domain.ids import hash_id, new_session_id  # noqa: E402
from commons_session.domain.models import SessionRecord  # noqa: E402
from commons_session.stores.sqlite import SqliteStores  # noqa: E402

BIN = Path(sys.executable).parent
ORIGINAL = "        row = await self.db.fetchone("
PATCHED = """        row = _ROWS.get(id_hash)  # bench/read_cost.py: rows in memory
        if row is not None:
            return session_from_row(row)
        row = _ROWS[id_hash] = await self.db.fetchone("""


def seed(db: Path, ids_file: Path, count: int = 1_000) -> None:
    async def go() -> list[str]:
        stores = SqliteStores(db)
        now, ids = time.time(), []
        for i in range(count):
            ids.append(new_session_id())
            record = SessionRecord(hash_id(ids[-1]), f"user{i}", 1, CONTENTS, now, now, now + 86_400)
            await stores.sessions.create(record)
        await stores.close()
        return ids

    ids_file.write_text("\n".join(asyncio.run(go())) + "\n")


def patched_tree(tmp: Path) -> Path:
    """A copy of src/ whose session reads come from memory after the first."""
    tree = tmp / "rows-in-memory"
    shutil.copytree(ROOT / "src", tree)
    sql = tree / "commons_session" / "stores" / "sql.py"
    text = sql.read_text()
    get = text.index("    async def get(self, id_hash: bytes) -> SessionRecord | None:")
    at = text.index(ORIGINAL, get)
    text = text[:at] + PATCHED + text[at + len(ORIGINAL) :]
    sql.write_text(
        text.replace("\nclass _SqlStore:", "\n_ROWS: dict[bytes, Row | None] = {}\n\n\nclass _SqlStore:")
    )
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cs-read-cost-"))
    ids = tmp / "ids.txt"
    seed(tmp / "seed.db", ids)
    tree = patched_tree(tmp)
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for name, src, uvicorn in (
        ("granian", str(ROOT / "src"), False),
        ("granian, rows in memory", str(tree), False),
        ("uvicorn", str(ROOT / "src"), True),
    ):
        port = free_port()
        db = tmp / f"{len(procs)}.db"
        shutil.copy(tmp / "seed.db", db)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
        env.update(
            PYTHONPATH=src,
            COMMONS_SESSION_DATABASE_URL=f"sqlite:///{db}",
            COMMONS_SESSION_LOG_LEVEL="warning",
            COMMONS_SESSION_TOUCH_INTERVAL="3600",
        )
        cmd = [str(BIN / "commons-session"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if uvicorn:
            app = "commons_session.http.app:create_app"
            cmd = [str(BIN / "uvicorn"), "--factory", app, "--loop", "uvloop", "--http", "httptools"]
            cmd += ["--log-level", "warning", "--no-access-log", "--port", str(port)]
        log = (tmp / f"{len(procs)}.log").open("wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        procs[name] = (proc, port)
    try:
        for _proc, port in procs.values():
            for _ in range(150):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for rnd in range(args.rounds + 1):  # the first round warms up and is not counted
            for op in ("healthz", "read"):
                for name, (proc, port) in procs.items():
                    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds if rnd else 1}s"]
                    if op == "read":
                        cmd += ["-s", str(HERE / "read_session.lua"), f"http://127.0.0.1:{port}"]
                    else:
                        cmd += ["-s", str(HERE / "healthz.lua"), f"http://127.0.0.1:{port}/healthz"]
                    env = {**os.environ, "IDS": str(ids), "BENCH_LUA": str(HERE / "report.lua")}
                    before = group_cpu(proc.pid)
                    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
                    cpu = group_cpu(proc.pid) - before
                    if "Non-2xx" in out or "Socket errors" in out:
                        raise SystemExit(f"{name} {op}: error answers\n{out}")
                    rps = float(out.split("Requests/sec:")[1].split()[0])
                    if rnd:
                        results.setdefault((name, op), []).append((rps, cpu / (rps * args.seconds) * 1e6))
        runs = f"median of {args.rounds} interleaved {args.seconds} s runs"
        print(f"1 worker, {args.connections} connections, {runs}\n")
        print("| server | /healthz req/s | read req/s | read / healthz | CPU µs / healthz | CPU µs / read |")
        print("|---|--:|--:|--:|--:|--:|")
        for name in procs:
            h = results[(name, "healthz")]
            r = results[(name, "read")]
            hr, rr = statistics.median(x[0] for x in h), statistics.median(x[0] for x in r)
            hc, rc = statistics.median(x[1] for x in h), statistics.median(x[1] for x in r)
            print(f"| {name} | {hr:,.0f} | {rr:,.0f} | {rr / hr:.2f} | {hc:.0f} | {rc:.0f} |")
    finally:
        for proc, _port in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _port in procs.values():
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
