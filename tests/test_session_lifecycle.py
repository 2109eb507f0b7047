"""Idle timeout and absolute lifetime, enforced by the server.

The service runs on a real SQLite file with a clock the test moves by hand, so hours pass in
microseconds; one test over HTTP shows the same rule in a running server.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from commons_session.domain.models import Identity, Profile, SessionRecord
from commons_session.domain.service import Policy, SessionService
from commons_session.domain.terms import Terms
from commons_session.errors import InvalidSession
from commons_session.stores.base import SessionStore, Stores
from commons_session.stores.sqlite import SqliteStores

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, onboard

T = TypeVar("T")

IDLE = 100
ABSOLUTE = 1_000
TOUCH = 10
T0 = 1_750_000_000.0
TERMS = Terms("v1", "Be kind.")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("ascii")).digest()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def set(self, offset: float) -> None:
        """Move to ``T0 + offset``."""
        self.now = T0 + offset


class World:
    """A service on a real SQLite file, an onboarded user, and a clock under the test's control."""

    def __init__(self, path: Path, sessions: Callable[[SessionStore], SessionStore] = lambda s: s) -> None:
        self.clock = FakeClock(T0)
        self.stores = SqliteStores(path)
        stores = Stores(self.stores.records, sessions(self.stores.sessions), self.stores.once)
        policy = Policy(idle_timeout=IDLE, absolute_timeout=ABSOLUTE, touch_interval=TOUCH)
        self.service = SessionService(stores, policy, TERMS, clock=self.clock)
        self.canvas = FakeCanvas("key-lifecycle", "lifecycle-secret")
        self.user = CanvasUser()
        records = self.stores.records
        institution = run(records.add_institution(self.canvas.consumer_key, "U", self.canvas.secret, T0))
        identity = Identity(institution.id, self.canvas.guid, self.user.lti_user_id)
        found = run(records.record_launch(identity, Profile(full_name=self.user.name), {}, T0))
        run(records.accept_terms(found.id, TERMS.version, T0))
        self._minted = 0

    def new_session(self) -> str:
        """A session created now from a fresh Canvas JWT (each with its own iat, so none replays)."""
        self._minted += 1
        token = self.canvas.jwt_token(self.user, iat=self.clock() - self._minted)
        return run(self.service.create_from_jwt(token)).session_id

    def use(self, session_id: str) -> SessionRecord:
        return run(self.service.authenticate(session_id))

    def is_alive(self, session_id: str) -> bool:
        try:
            self.use(session_id)
        except InvalidSession:
            return False
        return True

    def stored(self, session_id: str) -> SessionRecord | None:
        return run(self.stores.sessions.get(id_hash(session_id)))

    def rows(self, session_id: str) -> int:
        query = "SELECT count(*) FROM sessions WHERE id_hash = ?"
        return int(self.stores.conn.execute(query, (id_hash(session_id),)).fetchone()[0])

    def expires(self, session_id: str) -> float:
        """The ``expires`` a read reports, as POSIX seconds."""
        contents = self.service.contents(session_id, self.use(session_id))
        return datetime.fromisoformat(contents["expires"]).timestamp()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "lifecycle.db")
    yield w
    run(w.stores.close())


def test_session_dies_after_idle_timeout_without_use(world: World) -> None:
    used, unused = world.new_session(), world.new_session()

    world.clock.set(IDLE - 1)
    assert world.is_alive(used)

    world.clock.set(IDLE)
    assert not world.is_alive(unused)
    assert world.stored(unused) is None  # ended on the server, not just refused
    assert world.is_alive(used)  # its last use slid its idle end


def test_session_survives_regular_use_until_absolute_timeout_then_dies(world: World) -> None:
    sid = world.new_session()
    for offset in range(IDLE // 2, ABSOLUTE, IDLE // 2):
        world.clock.set(offset)
        record = world.use(sid)
        assert record.expires_at == T0 + ABSOLUTE  # use never extends the absolute end

    world.clock.set(ABSOLUTE)  # last used IDLE/2 ago: idle would allow it, the lifetime does not
    with pytest.raises(InvalidSession):
        world.use(sid)
    assert world.stored(sid) is None


def test_reads_slide_the_idle_timeout_but_write_at_most_once_per_touch_interval(world: World) -> None:
    sid = world.new_session()
    writes = world.stores.conn.total_changes

    for offset in (1, 5, TOUCH - 0.5):
        world.clock.set(offset)
        world.use(sid)
    record = world.stored(sid)
    assert record is not None
    assert record.last_seen_at == T0
    assert world.stores.conn.total_changes == writes

    world.clock.set(TOUCH)
    world.use(sid)
    record = world.stored(sid)
    assert record is not None
    assert record.last_seen_at == T0 + TOUCH
    assert world.stores.conn.total_changes == writes + 1

    world.clock.set(TOUCH + TOUCH / 2)
    world.use(sid)
    record = world.stored(sid)
    assert record is not None
    assert record.last_seen_at == T0 + TOUCH
    assert world.stores.conn.total_changes == writes + 1

    # Past the first idle end, alive thanks to the touch.
    world.clock.set(IDLE + TOUCH - 1)
    assert world.is_alive(sid)


def test_touch_never_resurrects_a_deleted_session(world: World) -> None:
    sid = world.new_session()
    sessions = world.stores.sessions
    assert run(sessions.touch(id_hash(sid), T0 + 1)) is True

    assert run(sessions.delete(id_hash(sid))) is True
    assert run(sessions.touch(id_hash(sid), T0 + 2)) is False
    assert run(sessions.get(id_hash(sid))) is None
    assert world.rows(sid) == 0


class LogoutBetweenReadAndTouch(SessionStore):
    """Another request logs the session out right after this one read it."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner

    async def create(self, session: SessionRecord) -> None:
        await self.inner.create(session)

    async def get(self, id_hash: bytes) -> SessionRecord | None:
        record = await self.inner.get(id_hash)
        await self.inner.delete(id_hash)
        return record

    async def touch(self, id_hash: bytes, last_seen_at: float) -> bool:
        return await self.inner.touch(id_hash, last_seen_at)

    async def delete(self, id_hash: bytes) -> bool:
        return await self.inner.delete(id_hash)


def test_a_read_racing_a_logout_neither_succeeds_nor_brings_the_session_back(tmp_path: Path) -> None:
    racing = World(tmp_path / "race.db", sessions=LogoutBetweenReadAndTouch)
    try:
        sid = racing.new_session()
        racing.clock.set(TOUCH * 2)  # due for a touch
        with pytest.raises(InvalidSession):
            racing.use(sid)
        assert racing.rows(sid) == 0
    finally:
        run(racing.stores.close())


def test_expires_is_the_earlier_of_the_idle_end_and_the_absolute_end(world: World) -> None:
    sid = world.new_session()
    assert world.expires(sid) == T0 + IDLE

    world.clock.set(IDLE / 2)
    assert world.expires(sid) == T0 + IDLE / 2 + IDLE  # the read touched it

    for offset in range(IDLE, ABSOLUTE - IDLE // 2 + 1, IDLE // 2):  # kept in use up to 950
        world.clock.set(offset)
        world.use(sid)
    assert world.clock() == T0 + ABSOLUTE - IDLE / 2
    assert world.expires(sid) == T0 + ABSOLUTE  # idle would run past the lifetime


def test_expires_is_iso_8601_utc(world: World) -> None:
    sid = world.new_session()
    expires = world.service.contents(sid, world.use(sid))["expires"]
    parsed = datetime.fromisoformat(expires)
    offset = parsed.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0


# -- over HTTP --------------------------------------------------------------------------------


def test_running_server_ends_an_unused_session_after_its_idle_timeout(
    make_server: Callable[..., Server], user: CanvasUser
) -> None:
    srv = make_server(idle_timeout=1, touch_interval=0)
    canvas = srv.add_institution()
    onboard(srv, canvas, user)
    sid = create_session(srv, canvas, user)

    def read() -> httpx.Response:
        return httpx.get(f"{srv.url}/api/sessions/{sid}", headers={"x-session-id": sid})

    # Used every 0.4 s, it outlives its 1 s idle timeout...
    for _ in range(4):
        assert read().status_code == 200
        time.sleep(0.4)
    assert read().status_code == 200

    # ...left alone for 1.5 s, it is gone.
    time.sleep(1.5)
    response = read()
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_session"
