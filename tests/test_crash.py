"""Nothing lost: under a steady mix of creates, reads and logouts, ``kill -9`` the server (the
granian main process and its worker, the whole process group), start it again on the same
database, and every create that got its 201 still reads 200 while every logout that got its
204 stays 401.

Run on SQLite, on PostgreSQL, and on PostgreSQL with sessions in Redis (with AOF, as the service
requires). The chaos cases at the end kill -9 the store instead (Redis, or the whole PostgreSQL
server) under the same traffic, with the service left running: nothing acknowledged is lost or
undone, no used token works again, and ``/readyz`` says 503 for as long as the store is down."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .backends import postgres_database, postgres_server, redis_server
from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, onboard, start_server
from .test_outage import kill_postgres

# -- a server in its own process group -------------------------------------------------------


def start_detached(tmp: Path, **settings: Any) -> Server:
    """``conftest.start_server`` as the leader of a new process group (see ``kill_group``)."""
    return start_server(tmp, detached=True, **settings)


def kill_group(server: Server, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the server's whole process group (main process and workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, sig)


def group_alive(server: Server) -> bool:
    try:
        os.killpg(server.process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group_gone(server: Server, timeout: float = 10) -> None:
    server.process.wait(timeout)
    deadline = time.monotonic() + timeout
    while group_alive(server):  # the workers are not our children: poll until they are gone
        assert time.monotonic() < deadline, "the server's workers outlived it"
        time.sleep(0.02)


@pytest.fixture
def detached(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers with ``start_detached``; every group still running at the end is killed."""
    started: list[Server] = []

    def start(**settings: Any) -> Server:
        srv = start_detached(tmp_path, **settings)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        kill_group(srv)
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.process.wait(10)


@pytest.fixture(params=["sqlite", "postgres", "postgres+redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The settings that point a server at the backend: nothing for SQLite (a file in tmp)."""
    with contextlib.ExitStack() as stack:
        settings: dict[str, str] = {}
        if request.param.startswith("postgres"):
            settings["database_url"] = stack.enter_context(postgres_database())
        if request.param.endswith("redis"):
            settings["redis_url"] = stack.enter_context(redis_server()).url
        yield settings


# -- traffic ----------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the server acknowledged: only answers that reached the client count."""

    live: set[str] = field(default_factory=set)  # 201 and no logout sent
    ended: set[str] = field(default_factory=set)  # logout answered 204
    unknown: set[str] = field(default_factory=set)  # logout sent, no answer (the kill)
    unexpected: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)  # tokens that made a session (201)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _settled_as_ended(ledger: Ledger, session_id: str) -> bool:
    """A session whose logout answered 503 (the store died after, or while, ending it) may
    turn out ended: that is one of the two outcomes the 503 left open, not a loss."""
    with ledger.lock:
        if session_id not in ledger.unknown:
            return False
        ledger.unknown.discard(session_id)
        ledger.ended.add(session_id)
        return True


def client_loop(
    server: Server,
    canvas: FakeCanvas,
    user: CanvasUser,
    ledger: Ledger,
    stop: threading.Event,
    seed: int,
    store_may_fail: bool = False,
) -> None:
    """Creates, reads and logouts of one person's sessions until the server stops answering
    (``store_may_fail``: a 503 ``store_unavailable`` is expected too, and decides nothing)."""
    rng = random.Random(seed)
    mine: list[str] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while not stop.is_set():
            op = rng.choice(["create", "create", "read", "logout"]) if mine else "create"
            try:
                if op == "create":
                    token = canvas.jwt_token(user, custom_request=secrets.token_hex(8))
                    response = client.post("/api/sessions", json={"jwt_token": token})
                    if response.status_code == 201:
                        session_id = response.json()["sessionId"]
                        mine.append(session_id)
                        with ledger.lock:
                            ledger.live.add(session_id)
                            ledger.used.append(token)
                        continue
                elif op == "read":
                    session_id = rng.choice(mine)
                    response = client.get(f"/api/sessions/{session_id}", headers={"x-session-id": session_id})
                    if response.status_code == 200:
                        continue
                    if response.status_code == 401 and _settled_as_ended(ledger, session_id):
                        mine.remove(session_id)  # a logout that answered 503 had ended it after all
                        continue
                else:
                    session_id = mine.pop(rng.randrange(len(mine)))
                    with ledger.lock:
                        ledger.live.discard(session_id)
                        ledger.unknown.add(session_id)
                    response = client.get("/api/sessions/logout", headers={"x-session-id": session_id})
                    if response.status_code == 204:
                        with ledger.lock:
                            ledger.unknown.discard(session_id)
                            ledger.ended.add(session_id)
                        continue
                    if store_may_fail and response.status_code == 503:
                        mine.append(session_id)  # unknown whether it ended: tried again later
                        continue
                    if response.status_code == 401 and _settled_as_ended(ledger, session_id):
                        continue  # the retry of a logout that answered 503 but had ended it
                if store_may_fail and response.status_code == 503:
                    assert response.json()["code"] == "store_unavailable", response.text
                    time.sleep(0.05)
                    continue
            except httpx.TransportError:
                return  # killed under us: whatever was in flight is unknown
            with ledger.lock:
                ledger.unexpected.append(f"{op}: {response.status_code} {response.text[:200]}")


def test_every_acknowledged_create_and_logout_survives_kill_9(
    detached: Callable[..., Server], backend: dict[str, str]
) -> None:
    server = detached(**backend)
    canvas = server.add_institution()
    people = [CanvasUser() for _ in range(3)]
    for person in people:
        onboard(server, canvas, person)

    ledger, stop = Ledger(), threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(server, canvas, person, ledger, stop, i), daemon=True)
        for i, person in enumerate(people)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # a steady mix, then the crash in the middle of it
        with ledger.lock:
            if len(ledger.live) >= 30 and len(ledger.ended) >= 8:
                break
        time.sleep(0.02)
    kill_group(server)
    wait_group_gone(server)
    stop.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()

    assert not ledger.unexpected, ledger.unexpected
    # Enough traffic to mean something, even on a machine too busy to reach the targets above.
    assert len(ledger.live) >= 15 and len(ledger.ended) >= 4, (len(ledger.live), len(ledger.ended))

    restarted = detached(**backend)
    with httpx.Client(base_url=restarted.url, timeout=10) as client:
        lost = [
            s
            for s in ledger.live
            if client.get(f"/api/sessions/{s}", headers={"x-session-id": s}).status_code != 200
        ]
        resurrected = [
            s
            for s in ledger.ended
            if client.get(f"/api/sessions/{s}", headers={"cookie": f"session={s}"}).status_code != 401
        ]
        assert not lost, f"{len(lost)} of {len(ledger.live)} acknowledged sessions were lost"
        assert not resurrected, f"{len(resurrected)} of {len(ledger.ended)} ended sessions came back"
        # In-flight logouts may have landed or not, but never half: 200 or 401, nothing else.
        for s in ledger.unknown:
            assert client.get(f"/api/sessions/{s}", headers={"x-session-id": s}).status_code in (200, 401)
    # The database still takes writes: a fresh session on the restarted server.
    fresh = httpx.post(
        restarted.url + "/api/sessions", json={"jwt_token": canvas.jwt_token(people[0], iat=time.time() - 1)}
    )
    assert fresh.status_code == 201, fresh.text


# -- kill -9 the store under load (chaos) -------------------------------------------------------


@dataclass
class Probe:
    """``/readyz`` polled all along: (monotonic time the probe was sent, status). The time it
    was sent, not answered: on a busy machine a probe the server answered before the kill can
    reach the client well after it."""

    answers: list[tuple[float, int]] = field(default_factory=list)

    def run(self, server: Server, stop: threading.Event) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                sent = time.monotonic()
                with contextlib.suppress(httpx.TransportError):
                    self.answers.append((sent, client.get("/readyz").status_code))
                time.sleep(0.05)


def kill_store_under_load(server: Server, kill: Callable[[], None], restart: Callable[[], None]) -> None:
    canvas = server.add_institution()
    people = [CanvasUser() for _ in range(3)]
    for person in people:
        onboard(server, canvas, person)
    ledger, probe, stop = Ledger(), Probe(), threading.Event()
    threads = [
        threading.Thread(
            target=client_loop, args=(server, canvas, person, ledger, stop, i, True), daemon=True
        )
        for i, person in enumerate(people)
    ]
    threads.append(threading.Thread(target=probe.run, args=(server, stop), daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with ledger.lock:
            if len(ledger.live) >= 30 and len(ledger.ended) >= 8:
                break
        time.sleep(0.02)
    killed = time.monotonic()
    kill()
    time.sleep(2)  # traffic against a dead store
    down_until = time.monotonic()
    restart()
    restarted = time.monotonic()
    ready_deadline = restarted + 15
    while time.monotonic() < ready_deadline and not any(t > restarted and s == 200 for t, s in probe.answers):
        time.sleep(0.1)
    time.sleep(1)  # and traffic again on the recovered store
    stop.set()
    for thread in threads:
        thread.join(15)
        assert not thread.is_alive()

    assert not ledger.unexpected, ledger.unexpected
    assert len(ledger.live) >= 15 and len(ledger.ended) >= 4, (len(ledger.live), len(ledger.ended))
    # /readyz: 503 for every probe answered while the store was down (after the kill had landed),
    # 200 again once it is back, and it stays 200.
    down = [s for t, s in probe.answers if killed + 0.3 < t < down_until]
    assert down and set(down) == {503}, down
    back = [s for t, s in probe.answers if t > restarted]
    assert 200 in back, back
    assert set(back[back.index(200) :]) == {200}, back
    with httpx.Client(base_url=server.url, timeout=10) as client:
        lost = [
            s
            for s in ledger.live
            if client.get(f"/api/sessions/{s}", headers={"x-session-id": s}).status_code != 200
        ]
        undone = [
            s
            for s in ledger.ended
            if client.get(f"/api/sessions/{s}", headers={"x-session-id": s}).status_code != 401
        ]
        reused = [
            t for t in ledger.used if client.post("/api/sessions", json={"jwt_token": t}).status_code != 401
        ]
    assert not lost, f"{len(lost)} of {len(ledger.live)} acknowledged sessions were lost"
    assert not undone, f"{len(undone)} of {len(ledger.ended)} logouts were undone"
    assert not reused, f"{len(reused)} of {len(ledger.used)} used tokens worked again"


@pytest.mark.chaos
def test_kill_9_redis_under_load_loses_no_acknowledged_session_logout_or_used_token(
    detached: Callable[..., Server],
) -> None:
    with postgres_database() as database_url, redis_server() as redis:
        server = detached(database_url=database_url, redis_url=redis.url, store_timeout=1)
        kill_store_under_load(server, redis.stop, redis.start)


@pytest.mark.chaos
def test_kill_9_postgresql_under_load_loses_no_acknowledged_session_logout_or_used_token(
    detached: Callable[..., Server],
) -> None:
    with postgres_server() as postgres:
        server = detached(database_url=postgres.url, store_timeout=1)

        kill_store_under_load(server, lambda: kill_postgres(postgres), postgres.start)
