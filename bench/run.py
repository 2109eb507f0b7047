"""The benchmark behind ``make bench``: every figure of docs/performance.md, in one run.

What it does, in order (each step's time goes into the report):
1. Checks the tools (wrk, redis-server, redis-cli, node, npm) and installs the peer's npm
   packages (``npm ci`` in bench/peer).
2. Starts a throwaway redis-server on a free loopback port (never the machine's 6379) and builds
   the stores: one institution with onboarded users (launched, terms accepted), then 1,000 and
   1,000,000 stored sessions, bulk-inserted into SQLite (executemany, one transaction) and
   piped into Redis (``redis-cli --pipe``), plus the peer's sessions in its own Redis database.
3. Starts every server at once: ours (``commons-session serve``) on SQLite and on Redis, each
   size, 1 and 2 workers; the same app on uvicorn (the server choice); the Node.js peer
   (bench/peer, express + express-session + connect-redis) with 1 and 2 processes.
4. Warms each (server, operation) up once, then runs every measurement ROUNDS times,
   interleaved (A B C ... A B C ...), so drift on this shared machine hits every side alike.
   Load comes from wrk in its own process (bench/*.lua); every POST carries a fresh Canvas JWT
   minted for the run and used once.
5. Profiles the hot paths with py-spy while wrk drives them, and times the SQLite call styles.
6. Writes docs/performance.md from bench/report.md (medians, ratios against the targets,
   plots of throughput and p99 against concurrency) and the raw figures to bench/results/.

Usage: .venv/bin/python bench/run.py [--smoke] [--out DIR]
``--smoke`` is the seconds-long version tests/test_bench_smoke.py runs: every step, tiny sizes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER = HERE / "peer"
BIN = Path(sys.executable).parent
sys.path[:0] = [str(ROOT), str(HERE)]

from seeding import Population, bulk_insert_sessions, onboard  # noqa: E402

from commons_session.domain.ids import hash_id  # noqa: E402

# -- The plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    seconds: int = 3  # per measurement
    warmup: int = 2  # per (server, operation), once, before the first round
    rounds: int = 3  # every figure is the median of this many interleaved runs
    connections: int = 64  # the matrix's concurrency (and the p99 target's)
    levels: tuple[int, ...] = (1, 16, 64, 256)  # the concurrency sweep behind the plots
    small: int = 1_000
    big: int = 1_000_000
    workers: tuple[int, ...] = (1, 2)
    users: int = 100  # onboarded users the sessions and tokens belong to
    profile_seconds: int = 6
    profiles: int = 4  # how many of PROFILES to take
    store_calls: int = 5_000  # in-process SQLite lookups per call style


FULL = Plan()
# Every step and every kind of server, each measured once for a second: it proves the harness
# still works (tests/test_bench_smoke.py), not what it measures.
SMOKE = Plan(
    seconds=1,
    warmup=0,
    rounds=1,
    connections=4,
    levels=(4,),
    small=50,
    big=500,
    workers=(1,),
    users=3,
    profile_seconds=1,
    profiles=1,
    store_calls=200,
)

JWT_MAX_AGE = 3_600  # tokens are minted just before each run; this only has to outlast it
IDLE_TIMEOUT = 3_600  # the default; seeded sessions were last seen within the last 30 minutes
PEER_SECRET = "bench-peer-cookie-secret"


STORE_NAMES = {"sqlite": "SQLite", "redis": "Redis"}


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n:,}"


# -- Processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Everything the harness starts, each in its own process group, stopped by its own id."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
            )
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.started:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.started.clear()


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5 of stat: pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
            if response.status == 200:  # (a loopback URL of our own)
                return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start:\n{log.read_text(errors='replace')[-3000:]}")


# -- Redis ------------------------------------------------------------------------------------


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


@dataclass
class Redis:
    port: int
    directory: Path

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cli(self, *args: str, data: bytes | None = None) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], input=data, capture_output=True, check=True
        )
        return out.stdout.decode()

    def pipe(self, db: int, commands: bytes) -> None:
        out = self.cli("--pipe", data=resp(b"SELECT", str(db).encode()) + commands)
        if "errors: 0," not in out:
            raise RuntimeError(f"redis-cli --pipe reported errors: {out}")

    def dbsize(self, db: int) -> int:
        return int(self.cli("-n", str(db), "DBSIZE").strip())


def start_redis(procs: Processes, tmp: Path) -> Redis:
    redis = Redis(free_port(), tmp / "redis")
    redis.directory.mkdir()
    procs.start(
        [
            "redis-server",
            "--port",
            str(redis.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            # What the service requires of a Redis (docs/deployment.md): AOF, and no eviction.
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            str(redis.directory),
        ],
        dict(os.environ),
        tmp / "redis.log",
        tmp,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.cli("PING").strip() == "PONG":
                return redis
        except subprocess.CalledProcessError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


# -- The population: one institution, onboarded users, stored sessions --------------------------

REDIS_DB = {
    "small-read": 0,
    "small-create": 1,
    "big-read": 2,
    "big-create": 5,
    "peer-read": 3,
    "peer-login": 4,
}


def new_ids(count: int, path: Path) -> list[str]:
    """Session ids as the service makes them, one per line (all 43 characters, so the wrk
    script can seek to a random line)."""
    ids = [secrets.token_urlsafe(32) for _ in range(count)]
    path.write_text("\n".join(ids) + "\n")
    return ids


def _times(i: int, now: float) -> tuple[float, float, float]:
    """Created, last seen and absolute end of the i-th seeded session: spread out, all alive for
    longer than the run (last seen within 30 minutes, idle timeout one hour)."""
    seen = now - (i % 1_800)
    created = seen - (i * 7 % 21_600)
    return created, seen, created + 43_200


def seed_sqlite(db: Path, population: Population, ids: list[str]) -> None:
    """One transaction of executemany INSERTs, rows in creation order (the order the service
    appends them to the rowid table). The indexes, the unique one on id_hash included, are
    dropped first and built again at the end, from the schema's own statements: inserting a
    million random keys into five indexes costs minutes, sorting them once costs seconds."""
    now = time.time()
    n = len(population.user_ids)
    rows = sorted(
        (
            (
                hash_id(sid),
                population.user_ids[i % n],
                population.institution_id,
                population.contents[i % n],
                *_times(i, now),
                "Mozilla/5.0 (bench)",
            )
            for i, sid in enumerate(ids)
        ),
        key=lambda row: row[4],  # created_at
    )
    bulk_insert_sessions(db, rows)


def seed_redis(redis: Redis, db: int, population: Population, ids: list[str]) -> None:
    """The hashes RedisSessions.create writes (HSET + PEXPIREAT), piped in bulk. The per-user
    and per-institution index sets only serve listing, which the benchmark does not measure.
    The commands are laid out once per user and filled in per session: building a million
    commands argument by argument costs more than Redis takes to run them."""
    now = time.time()
    n = len(population.user_ids)
    # Each user's HSET after the key, up to the timestamps; then the timestamps and the rest.
    middles = [
        resp(b"u", u.encode(), b"i", str(population.institution_id).encode(), b"c", c.encode())[4:]
        for u, c in zip(population.user_ids, population.contents, strict=True)
    ]
    head = b"*16\r\n$4\r\nHSET\r\n$69\r\n"  # the key is "cs:s:" and 64 hex characters
    tail = resp(b"ua", b"Mozilla/5.0 (bench)")[4:]

    def bulk(value: bytes) -> bytes:
        return b"$%d\r\n%b\r\n" % (len(value), value)

    out = []
    for i, sid in enumerate(ids):
        key = b"cs:s:" + hash_id(sid).hex().encode()
        created, seen, expires = _times(i, now)
        ends = b"%d" % int(min(expires, seen + IDLE_TIMEOUT) * 1000)
        out.append(
            b"%b%b\r\n%b$2\r\nca\r\n%b$2\r\nls\r\n%b$2\r\nea\r\n%b%b"
            b"*3\r\n$9\r\nPEXPIREAT\r\n$69\r\n%b\r\n%b"
            % (
                head,
                key,
                middles[i % n],
                bulk(repr(created).encode()),
                bulk(repr(seen).encode()),
                bulk(repr(expires).encode()),
                tail,
                key,
                bulk(ends),
            )
        )
    redis.pipe(db, b"".join(out))


def peer_cookie(sid: str) -> str:
    """express-session's signed cookie value (cookie-signature: HMAC-SHA256, base64, no '=')."""
    mac = hmac.new(PEER_SECRET.encode(), sid.encode(), hashlib.sha256).digest()
    return f"s:{sid}." + base64.b64encode(mac).decode().rstrip("=")


def seed_peer(redis: Redis, db: int, population: Population, count: int, path: Path) -> None:
    """Sessions as connect-redis stores them (``sess:<id>``, JSON, EX), and their cookies."""
    expires = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 7_200))
    n = len(population.user_ids)
    cookies, out = [], []
    for i in range(count):
        sid = secrets.token_urlsafe(24)  # uid-safe(24), as express-session makes them
        cookie = {
            "originalMaxAge": 3_600_000,
            "expires": expires,
            "httpOnly": True,
            "path": "/",
            "sameSite": "lax",
        }
        value = json.dumps({"cookie": cookie, "user": json.loads(population.contents[i % n])})
        out.append(resp(b"SET", f"sess:{sid}".encode(), value.encode(), b"EX", b"7200"))
        cookies.append(peer_cookie(sid))
    redis.pipe(db, b"".join(out))
    path.write_text("\n".join(cookies) + "\n")


# -- Canvas JWTs --------------------------------------------------------------------------------


class TokenPool:
    """Fresh Canvas JWTs, each with its own resource_link_id, minted right before the run that
    uses them. HS256 over the launch parameters plus consumer_key and iat, exactly the bytes
    PyJWT makes (compact JSON, header {"alg":"HS256","typ":"JWT"}), but from a per-user template,
    so a few hundred thousand cost a second or two rather than a minute."""

    MARK = "0" * 40  # the placeholder resource_link_id (Canvas' are 40 hex characters)

    def __init__(self, population: Population, directory: Path) -> None:
        self.secret = population.canvas.secret.encode()
        self.directory = directory
        self.header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        self.templates = []
        for person in population.users:
            payload = population.canvas.launch_params(person, resource_link_id=self.MARK)
            payload["consumer_key"] = population.canvas.consumer_key
            payload["iat"] = 1_234_567_890
            before, after = json.dumps(payload, separators=(",", ":")).split(self.MARK)
            middle, end = after.split("1234567890")
            self.templates.append((before.encode(), middle.encode(), end.encode()))
        self.minted = 0
        self.seconds = 0.0

    def mint(self, count: int) -> Path:
        start = time.perf_counter()
        iat = b"%d" % int(time.time())
        n = len(self.templates)
        lines = []
        for i in range(self.minted, self.minted + count):
            before, middle, end = self.templates[i % n]
            payload = before + b"%040x" % i + middle + iat + end
            signing = self.header + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
            signature = hmac.new(self.secret, signing, hashlib.sha256).digest()
            lines.append(signing + b"." + base64.urlsafe_b64encode(signature).rstrip(b"="))
        self.minted += count
        path = self.directory / f"tokens-{self.minted}.txt"
        path.write_bytes(b"\n".join(lines) + b"\n")
        self.seconds += time.perf_counter() - start
        return path


# -- Servers ------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    kind: str  # "ours", "uvicorn" or "peer"
    store: str  # "sqlite" or "redis"
    data: str  # "small-read", "small-create", "big-read", "big-create", "peer-read", "peer-login"
    workers: int
    cmd: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def our_env(db: Path, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    env.update(
        COMMONS_SESSION_DATABASE_URL=f"sqlite:///{db}",
        COMMONS_SESSION_LOG_LEVEL="warning",  # no access log: the peer writes none either
        COMMONS_SESSION_TOUCH_INTERVAL="3600",  # see docs/performance.md, "What is measured"
        COMMONS_SESSION_JWT_MAX_AGE=str(JWT_MAX_AGE),
        # The limiters stay on, so their cost is measured, but never refuse the one address
        # and the one institution every benchmark request comes from.
        COMMONS_SESSION_RATE_LIMIT_ADDRESS_FAILURES="1000000000",
        COMMONS_SESSION_RATE_LIMIT_INSTITUTION_REQUESTS="1000000000",
    )
    if redis_url:
        env["COMMONS_SESSION_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def plan_servers(plan: Plan, tmp: Path, redis: Redis, population: Population) -> dict[str, Server]:
    servers: dict[str, Server] = {}

    def add(name: str, kind: str, store: str, data: str, workers: int, env: dict[str, str]) -> None:
        port = free_port()
        if kind == "ours":
            cmd = [str(BIN / "commons-session"), "serve", "--port", str(port), "--workers", str(workers)]
        elif kind == "uvicorn":
            cmd = [
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
                "commons_session.http.app:create_app",
            ]
        else:
            cmd = ["node", str(PEER / "server.js")]
            env = dict(env, PORT=str(port), WORKERS=str(workers))
        servers[name] = Server(name, kind, store, data, workers, cmd, env, port)

    records = tmp / "records.db"  # institution and users only: what the Redis deployments read
    for w in plan.workers:
        for data in ("small-read", "small-create", "big-read", "big-create"):
            add(f"sqlite-{data}-{w}w", "ours", "sqlite", data, w, our_env(tmp / f"{data}.db", None))
            add(f"redis-{data}-{w}w", "ours", "redis", data, w, our_env(records, redis.url(REDIS_DB[data])))
        for data in ("peer-read", "peer-login"):
            env = dict(
                os.environ,
                REDIS_URL=redis.url(REDIS_DB[data]),
                SESSION_SECRET=PEER_SECRET,
                CANVAS_SECRETS=json.dumps({population.canvas.consumer_key: population.canvas.secret}),
                JWT_MAX_AGE=str(JWT_MAX_AGE),
            )
            add(f"{data}-{w}w", "peer", "redis", data, w, env)
    add("uvicorn-small-read-1w", "uvicorn", "sqlite", "small-read", 1, our_env(tmp / "small-read.db", None))
    add(
        "sqlite-access-log-1w",
        "ours",
        "sqlite",
        "small-read",
        1,
        our_env(tmp / "small-read.db", None, COMMONS_SESSION_LOG_LEVEL="info"),
    )
    add(
        "sqlite-touch-1w",
        "ours",
        "sqlite",
        "small-read",
        1,
        our_env(tmp / "small-read.db", None, COMMONS_SESSION_TOUCH_INTERVAL="0"),
    )
    # What `make run` and the README give a new user: the access log on, a read recording
    # activity once a minute (issue 14 measures the defaults, not only the tuned settings).
    for data in ("small-read", "small-create"):
        add(
            f"sqlite-{data}-defaults-1w",
            "ours",
            "sqlite",
            data,
            1,
            our_env(tmp / f"{data}.db", None, **DEFAULTS),
        )
        add(
            f"redis-{data}-defaults-1w",
            "ours",
            "redis",
            data,
            1,
            our_env(records, redis.url(REDIS_DB[data]), **DEFAULTS),
        )
    return servers


#: The service's own defaults for the two settings the tuned rows change.
DEFAULTS = {"COMMONS_SESSION_LOG_LEVEL": "info", "COMMONS_SESSION_TOUCH_INTERVAL": "60"}


def start_servers(servers: dict[str, Server], procs: Processes, tmp: Path) -> None:
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    for s in servers.values():
        s.proc = procs.start(s.cmd, s.env, logs / f"{s.name}.log", tmp)
    for s in servers.values():
        assert s.proc is not None
        wait_http(s.url, s.proc, logs / f"{s.name}.log")


# -- Measurements -------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    server_cpu_us: float  # server CPU per request (all its processes)
    redis_cpu_us: float
    wrk_cpu_us: float
    socket_errors: int


@dataclass
class Measure:
    op: str  # "healthz", "read" or "create"
    server: Server
    connections: int
    runs: list[Result] = field(default_factory=list)
    rate_hint: float = 0.0  # for sizing the token pool

    @property
    def key(self) -> str:
        return f"{self.op}@{self.server.name}@c{self.connections}"

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


class Runner:
    def __init__(
        self, tmp: Path, redis: Redis, pool: TokenPool, ids: dict[str, Path], cookies: Path, redis_pgid: int
    ) -> None:
        self.tmp, self.redis, self.pool, self.ids, self.cookies = tmp, redis, pool, ids, cookies
        self.redis_pgid = redis_pgid
        self.wrk_seconds = 0.0

    def _script(self, m: Measure) -> tuple[Path, dict[str, str], str]:
        env = dict(os.environ, BENCH_LUA=str(HERE / "report.lua"))
        s = m.server
        if m.op == "healthz":
            return HERE / "healthz.lua", env, "/healthz"
        if m.op == "read" and s.kind == "peer":
            return HERE / "peer_read.lua", dict(env, COOKIES=str(self.cookies)), "/"
        if m.op == "read":
            return HERE / "read_session.lua", dict(env, IDS=str(self.ids[s.data])), "/"
        return (
            HERE / "create_session.lua",
            dict(env, CREATE_PATH="/api/login" if s.kind == "peer" else "/api/sessions"),
            "/",
        )

    def run(self, m: Measure, seconds: int, record: bool = True) -> Result:
        script, env, path = self._script(m)
        need = int(max(m.rate_hint, 2_000) * seconds * 1.5) + 1_000
        for _ in range(4):
            if m.op == "create":
                tokens = self.pool.mint(need)
                env["TOKENS"] = str(tokens)
            result, stats = self._wrk(m, seconds, script, env, path)
            if m.op == "create":
                tokens.unlink()
                if stats["exhausted"]:
                    need *= 2  # the pool ran dry: run again with a bigger one (tokens never reused)
                    continue
            break
        else:
            raise RuntimeError(f"{m.key}: the token pool ran dry four times")
        if stats["status_errors"] or stats["timeouts"]:
            raise RuntimeError(
                f"{m.key}: {stats['status_errors']} error responses, {stats['timeouts']} timeouts"
            )
        m.rate_hint = max(m.rate_hint, result.rps)
        if record:
            m.runs.append(result)
        return result

    def _wrk(
        self, m: Measure, seconds: int, script: Path, env: dict[str, str], path: str
    ) -> tuple[Result, dict[str, Any]]:
        assert m.server.proc is not None
        cmd = [
            "wrk",
            "-t1",
            f"-c{m.connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            m.server.url + path,
        ]
        server0, redis0, wrk0 = group_cpu(m.server.proc.pid), group_cpu(self.redis_pgid), children_cpu()
        start = time.monotonic()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        self.wrk_seconds += time.monotonic() - start
        server1, redis1, wrk1 = group_cpu(m.server.proc.pid), group_cpu(self.redis_pgid), children_cpu()
        line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
        if out.returncode or line is None:
            raise RuntimeError(f"wrk failed for {m.key}:\n{out.stdout}\n{out.stderr}")
        stats = json.loads(line[len("BENCH ") :])
        n = max(1, stats["requests"])
        result = Result(
            rps=stats["requests"] / (stats["duration_us"] / 1e6),
            p50_ms=stats["p50_us"] / 1000,
            p99_ms=stats["p99_us"] / 1000,
            requests=stats["requests"],
            server_cpu_us=(server1 - server0) / n * 1e6,
            redis_cpu_us=(redis1 - redis0) / n * 1e6,
            wrk_cpu_us=(wrk1 - wrk0) / n * 1e6,
            socket_errors=stats["connect_errors"] + stats["read_errors"] + stats["write_errors"],
        )
        return result, stats


def plan_measures(plan: Plan, servers: dict[str, Server]) -> list[Measure]:
    c = plan.connections
    measures: list[Measure] = []

    def add(op: str, server: str, connections: int = c) -> None:
        measures.append(Measure(op, servers[server], connections))

    for w in plan.workers:
        add("healthz", f"sqlite-small-read-{w}w")
        add("healthz", f"peer-read-{w}w")
        for store in ("sqlite", "redis"):
            add("read", f"{store}-small-read-{w}w")
            add("read", f"{store}-big-read-{w}w")
            add("create", f"{store}-small-create-{w}w")
            add("create", f"{store}-big-create-{w}w")
        add("read", f"peer-read-{w}w")
        add("create", f"peer-login-{w}w")
    add("healthz", "uvicorn-small-read-1w")
    add("read", "uvicorn-small-read-1w")
    add("read", "sqlite-access-log-1w")
    add("read", "sqlite-touch-1w")
    for store in ("sqlite", "redis"):
        add("healthz", f"{store}-small-read-defaults-1w")
        add("read", f"{store}-small-read-defaults-1w")
        add("create", f"{store}-small-create-defaults-1w")
    for level in plan.levels:
        if level == c:
            continue
        for op, server in SWEEP:
            add(op, server, level)
    return measures


# The series plotted against concurrency (one worker / one process each).
SWEEP = [
    ("healthz", "sqlite-small-read-1w"),
    ("read", "sqlite-small-read-1w"),
    ("read", "redis-small-read-1w"),
    ("read", "peer-read-1w"),
    ("create", "sqlite-small-create-1w"),
    ("create", "redis-small-create-1w"),
    ("create", "peer-login-1w"),
]

# -- Profiles ---------------------------------------------------------------------------------

PROFILES = [
    ("read", "sqlite-small-read-1w"),
    ("read", "redis-small-read-1w"),
    ("create", "sqlite-small-create-1w"),
    ("create", "redis-small-create-1w"),
]

CATEGORIES = [  # checked from the innermost frame out; the first frame that matches decides
    ("writing the answer (granian's send, in Rust)", ("ServerErrorMiddleware.__call__.<locals>._send",)),
    ("sqlite3 (the query)", ("commons_session/stores/sqlite.py",)),
    ("redis client", ("redis/",)),
    ("JWT verify (PyJWT, hmac)", ("jwt/", "commons_session/domain/tokens.py", "hmac.py")),
    ("json", ("json/",)),
    ("metrics (prometheus_client)", ("prometheus_client/", "commons_session/metrics.py")),
    ("rate limiter", ("commons_session/http/ratelimit.py", "ipaddress.py")),
    ("starlette (routing, request, response)", ("starlette/",)),
    ("our middleware (security headers, request id, access log)", ("commons_session/http/middleware.py",)),
    ("our routes, carriers, cookies", ("commons_session/http/",)),
    ("our service, ids and models", ("commons_session/domain/", "hashlib", "secrets.py", "random.py")),
    ("our stores (SQL and Redis glue)", ("commons_session/stores/",)),
    ("asyncio and the ASGI bridge", ("asyncio/", "granian/", "uvloop/", "contextlib.py")),
]


#: A create's steps (issue 14 asks for the breakdown): a sample belongs to the first step, in
#: this order, that any frame of its stack names; the last ones catch what the others leave.
CREATE_STEPS = [
    ("JWT parse (base64url, strict JSON)", ("parse (commons_session/domain/tokens.py",)),
    ("JWT verify (HMAC, claims)", ("verify (commons_session/domain/tokens.py",)),
    # One query since the institution and the user are read together; the other two frames are
    # the fallback (claims that differ from the ones that named the user) and other stores.
    (
        "institution, user and terms lookup",
        ("get_institution_and_user (", "get_institution (", "find_user_accepted ("),
    ),
    ("LTI parameters (identity, profile)", ("parse_identity (", "parse_profile (", "_merge (")),
    ("single-use claim", ("_single_use (",)),
    (
        "rate limits (address, institution)",
        ("RateLimiter.", "commons_session/stores/counters.py", "_admit ("),
    ),
    ("new session (id, hash, contents, insert)", ("_issue (",)),
    ("audit row", ("_emit_created (",)),
    ("commit (one per loop turn, shared)", ("_commit_group (",)),
    ("reading the body", ("read_body (",)),
    (
        "the answer (contents, JSON, cookie)",
        ("SessionService.contents (", "FastJSONResponse", "set_session_cookie ("),
    ),
    ("writing the answer (granian's send, in Rust)", ("ServerErrorMiddleware.__call__.<locals>._send",)),
    ("service, the rest (deadline, transaction scope)", ("create_from_jwt (",)),
    ("route, the rest (cross-site check, cookies held)", ("create_session (",)),
    ("HTTP layers (middleware, routing)", ("commons_session/http/", "starlette/")),
]


def profile(runner: Runner, m: Measure, seconds: int, out: Path) -> dict[str, Any]:
    """py-spy samples the server's worker (non-blocking, 250 Hz) while wrk drives it."""
    assert m.server.proc is not None
    raw = out / f"profile-{m.op}-{m.server.name}.txt"
    spy = subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(m.server.proc.pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "250",
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    runner.run(m, seconds + 1, record=False)
    _, err = spy.communicate(timeout=seconds + 30)
    if spy.returncode or not raw.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    return summarise_profile(raw)


def summarise_profile(raw: Path) -> dict[str, Any]:
    """Shares of the worker's sampled (non-idle) Python time: per category, by the innermost
    frame that names one, and per function where the sample was taken (self time)."""
    total = 0
    own: dict[str, int] = {}
    categories: dict[str, int] = {}
    steps: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames or "commons_session/cli.py" in stack:  # the supervising main process
            continue
        count = int(count_text)
        total += count
        name, _, where = frames[-1].partition(" (")
        leaf = f"{name} ({where.rsplit(':', 1)[0]})"
        own[leaf] = own.get(leaf, 0) + count
        category = "other"
        for frame in reversed(frames):
            found = next((label for label, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if found:
                category = found
                break
        categories[category] = categories.get(category, 0) + count
        step = next(
            (label for label, keys in CREATE_STEPS if any(k in f for f in frames for k in keys)),
            "event loop and the rest",
        )
        steps[step] = steps.get(step, 0) + count
    top = sorted(own.items(), key=lambda kv: -kv[1])[:12]
    order = [label for label, _ in CREATE_STEPS] + ["event loop and the rest"]
    return {
        "samples": total,
        "steps": [(k, steps[k] / max(total, 1)) for k in order if k in steps],
        "top": [(k, v / max(total, 1)) for k, v in top],
        "categories": sorted(((k, v / max(total, 1)) for k, v in categories.items()), key=lambda kv: -kv[1]),
    }


# -- The report -------------------------------------------------------------------------------


def fmt_rps(x: float) -> str:
    return f"{x:,.0f}"


def describe(m: Measure, plan: Plan) -> tuple[str, str, str, str]:
    s = m.server
    who = {"ours": "commons-session", "uvicorn": "commons-session on uvicorn", "peer": "peer (Node.js)"}[
        s.kind
    ]
    op = {"healthz": "GET /healthz", "read": "read", "create": "create"}[m.op]
    if s.kind == "peer":
        op = {
            "healthz": "GET /healthz",
            "read": "read (GET /api/session)",
            "create": "login (POST /api/login)",
        }[m.op]
    elif m.op == "read":
        op = "read (GET /api/sessions/{id})"
    elif m.op == "create":
        op = "create (POST /api/sessions)"
    if s.name == "sqlite-access-log-1w":
        who += ", access log on"
    if s.name == "sqlite-touch-1w":
        who += ", touch on every read"
    if s.name.endswith("-defaults-1w"):
        who += ", default settings (access log on, touch every 60 s)"
    store = {"sqlite": "SQLite", "redis": "Redis"}[s.store]
    size = {
        "small-read": plan.small,
        "small-create": plan.small,
        "big-read": plan.big,
        "big-create": plan.big,
        "peer-read": plan.small,
        "peer-login": plan.small,
    }[s.data]
    unit = "process" if s.kind == "peer" else "worker"
    return (
        who,
        op,
        f"{store}, {size_label(size)}",
        f"{s.workers} {unit}{'es' if unit == 'process' and s.workers > 1 else 's' if s.workers > 1 else ''}",
    )


def matrix_table(measures: list[Measure], plan: Plan) -> str:
    rows = [
        "| service | operation | store, sessions | workers | req/s | p50 ms | p99 ms | p99/p50 |"
        " server CPU µs/req | Redis CPU µs/req | runs (req/s) |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for m in measures:
        if m.connections != plan.connections:
            continue
        who, op, store, workers = describe(m, plan)
        if m.op == "healthz":
            store = "none"
        p50, p99 = m.median("p50_ms"), m.median("p99_ms")
        redis_cpu = (
            f"{m.median('redis_cpu_us'):.0f}" if m.server.store == "redis" and m.op != "healthz" else ""
        )
        rows.append(
            f"| {who} | {op} | {store} | {workers} | {fmt_rps(m.median('rps'))} | {p50:.2f} | {p99:.2f} |"
            f" {p99 / p50:.1f} | {m.median('server_cpu_us'):.0f} | {redis_cpu} |"
            f" {', '.join(fmt_rps(r.rps) for r in m.runs)} |"
        )
    return "\n".join(rows)


def sweep_table(measures: list[Measure], plan: Plan) -> str:
    index = {(m.op, m.server.name, m.connections): m for m in measures}
    head = "| series | " + " | ".join(f"c={c}" for c in plan.levels) + " |"
    rows = [head, "|---|" + "--:|" * len(plan.levels)]
    for op, name in SWEEP:
        m0 = index[(op, name, plan.levels[0])]
        who, what, store, _ = describe(m0, plan)
        cells = []
        for c in plan.levels:
            m = index[(op, name, c)]
            cells.append(f"{fmt_rps(m.median('rps'))} / {m.median('p99_ms'):.1f}")
        label = f"{who}: {what}" + ("" if op == "healthz" else f", {store}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(measures: list[Measure], plan: Plan, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {(m.op, m.server.name, m.connections): m for m in measures}
    written = []
    for metric, ylabel, filename in (
        ("rps", "requests per second (median)", "throughput.png"),
        ("p99_ms", "p99 latency, ms (median)", "p99.png"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, ops, title in ((axes[0], ("healthz", "read"), "Reads"), (axes[1], ("create",), "Creates")):
            for op, name in SWEEP:
                if op not in ops:
                    continue
                m0 = index[(op, name, plan.levels[0])]
                who, what, store, _ = describe(m0, plan)
                label = f"{who}: {what.split(' (')[0]}" + (
                    "" if op == "healthz" else f" ({store.split(',')[0]})"
                )
                ys = [index[(op, name, c)].median(metric) for c in plan.levels]
                style = "--" if m0.server.kind == "peer" else ":" if op == "healthz" else "-"
                ax.plot(plan.levels, ys, style, marker="o", label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(plan.levels, [str(c) for c in plan.levels])
            if metric == "p99_ms":
                ax.set_yscale("log")
            ax.set_xlabel("concurrent connections (wrk -c)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title}, one worker / one process")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=110)
        plt.close(fig)
        written.append(filename)
    return written


@dataclass
class Check:
    name: str
    value: float
    target: str
    ok: bool
    detail: str


def checks(measures: list[Measure], plan: Plan) -> list[Check]:
    c = plan.connections
    idx = {(m.op, m.server.name): m for m in measures if m.connections == c}

    def rps(op: str, name: str) -> float:
        return idx[(op, name)].median("rps")

    out: list[Check] = []
    for w in plan.workers:
        note = "" if w == 1 else f" ({w} workers / processes)"
        r = rps("read", f"sqlite-small-read-{w}w") / rps("healthz", f"sqlite-small-read-{w}w")
        out.append(
            Check(
                f"Read on SQLite vs own /healthz{note}",
                r,
                "≥ 0.6",
                r >= 0.6,
                f"same server process, {size_label(plan.small)} sessions",
            )
        )
        r = rps("read", f"redis-small-read-{w}w") / rps("read", f"peer-read-{w}w")
        out.append(Check(f"Read on Redis vs the peer's read{note}", r, "≥ 2.0", r >= 2.0, "both on Redis"))
        r = rps("create", f"redis-small-create-{w}w") / rps("create", f"peer-login-{w}w")
        out.append(Check(f"Create on Redis vs the peer's login{note}", r, "≥ 1.2", r >= 1.2, "both on Redis"))
        r = rps("create", f"sqlite-small-create-{w}w") / rps("create", f"peer-login-{w}w")
        out.append(
            Check(
                f"Create on SQLite vs the peer's login{note}",
                r,
                "≥ 1.2",
                r >= 1.2,
                "ours on the embedded default",
            )
        )
        for op in ("read", "create"):
            for store in ("sqlite", "redis"):
                r = rps(op, f"{store}-big-{op}-{w}w") / rps(op, f"{store}-small-{op}-{w}w")
                out.append(
                    Check(
                        f"{op.capitalize()} on {STORE_NAMES[store]}"
                        f", {size_label(plan.big)} vs {size_label(plan.small)} sessions{note}",
                        r,
                        "≥ 0.9",
                        r >= 0.9,
                        "",
                    )
                )
        for store in ("sqlite", "redis"):
            for data in ("small-read", "big-read"):
                m = idx[("read", f"{store}-{data}-{w}w")]
                r = m.median("p99_ms") / m.median("p50_ms")
                size = size_label(plan.small if data == "small-read" else plan.big)
                out.append(
                    Check(
                        f"Read p99 / p50 at {c} connections, {STORE_NAMES[store]}, {size}{note}",
                        r,
                        "≤ 4",
                        r <= 4,
                        f"p50 {m.median('p50_ms'):.2f} ms, p99 {m.median('p99_ms'):.2f} ms",
                    )
                )
    # The same targets in the default configuration, one worker (what `make run` gives).
    d = "defaults-1w"
    r = rps("read", f"sqlite-small-read-{d}") / rps("healthz", f"sqlite-small-read-{d}")
    out.append(Check("Read on SQLite vs own /healthz, default settings", r, "≥ 0.6", r >= 0.6, "same server"))
    r = rps("read", f"redis-small-read-{d}") / rps("read", "peer-read-1w")
    out.append(
        Check("Read on Redis vs the peer's read, default settings", r, "≥ 2.0", r >= 2.0, "both on Redis")
    )
    for store in ("redis", "sqlite"):
        r = rps("create", f"{store}-small-create-{d}") / rps("create", "peer-login-1w")
        out.append(
            Check(
                f"Create on {STORE_NAMES[store]} vs the peer's login, default settings",
                r,
                "≥ 1.2",
                r >= 1.2,
                "",
            )
        )
    return out


def checks_table(found: list[Check]) -> str:
    rows = ["| target | ratio | wanted | met |", "|---|--:|---|---|"]
    for ch in found:
        rows.append(
            f"| {ch.name}{' — ' + ch.detail if ch.detail else ''} | {ch.value:.2f} | {ch.target} |"
            f" {'yes' if ch.ok else '**no**'} |"
        )
    return "\n".join(rows)


def profile_section(profiles: dict[str, dict[str, Any]]) -> str:
    parts = []
    for title, p in profiles.items():
        parts.append(f"#### {title} ({p['samples']:,} samples)\n")
        parts.append("| where (innermost frame that names one) | share |\n|---|--:|")
        parts += [f"| {k} | {v:.0%} |" for k, v in p["categories"]]
        parts.append("\n| function where the sample was taken (self time) | share |\n|---|--:|")
        parts += [f"| `{k}` | {v:.0%} |" for k, v in p["top"]]
        if title.startswith("create"):
            parts.append("\n| step of the create (every frame below it included) | share |\n|---|--:|")
            parts += [f"| {k} | {v:.0%} |" for k, v in p.get("steps", [])]
        parts.append("")
    return "\n".join(parts)


def fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    if "{{" in template:
        raise RuntimeError(
            f"unfilled placeholder in the report template near {template[template.index('{{') :][:40]!r}"
        )
    return template


# -- Main ---------------------------------------------------------------------------------------


def require_tools() -> None:
    missing = [
        tool for tool in ("wrk", "redis-server", "redis-cli", "node", "npm") if shutil.which(tool) is None
    ]
    if missing:
        raise SystemExit(
            f"missing: {', '.join(missing)}. `make bench` installs wrk (Debian's `wrk`) when run as root;"
            " redis-server and redis-cli come from `redis-server`/`redis-tools`, node and npm from `nodejs`."
        )


def npm_ci() -> float:
    start = time.perf_counter()
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PEER,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


@contextlib.contextmanager
def step(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    print(f"[bench] {name} ...", flush=True)
    yield
    timings[name] = time.perf_counter() - start
    print(f"[bench] {name}: {timings[name]:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run of every step, tiny sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where performance.md goes")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    began = time.perf_counter()
    require_tools()
    timings: dict[str, float] = {}
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-"))
    figures_dir = args.out / "performance"
    figures_dir.mkdir(parents=True, exist_ok=True)
    results_dir = HERE / "results" if not args.smoke else args.out
    results_dir.mkdir(exist_ok=True)
    try:
        with step(timings, "npm ci (the peer)"):
            npm_ci()
        redis = start_redis(procs, tmp)
        with step(timings, "onboard users"):
            population = onboard(tmp / "records.db", plan.users)
            for data in ("small-read", "small-create", "big-read"):
                shutil.copy(tmp / "records.db", tmp / f"{data}.db")
        ids = {"small-read": tmp / "ids-small.txt", "big-read": tmp / "ids-big.txt"}
        small_ids = new_ids(plan.small, ids["small-read"])
        big_ids = new_ids(plan.big, ids["big-read"])
        ids["small-create"], ids["big-create"] = ids["small-read"], ids["big-read"]
        with step(timings, f"seed SQLite, {size_label(plan.small)} sessions (x2)"):
            seed_sqlite(tmp / "small-read.db", population, small_ids)
            seed_sqlite(tmp / "small-create.db", population, small_ids)
        with step(timings, f"seed SQLite, {size_label(plan.big)} sessions"):
            seed_sqlite(tmp / "big-read.db", population, big_ids)
        with step(timings, f"copy the {size_label(plan.big)} SQLite file for the creates"):
            shutil.copy(tmp / "big-read.db", tmp / "big-create.db")
        with step(timings, f"seed Redis, {size_label(plan.small)} sessions (x2)"):
            seed_redis(redis, REDIS_DB["small-read"], population, small_ids)
            seed_redis(redis, REDIS_DB["small-create"], population, small_ids)
        with step(timings, f"seed Redis, {size_label(plan.big)} sessions (x2)"):
            seed_redis(redis, REDIS_DB["big-read"], population, big_ids)
            seed_redis(redis, REDIS_DB["big-create"], population, big_ids)
        with step(timings, f"seed the peer, {size_label(plan.small)} sessions"):
            seed_peer(redis, REDIS_DB["peer-read"], population, plan.small, tmp / "cookies.txt")
        with step(timings, "SQLite call styles (in-process)"):
            from stack import bench_store_call

            store_us = bench_store_call(tmp / "small-read.db", small_ids, plan.store_calls)
        servers = plan_servers(plan, tmp, redis, population)
        with step(timings, f"start {len(servers)} servers"):
            start_servers(servers, procs, tmp)
        redis_pgid = procs.started[0].pid
        pool = TokenPool(population, tmp)
        runner = Runner(tmp, redis, pool, ids, tmp / "cookies.txt", redis_pgid)
        measures = plan_measures(plan, servers)
        with step(timings, "warm-up"):
            if plan.warmup:
                for m in measures:
                    if m.connections == plan.connections:
                        runner.run(m, plan.warmup, record=False)
        for r in range(plan.rounds):
            with step(timings, f"round {r + 1} of {plan.rounds} ({len(measures)} measurements)"):
                for m in measures:
                    runner.run(m, plan.seconds)
        profiles: dict[str, dict[str, Any]] = {}
        with step(timings, "profiles (py-spy)"):
            for op, name in PROFILES[: plan.profiles]:
                m = Measure(
                    op,
                    servers[name],
                    plan.connections,
                    rate_hint=next(x.median("rps") for x in measures if x.op == op and x.server.name == name),
                )
                _, what, store, _ = describe(m, plan)
                profiles[f"{what}, {store}, one worker, {plan.connections} connections"] = profile(
                    runner, m, plan.profile_seconds, tmp
                )
        with step(timings, "scale-out: PostgreSQL + Redis, one instance and two"):
            import scale_out  # here: it imports this module

            scaled = scale_out.measure(
                tmp,
                procs,
                redis,
                redis_pgid,
                seconds=plan.seconds,
                rounds=plan.rounds,
                sessions=plan.small,
                connections=plan.connections,
            )
        counts = {
            "SQLite small-create after the run": sqlite_count(tmp / "small-create.db"),
            "SQLite big-create after the run": sqlite_count(tmp / "big-create.db"),
            "Redis small-create after the run": redis.dbsize(REDIS_DB["small-create"]),
            "Redis big-create after the run": redis.dbsize(REDIS_DB["big-create"]),
        }
    finally:
        procs.stop_all()
    with step(timings, "report and plots"):
        pngs = plot(measures, plan, figures_dir)
        found = checks(measures, plan)
        elapsed = time.perf_counter() - began + 5  # the report itself, and stopping
        raw = {
            "plan": dataclasses.asdict(plan),
            "timings": timings,
            "tokens_minted": pool.minted,
            "counts": counts,
            "store_us": store_us,
            "measures": [{"key": m.key, "runs": [dataclasses.asdict(r) for r in m.runs]} for m in measures],
            "checks": [dataclasses.asdict(c) for c in found],
            "profiles": profiles,
            "scale_out": {k: dataclasses.asdict(v) for k, v in scaled.items()},
            "elapsed_s": elapsed,
        }
        (results_dir / "run.json").write_text(json.dumps(raw, indent=2))
        report = fill(
            (HERE / "report.md").read_text(),
            {
                "command": "make bench" if not args.smoke else "bench/run.py --smoke",
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": machine(),
                "elapsed": f"{elapsed / 60:.1f} minutes",
                "plan": plan_text(plan, len(measures)),
                "checks": checks_table(found),
                "matrix": matrix_table(measures, plan),
                "sweep": sweep_table(measures, plan),
                "connections": str(plan.connections),
                "throughput_png": f"performance/{pngs[0]}",
                "p99_png": f"performance/{pngs[1]}",
                "setup": setup_table(timings, pool, counts, plan),
                "store_calls": (
                    f"| sqlite3 on the loop thread | {store_us['direct']:.1f} | 1.0 |\n"
                    f"| the same query via `asyncio.to_thread` | {store_us['thread']:.1f} |"
                    f" {store_us['thread'] / store_us['direct']:.1f} |"
                ),
                "server_choice": server_choice(measures, plan),
                "profiles": profile_section(profiles),
                "scale_out": scale_out.table(scaled),
                "small": size_label(plan.small),
                "big": size_label(plan.big),
            },
        )
        (args.out / "performance.md").write_text(report)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[bench] wrote {args.out / 'performance.md'} in {elapsed / 60:.1f} minutes")
    for ch in found:
        print(f"[bench] {'ok ' if ch.ok else 'GAP'} {ch.name}: {ch.value:.2f} (wanted {ch.target})")
    return 0


def sqlite_count(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])


def machine() -> str:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    import granian

    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, granian {granian.__version__},"
        f" node {version(['node', '--version'])}, {version(['redis-server', '--version']).split(' sha')[0]},"
        f" {version(['wrk', '--version']).split(' [')[0]}"
    )


def plan_text(plan: Plan, n: int) -> str:
    return (
        f"{plan.rounds} interleaved rounds of {n} measurements; each measurement {plan.seconds} s of"
        f" `wrk -t1 -c{plan.connections}` (the sweep: -c {', '.join(map(str, plan.levels))}) after one"
        f" {plan.warmup} s warm-up per server and operation; every figure is the median of the"
        f" {plan.rounds} runs"
    )


def setup_table(timings: dict[str, float], pool: TokenPool, counts: dict[str, int], plan: Plan) -> str:
    rows = ["| step | seconds |", "|---|--:|"]
    rows += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    rows.append(f"| minting {pool.minted:,} Canvas JWTs (between runs) | {pool.seconds:.1f} |")
    rows.append("\n| stored sessions | count |\n|---|--:|")
    rows += [f"| {k} | {v:,} |" for k, v in counts.items()]
    return "\n".join(rows)


def server_choice(measures: list[Measure], plan: Plan) -> str:
    idx = {(m.op, m.server.name): m for m in measures if m.connections == plan.connections}
    rows = [
        f"| server (one worker, SQLite, {size_label(plan.small)} sessions) | /healthz req/s | read req/s |"
        " read / own healthz | server CPU µs/read |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, label in (
        ("sqlite-small-read-1w", "granian (uvloop), `commons-session serve`"),
        ("uvicorn-small-read-1w", "uvicorn (uvloop + httptools)"),
    ):
        h, r = idx[("healthz", name)].median("rps"), idx[("read", name)].median("rps")
        cpu = idx[("read", name)].median("server_cpu_us")
        rows.append(f"| {label} | {fmt_rps(h)} | {fmt_rps(r)} | {r / h:.2f} | {cpu:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
