"""The use cases: launch, create a session from a Canvas JWT, read it, end it, accept terms.

This is the only module that knows the order of the checks, which is part of the contract:
nothing is written until everything that can refuse a request has had its say, and single-use
markers (nonces, tokens) are claimed last, so a refused request never uses one up.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import (
    InvalidSession,
    NeverLaunched,
    ReplayedNonce,
    SessionNotFound,
    StoreError,
    TermsNotAccepted,
    TermsVersionMismatch,
    TokenReplayed,
    UnknownKey,
    UserDisabled,
)
from ..stores.base import Stores
from . import lti, tokens
from .ids import handle_for, hash_id, is_well_formed, new_session_id
from .models import Institution, Profile, SessionRecord, User
from .terms import Terms

__all__ = ["Issued", "LaunchResult", "Policy", "SessionService", "SessionSummary", "session_contents"]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of the session lifecycle, in seconds (see ``config.Settings``)."""

    idle_timeout: int = 3_600
    absolute_timeout: int = 43_200
    touch_interval: int = 60
    jwt_max_age: int = 300
    jwt_future_skew: int = 60
    jwt_replay_retention: int = 86_400
    jwt_max_bytes: int = 16_384
    oauth_timestamp_window: int = 5_400


@dataclass(frozen=True, slots=True)
class Issued:
    """A new session: the only place where an id and its record travel together."""

    session_id: str
    record: SessionRecord


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What a person sees about one of their sessions: never its id, only a handle."""

    handle: str
    created_at: float
    last_seen_at: float
    expires_at: float
    user_agent: str | None
    current: bool


@dataclass(frozen=True, slots=True)
class LaunchResult:
    issued: Issued
    user: User
    terms_accepted: bool


def session_contents(user: User, profile: Profile, institution: Institution) -> dict[str, Any]:
    """Commons' session keys, except ``sid`` and ``expires`` which are added at read time."""
    flags = institution.settings
    return {
        "userId": user.id,
        "prefersHighContrast": profile.prefers_high_contrast,
        "locale": profile.locale or "en",
        "userFullName": profile.full_name,
        "accountName": profile.account_name or institution.name,
        "accountId": profile.account_id,
        "canvasUserId": profile.canvas_user_id,
        "canvasApiDomain": profile.canvas_api_domain,
        "roles": list(profile.roles),
        "isAdmin": profile.is_admin,
        "canSharePublic": flags.can_share_public,
        "canShowPublic": flags.can_show_public,
        "showCuratedResourcesFirst": flags.show_curated_resources_first,
        "showFederalStandards": flags.show_federal_standards,
        "showStateStandards": flags.show_state_standards,
        "stateStandard": flags.state_standard,
        "isAccountCurator": False,
        "userAvatarUrl": profile.avatar_url,
    }


def _merge(fresh: Profile, stored: Profile) -> Profile:
    """A JWT carries the same parameters as a launch; where it lacks one, keep the launch's."""
    changes = {
        f.name: getattr(stored, f.name)
        for f in dataclasses.fields(Profile)
        if getattr(fresh, f.name) in (None, ())
    }
    return dataclasses.replace(fresh, **changes)


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SessionService:
    def __init__(self, stores: Stores, policy: Policy, terms: Terms, clock: Clock = time.time) -> None:
        self.stores = stores
        self.policy = policy
        self.terms = terms
        self.clock = clock

    # -- sessions -------------------------------------------------------------------------

    async def _issue(
        self, user: User, profile: Profile, institution: Institution, user_agent: str | None
    ) -> Issued:
        now = self.clock()
        session_id = new_session_id()
        record = SessionRecord(
            id_hash=hash_id(session_id),
            user_id=user.id,
            institution_id=institution.id,
            contents=session_contents(user, profile, institution),
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.policy.absolute_timeout,
            user_agent=(user_agent or "")[:256] or None,
        )
        await self.stores.sessions.create(record)
        return Issued(session_id, record)

    def expires_at(self, record: SessionRecord) -> float:
        """When the session ends if nothing else happens: the earlier of idle and absolute."""
        return min(record.expires_at, record.last_seen_at + self.policy.idle_timeout)

    async def authenticate(self, session_id: str) -> SessionRecord:
        """The live session this id names, sliding its idle timeout. ``InvalidSession`` for a
        malformed id (without a store lookup), an unknown, expired or ended one."""
        if not is_well_formed(session_id):
            raise InvalidSession()
        id_hash = hash_id(session_id)
        record = await self.stores.sessions.get(id_hash)
        if record is None or not hmac.compare_digest(record.id_hash, id_hash):
            raise InvalidSession()
        now = self.clock()
        if now >= self.expires_at(record):
            await self.stores.sessions.delete(id_hash)
            raise InvalidSession("The session has expired; create a new one.")
        if now - record.last_seen_at >= self.policy.touch_interval:
            # Write at most once per touch_interval; a touch never resurrects a logged-out row.
            if not await self.stores.sessions.touch(id_hash, now):
                raise InvalidSession()
            record = dataclasses.replace(record, last_seen_at=now)
        return record

    def contents(self, session_id: str, record: SessionRecord) -> dict[str, Any]:
        return {"sid": session_id, "expires": iso8601(self.expires_at(record)), **record.contents}

    async def logout(self, session_id: str) -> None:
        """End the session on the server. ``InvalidSession`` if there was nothing to end."""
        if not is_well_formed(session_id) or not await self.stores.sessions.delete(hash_id(session_id)):
            raise InvalidSession()

    # -- managing one's sessions ----------------------------------------------------------

    async def list_sessions(self, current: SessionRecord) -> list[SessionSummary]:
        """The caller's live sessions, the current one marked."""
        now = self.clock()
        return [
            SessionSummary(
                handle=handle_for(r.id_hash),
                created_at=r.created_at,
                last_seen_at=r.last_seen_at,
                expires_at=self.expires_at(r),
                user_agent=r.user_agent,
                current=hmac.compare_digest(r.id_hash, current.id_hash),
            )
            for r in await self.stores.sessions.list_for_user(current.user_id)
            if now < self.expires_at(r)
        ]

    async def end_session(self, current: SessionRecord, handle: str) -> bool:
        """End the caller's session named by ``handle``; returns whether it was the current one.
        ``SessionNotFound`` if none of the caller's sessions has that handle."""
        for record in await self.stores.sessions.list_for_user(current.user_id):
            if hmac.compare_digest(handle_for(record.id_hash), handle):
                await self.stores.sessions.delete(record.id_hash)
                return hmac.compare_digest(record.id_hash, current.id_hash)
        raise SessionNotFound()

    async def end_other_sessions(self, current: SessionRecord) -> int:
        return await self.stores.sessions.delete_for_user(current.user_id, keep=current.id_hash)

    async def set_user_disabled(self, user_id: str, disabled: bool) -> tuple[User, int]:
        """Disable (ending every session) or enable a user. Returns the user and sessions ended."""
        user = await self.stores.records.set_user_disabled(user_id, disabled, self.clock())
        ended = await self.stores.sessions.delete_for_user(user_id) if disabled else 0
        return user, ended

    # -- Canvas JWT -----------------------------------------------------------------------

    async def create_from_jwt(self, token: str, user_agent: str | None = None) -> Issued:
        policy = self.policy
        consumer_key = tokens.read_consumer_key(token, policy.jwt_max_bytes)
        institution = await self.stores.records.get_institution(consumer_key)
        if institution is None:
            raise UnknownKey()
        now = self.clock()
        claims = tokens.verify_token(
            token,
            institution,
            now=now,
            max_age=policy.jwt_max_age,
            future_skew=policy.jwt_future_skew,
            max_bytes=policy.jwt_max_bytes,
        )
        identity = lti.parse_identity(claims, institution.id, from_token=True)
        user = await self.stores.records.find_user(identity)
        if user is None:
            raise NeverLaunched()
        if user.disabled:
            raise UserDisabled()
        if not await self.stores.records.has_accepted(user.id, self.terms.version):
            raise TermsNotAccepted()
        # Claimed last: a token refused above stays usable for a retry.
        if policy.jwt_max_age:
            keep_until = float(claims["iat"]) + policy.jwt_max_age + policy.jwt_future_skew
        else:
            keep_until = now + policy.jwt_replay_retention
        digest = tokens.token_digest(token)
        if not await self.stores.once.claim("jwt", digest, keep_until, now):
            raise TokenReplayed()
        try:
            return await self._issue(
                user, _merge(lti.parse_profile(claims), user.profile), institution, user_agent
            )
        except BaseException:
            await self.stores.once.release("jwt", digest)
            raise

    # -- LTI 1.1 launch -------------------------------------------------------------------

    async def launch(
        self,
        *,
        uri: str,
        body: str,
        content_type: str,
        held_session_id: str | None,
        user_agent: str | None = None,
    ) -> LaunchResult:
        """Verify the launch, record the user and the launch, and start a fresh session
        (revoking the one the browser held, against session fixation)."""
        pairs = lti.parse_form(body)
        oauth = lti.oauth_params(pairs)
        institution = await self.stores.records.get_institution(oauth["oauth_consumer_key"])
        now = self.clock()
        window = self.policy.oauth_timestamp_window
        params = lti.verify_launch(
            uri=uri,
            body=body,
            content_type=content_type,
            pairs=pairs,
            institution=institution,
            now=now,
            timestamp_window=window,
        )
        assert institution is not None  # verify_launch refused an unknown key
        lti.check_message(params)
        identity = lti.parse_identity(params, institution.id, from_token=False)
        profile = lti.parse_profile(params)
        known = await self.stores.records.find_user(identity)
        if known is not None and known.disabled:
            raise UserDisabled()
        # The nonce must stay remembered for as long as its timestamp would still be accepted.
        nonce_key = f"{institution.id}:{oauth['oauth_nonce']}"
        keep_until = max(now, float(oauth["oauth_timestamp"])) + window
        if not await self.stores.once.claim("oauth_nonce", nonce_key, keep_until, now):
            raise ReplayedNonce()
        try:
            user = await self.stores.records.record_launch(identity, profile, lti.launch_context(params), now)
            accepted = await self.stores.records.has_accepted(user.id, self.terms.version)
            if held_session_id and is_well_formed(held_session_id):
                await self.stores.sessions.delete(hash_id(held_session_id))
            issued = await self._issue(user, profile, institution, user_agent)
        except StoreError:
            await self.stores.once.release("oauth_nonce", nonce_key)
            raise
        return LaunchResult(issued, user, accepted)

    # -- terms ----------------------------------------------------------------------------

    async def has_accepted_terms(self, record: SessionRecord) -> bool:
        return await self.stores.records.has_accepted(record.user_id, self.terms.version)

    async def accept_terms(self, record: SessionRecord, version: str) -> None:
        if version != self.terms.version:
            raise TermsVersionMismatch(
                f"Version {version!r} is not the current terms of service ({self.terms.version!r})."
            )
        await self.stores.records.accept_terms(record.user_id, version, self.clock())
