"""Seeding the benchmarks' SQLite files: onboarded users and bulk-loaded sessions.

Nothing here imports ``commons_session`` (or ``tests``) at module level: ``onboard`` imports
them when called, so bench/ab_create.py's workers seed with the source tree they run.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Population:
    canvas: Any  # tests.canvas.FakeCanvas
    users: list[Any]  # tests.canvas.CanvasUser
    user_ids: list[str]
    contents: list[str]  # each user's session contents (JSON), as the service stores them
    institution_id: int


def onboard(db: Path, count: int, name: str = "Bench U", *, database_url: str | None = None) -> Population:
    """An institution and ``count`` users who launched and accepted the terms, written through
    the stores as a launch writes them: into the SQLite file ``db``, or the database at
    ``database_url`` (PostgreSQL) if one is given."""
    from tests.canvas import CanvasUser, FakeCanvas

    from commons_session.config import Settings
    from commons_session.domain.service import session_contents
    from commons_session.lti import v11 as lti
    from commons_session.stores.base import Stores
    from commons_session.stores.factory import make_stores
    from commons_session.stores.sqlite import SqliteStores

    canvas = FakeCanvas("bench-" + secrets.token_hex(4), secrets.token_urlsafe(16))
    users = [CanvasUser(canvas_user_id=str(1000 + i), name=f"Bench User {i}") for i in range(count)]
    version = Settings.model_fields["terms_version"].default

    async def go() -> Population:
        stores: Stores
        if database_url is None:
            stores = SqliteStores(db)
        else:
            stores = make_stores(database_url, idle_timeout=3_600, timeout=10)
            await stores.open()
        now = time.time()
        institution = await stores.records.add_institution(canvas.consumer_key, name, canvas.secret, now)
        ids, contents = [], []
        for person in users:
            params = canvas.launch_params(person)
            identity = lti.parse_identity(params, institution.id, from_token=False)
            profile = lti.parse_profile(params)
            user = await stores.records.record_launch(identity, profile, lti.launch_context(params), now)
            await stores.records.accept_terms(user.id, version, now)
            ids.append(user.id)
            contents.append(json.dumps(session_contents(user, profile, institution)))
        await stores.close()
        return Population(canvas, users, ids, contents, institution.id)

    return asyncio.run(go())


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
