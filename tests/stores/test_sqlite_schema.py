"""SQLite schema 0005: ``sessions`` is a rowid table with a unique index on ``id_hash`` (new
rows are appended; the old WITHOUT ROWID table put each on a random page of a deep b-tree). A
file at schema 4 is migrated with every session kept, and reads map the file (mmap)."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from pathlib import Path

import pytest

from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import SessionRecord
from commons_session.errors import CreateError
from commons_session.stores import sqlite as sqlite_store
from commons_session.stores.sqlite import SqliteStores, connect, migrate

NOW = 1_800_000_000.0


def _record(i: int) -> SessionRecord:
    return SessionRecord(
        id_hash=hash_id(new_session_id()),
        user_id=f"user-{i % 3}",
        institution_id=1 + i % 2,
        contents={"userId": f"user-{i % 3}", "n": i},
        created_at=NOW - i,
        last_seen_at=NOW - i / 2,
        expires_at=NOW + 1_000 - i,
        user_agent=None if i % 2 else f"agent {i}",
    )


def test_a_schema_4_file_is_migrated_keeping_every_session_and_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    every = sqlite_store._migrations()
    monkeypatch.setattr(sqlite_store, "_migrations", lambda: [m for m in every if m[0] <= 4])
    old = connect(path)
    migrate(old)
    records = [_record(i) for i in range(50)]
    old.executemany(
        "INSERT INTO sessions (id_hash, user_id, institution_id, contents, created_at, last_seen_at,"
        " expires_at, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r.id_hash, r.user_id, r.institution_id, f'{{"userId": "{r.user_id}", "n": {r.contents["n"]}}}',
             r.created_at, r.last_seen_at, r.expires_at, r.user_agent)
            for r in records
        ],
    )  # fmt: skip
    claim = secrets.token_hex(8)
    old.execute("INSERT INTO once_claims (namespace, key, expires_at) VALUES ('jwt', ?, ?)", (claim, NOW + 9))
    old.close()
    monkeypatch.undo()

    stores = SqliteStores(path)

    async def check() -> None:
        for record in records:
            assert await stores.sessions.get(record.id_hash) == record
        assert await stores.once.claim("jwt", claim, NOW + 9, NOW) is False
        assert [r.contents["n"] for r in await stores.sessions.list_for_user("user-0")] == [
            i for i in reversed(range(50)) if i % 3 == 0
        ]
        with pytest.raises(CreateError):
            await stores.sessions.create(records[7])
        assert await stores.sessions.purge_expired(NOW + 1_000 - 40, 10**9, limit=100) == 10
        await stores.close()

    asyncio.run(check())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 5
        [(table_sql,)] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'sessions'").fetchall()
        assert "WITHOUT ROWID" not in table_sql.upper()
        unique = [row[1] for row in db.execute("PRAGMA index_list(sessions)") if row[2]]
        assert [db.execute(f"PRAGMA index_info({name})").fetchone()[2] for name in unique] == ["id_hash"]
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 40


def test_new_sessions_are_appended_in_rowid_order(tmp_path: Path) -> None:
    stores = SqliteStores(tmp_path / "new.db")
    records = [_record(i) for i in range(20)]

    async def create() -> None:
        for record in records:
            await stores.sessions.create(record)
        await stores.close()

    asyncio.run(create())
    with sqlite3.connect(tmp_path / "new.db") as db:
        stored = [bytes(row[0]) for row in db.execute("SELECT id_hash FROM sessions ORDER BY rowid")]
    assert stored == [r.id_hash for r in records]


def test_reads_map_the_file(tmp_path: Path) -> None:
    conn = connect(tmp_path / "mapped.db")
    assert conn.execute("PRAGMA mmap_size").fetchone()[0] == sqlite_store.MMAP_BYTES >= 256 << 20
    conn.close()
