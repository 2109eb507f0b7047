"""Upgrades from every earlier schema (issue 13), on SQLite and PostgreSQL.

The data is real: a server of this release launches, accepts the terms, creates and ends
sessions, rotates a secret and registers an LTI 1.3 platform; its rows are the reference. For
every earlier schema version, a database is built from the migration files up to that version,
filled with the reference rows (the columns that version had), and upgraded by this release:
every row must come through unchanged, and this release's stores must read it. A start on a
database newer than the code refuses with a clear message, and instances starting at once on
one new PostgreSQL database migrate it exactly once.

A future migration that drops or renames a column makes the reference rows unable to fill the
older schema: the test then fails naming the column, which is the moment to decide its data.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commons_session.domain.ids import hash_id
from commons_session.stores import postgres as pg_store
from commons_session.stores import sqlite as sqlite_store

from ..backends import postgres_database
from ..canvas import CanvasUser
from ..conftest import Server, create_session, onboard, start_server

Rows = dict[str, list[dict[str, Any]]]
# Parents before children; tables not named here go last, in name order.
_ORDER = ["institutions", "users", "launches", "terms_acceptances", "sessions", "once_claims"]


def _ordered(tables: set[str]) -> list[str]:
    return [t for t in _ORDER if t in tables] + sorted(tables - set(_ORDER))


def _make_reference(server: Server) -> list[str]:
    """Real rows of every kind, written by a server of this release. Returns live session ids."""
    canvas, user, other = server.add_institution(), CanvasUser(), CanvasUser()
    onboard(server, canvas, user)
    onboard(server, canvas, other)
    sessions = [create_session(server, canvas, user) for _ in range(3)]
    ended = create_session(server, canvas, other)
    with server.client() as client:
        assert client.get("/api/sessions/logout", headers={"x-session-id": ended}).status_code == 204
    rotated = server.cli(
        "institutions", "rotate-secret", "--consumer-key", canvas.consumer_key, "--secret", "new"
    )
    assert rotated.returncode == 0, rotated.stderr
    registered = server.cli(
        "institutions", "add-lti13", "--consumer-key", canvas.consumer_key,
        "--issuer", "https://canvas.instructure.com", "--client-id", "10000000000001",
        "--deployment-id", "1:abc", "--jwks-url", "https://sso.canvaslms.com/api/lti/security/jwks",
        "--auth-url", "https://sso.canvaslms.com/api/lti/authorize_redirect",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    return sessions


def _sorted(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(row.items())) for row in rows)


def _assert_kept(before: Rows, after: Rows, old_columns: dict[str, list[str]]) -> None:
    for table, columns in old_columns.items():
        want = [{c: row[c] for c in columns} for row in before.get(table, [])]
        got = [{c: row[c] for c in columns} for row in after[table]]
        assert _sorted(got) == _sorted(want), f"{table}: rows changed by the upgrade"
    assert sum(len(rows) for rows in before.values()) > 15


# -- SQLite ---------------------------------------------------------------------------------


def _sqlite_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {
        t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')]
        for t in tables
        if not t.startswith("sqlite_")
    }


def _sqlite_rows(path: Path) -> Rows:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return {t: [dict(r) for r in conn.execute(f'SELECT * FROM "{t}"')] for t in _sqlite_columns(conn)}


@pytest.fixture(scope="module")
def sqlite_reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rows, list[str]]]:
    server = start_server(tmp_path_factory.mktemp("reference"))
    try:
        sessions = _make_reference(server)
    finally:
        server.stop()
    yield _sqlite_rows(server.db_path), sessions


@pytest.mark.parametrize("version", range(1, sqlite_store.latest_version()))
def test_every_earlier_sqlite_schema_upgrades_keeping_every_row(
    version: int, sqlite_reference: tuple[Rows, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, sessions = sqlite_reference
    path = tmp_path / f"schema-{version}.db"
    every = sqlite_store._migrations()
    monkeypatch.setattr(sqlite_store, "_migrations", lambda: [m for m in every if m[0] <= version])
    conn = sqlite_store.connect(path)
    sqlite_store.migrate(conn)
    assert sqlite_store.schema_version(conn) == version
    old_columns = _sqlite_columns(conn)
    for table in _ordered(set(old_columns)):
        columns = old_columns[table]
        for row in reference.get(table, []):
            missing = [c for c in columns if c not in row]
            assert not missing, f"schema {version}'s {table}.{missing} has no data in this release's rows"
            marks = ", ".join("?" for _ in columns)
            names = ", ".join(f'"{c}"' for c in columns)
            conn.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', [row[c] for c in columns])
    conn.close()
    monkeypatch.undo()

    stores = sqlite_store.SqliteStores(path)  # this release opens and upgrades it

    async def read() -> None:
        try:
            for sid in sessions:
                record = await stores.sessions.get(hash_id(sid))
                assert record is not None and record.id_hash == hash_id(sid)
            institutions = await stores.records.list_institutions()
            assert len(institutions) == len(reference["institutions"])
        finally:
            await stores.close()

    asyncio.run(read())
    with sqlite3.connect(path) as conn:
        assert sqlite_store.schema_version(conn) == sqlite_store.latest_version()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    _assert_kept(reference, _sqlite_rows(path), old_columns)


def test_a_start_on_an_sqlite_database_newer_than_the_code_refuses(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    server.stop()
    with sqlite3.connect(server.db_path) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_store.latest_version() + 1}")
    result = subprocess.run(
        [sys.executable, "-m", "commons_session", "serve", "--port", "1"],
        env=server.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "newer" in result.stderr and "Traceback" not in result.stderr


# -- PostgreSQL -----------------------------------------------------------------------------


async def _pg_columns(conn: Any) -> dict[str, list[str]]:
    cur = await conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name <> 'schema_migrations' ORDER BY table_name, ordinal_position"
    )
    columns: dict[str, list[str]] = {}
    for row in await cur.fetchall():
        table, column = (row["table_name"], row["column_name"]) if isinstance(row, dict) else row
        columns.setdefault(table, []).append(column)
    return columns


async def _pg_rows(url: str) -> Rows:
    import psycopg
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        columns = await _pg_columns(conn)
        rows: Rows = {}
        for table in columns:
            cur = await conn.execute(f'SELECT * FROM "{table}"')
            rows[table] = [dict(r) for r in await cur.fetchall()]
        return rows


@pytest.fixture(scope="module")
def pg_reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rows, list[str]]]:
    with postgres_database() as url:
        server = start_server(tmp_path_factory.mktemp("pg-reference"), database_url=url)
        try:
            sessions = _make_reference(server)
        finally:
            server.stop()
        yield asyncio.run(_pg_rows(url)), sessions


@pytest.mark.parametrize("version", range(1, pg_store.latest_version()))
def test_every_earlier_postgresql_schema_upgrades_keeping_every_row(
    version: int, pg_reference: tuple[Rows, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    reference, sessions = pg_reference
    every = pg_store._migrations()
    with postgres_database() as url:

        async def build() -> dict[str, list[str]]:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                monkeypatch.setattr(pg_store, "_migrations", lambda: [m for m in every if m[0] <= version])
                await pg_store.migrate(conn)
                monkeypatch.undo()
                assert await pg_store.schema_version(conn) == version
                old_columns = await _pg_columns(conn)
                for table in _ordered(set(old_columns)):
                    columns = old_columns[table]
                    for row in reference.get(table, []):
                        missing = [c for c in columns if c not in row]
                        assert not missing, (
                            f"schema {version}'s {table}.{missing} has no data in this release's rows"
                        )
                        marks = ", ".join("%s" for _ in columns)
                        names = ", ".join(f'"{c}"' for c in columns)
                        await conn.execute(
                            f'INSERT INTO "{table}" ({names}) VALUES ({marks})',
                            [Jsonb(row[c]) if isinstance(row[c], dict | list) else row[c]
                             for c in columns],
                        )  # fmt: skip
                return old_columns

        old_columns = asyncio.run(build())
        stores = pg_store.PostgresStores(url, timeout=5)

        async def read() -> None:
            await stores.open()  # this release upgrades it
            try:
                for sid in sessions:
                    record = await stores.sessions.get(hash_id(sid))
                    assert record is not None and record.id_hash == hash_id(sid)
                assert len(await stores.records.list_institutions()) == len(reference["institutions"])
            finally:
                await stores.close()

        asyncio.run(read())
        _assert_kept(reference, asyncio.run(_pg_rows(url)), old_columns)


def test_instances_starting_at_once_on_a_new_postgresql_database_migrate_it_once(tmp_path: Path) -> None:
    with postgres_database() as url:
        base = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
        env = {**base, "COMMONS_SESSION_DATABASE_URL": url}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "commons_session", "migrate"],
                env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for _ in range(4)
        ]  # fmt: skip
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        import psycopg

        with psycopg.connect(url) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == list(range(1, pg_store.latest_version() + 1))
