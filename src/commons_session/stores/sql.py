"""The store contract over SQL, written once for SQLite and PostgreSQL.

Each backend supplies a ``Database``: four small async methods and its own error translation.
Statements use ``?`` placeholders; a backend that wants another style rewrites them once.
Everything here is standard SQL both engines accept (``INSERT ... ON CONFLICT ... RETURNING``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

import orjson

from ..domain.audit import AuditEvent
from ..domain.models import (
    AccountSettings,
    Identity,
    Institution,
    Lti13Registration,
    Profile,
    SessionRecord,
    ToolKey,
    User,
)
from ..errors import (
    ClaimPending,
    CreateError,
    DuplicateInstitution,
    DuplicateRegistration,
    InstitutionNotFound,
    RegistrationNotFound,
    UserNotFound,
)
from .base import OnceStore, RecordStore, SessionStore

__all__ = ["Database", "SqlOnce", "SqlRecords", "SqlSessions", "UniqueViolation"]

Row = Sequence[Any]
T = TypeVar("T")


class UniqueViolation(Exception):
    """Raised by a ``Database`` when an insert hits a unique constraint (each backend maps its
    driver's own error to this, so the stores can turn it into the contract's error)."""


class Connection(Protocol):
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...


class Database(Connection, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A connection inside one transaction, committed on exit, rolled back on error."""
        ...


def _json(value: Any) -> dict[str, Any]:
    """SQLite hands back JSON as text, PostgreSQL's JSONB as a dict."""
    loaded = json.loads(value) if isinstance(value, str | bytes) else value
    return dict(loaded or {})


INSTITUTION_COLUMNS = "id, consumer_key, name, secret, previous_secret, settings, created_at, disabled_at"
USER_COLUMNS = (
    "id, institution_id, consumer_guid, lti_user_id, profile, created_at, last_launch_at, disabled_at"
)
SESSION_COLUMNS = (
    "id_hash, user_id, institution_id, contents, created_at, last_seen_at, expires_at, user_agent"
)
AUDIT_COLUMNS = "at, event, reason, user_id, institution_id, session_hash, request_id, detail"


_AUDIT_PLACEHOLDERS = "(" + ", ".join("?" * len(AUDIT_COLUMNS.split(","))) + ")"


def audit_row(event: AuditEvent) -> tuple[Any, ...]:
    """An event as the values of ``AUDIT_COLUMNS``."""
    detail = orjson.dumps(event.detail).decode() if event.detail else "{}"
    return (
        event.at,
        event.event,
        event.reason,
        event.user_id,
        event.institution_id,
        event.session_hash,
        event.request_id,
        detail,
    )


@lru_cache(maxsize=64)
def audit_insert(rows: int) -> str:
    """One INSERT of ``rows`` audit rows (the ``audit_row`` of each, in turn, as its parameters)."""
    values = ", ".join([_AUDIT_PLACEHOLDERS] * rows)
    return f"INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {values}"


_INSTITUTION_FIELDS = [c.strip() for c in INSTITUTION_COLUMNS.split(",")]
_JOINED_COLUMNS = ", ".join(
    [f"CAST(i.{c} AS TEXT)" if c == "settings" else f"i.{c}" for c in _INSTITUTION_FIELDS]
    + [f"CAST(u.{c} AS TEXT)" if c == "profile" else f"u.{c}" for c in USER_COLUMNS.split(", ")]
)


LTI13_COLUMNS = (
    "r.id, r.institution_id, i.consumer_key, r.issuer, r.client_id, r.deployment_ids, r.jwks_url,"
    " r.auth_url, r.created_at, r.token_url, r.registered_at"
)
# LEFT: a pending registration (Dynamic Registration, not yet bound) has no institution.
LTI13_FROM = "lti13_registrations r LEFT JOIN institutions i ON i.id = r.institution_id"


def _json_list(value: Any) -> list[Any]:
    loaded = json.loads(value) if isinstance(value, str | bytes) else value
    return list(loaded or [])


def lti13_from_row(row: Row) -> Lti13Registration:
    return Lti13Registration(
        id=int(row[0]),
        institution_id=None if row[1] is None else int(row[1]),
        consumer_key=row[2],
        issuer=row[3],
        client_id=row[4],
        deployment_ids=tuple(str(d) for d in _json_list(row[5])),
        jwks_url=row[6],
        auth_url=row[7],
        created_at=float(row[8]),
        token_url=row[9],
        registered_at=None if row[10] is None else float(row[10]),
    )


def institution_from_row(row: Row) -> Institution:
    secrets = (row[3],) if row[4] is None else (row[3], row[4])
    return Institution(
        id=int(row[0]),
        consumer_key=row[1],
        name=row[2],
        secrets=secrets,
        settings=AccountSettings.from_dict(_json(row[5])),
        created_at=float(row[6]),
        disabled_at=float(row[7]) if row[7] is not None else None,
    )


def user_from_row(row: Row) -> User:
    return User(
        id=row[0],
        identity=Identity(int(row[1]), row[2], row[3]),
        profile=Profile.from_dict(_json(row[4])),
        created_at=float(row[5]),
        last_launch_at=float(row[6]),
        disabled=row[7] is not None,
    )


def session_from_row(row: Row) -> SessionRecord:
    return SessionRecord(
        id_hash=bytes(row[0]),
        user_id=row[1],
        institution_id=int(row[2]),
        contents=orjson.loads(row[3]),  # the read path's hottest parse (docs/performance.md)
        created_at=float(row[4]),
        last_seen_at=float(row[5]),
        expires_at=float(row[6]),
        user_agent=row[7],
    )


class _RowMemo(Generic[T]):
    """What a row converts to, for rows seen lately. The institution and the user are read on
    every create, and converting their rows (parsing the JSON in them) costs as much as the
    lookups; the objects are frozen, and keyed by the whole row, so a row that changed (a new
    secret, a disabled user) is converted afresh. Bounded: the oldest go first."""

    def __init__(self, convert: Callable[[Row], T], size: int = 1_024) -> None:
        self.convert = convert
        self.size = size
        self.seen: dict[Row, T] = {}

    def __call__(self, row: Row) -> T:
        try:
            return self.seen[row]
        except KeyError:
            pass
        except TypeError:  # unhashable: PostgreSQL hands JSONB columns back as dicts
            return self.convert(row)
        value = self.convert(row)
        if len(self.seen) >= self.size:
            del self.seen[next(iter(self.seen))]
        self.seen[row] = value
        return value


_institution = _RowMemo(institution_from_row)
_user = _RowMemo(user_from_row)


def audit_event_from_row(row: Row) -> AuditEvent:
    return AuditEvent(
        at=float(row[0]),
        event=row[1],
        reason=row[2],
        user_id=row[3],
        institution_id=None if row[4] is None else int(row[4]),
        session_hash=row[5],
        request_id=row[6],
        detail=_json(row[7]),
    )


class _SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db


class SqlRecords(_SqlStore, RecordStore):
    async def add_institution(self, consumer_key: str, name: str, secret: str, now: float) -> Institution:
        try:
            row = await self.db.fetchone(
                "INSERT INTO institutions (consumer_key, name, secret, settings, created_at)"
                f" VALUES (?, ?, ?, ?, ?) RETURNING {INSTITUTION_COLUMNS}",
                (consumer_key, name, secret, json.dumps(AccountSettings().as_dict()), now),
            )
        except UniqueViolation as exc:
            raise DuplicateInstitution(
                f"An institution with consumer key {consumer_key!r} already exists."
            ) from exc
        assert row is not None
        return _institution(row)

    async def get_institution(self, consumer_key: str) -> Institution | None:
        row = await self.db.fetchone(
            f"SELECT {INSTITUTION_COLUMNS} FROM institutions WHERE consumer_key = ?", (consumer_key,)
        )
        return None if row is None else _institution(row)

    async def list_institutions(self) -> list[Institution]:
        rows = await self.db.fetchall(f"SELECT {INSTITUTION_COLUMNS} FROM institutions ORDER BY consumer_key")
        return [_institution(r) for r in rows]

    async def _change(self, consumer_key: str, sql: str, params: tuple[Any, ...] = ()) -> Institution:
        row = await self.db.fetchone(sql + f" RETURNING {INSTITUTION_COLUMNS}", (*params, consumer_key))
        if row is None:
            raise InstitutionNotFound(f"No institution has consumer key {consumer_key!r}.")
        return _institution(row)

    async def remove_institution(self, consumer_key: str) -> Institution:
        return await self._change(consumer_key, "DELETE FROM institutions WHERE consumer_key = ?")

    async def rotate_secret(self, consumer_key: str, new_secret: str) -> Institution:
        return await self._change(
            consumer_key,
            "UPDATE institutions SET previous_secret = secret, secret = ? WHERE consumer_key = ?",
            (new_secret,),
        )

    async def finish_rotation(self, consumer_key: str) -> Institution:
        return await self._change(
            consumer_key, "UPDATE institutions SET previous_secret = NULL WHERE consumer_key = ?"
        )

    async def update_settings(self, consumer_key: str, settings: AccountSettings) -> Institution:
        return await self._change(
            consumer_key,
            "UPDATE institutions SET settings = ? WHERE consumer_key = ?",
            (json.dumps(settings.as_dict()),),
        )

    async def record_launch(
        self, identity: Identity, profile: Profile, context: dict[str, Any], now: float
    ) -> User:
        async with self.db.transaction() as tx:
            # The UNIQUE constraint makes concurrent first launches converge on one row.
            row = await tx.fetchone(
                "INSERT INTO users (id, institution_id, consumer_guid, lti_user_id, profile,"
                " created_at, last_launch_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (institution_id, consumer_guid, lti_user_id)"
                " DO UPDATE SET profile = excluded.profile, last_launch_at = excluded.last_launch_at"
                f" RETURNING {USER_COLUMNS}",
                (
                    uuid.uuid4().hex,
                    identity.institution_id,
                    identity.tool_consumer_instance_guid,
                    identity.lti_user_id,
                    json.dumps(profile.as_dict()),
                    now,
                    now,
                ),
            )
            assert row is not None
            await tx.execute(
                "INSERT INTO launches (user_id, launched_at, context) VALUES (?, ?, ?)",
                (row[0], now, json.dumps(context)),
            )
        return _user(row)

    async def find_user(self, identity: Identity) -> User | None:
        row = await self.db.fetchone(
            f"SELECT {USER_COLUMNS} FROM users"
            " WHERE institution_id = ? AND consumer_guid = ? AND lti_user_id = ?",
            (identity.institution_id, identity.tool_consumer_instance_guid, identity.lti_user_id),
        )
        return None if row is None else _user(row)

    async def find_user_accepted(self, identity: Identity, version: str) -> tuple[User, bool] | None:
        row = await self.db.fetchone(
            f"SELECT {USER_COLUMNS}, EXISTS (SELECT 1 FROM terms_acceptances t"
            " WHERE t.user_id = users.id AND t.version = ?) FROM users"
            " WHERE institution_id = ? AND consumer_guid = ? AND lti_user_id = ?",
            (version, identity.institution_id, identity.tool_consumer_instance_guid, identity.lti_user_id),
        )
        return None if row is None else (_user(tuple(row[:-1])), bool(row[-1]))

    async def get_institution_and_user(
        self, consumer_key: str, consumer_guid: str, lti_user_id: str | None, version: str
    ) -> tuple[Institution | None, tuple[User, bool] | None]:
        if lti_user_id is None:
            return await self.get_institution(consumer_key), None
        # One round trip instead of two on every create. The JSON columns as text, so PostgreSQL's
        # rows are hashable too and their conversion is remembered (_RowMemo).
        row = await self.db.fetchone(
            f"SELECT {_JOINED_COLUMNS}, EXISTS (SELECT 1 FROM terms_acceptances t"
            " WHERE t.user_id = u.id AND t.version = ?)"
            " FROM institutions i LEFT JOIN users u"
            " ON u.institution_id = i.id AND u.consumer_guid = ? AND u.lti_user_id = ?"
            " WHERE i.consumer_key = ?",
            (version, consumer_guid, lti_user_id, consumer_key),
        )
        if row is None:
            return None, None
        width = len(_INSTITUTION_FIELDS)
        institution = _institution(tuple(row[:width]))
        if row[width] is None:  # no such user in this institution
            return institution, None
        return institution, (_user(tuple(row[width:-1])), bool(row[-1]))

    async def get_user(self, user_id: str) -> User | None:
        row = await self.db.fetchone(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return None if row is None else _user(row)

    async def count_launches(self, user_id: str) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM launches WHERE user_id = ?", (user_id,))
        return int(row[0]) if row else 0

    async def accept_terms(self, user_id: str, version: str, now: float) -> None:
        await self.db.execute(
            "INSERT INTO terms_acceptances (user_id, version, accepted_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, version) DO NOTHING",
            (user_id, version, now),
        )

    async def has_accepted(self, user_id: str, version: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM terms_acceptances WHERE user_id = ? AND version = ?", (user_id, version)
        )
        return row is not None

    async def set_institution_disabled(self, consumer_key: str, disabled: bool, now: float) -> Institution:
        if disabled:  # disabling twice keeps the first time
            sql = "UPDATE institutions SET disabled_at = COALESCE(disabled_at, ?) WHERE consumer_key = ?"
            return await self._change(consumer_key, sql, (now,))
        return await self._change(
            consumer_key, "UPDATE institutions SET disabled_at = NULL WHERE consumer_key = ?"
        )

    async def set_user_disabled(self, user_id: str, disabled: bool, now: float) -> User:
        row = await self.db.fetchone(
            f"UPDATE users SET disabled_at = ? WHERE id = ? RETURNING {USER_COLUMNS}",
            (now if disabled else None, user_id),
        )
        if row is None:
            raise UserNotFound(f"No user has id {user_id!r}.")
        return _user(row)

    async def add_audit_event(self, event: AuditEvent) -> None:
        await self.db.execute(audit_insert(1), audit_row(event))

    async def list_audit_events(
        self,
        *,
        user_id: str | None = None,
        institution_id: int | None = None,
        event: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        given = {
            clause: value
            for clause, value in (
                ("user_id = ?", user_id),
                ("institution_id = ?", institution_id),
                ("event = ?", event),
                ("at >= ?", since),
            )
            if value is not None
        }
        where = " WHERE " + " AND ".join(given) if given else ""
        rows = await self.db.fetchall(
            f"SELECT {AUDIT_COLUMNS} FROM audit_events{where} ORDER BY at DESC, id DESC LIMIT ?",
            (*given.values(), limit),
        )
        return [audit_event_from_row(r) for r in rows]

    async def purge_audit_events(self, before: float, limit: int = 1_000) -> int:
        return await self.db.execute(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < ? LIMIT ?)",
            (before, limit),
        )

    # -- LTI 1.3 registrations --------------------------------------------------------------

    async def add_lti13_registration(
        self,
        consumer_key: str,
        *,
        issuer: str,
        client_id: str,
        deployment_ids: tuple[str, ...],
        jwks_url: str,
        auth_url: str,
        now: float,
    ) -> Lti13Registration:
        try:
            async with self.db.transaction() as tx:
                owner = await tx.fetchone(
                    "SELECT id FROM institutions WHERE consumer_key = ?", (consumer_key,)
                )
                if owner is None:
                    raise InstitutionNotFound(f"No institution has consumer key {consumer_key!r}.")
                existing = await tx.fetchone(
                    "SELECT institution_id, deployment_ids FROM lti13_registrations"
                    " WHERE issuer = ? AND client_id = ?",
                    (issuer, client_id),
                )
                if existing is None:
                    await tx.execute(
                        "INSERT INTO lti13_registrations (institution_id, issuer, client_id,"
                        " deployment_ids, jwks_url, auth_url, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            owner[0],
                            issuer,
                            client_id,
                            json.dumps(list(dict.fromkeys(deployment_ids))),
                            jwks_url,
                            auth_url,
                            now,
                        ),
                    )
                elif existing[0] is None or int(existing[0]) != int(owner[0]):
                    raise DuplicateRegistration(
                        f"Issuer {issuer!r} with client_id {client_id!r} is registered to another"
                        " institution."
                    )
                else:
                    merged = list(dict.fromkeys([*map(str, _json_list(existing[1])), *deployment_ids]))
                    await tx.execute(
                        "UPDATE lti13_registrations SET deployment_ids = ?, jwks_url = ?, auth_url = ?"
                        " WHERE issuer = ? AND client_id = ?",
                        (json.dumps(merged), jwks_url, auth_url, issuer, client_id),
                    )
        except UniqueViolation as exc:  # a concurrent add won the race
            raise DuplicateRegistration(
                f"Issuer {issuer!r} with client_id {client_id!r} is already registered."
            ) from exc
        found = await self.get_lti13_registration(issuer, client_id)
        assert found is not None
        return found

    async def get_lti13_registration(self, issuer: str, client_id: str) -> Lti13Registration | None:
        row = await self.db.fetchone(
            f"SELECT {LTI13_COLUMNS} FROM {LTI13_FROM} WHERE r.issuer = ? AND r.client_id = ?",
            (issuer, client_id),
        )
        return None if row is None else lti13_from_row(row)

    async def list_lti13_registrations(self, issuer: str | None = None) -> list[Lti13Registration]:
        where, params = ("WHERE r.issuer = ? ", (issuer,)) if issuer is not None else ("", ())
        rows = await self.db.fetchall(
            f"SELECT {LTI13_COLUMNS} FROM {LTI13_FROM} {where}ORDER BY r.issuer, r.client_id", params
        )
        return [lti13_from_row(r) for r in rows]

    async def remove_lti13_registration(self, issuer: str, client_id: str) -> Lti13Registration:
        found = await self.get_lti13_registration(issuer, client_id)
        if found is None or not await self.db.execute(
            "DELETE FROM lti13_registrations WHERE id = ?", (found.id,)
        ):
            raise RegistrationNotFound(
                f"No LTI 1.3 registration has issuer {issuer!r} and client_id {client_id!r}."
            )
        return found

    # -- the tool's own signing keys --------------------------------------------------------

    async def add_tool_key(self, key: ToolKey) -> None:
        try:
            await self.db.execute(_INSERT_TOOL_KEY, _tool_key_params(key))
        except UniqueViolation as exc:
            raise CreateError(f"A tool key with kid {key.kid!r} already exists.") from exc

    async def list_tool_keys(self) -> list[ToolKey]:
        rows = await self.db.fetchall(
            f"SELECT {TOOL_KEY_COLUMNS} FROM tool_keys ORDER BY created_at DESC, kid DESC"
        )
        return [tool_key_from_row(r) for r in rows]

    async def rotate_tool_keys(self, new: ToolKey, published_until: float) -> list[ToolKey]:
        try:
            async with self.db.transaction() as tx:
                rows = await tx.fetchall(
                    f"SELECT {TOOL_KEY_COLUMNS} FROM tool_keys WHERE retired_at IS NULL"
                    " ORDER BY created_at DESC, kid DESC"
                )
                await tx.execute(_INSERT_TOOL_KEY, _tool_key_params(new))
                await tx.execute(
                    "UPDATE tool_keys SET retired_at = ?, published_until = ?"
                    " WHERE retired_at IS NULL AND kid <> ?",
                    (new.created_at, published_until, new.kid),
                )
        except UniqueViolation as exc:
            raise CreateError(f"A tool key with kid {new.kid!r} already exists.") from exc
        retired = [tool_key_from_row(r) for r in rows]
        return [
            ToolKey(k.kid, k.private_pem, k.public_jwk, k.created_at, new.created_at, published_until)
            for k in retired
        ]

    async def delete_tool_keys(self, unpublished_at: float) -> int:
        return await self.db.execute(
            "DELETE FROM tool_keys WHERE retired_at IS NOT NULL AND published_until <= ?",
            (unpublished_at,),
        )

    async def add_pending_lti13_registration(
        self,
        *,
        issuer: str,
        client_id: str,
        deployment_ids: tuple[str, ...],
        jwks_url: str,
        auth_url: str,
        token_url: str | None,
        now: float,
    ) -> Lti13Registration:
        duplicate = DuplicateRegistration(
            f"Issuer {issuer!r} with client_id {client_id!r} is already registered to an institution."
        )
        try:
            async with self.db.transaction() as tx:
                existing = await tx.fetchone(
                    "SELECT institution_id, deployment_ids FROM lti13_registrations"
                    " WHERE issuer = ? AND client_id = ?",
                    (issuer, client_id),
                )
                if existing is None:
                    await tx.execute(
                        "INSERT INTO lti13_registrations (institution_id, issuer, client_id,"
                        " deployment_ids, jwks_url, auth_url, created_at, token_url, registered_at)"
                        " VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            issuer,
                            client_id,
                            json.dumps(list(dict.fromkeys(deployment_ids))),
                            jwks_url,
                            auth_url,
                            now,
                            token_url,
                            now,
                        ),
                    )
                elif existing[0] is not None:
                    raise duplicate
                else:
                    merged = list(dict.fromkeys([*map(str, _json_list(existing[1])), *deployment_ids]))
                    await tx.execute(
                        "UPDATE lti13_registrations SET deployment_ids = ?, jwks_url = ?, auth_url = ?,"
                        " token_url = ?, registered_at = ? WHERE issuer = ? AND client_id = ?"
                        " AND institution_id IS NULL",
                        (json.dumps(merged), jwks_url, auth_url, token_url, now, issuer, client_id),
                    )
        except UniqueViolation as exc:  # a concurrent registration won the race
            raise duplicate from exc
        found = await self.get_lti13_registration(issuer, client_id)
        assert found is not None
        return found

    async def bind_lti13_registration(
        self, issuer: str, client_id: str, consumer_key: str, *, deployment_id: str | None = None
    ) -> Lti13Registration:
        async with self.db.transaction() as tx:
            owner = await tx.fetchone("SELECT id FROM institutions WHERE consumer_key = ?", (consumer_key,))
            if owner is None:
                raise InstitutionNotFound(f"No institution has consumer key {consumer_key!r}.")
            existing = await tx.fetchone(
                "SELECT institution_id, deployment_ids FROM lti13_registrations"
                " WHERE issuer = ? AND client_id = ?",
                (issuer, client_id),
            )
            if existing is None:
                raise RegistrationNotFound(
                    f"No LTI 1.3 registration has issuer {issuer!r} and client_id {client_id!r}."
                )
            if existing[0] is not None and int(existing[0]) != int(owner[0]):
                raise DuplicateRegistration(
                    f"Issuer {issuer!r} with client_id {client_id!r} is bound to another institution."
                )
            deployments = list(map(str, _json_list(existing[1])))
            if deployment_id is not None and deployment_id not in deployments:
                deployments.append(deployment_id)
            # The guard on institution_id makes a concurrent bind to another institution lose.
            changed = await tx.execute(
                "UPDATE lti13_registrations SET institution_id = ?, deployment_ids = ?"
                " WHERE issuer = ? AND client_id = ? AND (institution_id IS NULL OR institution_id = ?)",
                (owner[0], json.dumps(deployments), issuer, client_id, owner[0]),
            )
            if not changed:
                raise DuplicateRegistration(
                    f"Issuer {issuer!r} with client_id {client_id!r} is bound to another institution."
                )
        found = await self.get_lti13_registration(issuer, client_id)
        assert found is not None
        return found

    async def count_pending_lti13_registrations(self) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM lti13_registrations WHERE institution_id IS NULL")
        return int(row[0]) if row else 0


TOOL_KEY_COLUMNS = "kid, private_pem, public_jwk, created_at, retired_at, published_until"
_INSERT_TOOL_KEY = (
    "INSERT INTO tool_keys (kid, private_pem, public_jwk, created_at, retired_at, published_until)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def _tool_key_params(key: ToolKey) -> tuple[Any, ...]:
    return (
        key.kid,
        key.private_pem,
        json.dumps(key.public_jwk),
        key.created_at,
        key.retired_at,
        key.published_until,
    )


def tool_key_from_row(row: Row) -> ToolKey:
    return ToolKey(
        kid=str(row[0]),
        private_pem=str(row[1]),
        public_jwk=_json(row[2]),
        created_at=float(row[3]),
        retired_at=None if row[4] is None else float(row[4]),
        published_until=None if row[5] is None else float(row[5]),
    )


class SqlSessions(_SqlStore, SessionStore):
    async def create(self, session: SessionRecord) -> None:
        try:
            await self.db.execute(
                f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id_hash,
                    session.user_id,
                    session.institution_id,
                    orjson.dumps(session.contents).decode(),
                    session.created_at,
                    session.last_seen_at,
                    session.expires_at,
                    session.user_agent,
                ),
            )
        except UniqueViolation as exc:
            raise CreateError("A session with this id already exists.") from exc

    async def get(self, id_hash: bytes) -> SessionRecord | None:
        row = await self.db.fetchone(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = ?", (id_hash,))
        return None if row is None else session_from_row(row)

    async def touch(self, id_hash: bytes, last_seen_at: float) -> bool:
        # A plain UPDATE: if a logout deleted the row, nothing is written. The WHERE keeps a
        # late, slower touch from moving last_seen_at backwards.
        changed = await self.db.execute(
            "UPDATE sessions SET last_seen_at = ? WHERE id_hash = ? AND last_seen_at < ?",
            (last_seen_at, id_hash, last_seen_at),
        )
        if changed:
            return True
        return await self.db.fetchone("SELECT 1 FROM sessions WHERE id_hash = ?", (id_hash,)) is not None

    async def delete(self, id_hash: bytes) -> bool:
        return bool(await self.db.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,)))

    async def delete_for_institution(self, institution_id: int) -> int:
        return await self.db.execute("DELETE FROM sessions WHERE institution_id = ?", (institution_id,))

    async def delete_for_user(self, user_id: str, keep: bytes | None = None) -> int:
        return await self.db.execute(
            "DELETE FROM sessions WHERE user_id = ? AND id_hash <> ?", (user_id, keep or b"")
        )

    async def _list(self, where: str, param: Any) -> list[SessionRecord]:
        rows = await self.db.fetchall(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE {where} = ? ORDER BY created_at", (param,)
        )
        return [session_from_row(r) for r in rows]

    async def list_for_user(self, user_id: str) -> list[SessionRecord]:
        return await self._list("user_id", user_id)

    async def list_for_institution(self, institution_id: int) -> list[SessionRecord]:
        return await self._list("institution_id", institution_id)

    async def purge_expired(self, now: float, idle_timeout: float, limit: int = 1_000) -> int:
        # Two index range scans, bounded by LIMIT, in one short statement.
        return await self.db.execute(
            "DELETE FROM sessions WHERE id_hash IN ("
            " SELECT id_hash FROM sessions WHERE expires_at <= ?"
            " UNION SELECT id_hash FROM sessions WHERE last_seen_at <= ? LIMIT ?)",
            (now, now - idle_timeout, limit),
        )


class SqlOnce(_SqlStore, OnceStore):
    async def claim(
        self, namespace: str, key: str, expires_at: float, now: float, owner: str | None = None
    ) -> bool:
        # One statement, so it is atomic on both engines: insert, or take over an expired claim.
        # A provisional claim keeps its owner in ``value`` (a final claim has none).
        changed = await self.db.execute(
            "INSERT INTO once_claims (namespace, key, expires_at, value) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (namespace, key) DO UPDATE SET expires_at = excluded.expires_at,"
            " value = excluded.value WHERE once_claims.expires_at <= ?",
            (namespace, key, expires_at, owner, now),
        )
        if not changed and owner is not None:
            held = await self.db.fetchone(
                "SELECT value FROM once_claims WHERE namespace = ? AND key = ?", (namespace, key)
            )
            if held is not None and held[0] is not None:
                raise ClaimPending()
        return bool(changed)

    async def confirm(self, namespace: str, key: str, owner: str, expires_at: float) -> bool:
        changed = await self.db.execute(
            "UPDATE once_claims SET expires_at = ?, value = NULL"
            " WHERE namespace = ? AND key = ? AND value = ?",
            (expires_at, namespace, key, owner),
        )
        return bool(changed)

    async def put(self, namespace: str, key: str, value: str, expires_at: float) -> None:
        await self.db.execute(
            "INSERT INTO once_claims (namespace, key, expires_at, value) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (namespace, key) DO UPDATE SET expires_at = excluded.expires_at,"
            " value = excluded.value",
            (namespace, key, expires_at, value),
        )

    async def get(self, namespace: str, key: str, now: float) -> str | None:
        row = await self.db.fetchone(
            "SELECT value FROM once_claims WHERE namespace = ? AND key = ? AND expires_at > ?",
            (namespace, key, now),
        )
        return None if row is None or row[0] is None else str(row[0])

    async def release(self, namespace: str, key: str, owner: str | None = None) -> None:
        if owner is None:
            await self.db.execute("DELETE FROM once_claims WHERE namespace = ? AND key = ?", (namespace, key))
        else:
            await self.db.execute(
                "DELETE FROM once_claims WHERE namespace = ? AND key = ? AND value = ?",
                (namespace, key, owner),
            )

    async def purge_expired(self, now: float, limit: int = 1_000) -> int:
        return await self.db.execute(
            "DELETE FROM once_claims WHERE (namespace, key) IN ("
            " SELECT namespace, key FROM once_claims WHERE expires_at <= ? LIMIT ?)",
            (now, limit),
        )
