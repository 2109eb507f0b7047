"""The embedded default: all three store roles in one SQLite file (WAL).

Calls run on the event loop thread without handing off to a thread: a primary-key lookup in a
local file takes about 10 microseconds, a thread hop about ten times that (bench/stack.py).
Each process opens its own connection; WAL lets readers proceed while one writer commits. A
write transaction that finds another process's (``serve --workers N``) holding the write lock
waits for it without blocking the event loop (``SqliteDatabase._lock``), up to
``BUSY_TIMEOUT_MS``; every other statement waits inside SQLite (``busy_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DatabaseMissing, SchemaTooNew, StoreUnavailable
from .base import Stores
from .sql import Row, SqlOnce, SqlRecords, SqlSessions, UniqueViolation

__all__ = ["SqliteDatabase", "SqliteStores", "connect", "latest_version", "migrate", "schema_version"]

BUSY_TIMEOUT_MS = 5_000  # how long a writer waits for another process's transaction
#: Between tries for another process's write lock, seconds: it is let go at that process's next
#: loop turn, so the first tries come soon; later ones cost a statement every few milliseconds.
LOCK_RETRY_DELAYS = (0.0002, 0.0005, 0.001, 0.002, 0.005)
MMAP_BYTES = 1 << 30  # how much of the file reads may map (SQLite's own cap is 2 GB)
#: Free space below which writes are refused, before SQLite meets a full disk mid-transaction.
MIN_FREE_BYTES = 1 << 20
#: Written beside the database when it is first created: a start that finds the marker but not
#: the database refuses (``DatabaseMissing``) instead of creating an empty one.
MARKER_SUFFIX = ".created"

T = TypeVar("T")


class FileGuard:
    """Whether the path still names the database file we opened, writable, with room to grow.

    SQLite keeps writing to a file deleted or replaced under it: the writes go to an inode that
    no one will open again, so they are acknowledged and lost. A ``stat`` and a ``statvfs``
    (about 2 µs) before each write transaction, and at every ``/readyz``, turn that into a 503
    with the reason; a fault that clears (space freed, permissions restored) clears by itself.

    The -wal and -shm files count too, and reads check the -shm (an ``access``, 0.4 µs): every
    connection maps the -shm writable, and once that file is immutable (``chattr +i``) the next
    store into the mapping is a SIGBUS that kills the worker. A refused statement never gets
    there; only a fault arriving in the microseconds between check and statement still can,
    and then the supervisor replaces the worker, whose fresh open maps the -shm read-only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        st = os.stat(path)
        self.identity = (st.st_dev, st.st_ino)
        self.shm = path + "-shm"
        #: The -shm was found writable in this turn of the event loop.
        self.read_checked = False

    def fault(self) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "the database file is gone (restore it and restart)"
        except OSError as exc:
            return f"the database file cannot be examined ({exc.strerror})"
        if (st.st_dev, st.st_ino) != self.identity:
            return "the database file was replaced under the running service (restart to open it)"
        if not st.st_mode & 0o222 or not os.access(self.path, os.W_OK):
            return "the database file is read-only (or immutable)"
        for suffix in ("-wal", "-shm"):
            companion = self.path + suffix
            if os.path.exists(companion) and not os.access(companion, os.W_OK):
                return f"the database's {suffix} file is read-only (or immutable)"
        try:
            vfs = os.statvfs(self.directory)
        except OSError as exc:
            return f"the database's directory cannot be examined ({exc.strerror})"
        if vfs.f_bavail * vfs.f_frsize < MIN_FREE_BYTES:
            return "the disk holding the database is full"
        return None

    def check(self) -> None:
        reason = self.fault()
        if reason is not None:
            raise StoreUnavailable(f"The session store is unavailable: {reason}.")

    def check_read(self) -> None:
        """Before a read outside a transaction: only what could crash the process. Once per
        turn of the event loop: the reads of one turn follow each other within microseconds,
        like a check and its statement, and each ``access`` is a system call that hands the GIL
        to the server's threads (under load, one per read: ~5% of a read's CPU)."""
        if self.read_checked:
            return
        if not os.access(self.shm, os.W_OK) and os.path.exists(self.shm):
            self.check()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop: nothing to share the verdict with
            return
        self.read_checked = True
        loop.call_soon(self._forget_read_check)

    def _forget_read_check(self) -> None:
        self.read_checked = False


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("commons_session.stores.migrations").joinpath("sqlite")
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def latest_version() -> int:
    return _migrations()[-1][0]


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied.
    Raises ``SchemaTooNew`` if the file was migrated by a newer release."""
    current = schema_version(conn)
    if current > latest_version():
        raise SchemaTooNew(
            f"The database is at schema version {current}, newer than this release's "
            f"{latest_version()}; upgrade commons-session."
        )
    applied = []
    for version, sql in _migrations():
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Several processes may start at once on a new file: whoever waited for the write
            # lock finds the version already applied and skips it.
            if schema_version(conn) >= version:
                conn.execute("COMMIT")
                continue
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch a new file to WAL. The switch needs an exclusive lock and SQLite does not run the
    busy handler for it, so processes opening a new file at once retry here, within the same
    bound as ``busy_timeout``. Once one of them has switched, the others see WAL and skip it."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    _use_wal(conn)
    # NORMAL in WAL mode survives a process crash (kill -9); only an OS crash or power loss
    # can drop the last commits. docs/sessions.md says so.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    # Read pages straight from the OS page cache instead of copying them into SQLite's 2 MB
    # cache, which a million sessions (~1 GB) miss on nearly every lookup: 16 -> 12 µs per
    # lookup at 1M sessions (docs/performance.md). Address space only, not memory.
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES:d}")
    return conn


@contextmanager
def _translated() -> Iterator[None]:
    """Map driver errors to the store contract's, keeping the cause."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
            raise UniqueViolation(str(exc)) from exc
        raise
    except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O, read-only
        raise StoreUnavailable() from exc


_rowcount = operator.attrgetter("rowcount")


def _retrieve(pending: asyncio.Future[None]) -> None:
    """Mark a failed commit's exception as seen, so one no member waited for logs nothing."""
    if not pending.cancelled():
        pending.exception()


async def _committed(pending: asyncio.Future[None]) -> None:
    """Wait for the shared commit, and raise what it raised. A cancellation that arrives
    meanwhile (a request's deadline) waits for the commit too, which comes at the next turn of
    the loop: once it is known, a committed write is reported done, so that a create the store
    kept is never answered 503 with its token used up."""
    while not pending.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(pending)
    pending.result()


class SqliteDatabase:
    """One connection, shared by a process's requests, with group commit.

    Write transactions that begin in the same turn of the event loop share one SQLite
    transaction and one ``COMMIT``, issued by a callback at the next turn; each is a savepoint
    inside it, so one that fails is undone alone, and each is answered only after the shared
    commit (a failed commit fails all of them, and none was acknowledged). A write outside any
    transaction (an audit row, a logout, a touch) is a transaction of its own, shared the same
    way; a statement that returns rows joins an open one, and waits for it only if it wrote.
    The commit writes the WAL frames of every page the group dirtied once: the last pages of the
    session and audit tables and of their time indexes are shared by every create of the turn.

    Inside ``atomic()`` no other task may run a statement (the body must not wait on anything
    else), so one member's statements are never interleaved with another's."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        #: The task inside ``atomic``, while one is: any other task's statement would land in
        #: its savepoint.
        self.owner: asyncio.Task[Any] | None = None
        #: Checked before every write outside a transaction and before a transaction begins.
        self.guard: FileGuard | None = None
        #: The shared transaction's commit, while one is open.
        self.pending: asyncio.Future[None] | None = None
        #: While a task waits for the write lock: the other tasks that want it, woken once it
        #: is taken (to join that transaction) or given up on.
        self.waiters: list[asyncio.Future[None]] | None = None

    def _check_owner(self) -> None:
        if self.owner is not None and asyncio.current_task() is not self.owner:
            raise RuntimeError("a statement from another task inside SqliteDatabase.atomic()")

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        if self.owner is not None:
            self._check_owner()
        elif self.pending is not None:
            return await self._joined(sql, params, sqlite3.Cursor.fetchone)
        elif self.guard is not None:
            self.guard.check_read()
        with _translated():
            row: Row | None = self.conn.execute(sql, params).fetchone()
            return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if self.owner is not None:
            self._check_owner()
        elif self.pending is not None:
            return await self._joined(sql, params, sqlite3.Cursor.fetchall)
        elif self.guard is not None:
            self.guard.check_read()
        with _translated():
            return self.conn.execute(sql, params).fetchall()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self.owner is not None:
            self._check_owner()
        elif self.pending is not None:
            return await self._joined(sql, params, _rowcount)
        else:  # a write of its own (an audit row, a logout, a touch): it may share a commit too
            async with self.atomic():
                with _translated():
                    return self.conn.execute(sql, params).rowcount
        with _translated():
            return self.conn.execute(sql, params).rowcount

    async def _joined(self, sql: str, params: Sequence[Any], fetch: Callable[[sqlite3.Cursor], T]) -> T:
        """A statement outside any transaction while the shared one is open: it runs inside it
        (a connection has one transaction), and if it changed a row, it is answered once that
        transaction has committed, like the transactions beside it."""
        pending = self.pending
        assert pending is not None
        before = self.conn.total_changes
        try:
            with _translated():
                result = fetch(self.conn.execute(sql, params))
        except BaseException:
            self._lost_if_rolled_back()
            raise
        if self.conn.total_changes != before:
            await _committed(pending)
        return result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteDatabase]:
        if self.owner is not None:  # inside atomic(): a savepoint keeps this one all or nothing
            self._check_owner()
            async with self._savepoint():
                yield self
            return
        async with self.atomic():
            yield self

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        with _translated():
            self.conn.execute("SAVEPOINT nested")
        try:
            yield
        except BaseException:
            with _translated():
                self.conn.execute("ROLLBACK TO nested")
                self.conn.execute("RELEASE nested")
            raise
        with _translated():
            self.conn.execute("RELEASE nested")

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[None]:
        """One write transaction for everything this task does inside (see
        ``SessionStore.atomic``), committed with the others of this loop turn. Nested, it joins."""
        if self.owner is not None:
            self._check_owner()
            yield
            return
        # The first member needs no savepoint: nothing else is in the transaction yet, and
        # nothing can join while its body runs (two statements fewer on every lone create).
        pending, first = (self.pending, False) if self.pending is not None else await self._begin()
        if not first:
            with _translated():
                self.conn.execute("SAVEPOINT member")
        self.owner = asyncio.current_task()
        try:
            yield
        except BaseException:
            self.owner = None
            if not self.conn.in_transaction:
                self._lost_if_rolled_back()
            elif first:
                self.pending = None
                self.conn.execute("ROLLBACK")
                pending.set_result(None)  # nothing was in it but this member's writes
            else:
                self.conn.execute("ROLLBACK TO member")
                self.conn.execute("RELEASE member")
            raise
        self.owner = None
        if not first:
            try:
                with _translated():
                    self.conn.execute("RELEASE member")
            except BaseException:
                self._lost_if_rolled_back()
                raise
        elif not self.conn.in_transaction:
            self._lost_if_rolled_back()
        await _committed(pending)

    async def _begin(self) -> tuple[asyncio.Future[None], bool]:
        """The open shared transaction's commit, and whether this task began it (a new
        transaction if none is open). While one task waits for the write lock, the others that
        want a transaction wait for that task and then join the transaction it began."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        loop = asyncio.get_running_loop()
        while self.pending is None:
            if self.waiters is not None:
                # A future of its own: a waiter cancelled (its request's deadline) leaves the
                # others waiting, and each wakes before the commit that is scheduled below.
                woken = loop.create_future()
                self.waiters.append(woken)
                await woken
                continue
            waiters = self.waiters = []
            try:
                await self._lock(deadline)
            finally:
                self.waiters = None
                for woken in waiters:
                    if not woken.done():
                        woken.set_result(None)
            self.pending = loop.create_future()
            self.pending.add_done_callback(_retrieve)
            loop.call_soon(self._commit_group)
            return self.pending, True
        return self.pending, False

    async def _lock(self, deadline: float) -> None:
        """``BEGIN IMMEDIATE``: the write lock up front, so two processes never both read and
        then both try to write. SQLite's own wait for a lock another process holds (the
        ``busy_timeout``) sleeps in the calling thread, 1 ms and more at a time, and that
        thread is the event loop: every request of this worker would stop until the other
        worker commits, so two workers wrote no faster than one. Here the statement does not
        wait, and the loop goes on serving while this task sleeps between tries."""
        delays = iter(LOCK_RETRY_DELAYS)
        while True:
            if self.guard is not None:
                self.guard.check()
            try:
                self.conn.execute("PRAGMA busy_timeout = 0")
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return
                finally:
                    self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise StoreUnavailable() from exc
                if time.monotonic() >= deadline:
                    raise StoreUnavailable("The session store is locked by another process's write.") from exc
            await asyncio.sleep(next(delays, LOCK_RETRY_DELAYS[-1]))

    def _commit_group(self) -> None:
        pending = self.pending
        if pending is None:  # already settled: the transaction was lost, or the store closed
            return
        if self.owner is not None:  # a member is between statements: it commits with this group
            asyncio.get_running_loop().call_soon(self._commit_group)
            return
        self.pending = None
        try:
            self._commit()
        except BaseException as exc:
            pending.set_exception(exc)
        else:
            pending.set_result(None)

    def _lost_if_rolled_back(self) -> None:
        """Some errors (I/O, a full disk) make SQLite roll the whole transaction back by itself:
        then every member of the group has lost its writes, and hears so."""
        pending = self.pending
        if pending is not None and not self.conn.in_transaction:
            self.pending = None
            pending.set_exception(StoreUnavailable("The write transaction was rolled back."))

    def _commit(self) -> None:
        # Some errors (I/O, a full disk) make SQLite roll the whole transaction back by itself:
        # then COMMIT finds none and fails, and the caller hears that nothing was kept.
        try:
            with _translated():
                self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def flush(self) -> None:
        """Settle the open shared transaction now, before the connection closes: committed, or
        rolled back if a member is still inside it (its savepoint is not finished)."""
        pending = self.pending
        if pending is None:
            return
        if self.owner is not None:
            self.owner = self.pending = None
            self.conn.execute("ROLLBACK")
            pending.set_exception(StoreUnavailable("The store closed during a write."))
            return
        self._commit_group()


class _SqliteSessions(SqlSessions):
    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db)
        self.sqlite = db

    def atomic(self) -> AbstractAsyncContextManager[None]:
        return self.sqlite.atomic()


class SqliteStores(Stores):
    """All three roles over one connection to one file, created and migrated on open."""

    claims_in_transaction = True

    def __init__(self, path: str | Path, *, migrate_on_open: bool = True) -> None:
        self.path = str(path)
        on_disk = self.path != ":memory:" and not self.path.startswith("file:")
        marker = Path(self.path + MARKER_SUFFIX)
        fresh = on_disk and not os.path.exists(self.path)
        if fresh and marker.exists():
            raise DatabaseMissing(
                f"The database {self.path} is missing, but {marker} says one was created there"
                f" ({marker.read_text('utf-8', 'replace').strip()}). Restore it from a backup, or"
                " delete the marker to start with an empty database."
            )
        conn = connect(self.path)
        if migrate_on_open:
            migrate(conn)
        elif schema_version(conn) > latest_version():
            raise SchemaTooNew()
        self.conn = conn
        db = self.database = SqliteDatabase(conn)
        if on_disk:
            if fresh or not marker.exists():
                marker.write_text(f"created {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
            db.guard = FileGuard(self.path)
        self.guard = db.guard
        super().__init__(SqlRecords(db), _SqliteSessions(db), SqlOnce(db))

    async def ping(self) -> None:
        if self.guard is not None:
            self.guard.check()
        with _translated():
            self.conn.execute("SELECT 1 FROM institutions LIMIT 1").fetchall()

    async def close(self) -> None:
        self.database.flush()
        self.conn.close()
