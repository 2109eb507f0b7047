"""In-process A/B of the create and read paths on SQLite: CPU per call, old tree against new.

Each (source tree, stored sessions) pair runs in its own worker process, which imports
``commons_session`` from that tree, builds its own SQLite file with that tree's schema (an
institution, onboarded users who accepted the terms, then N sessions bulk-inserted as
bench/run.py seeds them) and wires the service as ``create_app`` does: instrumented stores, the
audit sink, the rate limiter as the institution guard. The driver then asks the workers in turn
(A B C D, A B C D, ...) to run a batch of calls and report the CPU time they took
(``time.process_time``: user + system, so a commit's kernel time counts), so drift on a shared
machine hits every side alike. Tokens are minted before each batch, outside the timing.

Usage:
  .venv/bin/python bench/ab_create.py --tree old=/tmp/base --tree new=. [--sizes 1000 1000000]
      [--calls 2000] [--rounds 5] [--op create --op read] [--cache /tmp/ab-create]
      [--pragma "new=wal_autocheckpoint = 10000"]  (run on that tree's connection only)
A tree is a directory holding ``src/commons_session`` (and ``tests/canvas.py``). Seeded files are
cached under --cache per tree and size (delete them after a schema change).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from seeding import bulk_insert_sessions, onboard

USERS = 100


def _seed(db: Path, size: int) -> dict[str, Any]:
    """Records through the stores (the tree's own schema), sessions by bulk insert."""
    from commons_session.domain.ids import hash_id

    population = onboard(db, USERS, name="AB U")
    canvas, users = population.canvas, population.users
    institution_id, user_ids, contents = population.institution_id, population.user_ids, population.contents
    session_ids = [secrets.token_urlsafe(32) for _ in range(size)]
    now = time.time()
    rows = sorted(
        (
            (
                hash_id(sid),
                user_ids[i % USERS],
                institution_id,
                contents[i % USERS],
                now - (i % 1_800) - (i * 7 % 21_600),
                now - (i % 1_800),
                now - (i % 1_800) - (i * 7 % 21_600) + 43_200,
                "Mozilla/5.0 (bench)",
            )
            for i, sid in enumerate(session_ids)
        ),
        key=lambda row: row[4],  # created_at: the order the service appends them in
    )
    bulk_insert_sessions(db, rows)
    return {
        "consumer_key": canvas.consumer_key,
        "secret": canvas.secret,
        "users": [(p.lti_user_id, p.canvas_user_id, p.name) for p in users],
        "sample": random.sample(session_ids, min(size, 20_000)),
    }


class _Tokens:
    """Canvas JWTs from per-user templates (as bench/run.py's TokenPool), each used once."""

    MARK = "0" * 40

    def __init__(self, meta: dict[str, Any]) -> None:
        from tests.canvas import CanvasUser, FakeCanvas

        canvas = FakeCanvas(meta["consumer_key"], meta["secret"])
        self.secret = meta["secret"].encode()
        self.header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        self.templates = []
        for lti_id, uid, name in meta["users"]:
            person = CanvasUser(lti_user_id=lti_id, canvas_user_id=uid, name=name)
            payload = canvas.launch_params(person, resource_link_id=self.MARK)
            payload["consumer_key"] = meta["consumer_key"]
            payload["iat"] = 1_234_567_890
            before, after = json.dumps(payload, separators=(",", ":")).split(self.MARK)
            middle, end = after.split("1234567890")
            self.templates.append((before.encode(), middle.encode(), end.encode()))
        self.minted = secrets.randbelow(1 << 60)

    def mint(self, count: int) -> list[str]:
        iat = b"%d" % int(time.time())
        out = []
        for i in range(self.minted, self.minted + count):
            before, middle, end = self.templates[i % len(self.templates)]
            payload = before + b"%040x" % i + middle + iat + end
            signing = self.header + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
            signature = hmac.new(self.secret, signing, hashlib.sha256).digest()
            out.append((signing + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode())
        self.minted += count
        return out


def worker(tree: Path, cache: Path, size: int, pragmas: list[str]) -> None:
    sys.path[:0] = [str(tree / "src"), str(tree)]
    import commons_session

    assert Path(commons_session.__file__).is_relative_to(tree), commons_session.__file__
    from commons_session.config import Settings
    from commons_session.domain.service import Policy, SessionService
    from commons_session.domain.terms import Terms
    from commons_session.http.app import audit_sink
    from commons_session.http.ratelimit import RateLimiter
    from commons_session.metrics import instrument
    from commons_session.stores.counters import MemoryCounter
    from commons_session.stores.sqlite import SqliteStores

    template = cache / f"{size}.db"
    meta_path = cache / f"{size}.json"
    if not meta_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        template.unlink(missing_ok=True)
        Path(f"{template}.created").unlink(missing_ok=True)  # the marker of a database we re-seed
        meta_path.write_text(json.dumps(_seed(template, size)))
    meta = json.loads(meta_path.read_text())
    work = cache / f"{size}-work-{os.getpid()}.db"  # one per worker: trees may share a cache
    for suffix in ("", "-wal", "-shm", ".created"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, work)

    settings = Settings()
    sqlite_stores = SqliteStores(work)
    for pragma in pragmas:  # a variant to try, e.g. "wal_autocheckpoint = 10000"
        sqlite_stores.conn.execute(f"PRAGMA {pragma}")
    stores = instrument(sqlite_stores)
    limiter = RateLimiter(MemoryCounter(), window=60, address_failures=10**9, institution_requests=10**9)
    service = SessionService(
        stores,
        Policy(jwt_max_age=3_600, touch_interval=3_600),
        Terms(settings.terms_version, "terms"),
        events=audit_sink(stores.records),
        guard=limiter,
    )
    tokens = _Tokens(meta)
    sample: list[str] = meta["sample"]
    loop = asyncio.new_event_loop()

    async def creates(batch: list[str]) -> None:
        for token in batch:
            await service.create_from_jwt(token, "Mozilla/5.0 (bench)")

    async def reads(batch: list[str]) -> None:
        for session_id in batch:
            await service.authenticate(session_id)

    print("ready", flush=True)
    for line in sys.stdin:
        op, count = line.split()
        n = int(count)
        if op == "create":
            batch = tokens.mint(n)
            run = creates(batch)
        else:
            batch = random.choices(sample, k=n)
            run = reads(batch)
        start = time.process_time()
        loop.run_until_complete(run)
        spent = time.process_time() - start
        print(f"{spent / n * 1e6:.2f}", flush=True)
    for suffix in ("", "-wal", "-shm", ".created"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", default=[], help="name=path")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--op", action="append", default=[])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ab-create")
    parser.add_argument("--pragma", action="append", default=[], help="name=PRAGMA for that tree's worker")
    parser.add_argument("--worker", nargs=2, metavar=("TREE", "SIZE"))
    args = parser.parse_args()
    if args.worker:
        tree = Path(args.worker[0]).resolve()
        cache = args.cache / hashlib.sha256(str(tree).encode()).hexdigest()[:8]
        worker(tree, cache, int(args.worker[1]), args.pragma)
        return 0
    ops = args.op or ["create", "read"]
    trees = [t.split("=", 1) for t in args.tree]
    procs = {}
    for name, path in trees:
        for size in args.sizes:
            pragmas = [f"--pragma={p.split('=', 1)[1]}" for p in args.pragma if p.split("=", 1)[0] == name]
            cmd = [
                sys.executable,
                __file__,
                "--cache",
                str(args.cache),
                *pragmas,
                "--worker",
                path,
                str(size),
            ]
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
            procs[(name, size)] = subprocess.Popen(cmd, text=True, **pipes)  # type: ignore[call-overload]
    for key, proc in procs.items():
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", key
    results: dict[tuple[str, str, int], list[float]] = {}
    for op in ops:  # one warm-up batch each
        for proc in procs.values():
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{op} {args.calls // 4}\n")
            proc.stdin.flush()
            proc.stdout.readline()
    for _ in range(args.rounds):
        for op in ops:
            for (name, size), proc in procs.items():
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(f"{op} {args.calls}\n")
                proc.stdin.flush()
                results.setdefault((op, name, size), []).append(float(proc.stdout.readline()))
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    print(f"CPU µs per call, {args.rounds} interleaved rounds of {args.calls} calls (median; all runs)")
    for (op, name, size), runs in results.items():
        every = " ".join(f"{r:.0f}" for r in runs)
        print(f"{op:6} {name:10} {size:>9,}  {statistics.median(runs):8.1f}   {every}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
