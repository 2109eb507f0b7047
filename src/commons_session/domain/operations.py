"""What an operator does, in one place for the CLI, the operator API (``/api/admin``) and the
operator console (``/admin``), so the three accept the same input and refuse it with the same
errors (``code``). No web framework, no driver: the service and the store contract only."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import InstitutionNotFound, InvalidInstitution, UserNotFound
from ..stores.base import RecordStore
from .audit import AuditEvent
from .ids import handle_for
from .models import Institution, Lti13Registration, SessionRecord, User
from .service import SessionService, iso8601

__all__ = ["Operations", "check_consumer_key", "check_platform_url", "require_nonempty"]

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _name(field: str, flags: bool) -> str:
    return f"--{field.replace('_', '-')}" if flags else field


def require_nonempty(flags: bool = True, **values: str) -> None:
    empty = [_name(name, flags) for name, value in values.items() if not value.strip()]
    if empty:
        raise InvalidInstitution(f"{', '.join(empty)} must not be empty.")


def check_consumer_key(key: str, flags: bool = True) -> None:
    """Canvas sends the key in every launch form; one we could never match is refused here
    rather than discovered as 401s later."""
    if len(key) > 255 or not key.isascii() or not key.isprintable() or " " in key:
        raise InvalidInstitution(
            f"{_name('consumer_key', flags)} must be at most 255 printable ASCII characters without spaces."
        )


def check_platform_url(option: str, url: str, flags: bool = True) -> None:
    """The platform's keys and login endpoint: https, or plain http on this machine only (the
    dev-canvas stand-in), since whoever answers the JWKS URL decides who may launch."""
    parts = urlsplit(url.strip())
    shown = f"--{option}" if flags else option
    if not parts.hostname or parts.scheme not in ("https", "http"):
        raise InvalidInstitution(f"{shown} must be an https URL.")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise InvalidInstitution(f"{shown} must use https (plain http only on localhost).")


def describe(institution: Institution) -> dict[str, Any]:
    return {
        "consumer_key": institution.consumer_key,
        "name": institution.name,
        "rotating": len(institution.secrets) > 1,
        "disabled": institution.disabled,
        "settings": institution.settings.as_dict(),
    }


def audit_row(event: AuditEvent, keys: dict[int, str]) -> dict[str, Any]:
    return {
        "at": iso8601(event.at),
        "event": event.event,
        "reason": event.reason,
        "user_id": event.user_id,
        "institution": keys.get(event.institution_id) if event.institution_id is not None else None,
        "session": event.session_hash,
        "request_id": event.request_id,
        "detail": event.detail,
    }


@dataclass
class Operations:
    service: SessionService
    #: Messages name CLI flags (``--consumer-key``) or, for the API and console, plain fields.
    flags: bool = True

    @property
    def records(self) -> RecordStore:
        return self.service.stores.records

    async def institution(self, key: str) -> Institution:
        found = await self.records.get_institution(key)
        if found is None:
            raise InstitutionNotFound(f"No institution has consumer key {key!r}.")
        return found

    async def list_institutions(self) -> list[dict[str, Any]]:
        registrations = await self.records.list_lti13_registrations()
        return [
            {**describe(i), "lti13": [r.as_dict() for r in registrations if r.institution_id == i.id]}
            for i in await self.records.list_institutions()
        ]

    async def add_institution(self, key: str, name: str, secret: str) -> Institution:
        require_nonempty(self.flags, consumer_key=key, secret=secret, name=name)
        check_consumer_key(key, self.flags)
        return await self.records.add_institution(key, name, secret, time.time())

    async def rotate_secret(self, key: str, secret: str) -> None:
        require_nonempty(self.flags, secret=secret)
        await self.records.rotate_secret(key, secret)

    async def finish_rotation(self, key: str) -> None:
        await self.records.finish_rotation(key)

    async def remove_institution(self, key: str) -> tuple[Institution, int]:
        institution: Institution = await self.records.remove_institution(key)
        ended = await self.service.revoke_sessions(
            institution_id=institution.id, reason="institution_removed"
        )
        return institution, ended

    async def set_institution_disabled(self, key: str, disabled: bool) -> tuple[Institution, int]:
        return await self.service.set_institution_disabled(key, disabled)

    async def pending_platforms(self) -> list[dict[str, Any]]:
        """LTI 1.3 platforms that registered themselves (Dynamic Registration), not yet bound."""
        return [r.as_dict() for r in await self.records.list_lti13_registrations() if r.pending]

    async def bind_platform(
        self, issuer: str, client_id: str, key: str, deployment_id: str | None = None
    ) -> Lti13Registration:
        require_nonempty(self.flags, issuer=issuer, client_id=client_id, consumer_key=key)
        deployment = deployment_id.strip() if deployment_id and deployment_id.strip() else None
        return await self.service.bind_lti13_registration(
            issuer.strip(), client_id.strip(), key, deployment_id=deployment
        )

    async def set_user_disabled(self, user_id: str, disabled: bool) -> tuple[User, int]:
        return await self.service.set_user_disabled(user_id, disabled)

    async def _scope(self, user_id: str | None, key: str | None) -> tuple[str | None, Institution | None]:
        if key is not None and user_id is None:
            return None, await self.institution(key)
        if user_id is None or key is not None:
            raise InvalidInstitution("Name a user or an institution, not both.")
        if await self.records.get_user(user_id) is None:
            raise UserNotFound(f"No user has id {user_id!r}.")
        return user_id, None

    def session_row(self, record: SessionRecord) -> dict[str, Any]:
        return {
            "handle": handle_for(record.id_hash),
            "user_id": record.user_id,
            "created": iso8601(record.created_at),
            "last_seen": iso8601(record.last_seen_at),
            "expires": iso8601(self.service.expires_at(record)),
            "user_agent": record.user_agent,
        }

    async def live_sessions(
        self, *, user_id: str | None = None, key: str | None = None
    ) -> list[dict[str, Any]]:
        """Sessions named by handle, never by id: ids are not stored."""
        user, institution = await self._scope(user_id, key)
        sessions = self.service.stores.sessions
        if institution is not None:
            found = await sessions.list_for_institution(institution.id)
        else:
            found = await sessions.list_for_user(user or "")
        now = time.time()
        return [self.session_row(r) for r in found if now < self.service.expires_at(r)]

    async def revoke_sessions(self, *, user_id: str | None = None, key: str | None = None) -> int:
        user, institution = await self._scope(user_id, key)
        return await self.service.revoke_sessions(
            user_id=user, institution_id=institution.id if institution else None
        )

    async def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        keys = {i.id: i.consumer_key for i in await self.records.list_institutions()}
        events = await self.records.list_audit_events(limit=limit)
        return [audit_row(e, keys) for e in events]
