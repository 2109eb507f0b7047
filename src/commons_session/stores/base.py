"""The store contract every backend implements.

Three roles, because the scale-out deployment splits them across engines (durable records in
PostgreSQL, sessions and single-use markers in Redis) while the embedded default keeps all three
in one SQLite file:

- ``RecordStore``: institutions, users, launches and terms acceptances (durable).
- ``SessionStore``: sessions, keyed by the SHA-256 of their id.
- ``OnceStore``: single-use markers with an expiry (OAuth nonces, used JWTs), and short-lived
  values (LTI 1.3 login states, one-time hand-off codes).

All methods are ``async`` so a backend may do network I/O; the SQLite backend answers without
awaiting because a primary-key lookup in a local file is faster than a thread hop.
Times are POSIX seconds (floats) from the caller's clock; stores never read the clock themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

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

__all__ = ["CombinedStores", "OnceStore", "RecordStore", "SessionStore", "Stores"]


class RecordStore:
    async def add_institution(self, consumer_key: str, name: str, secret: str, now: float) -> Institution:
        """Register an institution. Raises ``DuplicateInstitution`` if the key is taken."""
        raise NotImplementedError("subclasses of RecordStore must provide add_institution()")

    async def get_institution(self, consumer_key: str) -> Institution | None:
        """The institution with exactly this consumer key, or None."""
        raise NotImplementedError("subclasses of RecordStore must provide get_institution()")

    async def list_institutions(self) -> list[Institution]:
        """All institutions, ordered by consumer key."""
        raise NotImplementedError("subclasses of RecordStore must provide list_institutions()")

    async def remove_institution(self, consumer_key: str) -> Institution:
        """Delete the institution with its users, launches and acceptances.
        Raises ``InstitutionNotFound``. The caller ends its sessions."""
        raise NotImplementedError("subclasses of RecordStore must provide remove_institution()")

    async def rotate_secret(self, consumer_key: str, new_secret: str) -> Institution:
        """Make ``new_secret`` current and keep the current one as the only previous one, so both
        verify until ``finish_rotation``. Raises ``InstitutionNotFound``."""
        raise NotImplementedError("subclasses of RecordStore must provide rotate_secret()")

    async def finish_rotation(self, consumer_key: str) -> Institution:
        """Forget every secret but the current one. Raises ``InstitutionNotFound``."""
        raise NotImplementedError("subclasses of RecordStore must provide finish_rotation()")

    async def update_settings(self, consumer_key: str, settings: AccountSettings) -> Institution:
        """Replace the institution's account settings. Raises ``InstitutionNotFound``."""
        raise NotImplementedError("subclasses of RecordStore must provide update_settings()")

    async def record_launch(
        self, identity: Identity, profile: Profile, context: dict[str, Any], now: float
    ) -> User:
        """Create or update the user named by ``identity`` with ``profile`` and append a launch
        row, atomically. Concurrent launches of one identity yield one user."""
        raise NotImplementedError("subclasses of RecordStore must provide record_launch()")

    async def find_user(self, identity: Identity) -> User | None:
        """The user with exactly this identity (institution included), or None."""
        raise NotImplementedError("subclasses of RecordStore must provide find_user()")

    async def find_user_accepted(self, identity: Identity, version: str) -> tuple[User, bool] | None:
        """``find_user`` and, for the user found, ``has_accepted(version)``: what a create from a
        JWT asks, which a backend may answer in one query. None if there is no such user."""
        user = await self.find_user(identity)
        if user is None:
            return None
        return user, await self.has_accepted(user.id, version)

    async def get_institution_and_user(
        self, consumer_key: str, consumer_guid: str, lti_user_id: str | None, version: str
    ) -> tuple[Institution | None, tuple[User, bool] | None]:
        """``get_institution(consumer_key)`` and, within that institution only, what
        ``find_user_accepted`` answers for the user (``consumer_guid``, ``lti_user_id``): what
        a create from a JWT asks first, which a backend may answer in one query. No user is
        looked for when ``lti_user_id`` is None."""
        institution = await self.get_institution(consumer_key)
        if institution is None or lti_user_id is None:
            return institution, None
        identity = Identity(institution.id, consumer_guid, lti_user_id)
        return institution, await self.find_user_accepted(identity, version)

    async def get_user(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        raise NotImplementedError("subclasses of RecordStore must provide get_user()")

    async def count_launches(self, user_id: str) -> int:
        """How many launches are recorded for the user (0 for an unknown user)."""
        raise NotImplementedError("subclasses of RecordStore must provide count_launches()")

    async def accept_terms(self, user_id: str, version: str, now: float) -> None:
        """Record that the user accepted ``version``. Accepting twice is not an error; the first
        acceptance time is kept."""
        raise NotImplementedError("subclasses of RecordStore must provide accept_terms()")

    async def has_accepted(self, user_id: str, version: str) -> bool:
        """Whether the user accepted exactly this version."""
        raise NotImplementedError("subclasses of RecordStore must provide has_accepted()")

    async def set_institution_disabled(self, consumer_key: str, disabled: bool, now: float) -> Institution:
        """Disable (at ``now``) or enable the institution with this key; disabling twice keeps
        the first time. Returns it. Raises ``InstitutionNotFound``."""
        raise NotImplementedError("subclasses of RecordStore must provide set_institution_disabled()")

    async def set_user_disabled(self, user_id: str, disabled: bool, now: float) -> User:
        """Disable (or enable again) a user. Raises ``UserNotFound``. The caller ends sessions."""
        raise NotImplementedError("subclasses of RecordStore must provide set_user_disabled()")

    async def add_audit_event(self, event: AuditEvent) -> None:
        """Append one event to the audit stream. Events are never changed afterwards; only
        ``purge_audit_events`` removes them. Removing a user or an institution keeps their events."""
        raise NotImplementedError("subclasses of RecordStore must provide add_audit_event()")

    async def list_audit_events(
        self,
        *,
        user_id: str | None = None,
        institution_id: int | None = None,
        event: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """The events matching every filter given (``since`` inclusive, in POSIX seconds),
        newest first (events at the same time: the later added first), at most ``limit``."""
        raise NotImplementedError("subclasses of RecordStore must provide list_audit_events()")

    async def purge_audit_events(self, before: float, limit: int = 1_000) -> int:
        """Delete at most ``limit`` events older than ``before``. Returns how many; call again
        while it returns ``limit``."""
        raise NotImplementedError("subclasses of RecordStore must provide purge_audit_events()")

    # -- LTI 1.3 registrations (migration 0004) ------------------------------------------------

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
        """Attach the registration ``(issuer, client_id)`` to the institution with this key.
        If that institution already has it, the URLs are replaced and the deployment ids are
        added to the ones it had (in order, without repeats). Raises ``InstitutionNotFound``,
        and ``DuplicateRegistration`` if another institution has it."""
        raise NotImplementedError("subclasses of RecordStore must provide add_lti13_registration()")

    async def get_lti13_registration(self, issuer: str, client_id: str) -> Lti13Registration | None:
        """The registration with exactly this issuer and client id, or None."""
        raise NotImplementedError("subclasses of RecordStore must provide get_lti13_registration()")

    async def list_lti13_registrations(self, issuer: str | None = None) -> list[Lti13Registration]:
        """Every registration (only the issuer's, if given), ordered by issuer, then client id.
        Removing an institution removes its registrations."""
        raise NotImplementedError("subclasses of RecordStore must provide list_lti13_registrations()")

    async def remove_lti13_registration(self, issuer: str, client_id: str) -> Lti13Registration:
        """Delete the registration. Raises ``RegistrationNotFound``."""
        raise NotImplementedError("subclasses of RecordStore must provide remove_lti13_registration()")

    # -- the tool's own signing keys (migration sqlite 0006 / postgres 0005) ------------------

    async def add_tool_key(self, key: ToolKey) -> None:
        """Store a new signing key. Raises ``CreateError`` if its ``kid`` is taken."""
        raise NotImplementedError("subclasses of RecordStore must provide add_tool_key()")

    async def list_tool_keys(self) -> list[ToolKey]:
        """Every stored key, newest first (by ``created_at``, then ``kid``)."""
        raise NotImplementedError("subclasses of RecordStore must provide list_tool_keys()")

    async def rotate_tool_keys(self, new: ToolKey, published_until: float) -> list[ToolKey]:
        """Store ``new`` and, atomically with it, retire every other key not yet retired (at
        ``new.created_at``, published until ``published_until``); keys retired before keep
        their own end. Returns the keys it retired. Raises ``CreateError`` if the kid is taken."""
        raise NotImplementedError("subclasses of RecordStore must provide rotate_tool_keys()")

    async def delete_tool_keys(self, unpublished_at: float) -> int:
        """Delete the retired keys whose ``published_until`` is at or before ``unpublished_at``
        (never a key that may still sign). Returns how many."""
        raise NotImplementedError("subclasses of RecordStore must provide delete_tool_keys()")

    # -- LTI Dynamic Registration (migration 0007 on SQLite, 0006 on PostgreSQL) ---------------
    # ``get_``/``list_lti13_registrations`` return pending registrations too (no institution).

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
        """Store a platform that registered itself, bound to no institution. If that pending
        registration exists, its URLs are replaced and the deployment ids added. Raises
        ``DuplicateRegistration`` if ``(issuer, client_id)`` is bound to an institution: a
        platform that registers again must not take a school's registration over."""
        raise NotImplementedError("subclasses of RecordStore must provide add_pending_lti13_registration()")

    async def bind_lti13_registration(
        self, issuer: str, client_id: str, consumer_key: str, *, deployment_id: str | None = None
    ) -> Lti13Registration:
        """Attach a pending registration to the institution with this key (and record
        ``deployment_id`` if given and new). Binding it again to the same institution is a no-op
        but for the deployment. Raises ``RegistrationNotFound``, ``InstitutionNotFound``, and
        ``DuplicateRegistration`` if another institution has it."""
        raise NotImplementedError("subclasses of RecordStore must provide bind_lti13_registration()")

    async def count_pending_lti13_registrations(self) -> int:
        """How many registrations are pending (Dynamic Registration is capped by this)."""
        raise NotImplementedError(
            "subclasses of RecordStore must provide count_pending_lti13_registrations()"
        )


@asynccontextmanager
async def _one_by_one() -> AsyncIterator[None]:
    yield


class SessionStore:
    def atomic(self) -> AbstractAsyncContextManager[None]:
        """A scope whose writes, through every role this backend serves, commit together when
        it ends, or not at all if it raises. The default has none: each write stands on its own
        as outside the scope, so a caller still undoes what it must (``OnceStore.release``).

        Inside, await only this backend's store calls: a backend may hold its write lock for
        the whole scope, and a statement from another task while it is open is a bug (SQLite
        refuses it)."""
        return _one_by_one()

    async def create(self, session: SessionRecord) -> None:
        """Store a new session. Raises ``CreateError`` if ``id_hash`` is already stored."""
        raise NotImplementedError("subclasses of SessionStore must provide create()")

    async def get(self, id_hash: bytes) -> SessionRecord | None:
        """The session with this hash, or None. May return a session past its expiry (the
        caller checks, with its clock); never returns one that was deleted."""
        raise NotImplementedError("subclasses of SessionStore must provide get()")

    async def touch(self, id_hash: bytes, last_seen_at: float) -> bool:
        """Slide the idle timeout. Returns False, and writes nothing, if the session is gone:
        a touch must never bring a deleted session back."""
        raise NotImplementedError("subclasses of SessionStore must provide touch()")

    async def delete(self, id_hash: bytes) -> bool:
        """End the session. Returns whether it existed."""
        raise NotImplementedError("subclasses of SessionStore must provide delete()")

    async def delete_for_institution(self, institution_id: int) -> int:
        """End every session of the institution's users. Returns how many ended."""
        raise NotImplementedError("subclasses of SessionStore must provide delete_for_institution()")

    async def delete_for_user(self, user_id: str, keep: bytes | None = None) -> int:
        """End every session of the user except the one hashed ``keep``. Returns how many."""
        raise NotImplementedError("subclasses of SessionStore must provide delete_for_user()")

    async def list_for_user(self, user_id: str) -> list[SessionRecord]:
        """The user's stored sessions, oldest first; may include some past their end."""
        raise NotImplementedError("subclasses of SessionStore must provide list_for_user()")

    async def list_for_institution(self, institution_id: int) -> list[SessionRecord]:
        """The institution's stored sessions, oldest first; may include some past their end."""
        raise NotImplementedError("subclasses of SessionStore must provide list_for_institution()")

    async def purge_expired(self, now: float, idle_timeout: float, limit: int = 1_000) -> int:
        """Delete at most ``limit`` sessions past their absolute or idle end, in one short
        transaction, so purging never blocks requests for long. Returns how many; call again
        while it returns ``limit``."""
        raise NotImplementedError("subclasses of SessionStore must provide purge_expired()")


class OnceStore:
    async def claim(
        self, namespace: str, key: str, expires_at: float, now: float, owner: str | None = None
    ) -> bool:
        """Mark ``key`` used until ``expires_at``. True if this call claimed it, False if an
        unexpired claim already stands. Atomic: of two racing claims exactly one wins.

        With ``owner`` the claim is provisional: it blocks every other claim until
        ``expires_at`` (keep that short), and only ``confirm`` with the same owner makes it
        final. A create that fails for a store fault, even one that cannot undo its claim
        because the store is down, thus leaves the token usable again once that expires."""
        raise NotImplementedError("subclasses of OnceStore must provide claim()")

    async def confirm(self, namespace: str, key: str, owner: str, expires_at: float) -> bool:
        """Make ``owner``'s provisional claim final, until ``expires_at``. False (and nothing
        written) if that claim no longer stands (it expired; another may hold the key now)."""
        raise NotImplementedError("subclasses of OnceStore must provide confirm()")

    async def put(self, namespace: str, key: str, value: str, expires_at: float) -> None:
        """Keep ``value`` under ``key`` until ``expires_at`` (a later put replaces it). For
        short-lived values such as LTI 1.3 login states; a namespace is used either with
        ``put``/``get`` or with ``claim``, never both."""
        raise NotImplementedError("subclasses of OnceStore must provide put()")

    async def get(self, namespace: str, key: str, now: float) -> str | None:
        """The value ``put`` under ``key``, or None if there is none or it has expired."""
        raise NotImplementedError("subclasses of OnceStore must provide get()")

    async def release(self, namespace: str, key: str, owner: str | None = None) -> None:
        """Undo a claim whose operation failed later, so the key can be used again; with
        ``owner``, only that owner's provisional claim (never a confirmed one, nor another's)."""
        raise NotImplementedError("subclasses of OnceStore must provide release()")

    async def purge_expired(self, now: float, limit: int = 1_000) -> int:
        """Delete at most ``limit`` expired claims. Returns how many."""
        raise NotImplementedError("subclasses of OnceStore must provide purge_expired()")


class Stores:
    """The three roles a deployment wires together, plus their shared lifecycle."""

    #: Whether ``atomic()`` is one transaction over the sessions and the single-use claims
    #: (SQLite): a claim written inside it is undone with everything else if the scope fails,
    #: so it can be written final at once instead of provisional and then confirmed.
    claims_in_transaction = False

    def __init__(self, records: RecordStore, sessions: SessionStore, once: OnceStore) -> None:
        self.records = records
        self.sessions = sessions
        self.once = once

    def atomic(self) -> AbstractAsyncContextManager[None]:
        """``SessionStore.atomic`` of the sessions' backend: the session, single-use claims and,
        where the records share that backend, audit rows written inside commit together (a
        create's three writes are one SQLite transaction instead of three)."""
        return self.sessions.atomic()

    async def open(self) -> None:
        """Connect and apply pending migrations. Raises ``SchemaTooNew`` for a database that a
        newer release migrated, and ``StoreUnavailable`` if the store cannot be reached."""

    async def ping(self) -> None:
        """Run one cheap query on every backing store (readiness). Raises ``StoreUnavailable``
        if one cannot answer; the caller bounds the wait."""

    def warnings(self) -> list[str]:
        """What an operator allowed but should know (e.g. a volatile Redis), as of the last
        ``open`` or ``ping``; ``/readyz`` shows them."""
        return []

    async def close(self) -> None:
        """Release connections. Safe to call twice."""


class CombinedStores(Stores):
    """Durable records from one backend, sessions and single-use markers from another (Redis)."""

    def __init__(self, durable: Stores, fast: Stores) -> None:
        super().__init__(durable.records, fast.sessions, fast.once)
        self.parts = (durable, fast)

    async def open(self) -> None:
        for part in self.parts:
            await part.open()

    async def ping(self) -> None:
        for part in self.parts:
            await part.ping()

    def warnings(self) -> list[str]:
        return [w for part in self.parts for w in part.warnings()]

    async def close(self) -> None:
        for part in self.parts:
            await part.close()
