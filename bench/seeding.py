"""Bulk-loading sessions into a SQLite file, shared by the benchmarks (no commons_session import,
so a benchmark can use it against any source tree's schema)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def bulk_insert_sessions(db: Path, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert session rows (the ``sessions`` columns, in order) in one transaction. The table's
    secondary indexes are dropped first and built again at the end, from the schema's own
    statements: inserting a million random keys into each index costs minutes, sorting them once
    costs seconds."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA cache_size = -1000000")  # 1 GB, for this connection only
        conn.execute("BEGIN")
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions'"
            " AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(
            "INSERT INTO sessions (id_hash, user_id, institution_id, contents, created_at, last_seen_at,"
            " expires_at, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
