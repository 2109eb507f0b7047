"""PostgreSQL: the durable records (and sessions, when no Redis is configured) for many
processes. psycopg 3 with an async connection pool; every wait is bounded by ``store_timeout``
so an outage answers 503 quickly instead of hanging requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from ..domain.audit import AuditEvent
from ..errors import SchemaTooNew, StoreUnavailable
from .base import Stores
from .sql import Row, SqlOnce, SqlRecords, SqlSessions, UniqueViolation, audit_insert, audit_row

__all__ = ["PostgresDatabase", "PostgresStores", "latest_version"]

_MIGRATION_LOCK = 0x636F6D6D6F6E73  # pg_advisory_xact_lock key: one migrator at a time
# Our own bound on a statement ends a little after the server's statement_timeout, so a server
# that still answers cancels the statement itself and the connection stays usable.
_SLACK = 0.25

T = TypeVar("T")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("commons_session.stores.migrations").joinpath("postgres")
    return sorted(
        (int(entry.name.split("_", 1)[0]), entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


def latest_version() -> int:
    return _migrations()[-1][0]


@lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """Statements are written with ``?``; psycopg wants ``%s``. None of ours contain a literal
    ``?`` or ``%``."""
    return sql.replace("?", "%s")


@contextmanager
def _translated() -> Iterator[None]:
    """Map driver errors to the store contract's, keeping the cause."""
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        raise UniqueViolation(str(exc)) from exc
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout, pg_errors.QueryCanceled) as exc:
        raise StoreUnavailable() from exc


class _PgConnection:
    """One pooled connection whose every statement is bounded on our side too: statement_timeout
    works only while the server answers, and a server that hangs (or a network that drops
    packets) would otherwise hold the request for as long as TCP takes to give up."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], bound: float) -> None:
        self.conn = conn
        self.bound = bound
        #: A statement given up on. psycopg, once cancelled, asks the server to cancel it and
        #: waits up to 10 s; the request does not wait for that, and the connection goes back
        #: to the pool only when it is over.
        self.stray: asyncio.Task[Any] | None = None

    async def _run(self, sql: str, params: Sequence[Any], result: Callable[[Any], Awaitable[T]]) -> T:
        if self.stray is not None:
            raise StoreUnavailable()

        async def statement() -> T:
            with _translated():
                return await result(await self.conn.execute(_pg(sql), params))

        task = asyncio.ensure_future(statement())
        try:
            await asyncio.wait({task}, timeout=self.bound)
        finally:
            if not task.done():
                task.cancel()
                self.stray = task
        if self.stray is task:
            raise StoreUnavailable()
        return task.result()

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self._run(sql, params, lambda cur: cur.fetchone())

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._run(sql, params, lambda cur: cur.fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async def rowcount(cur: psycopg.AsyncCursor[Any]) -> int:
            return cur.rowcount

        return await self._run(sql, params, rowcount)


class PostgresDatabase:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], bound: float | None = None) -> None:
        self.pool = pool
        self.bound = pool.timeout + _SLACK if bound is None else bound
        self._returning: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_PgConnection]:
        with _translated():
            conn = await self.pool.getconn()  # waits at most the pool's timeout
        pg = _PgConnection(conn, self.bound)
        try:
            yield pg
        finally:
            if pg.stray is None:
                await self.pool.putconn(conn)
            else:
                pg.stray.add_done_callback(lambda stray: self._return_later(stray, conn))

    def _return_later(self, stray: asyncio.Task[Any], conn: psycopg.AsyncConnection[Any]) -> None:
        if not stray.cancelled():
            stray.exception()  # already answered as StoreUnavailable
        task = asyncio.ensure_future(self.pool.putconn(conn))  # the pool drops a broken one
        self._returning.add(task)
        task.add_done_callback(self._returned)

    def _returned(self, task: asyncio.Task[None]) -> None:
        self._returning.discard(task)
        if not task.cancelled():
            task.exception()

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._connection() as conn:
            return await conn.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection() as conn:
            return await conn.fetchall(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._connection() as conn:
            return await conn.execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgConnection]:
        # BEGIN and COMMIT as bounded statements too (the connections are in autocommit mode).
        async with self._connection() as conn:
            await conn.execute("BEGIN")
            try:
                yield conn
            except BaseException:
                if conn.stray is None:
                    with suppress(StoreUnavailable):  # else the pool rolls back on return
                        await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply pending migrations under an advisory lock, so several instances starting at once
    migrate exactly once. Raises ``SchemaTooNew`` for a database migrated by a newer release."""
    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if current > latest_version():
            raise SchemaTooNew(
                f"The database is at schema version {current}, newer than this release's "
                f"{latest_version()}; upgrade commons-session."
            )
        for version, sql in _migrations():
            if version > current:
                await conn.execute(sql.encode())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
    return applied


async def schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class _PostgresRecords(SqlRecords):
    """Audit rows batched: the events written in one turn of the event loop (under load, the
    creates of many requests) go in a few multi-row INSERTs, not a round trip each. Each caller
    is answered only once its row is in, so a crash loses none that a caller was told is
    written; if an INSERT fails, its rows are tried alone, so one bad row fails only its own
    caller."""

    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._writing: set[asyncio.Task[None]] = set()

    async def add_audit_event(self, event: AuditEvent) -> None:
        loop = asyncio.get_running_loop()
        written = loop.create_future()
        self._queued.append((audit_row(event), written))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        # A caller that stops waiting (its request's deadline) does not take its row back.
        await asyncio.shield(written)

    def _flush(self) -> None:
        if self._queued:
            task = asyncio.ensure_future(self._write(self._queued))
            self._queued = []
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)

    async def _write(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]]) -> None:
        # Chunks of 2**k rows (a 37-row batch: 32 + 4 + 1), so only a few statement texts
        # exist for psycopg to prepare and for _pg to remember.
        while batch:
            size = min(1 << (len(batch).bit_length() - 1), _MAX_AUDIT_ROWS)
            chunk, batch = batch[:size], batch[size:]
            error = await self._insert(chunk)
            if error is not None and size > 1:  # tried alone, one bad row fails only its caller
                for one in chunk:
                    _settle(one[1], await self._insert([one]))
            else:
                for _, written in chunk:
                    _settle(written, error)

    async def _insert(self, chunk: list[tuple[tuple[Any, ...], asyncio.Future[None]]]) -> Exception | None:
        try:
            await self.db.execute(audit_insert(len(chunk)), [v for row, _ in chunk for v in row])
        except Exception as exc:
            return exc
        return None

    async def drain(self) -> None:
        """Write what is queued, and wait for what is being written (before the pool closes)."""
        self._flush()
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)


#: Rows per audit INSERT at most (8 parameters each, well inside PostgreSQL's 65,535).
_MAX_AUDIT_ROWS = 256


def _settle(written: asyncio.Future[None], error: Exception | None) -> None:
    if written.done():  # cancelled: nobody waits for it
        return
    if error is None:
        written.set_result(None)
    else:
        written.set_exception(error)


class PostgresStores(Stores):
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        pool_size: int = 10,
        migrate_on_open: bool = True,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.migrate_on_open = migrate_on_open
        self.pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,  # waiting for a free connection
            open=False,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(timeout)),
                # No statement may hold a request longer than the store timeout.
                "options": f"-c statement_timeout={int(timeout * 1000)}",
            },
            reconnect_timeout=0,  # keep trying to reconnect for as long as it takes
        )
        db = PostgresDatabase(self.pool)
        self._records = _PostgresRecords(db)
        super().__init__(self._records, SqlSessions(db), SqlOnce(db))

    async def open(self) -> None:
        # The pool first: it keeps reconnecting in the background, so even if the checks below
        # fail during an outage the service recovers by itself when PostgreSQL returns.
        await self.pool.open(wait=False)
        with _translated():
            async with await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.timeout))
            ) as conn:
                if self.migrate_on_open:
                    await migrate(conn)
                elif await schema_version(conn) > latest_version():
                    raise SchemaTooNew()

    async def ping(self) -> None:
        await PostgresDatabase(self.pool).fetchone("SELECT 1")

    async def close(self) -> None:
        await self._records.drain()
        await self.pool.close()
