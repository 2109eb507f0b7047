"""The embedded default: all three store roles in one SQLite file (WAL).

Calls run on the event loop thread without awaiting: a primary-key lookup in a local file takes
microseconds, far less than handing work to a thread. Each process opens its own connection;
WAL lets readers proceed while one writer commits, and ``busy_timeout`` queues writers from
other processes (``serve --workers N``) instead of failing them.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from ..domain.models import AccountSettings, Identity, Institution, Profile, SessionRecord, User
from ..errors import (
    CreateError,
    DuplicateInstitution,
    InstitutionNotFound,
    SchemaTooNew,
    StoreUnavailable,
)
from .base import OnceStore, RecordStore, SessionStore, Stores

__all__ = ["SqliteStores", "connect", "migrate", "schema_version"]

BUSY_TIMEOUT_MS = 5_000  # how long a writer waits for another process's transaction


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("commons_session.stores.migrations").joinpath("sqlite")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
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


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode survives a process crash (kill -9); only an OS crash or power loss
    # can drop the last commits. docs/sessions.md says so.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def _translated() -> Iterator[None]:
    """Map driver errors to the store contract's, keeping the cause."""
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O, read-only
        raise StoreUnavailable() from exc


class _Sqlite:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so two processes
        never both read-then-write and deadlock."""
        with _translated():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with _translated():
            return self.conn.execute(sql, params).fetchone()


def _institution(row: Any) -> Institution:
    secrets = (row[3],) if row[4] is None else (row[3], row[4])
    return Institution(
        id=row[0],
        consumer_key=row[1],
        name=row[2],
        secrets=secrets,
        settings=AccountSettings.from_dict(json.loads(row[5])),
        created_at=row[6],
    )


def _user(row: Any) -> User:
    return User(
        id=row[0],
        identity=Identity(institution_id=row[1], tool_consumer_instance_guid=row[2], lti_user_id=row[3]),
        profile=Profile.from_dict(json.loads(row[4])),
        created_at=row[5],
        last_launch_at=row[6],
    )


_INSTITUTION_COLUMNS = "id, consumer_key, name, secret, previous_secret, settings, created_at"
_USER_COLUMNS = "id, institution_id, consumer_guid, lti_user_id, profile, created_at, last_launch_at"


class SqliteRecords(_Sqlite, RecordStore):
    async def add_institution(self, consumer_key: str, name: str, secret: str, now: float) -> Institution:
        try:
            with self._tx() as conn:
                conn.execute(
                    "INSERT INTO institutions (consumer_key, name, secret, settings, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (consumer_key, name, secret, json.dumps(AccountSettings().as_dict()), now),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateInstitution(
                f"An institution with consumer key {consumer_key!r} already exists."
            ) from exc
        return self._require(consumer_key)

    def _require(self, consumer_key: str) -> Institution:
        row = self._one(
            f"SELECT {_INSTITUTION_COLUMNS} FROM institutions WHERE consumer_key = ?",
            (consumer_key,),
        )
        if row is None:
            raise InstitutionNotFound(f"No institution has consumer key {consumer_key!r}.")
        return _institution(row)

    async def get_institution(self, consumer_key: str) -> Institution | None:
        row = self._one(
            f"SELECT {_INSTITUTION_COLUMNS} FROM institutions WHERE consumer_key = ?",
            (consumer_key,),
        )
        return None if row is None else _institution(row)

    async def list_institutions(self) -> list[Institution]:
        with _translated():
            rows = self.conn.execute(
                f"SELECT {_INSTITUTION_COLUMNS} FROM institutions ORDER BY consumer_key"
            ).fetchall()
        return [_institution(r) for r in rows]

    async def remove_institution(self, consumer_key: str) -> Institution:
        institution = self._require(consumer_key)
        with self._tx() as conn:
            conn.execute("DELETE FROM institutions WHERE id = ?", (institution.id,))
        return institution

    def _update(self, consumer_key: str, sql: str, params: tuple[Any, ...]) -> Institution:
        with self._tx() as conn:
            changed = conn.execute(sql, (*params, consumer_key)).rowcount
        if not changed:
            raise InstitutionNotFound(f"No institution has consumer key {consumer_key!r}.")
        return self._require(consumer_key)

    async def rotate_secret(self, consumer_key: str, new_secret: str) -> Institution:
        return self._update(
            consumer_key,
            "UPDATE institutions SET previous_secret = secret, secret = ? WHERE consumer_key = ?",
            (new_secret,),
        )

    async def finish_rotation(self, consumer_key: str) -> Institution:
        return self._update(
            consumer_key,
            "UPDATE institutions SET previous_secret = NULL WHERE consumer_key = ?",
            (),
        )

    async def update_settings(self, consumer_key: str, settings: AccountSettings) -> Institution:
        return self._update(
            consumer_key,
            "UPDATE institutions SET settings = ? WHERE consumer_key = ?",
            (json.dumps(settings.as_dict()),),
        )

    async def record_launch(
        self, identity: Identity, profile: Profile, context: dict[str, Any], now: float
    ) -> User:
        profile_json = json.dumps(profile.as_dict())
        with self._tx() as conn:
            # The UNIQUE constraint makes concurrent first launches converge on one row.
            row = conn.execute(
                "INSERT INTO users (id, institution_id, consumer_guid, lti_user_id, profile,"
                " created_at, last_launch_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (institution_id, consumer_guid, lti_user_id)"
                " DO UPDATE SET profile = excluded.profile, last_launch_at = excluded.last_launch_at"
                f" RETURNING {_USER_COLUMNS}",
                (
                    uuid.uuid4().hex,
                    identity.institution_id,
                    identity.tool_consumer_instance_guid,
                    identity.lti_user_id,
                    profile_json,
                    now,
                    now,
                ),
            ).fetchone()
            conn.execute(
                "INSERT INTO launches (user_id, launched_at, context) VALUES (?, ?, ?)",
                (row[0], now, json.dumps(context)),
            )
        return _user(row)

    async def find_user(self, identity: Identity) -> User | None:
        row = self._one(
            f"SELECT {_USER_COLUMNS} FROM users"
            " WHERE institution_id = ? AND consumer_guid = ? AND lti_user_id = ?",
            (identity.institution_id, identity.tool_consumer_instance_guid, identity.lti_user_id),
        )
        return None if row is None else _user(row)

    async def get_user(self, user_id: str) -> User | None:
        row = self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return None if row is None else _user(row)

    async def count_launches(self, user_id: str) -> int:
        return int(self._one("SELECT count(*) FROM launches WHERE user_id = ?", (user_id,))[0])

    async def accept_terms(self, user_id: str, version: str, now: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO terms_acceptances (user_id, version, accepted_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, version) DO NOTHING",
                (user_id, version, now),
            )

    async def has_accepted(self, user_id: str, version: str) -> bool:
        row = self._one(
            "SELECT 1 FROM terms_acceptances WHERE user_id = ? AND version = ?", (user_id, version)
        )
        return row is not None


_SESSION_COLUMNS = (
    "id_hash, user_id, institution_id, contents, created_at, last_seen_at, expires_at, user_agent"
)


class SqliteSessions(_Sqlite, SessionStore):
    async def create(self, session: SessionRecord) -> None:
        try:
            with self._tx() as conn:
                conn.execute(
                    f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session.id_hash,
                        session.user_id,
                        session.institution_id,
                        json.dumps(session.contents),
                        session.created_at,
                        session.last_seen_at,
                        session.expires_at,
                        session.user_agent,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise CreateError("A session with this id already exists.") from exc

    async def get(self, id_hash: bytes) -> SessionRecord | None:
        row = self._one(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id_hash = ?", (id_hash,))
        if row is None:
            return None
        return SessionRecord(
            id_hash=row[0],
            user_id=row[1],
            institution_id=row[2],
            contents=json.loads(row[3]),
            created_at=row[4],
            last_seen_at=row[5],
            expires_at=row[6],
            user_agent=row[7],
        )

    async def touch(self, id_hash: bytes, last_seen_at: float) -> bool:
        # A plain UPDATE: if a logout deleted the row, nothing is written and nothing returns.
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE sessions SET last_seen_at = max(last_seen_at, ?) WHERE id_hash = ?",
                (last_seen_at, id_hash),
            ).rowcount
        return bool(changed)

    async def delete(self, id_hash: bytes) -> bool:
        with self._tx() as conn:
            return bool(conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,)).rowcount)

    async def delete_for_institution(self, institution_id: int) -> int:
        with self._tx() as conn:
            return int(
                conn.execute("DELETE FROM sessions WHERE institution_id = ?", (institution_id,)).rowcount
            )

    async def purge_expired(self, now: float, idle_timeout: float) -> int:
        with self._tx() as conn:
            return int(
                conn.execute(
                    "DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at <= ?",
                    (now, now - idle_timeout),
                ).rowcount
            )


class SqliteOnce(_Sqlite, OnceStore):
    async def claim(self, namespace: str, key: str, expires_at: float, now: float) -> bool:
        with self._tx() as conn:
            # An expired claim is as good as none: replace it.
            conn.execute(
                "DELETE FROM once_claims WHERE namespace = ? AND key = ? AND expires_at <= ?",
                (namespace, key, now),
            )
            inserted = conn.execute(
                "INSERT INTO once_claims (namespace, key, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (namespace, key) DO NOTHING",
                (namespace, key, expires_at),
            ).rowcount
        return bool(inserted)

    async def release(self, namespace: str, key: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM once_claims WHERE namespace = ? AND key = ?", (namespace, key))

    async def purge_expired(self, now: float) -> int:
        with self._tx() as conn:
            return int(conn.execute("DELETE FROM once_claims WHERE expires_at <= ?", (now,)).rowcount)


class SqliteStores(Stores):
    """All three roles over one connection to one file."""

    def __init__(self, path: str | Path, *, migrate_on_open: bool = True) -> None:
        self.path = str(path)
        conn = connect(self.path)
        if migrate_on_open:
            migrate(conn)
        elif schema_version(conn) > latest_version():
            raise SchemaTooNew()
        self.conn = conn
        super().__init__(SqliteRecords(conn), SqliteSessions(conn), SqliteOnce(conn))

    async def close(self) -> None:
        self.conn.close()
