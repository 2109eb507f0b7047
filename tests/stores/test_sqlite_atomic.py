"""SQLite's ``atomic()`` (one write transaction for a create's claim, session and audit row):
what the contract suite cannot say for every backend. A transaction inside it is a savepoint,
undone alone; a statement from another task while it is open is refused, never silently made
part of it; and a transaction SQLite rolled back by itself is reported, not taken as committed.

Group commit: the transactions begun in one turn of the event loop share one commit. Each is
answered only once that commit is on disk (another connection sees it), one that fails is undone
alone, a failed commit fails every one of them, and a write outside any transaction that lands
in the shared one waits for its commit too."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from commons_session.domain.audit import AuditEvent
from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import Identity, Profile, SessionRecord
from commons_session.domain.service import Policy, SessionService
from commons_session.domain.terms import Terms
from commons_session.errors import StoreUnavailable
from commons_session.stores import sqlite as sqlite_module
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
    writes = [
        s.split(" (")[0].split(" SET ")[0]
        for s in world.statements
        if not s.startswith(("SELECT", "PRAGMA busy_timeout"))  # the lock's wait, tested below
    ]
    assert writes == [
        "BEGIN IMMEDIATE",  # alone in its loop turn: no savepoint
        "INSERT INTO once_claims",  # final at once: the transaction takes it back on failure
        "INSERT INTO sessions",
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


# -- group commit ------------------------------------------------------------------------------


def _committed_rows(stores: SqliteStores) -> set[bytes]:
    """What another connection sees: only what was committed."""
    other = sqlite3.connect(stores.path)
    try:
        return {bytes(r[0]) for r in other.execute("SELECT id_hash FROM sessions")}
    finally:
        other.close()


def _commits(stores: SqliteStores) -> list[str]:
    seen: list[str] = []
    stores.conn.set_trace_callback(lambda s: seen.append(s) if s in ("COMMIT", "ROLLBACK") else None)
    return seen


def test_the_transactions_of_one_loop_turn_share_one_commit_and_each_returns_after_it(
    stores: SqliteStores,
) -> None:
    records = [_record(f"u{i}") for i in range(20)]
    commits = _commits(stores)
    visible_on_return: list[bool] = []

    async def member(record: SessionRecord) -> None:
        async with stores.atomic():
            await stores.sessions.create(record)
        visible_on_return.append(record.id_hash in _committed_rows(stores))

    async def body() -> None:
        await asyncio.gather(*(member(r) for r in records))

    asyncio.run(body())
    assert commits == ["COMMIT"]
    assert visible_on_return == [True] * len(records)


def test_lone_writes_of_one_loop_turn_share_one_commit_and_each_returns_after_it(
    stores: SqliteStores,
) -> None:
    """Audit rows, logouts and touches made outside a transaction batch the same way (on the
    Redis configuration every create's audit row is such a write)."""
    records = [_record(f"u{i}") for i in range(10)]

    async def seed() -> None:
        for record in records:
            await stores.sessions.create(record)

    asyncio.run(seed())
    commits = _commits(stores)
    gone_on_return: list[bool] = []

    async def logout(record: SessionRecord) -> None:
        assert await stores.sessions.delete(record.id_hash)
        gone_on_return.append(record.id_hash not in _committed_rows(stores))

    async def body() -> None:
        await asyncio.gather(*(logout(r) for r in records))

    asyncio.run(body())
    assert commits == ["COMMIT"]
    assert gone_on_return == [True] * len(records)


def test_a_member_that_fails_is_undone_alone_and_the_others_commit(stores: SqliteStores) -> None:
    kept, undone = [_record("kept1"), _record("kept2")], _record("undone")

    async def member(record: SessionRecord, fail: bool) -> None:
        async with stores.atomic():
            await stores.sessions.create(record)
            await stores.records.add_audit_event(AuditEvent("launch", NOW, user_id=record.user_id))
            if fail:
                raise LookupError

    async def body() -> list[BaseException | None]:
        members = (member(kept[0], False), member(undone, True), member(kept[1], False))
        return list(await asyncio.gather(*members, return_exceptions=True))

    outcomes = asyncio.run(body())
    assert [type(o) for o in outcomes] == [type(None), LookupError, type(None)]
    assert _committed_rows(stores) == {kept[0].id_hash, kept[1].id_hash}

    async def audited() -> list[str | None]:
        return [e.user_id for e in await stores.records.list_audit_events()]

    assert sorted(u for u in asyncio.run(audited()) if u) == ["kept1", "kept2"]


def test_a_failed_shared_commit_fails_every_member_and_keeps_nothing(stores: SqliteStores) -> None:
    # A deferred constraint is checked at COMMIT: the one real way to make SQLite refuse a commit
    # without breaking the disk (the schema has none; a full disk fails the same way).
    stores.conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    stores.conn.execute("CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    records = [_record(f"u{i}") for i in range(3)]

    async def member(record: SessionRecord, orphan: bool) -> None:
        async with stores.atomic():
            await stores.sessions.create(record)
            if orphan:
                await stores.sessions.db.execute("INSERT INTO child (p) VALUES (42)")  # type: ignore[attr-defined]

    async def body() -> list[BaseException | None]:
        members = [member(r, i == 1) for i, r in enumerate(records)]
        return await asyncio.gather(*members, return_exceptions=True)

    outcomes = asyncio.run(body())
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
    assert _committed_rows(stores) == set()
    assert not stores.conn.in_transaction

    async def again() -> None:  # and the connection is usable again
        async with stores.atomic():
            await stores.sessions.create(records[0])

    asyncio.run(again())
    assert _committed_rows(stores) == {records[0].id_hash}


def test_a_write_outside_any_transaction_that_lands_in_the_shared_one_waits_for_its_commit(
    stores: SqliteStores,
) -> None:
    ending, created = _record("ending"), _record("created")
    asyncio.run(stores.sessions.create(ending))
    seen: dict[str, bool] = {}

    async def creator() -> None:
        async with stores.atomic():
            await stores.sessions.create(created)

    async def logout() -> None:
        # Runs in the same loop turn as the creator, after it began the shared transaction.
        assert stores.database.pending is not None
        assert await stores.sessions.delete(ending.id_hash)
        seen["gone on return"] = ending.id_hash not in _committed_rows(stores)
        assert await stores.sessions.get(created.id_hash) == created  # a read does not wait

    async def body() -> None:
        await asyncio.gather(creator(), logout())

    asyncio.run(body())
    assert seen == {"gone on return": True}
    assert _committed_rows(stores) == {created.id_hash}


def test_a_member_cancelled_while_its_commit_is_pending_reports_the_committed_write(
    stores: SqliteStores,
) -> None:
    """A request's deadline firing in the one loop turn before the commit must not answer 503
    for a write that was then kept (a create's token would be used up)."""
    record = _record()

    async def member() -> str:
        async with stores.atomic():
            await stores.sessions.create(record)
        return "done"

    async def body() -> str:
        task = asyncio.ensure_future(member())
        await asyncio.sleep(0)  # the member has released its savepoint and waits for the commit
        assert stores.database.pending is not None
        task.cancel()
        return await task

    assert asyncio.run(body()) == "done"
    assert _committed_rows(stores) == {record.id_hash}


def test_the_read_guard_checks_the_shm_once_per_loop_turn_and_again_in_the_next(
    stores: SqliteStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads of one turn share one ``access`` of the -shm; the next turn checks again, so an
    -shm made read-only (the SIGBUS case) refuses the next turn's reads."""
    calls: list[str] = []
    real_access = os.access
    writable = {"shm": True}

    def access(path: str, mode: int) -> bool:
        if path.endswith("-shm"):
            calls.append(path)
            return writable["shm"]
        return bool(real_access(path, mode))

    monkeypatch.setattr(os, "access", access)
    db = stores.database

    async def go() -> None:
        await asyncio.gather(*(db.fetchone("SELECT 1") for _ in range(10)))
        assert len(calls) == 1
        await asyncio.sleep(0)
        await db.fetchone("SELECT 1")
        assert len(calls) == 2
        writable["shm"] = False
        await asyncio.sleep(0)
        with pytest.raises(StoreUnavailable):
            await db.fetchone("SELECT 1")

    asyncio.run(go())


# -- another process's write lock ---------------------------------------------------------------


class _OtherProcess:
    """A second connection to the file, as another worker holds it: SQLite's locks between two
    connections of one process are the same as between two processes."""

    def __init__(self, stores: SqliteStores) -> None:
        self.conn = sqlite3.connect(stores.path, isolation_level=None)

    def lock(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def test_a_writer_waiting_for_another_process_lock_leaves_the_loop_serving(stores: SqliteStores) -> None:
    """SQLite's own wait for the lock (busy_timeout) sleeps in the event loop's thread: nothing
    else of the worker ran until the other process committed, and here, where that commit is
    itself a loop callback, the write would have failed after five seconds."""
    known, new = _record("known"), _record("new")
    asyncio.run(stores.sessions.create(known))
    other = _OtherProcess(stores)
    other.lock()
    served: list[bool] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        loop.call_later(0.2, other.commit)
        write = asyncio.ensure_future(stores.sessions.create(new))
        while not write.done():  # the loop goes on: reads are answered while the write waits
            served.append(await stores.sessions.get(known.id_hash) == known)
            await asyncio.sleep(0.02)
        await write
        assert 0.2 <= loop.time() - started < 2

    asyncio.run(body())
    assert len(served) >= 5 and all(served)
    assert _committed_rows(stores) == {known.id_hash, new.id_hash}


def test_writers_waiting_for_the_lock_join_one_transaction_once_it_is_free(stores: SqliteStores) -> None:
    records = [_record(f"u{i}") for i in range(10)]
    other = _OtherProcess(stores)
    other.lock()
    begins: list[str] = []
    stores.conn.set_trace_callback(lambda s: begins.append(s) if s in ("BEGIN IMMEDIATE", "COMMIT") else None)

    async def body() -> None:
        asyncio.get_running_loop().call_later(0.05, other.commit)
        await asyncio.gather(*(stores.sessions.create(r) for r in records))

    asyncio.run(body())
    # Tries while the lock was taken (refused), then one transaction and one commit for all.
    assert len(begins) > 2 and set(begins[:-1]) == {"BEGIN IMMEDIATE"} and begins[-1] == "COMMIT"
    assert _committed_rows(stores) == {r.id_hash for r in records}


def test_a_lock_held_too_long_is_a_503_and_keeps_nothing(
    stores: SqliteStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 100)
    waiting = [_record("a"), _record("b")]
    other = _OtherProcess(stores)
    other.lock()

    async def body() -> list[BaseException | None]:
        return await asyncio.gather(*(stores.sessions.create(r) for r in waiting), return_exceptions=True)

    outcomes = asyncio.run(body())
    assert [type(o) for o in outcomes] == [StoreUnavailable, StoreUnavailable]
    assert "locked by another process" in str(outcomes[0])
    other.commit()
    assert _committed_rows(stores) == set()
    asyncio.run(stores.sessions.create(waiting[0]))  # and once the lock is free, writes go on
    assert _committed_rows(stores) == {waiting[0].id_hash}


def test_a_waiting_writer_cancelled_hands_the_wait_to_the_next(stores: SqliteStores) -> None:
    """A request's deadline firing while its write waits for the lock: the writers behind it
    take over the wait instead of waiting on it forever."""
    first, second = _record("first"), _record("second")
    other = _OtherProcess(stores)
    other.lock()

    async def body() -> None:
        a = asyncio.ensure_future(stores.sessions.create(first))
        b = asyncio.ensure_future(stores.sessions.create(second))
        await asyncio.sleep(0.02)
        assert stores.database.waiters
        a.cancel()
        await asyncio.sleep(0.02)
        other.commit()
        await asyncio.wait_for(b, 2)
        with pytest.raises(asyncio.CancelledError):
            await a

    asyncio.run(body())
    assert _committed_rows(stores) == {second.id_hash}
