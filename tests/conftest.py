"""Shared fixtures: a real server over a real socket on a real SQLite file, and a Canvas
stand-in that signs like Canvas."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from commons_session.stores.factory import make_stores
from commons_session.stores.sqlite import SqliteStores

from .canvas import CanvasUser, FakeCanvas

ROOT = Path(__file__).resolve().parent.parent


# -- CI must not pass on skipped tests ------------------------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("COMMONS_SESSION_TEST_NO_SKIP") and _skipped:
        print(f"\nCOMMONS_SESSION_TEST_NO_SKIP is set and {len(_skipped)} test(s) were skipped:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- A running server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A ``commons-session serve`` process on its own SQLite file."""

    url: str
    db_path: Path
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    _stores: SqliteStores | None = field(default=None, repr=False)

    @property
    def stores(self) -> SqliteStores:
        """A second connection to the server's database, for arranging and inspecting state."""
        if self._stores is None:
            self._stores = SqliteStores(self.db_path)
        return self._stores

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def add_institution(self, secret: str | None = None, **kwargs: Any) -> FakeCanvas:
        """Register a new institution in whatever database the server uses (in-process: faster
        than the CLI, which tests/test_cli_institutions.py covers)."""
        key = "key-" + secrets.token_hex(6)
        secret = secret or secrets.token_urlsafe(12)
        name = kwargs.pop("name", "Example U")

        async def add() -> None:
            stores = make_stores(self.env["COMMONS_SESSION_DATABASE_URL"], idle_timeout=60, timeout=5)
            await stores.open()
            try:
                await stores.records.add_institution(key, name, secret, time.time())
            finally:
                await stores.close()

        self.run(add())
        return FakeCanvas(key, secret, **kwargs)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "commons_session", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def logs(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def log_entries(self) -> list[dict[str, Any]]:
        """The JSON log lines, parsed: a test asks for fields, not for one serializer's spacing."""
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._stores is not None:
            self.run(self._stores.close())
            self._stores = None


def start_server(tmp: Path, *, detached: bool = False, **settings: Any) -> Server:
    """``commons-session serve`` on a free port and ``tmp/commons-session.db`` (kept across
    restarts in the same ``tmp``). ``detached`` makes it the leader of a new process group, so a
    signal can reach granian's main process and its workers at once (tests/test_crash.py)."""
    port = free_port()
    db_path = tmp / "commons-session.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    env["COMMONS_SESSION_DATABASE_URL"] = f"sqlite:///{db_path}"
    # Every test's deliberate failures come from 127.0.0.1, so rate limits are off unless a test
    # sets them (tests/test_ratelimit.py).
    settings = {"rate_limit_address_failures": 0, "rate_limit_institution_requests": 0, **settings}
    for name, value in settings.items():
        env[f"COMMONS_SESSION_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    log_path = tmp / f"server-{port}.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "commons_session", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            start_new_session=detached,
        )
    server = Server(f"http://127.0.0.1:{port}", db_path, log_path, env, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            if detached:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            server.stop()
            raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the whole run, with the default settings (Secure cookie included).
    Tests isolate themselves by registering their own institution."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """A server of the test's own, with settings overridden, e.g. ``make_server(idle_timeout=1)``."""
    started: list[Server] = []

    def make(**settings: Any) -> Server:
        srv = start_server(tmp_path_factory.mktemp("server"), **settings)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def canvas(server: Server) -> FakeCanvas:
    """A freshly registered institution on the shared server."""
    return server.add_institution()


@pytest.fixture
def user() -> CanvasUser:
    return CanvasUser()


# -- Journeys ---------------------------------------------------------------------------------


def launch(
    server: Server,
    canvas: FakeCanvas,
    user: CanvasUser,
    client: httpx.Client | None = None,
    **kw: Any,
) -> httpx.Response:
    body, headers = canvas.signed_launch(server.url + "/api/lti", user, **kw)
    if client is None:
        return httpx.post(server.url + "/api/lti", content=body, headers=headers)
    return client.post("/api/lti", content=body, headers=headers)


def session_cookie(response: httpx.Response) -> str:
    """The ``session`` value from Set-Cookie (the Secure cookie is never sent back over plain
    HTTP by a client, so tests read it from the header)."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == "session":
            return rest.split(";", 1)[0]
    raise AssertionError(f"no session cookie in {response.headers}")


def accept_terms(server: Server, session_id: str) -> None:
    version = httpx.get(server.url + "/api/terms", headers={"x-session-id": session_id}).json()["version"]
    r = httpx.post(
        server.url + "/api/terms/accept",
        json={"version": version},
        headers={"x-session-id": session_id},
    )
    assert r.status_code == 204, r.text


def onboard(server: Server, canvas: FakeCanvas, user: CanvasUser) -> str:
    """Launch and accept the terms, as a person does once. Returns the launch's session id."""
    response = launch(server, canvas, user)
    assert response.status_code == 303, response.text
    session_id = session_cookie(response)
    accept_terms(server, session_id)
    return session_id


def create_session(server: Server, canvas: FakeCanvas, user: CanvasUser, **kw: Any) -> str:
    """Exchange a fresh Canvas JWT for a session id. Canvas gives byte-identical tokens for the
    same user within one second (and we refuse the second as a replay), so each call here makes
    its token distinct with a fresh ``resource_link_id``, as a launch from another link would."""
    kw.setdefault("resource_link_id", secrets.token_hex(20))
    response = httpx.post(server.url + "/api/sessions", json={"jwt_token": canvas.jwt_token(user, **kw)})
    assert response.status_code == 201, response.text
    return str(response.json()["sessionId"])


@pytest.fixture
def session_id(server: Server, canvas: FakeCanvas, user: CanvasUser) -> str:
    """A live session created from a Canvas JWT by an onboarded user."""
    onboard(server, canvas, user)
    return create_session(server, canvas, user)
