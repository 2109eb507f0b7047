"""SQLite schema 0007 (PostgreSQL 0006): ``lti13_registrations.institution_id`` becomes nullable
for platforms that registered themselves (LTI Dynamic Registration). SQLite cannot drop a NOT
NULL, so the table is rebuilt: a file at schema 5 keeps every registration, and its cascade."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from commons_session.stores import sqlite as sqlite_store
from commons_session.stores.sqlite import SqliteStores, connect, migrate

NOW = 1_800_000_000.0


def test_a_schema_5_file_keeps_its_registrations_and_can_then_hold_pending_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    every = sqlite_store._migrations()
    monkeypatch.setattr(sqlite_store, "_migrations", lambda: [m for m in every if m[0] <= 5])
    old = connect(path)
    migrate(old)
    old.execute(
        "INSERT INTO institutions (consumer_key, name, secret, settings, created_at)"
        " VALUES ('k', 'Example U', 's', '{}', ?)",
        (NOW,),
    )
    old.execute(
        "INSERT INTO lti13_registrations (institution_id, issuer, client_id, deployment_ids, jwks_url,"
        " auth_url, created_at) VALUES (1, 'https://a.example.edu', '100', ?, 'https://a/jwks',"
        " 'https://a/auth', ?)",
        (json.dumps(["1:a"]), NOW),
    )
    with pytest.raises(Exception, match="NOT NULL"):
        old.execute(
            "INSERT INTO lti13_registrations (institution_id, issuer, client_id, deployment_ids,"
            " jwks_url, auth_url, created_at) VALUES (NULL, 'i', 'c', '[]', 'j', 'a', 0)"
        )
    old.close()
    monkeypatch.undo()

    stores = SqliteStores(path)

    async def check() -> None:
        kept = await stores.records.get_lti13_registration("https://a.example.edu", "100")
        assert kept is not None and kept.consumer_key == "k" and kept.deployment_ids == ("1:a",)
        assert kept.created_at == NOW and kept.token_url is None and kept.registered_at is None
        pending = await stores.records.add_pending_lti13_registration(
            issuer="https://b.example.edu",
            client_id="200",
            deployment_ids=(),
            jwks_url="https://b/jwks",
            auth_url="https://b/auth",
            token_url="https://b/token",
            now=NOW,
        )
        assert pending.pending
        await stores.records.remove_institution("k")  # the cascade survived the rebuild
        assert [r.client_id for r in await stores.records.list_lti13_registrations()] == ["200"]

    try:
        asyncio.run(check())
    finally:
        asyncio.run(stores.close())
