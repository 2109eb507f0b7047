"""SQLite's ``atomic()`` (one write transaction for a create's claim, session and audit row):
what the contract suite cannot say for every backend. A transaction inside it is a savepoint,
undone alone; a statement from another task while it is open is refused, never silently made
part of it; and a transaction SQLite rolled back by itself is reported, not taken as committed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from commons_session.domain.audit import AuditEvent
from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import Identity, Profile, SessionRecord
from commons_session.domain.service import Policy, SessionService
from commons_session.domain.terms import Terms
from commons_session.errors import StoreUnavailable
from commons_session.stores.sqlite import SqliteStores

from ..canvas import CanvasUser, FakeCanvas

NOW = 1_800_000_000.0
TERMS = Terms("v1", "Be kind.")


def _record(user_id: str = "u") -> SessionRecord:
    return SessionRecord(
        hash_id(new_session_id()), user_id, 1, {"userId": user_id}, NOW, NOW, NOW + 100, None
    )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[SqliteStores]:
    opened = SqliteStores(tmp_path / "atomic.db")
    yield opened
    asyncio.run(opened.close())


def test_a_transaction_inside_atomic_is_undone_alone_when_it_fails(stores: SqliteStores) -> None:
    async def body() -> None:
        outer, inner = _record("outer"), _record("inner")
        async with stores.atomic():
            await stores.sessions.create(outer)
            with pytest.raises(LookupError):
                async with stores.sessions.db.transaction() as tx:  # type: ignore[attr-defined]
                    await tx.execute("DELETE FROM sessions WHERE user_id = 'outer'")
                    await stores.sessions.create(inner)
                    raise LookupError
            async with stores.sessions.db.transaction():  # type: ignore[attr-defined]
                await stores.records.add_audit_event(AuditEvent("launch", NOW, user_id="inner"))
        assert await stores.sessions.get(outer.id_hash) == outer
        assert await stores.sessions.get(inner.id_hash) is None
        assert len(await stores.records.list_audit_events(user_id="inner")) == 1

    asyncio.run(body())


def test_another_tasks_statement_inside_an_open_scope_is_refused(stores: SqliteStores) -> None:
    async def body() -> None:
        record = _record()
        entered, leave = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with stores.atomic():
                await stores.sessions.create(record)
                entered.set()
                await leave.wait()  # what the scope forbids: waiting on something else

        task = asyncio.ensure_future(holder())
        await entered.wait()
        with pytest.raises(RuntimeError):
            await stores.sessions.get(record.id_hash)
        leave.set()
        await task
        assert await stores.sessions.get(record.id_hash) == record

    asyncio.run(body())


def test_a_scope_sqlite_rolled_back_by_itself_is_reported_and_keeps_nothing(stores: SqliteStores) -> None:
    async def body() -> None:
        record = _record()
        with pytest.raises(StoreUnavailable):
            async with stores.atomic():
                await stores.sessions.create(record)
                stores.conn.execute("ROLLBACK")  # as SQLite does on an I/O error or a full disk
        assert await stores.sessions.get(record.id_hash) is None
        async with stores.atomic():  # and the connection is usable again
            await stores.sessions.create(record)
        assert await stores.sessions.get(record.id_hash) == record

    asyncio.run(body())


# -- the create path -------------------------------------------------------------------------


class _Create:
    """A service on SQLite with an onboarded user, and every statement it sends."""

    def __init__(self, stores: SqliteStores) -> None:
        self.stores = stores
        self.canvas, self.user = FakeCanvas("key-atomic", "atomic-secret"), CanvasUser()
        self.statements: list[str] = []
        events: list[AuditEvent] = []

        async def sink(event: AuditEvent) -> None:
            events.append(event)
            await stores.records.add_audit_event(event)

        self.events = events
        self.service = SessionService(stores, Policy(), TERMS, events=sink)

        async def onboard() -> None:
            records = stores.records
            institution = await records.add_institution(
                self.canvas.consumer_key, "U", self.canvas.secret, NOW
            )
            identity = Identity(institution.id, self.canvas.guid, self.user.lti_user_id)
            user = await records.record_launch(identity, Profile(full_name="Ada"), {}, NOW)
            await records.accept_terms(user.id, TERMS.version, NOW)

        asyncio.run(onboard())
        stores.conn.set_trace_callback(self.statements.append)

    def create(self, token: str) -> str:
        return asyncio.run(self.service.create_from_jwt(token)).session_id


def test_a_create_commits_its_claim_session_and_audit_row_once(stores: SqliteStores) -> None:
    world = _Create(stores)
    world.create(world.canvas.jwt_token(world.user))
    writes = [s.split(" (")[0].split(" SET ")[0] for s in world.statements if not s.startswith("SELECT")]
    assert writes == [
        "BEGIN IMMEDIATE",
        "INSERT INTO once_claims",
        "INSERT INTO sessions",
        "UPDATE once_claims",  # the provisional claim made final
        "INSERT INTO audit_events",
        "COMMIT",
    ]


def test_a_create_whose_session_insert_fails_keeps_no_claim_and_no_audit_row(stores: SqliteStores) -> None:
    world = _Create(stores)
    token = world.canvas.jwt_token(world.user)
    stores.conn.execute(
        "CREATE TRIGGER down BEFORE INSERT ON sessions BEGIN SELECT RAISE(ABORT, 'down'); END"
    )
    with pytest.raises(Exception, match="down"):
        world.create(token)
    assert stores.conn.execute("SELECT count(*) FROM once_claims").fetchone()[0] == 0
    assert [e.event for e in world.events] == []
    stores.conn.execute("DROP TRIGGER down")
    assert world.create(token)  # the same token: its claim was not kept
    assert [e.event for e in world.events] == ["session_created"]
