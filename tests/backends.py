"""Throwaway backends for tests: a PostgreSQL database (or a whole server, for outage tests), a
Redis server, and a three-master Redis Cluster, all on loopback, all removed afterwards.

Each helper skips the test when the binaries are missing; CI sets COMMONS_SESSION_TEST_NO_SKIP,
which turns any skip into a failure (see conftest.py), so a backend can never pass by absence.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The machine's own PostgreSQL (trust auth); tests create and drop databases of their own on it.
ADMIN_URL = os.environ.get(
    "COMMONS_SESSION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require(binary: str) -> str:
    found = shutil.which(binary) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{binary}"))), None
    )
    if found is None:
        pytest.skip(f"{binary} is not installed")
    return found


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready")


# -- PostgreSQL -----------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(admin_url: str = ADMIN_URL) -> Iterator[str]:
    """A fresh database on an existing server; dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = "cs_test_" + secrets.token_hex(6)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {admin_url}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class PostgresServer:
    """A PostgreSQL server of the test's own, so it can be stopped and started again."""

    data: Path
    port: int
    pg_ctl: str

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        # No pipes: the server that pg_ctl forks would hold them open and run() would never end.
        subprocess.run(
            ["runuser", "-u", "postgres", "--", self.pg_ctl, "-D", str(self.data), "-w", "-t", "30", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.data.parent / "server.log"), "-o", options, "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    initdb, pg_ctl = _require("initdb"), _require("pg_ctl")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("runuser is needed to run PostgreSQL as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="cs-pg-"))
    shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(
        ["runuser", "-u", "postgres", "--", initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    server = PostgresServer(data, free_port(), pg_ctl)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- Redis ----------------------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    directory: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    #: AOF in the server's own directory, as the service requires (docs/configuration.md):
    #: fsync on every write, so even a kill -9 loses no acknowledged marker or session.
    persistent: bool = True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = _require("redis-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--appenddirname",
                f"appendonly-{self.port}",  # cluster nodes share the directory
                "--dir",
                str(self.directory),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def accepting() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True

        _wait(accepting, "redis")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def redis_server(*, persistent: bool = True) -> Iterator[RedisServer]:
    """A throwaway Redis; ``persistent=False`` is the volatile one the service refuses."""
    directory = Path(tempfile.mkdtemp(prefix="cs-redis-"))
    server = RedisServer(free_port(), directory, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is a valid port and free too: Redis
    refuses to start a cluster node above 55535."""
    while True:
        port = free_port()
        if port + 10_000 <= 65_535:
            with contextlib.suppress(OSError), socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10_000))
                return port


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[str]:
    """A Redis Cluster of ``masters`` nodes on loopback; yields a ``redis+cluster://`` URL."""
    cli = _require("redis-cli")
    directory = Path(tempfile.mkdtemp(prefix="cs-cluster-"))
    nodes = []
    try:
        for _ in range(masters):
            port = _cluster_port()
            node = RedisServer(
                port,
                directory,
                (
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                ),
            )
            node.start()
            nodes.append(node)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ready() -> bool:
            info = subprocess.run(
                [cli, "-p", str(nodes[0].port), "cluster", "info"], capture_output=True, text=True
            ).stdout
            return "cluster_state:ok" in info

        _wait(ready, "redis cluster")
        yield f"redis+cluster://127.0.0.1:{nodes[0].port}"
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(directory, ignore_errors=True)
