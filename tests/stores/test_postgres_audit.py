"""PostgreSQL writes the audit rows of one event-loop turn in a few multi-row INSERTs instead of
a round trip each. What must not change: every caller returns only once its own row is stored
(another connection sees it), one bad row fails only its own caller, a caller that stops
waiting does not take its row back, and closing the stores writes what is queued."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

from commons_session.domain.audit import AuditEvent
from commons_session.stores.factory import make_stores
from commons_session.stores.postgres import PostgresStores

from ..backends import postgres_database

T = TypeVar("T")
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with postgres_database() as made:
        yield made


def _stored(url: str, reason_prefix: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT reason FROM audit_events WHERE reason LIKE %s", (reason_prefix + "%",))
        return {r[0] for r in rows}


def _with_stores(url: str, body: Callable[[PostgresStores], Awaitable[T]]) -> T:
    async def go() -> T:
        stores = make_stores(url, idle_timeout=3600, timeout=5)
        assert isinstance(stores, PostgresStores)
        await stores.open()
        try:
            return await body(stores)
        finally:
            await stores.close()

    return asyncio.run(go())


def _count_statements(stores: PostgresStores) -> list[str]:
    seen: list[str] = []
    db: Any = stores.records.db  # type: ignore[attr-defined]
    real = db.execute

    async def execute(sql: str, params: Any = ()) -> int:
        seen.append(sql)
        return int(await real(sql, params))

    db.execute = execute
    return seen


def test_the_audit_rows_of_one_turn_share_a_few_inserts_and_each_caller_returns_once_stored(url: str) -> None:
    visible: list[bool] = []

    async def body(stores: PostgresStores) -> list[str]:
        statements = _count_statements(stores)

        async def audit(i: int) -> None:
            await stores.records.add_audit_event(AuditEvent("launch", NOW, reason=f"batch-{i}"))
            visible.append(f"batch-{i}" in _stored(url, "batch-"))

        await asyncio.gather(*(audit(i) for i in range(50)))
        return statements

    statements = _with_stores(url, body)
    assert visible == [True] * 50
    assert _stored(url, "batch-") == {f"batch-{i}" for i in range(50)}
    assert len(statements) == 3  # 32 + 16 + 2 rows, not 50 round trips


def test_one_bad_row_fails_only_its_own_caller(url: str) -> None:
    async def body(stores: PostgresStores) -> list[BaseException | None]:
        reasons = [f"mixed-{i}" for i in range(8)]
        reasons[3] = "mixed-\x00"  # PostgreSQL stores no NUL in text
        events = [stores.records.add_audit_event(AuditEvent("launch", NOW, reason=r)) for r in reasons]
        return await asyncio.gather(*events, return_exceptions=True)

    outcomes = _with_stores(url, body)
    assert [o is None for o in outcomes] == [True, True, True, False, True, True, True, True]
    assert _stored(url, "mixed-") == {f"mixed-{i}" for i in range(8) if i != 3}


def test_a_caller_that_stops_waiting_keeps_its_row_and_close_writes_what_is_queued(url: str) -> None:
    async def body(stores: PostgresStores) -> None:
        waiting = asyncio.ensure_future(
            stores.records.add_audit_event(AuditEvent("launch", NOW, reason="kept-1"))
        )
        queued = asyncio.ensure_future(
            stores.records.add_audit_event(AuditEvent("launch", NOW, reason="kept-2"))
        )
        await asyncio.sleep(0)  # both queued
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        del queued  # never awaited: the stores close with it queued or in flight

    _with_stores(url, body)
    assert _stored(url, "kept-") == {"kept-1", "kept-2"}
