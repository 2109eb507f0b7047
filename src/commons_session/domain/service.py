"""The use cases: launch, create a session from a Canvas JWT, read it, end it, accept terms.

This is the only module that knows the order of the checks, which is part of the contract:
nothing is written until everything that can refuse a request has had its say, and single-use
markers (nonces, tokens) are claimed last, so a refused request never uses one up.

It also says what happened, as ``AuditEvent``s to the ``events`` sink (the audit table and the
metrics); a sink that fails is logged and ignored, so an audit outage fails no request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import (
    AuthenticationError,
    BadRequest,
    DeepLinkingUsed,
    DuplicateRegistration,
    Forbidden,
    InstitutionDisabled,
    InvalidClaims,
    InvalidExchangeCode,
    InvalidSession,
    NeverLaunched,
    NonceMismatch,
    NonceReplayed,
    NotDeepLinking,
    RegistrationPending,
    ReplayedNonce,
    SessionNotFound,
    SessionServiceError,
    StateCookieMissing,
    StateExpired,
    StateMismatch,
    StoreUnavailable,
    TermsNotAccepted,
    TermsVersionMismatch,
    TokenReplayed,
    TooManyPendingRegistrations,
    UnknownAudience,
    UnknownClientId,
    UnknownIssuer,
    UnknownKey,
    UnknownRegistration,
    UserDisabled,
    WrongTargetLinkUri,
)
from ..lti import deeplinking, keys, v11, v13
from ..lti import registration as dynreg
from ..stores.base import Stores
from . import exchange, tokens
from .audit import AuditEvent, EventSink, session_hash
from .ids import handle_for, hash_id, is_well_formed, new_session_id
from .models import Identity, Institution, Lti13Registration, Profile, SessionRecord, User
from .terms import Terms

__all__ = [
    "REQUEST_STARTED",
    "InstitutionGuard",
    "Issued",
    "LaunchResult",
    "Lti13Login",
    "Policy",
    "SessionService",
    "SessionSummary",
    "session_contents",
]

Clock = Callable[[], float]
#: The session id(s) a browser presented that a new session replaces: a browser may send two
#: ``session`` cookies (other paths or domains), and each of them ends.
Held = str | Sequence[str] | None

#: When the request began, in the event loop's clock (set by the web layer for each request).
REQUEST_STARTED: ContextVar[float | None] = ContextVar("request_started", default=None)
log = logging.getLogger("commons_session.audit")

# What a refused create or launch is audited as: the caller's mistakes and refusals, not store
# failures or rate limits.
_REFUSALS = (BadRequest, AuthenticationError, Forbidden)


class InstitutionGuard(Protocol):
    async def admit_institution(self, consumer_key: str) -> None:
        """Called once per create or launch that passed every check but the institution's
        limit (its single-use claim made); raises ``RateLimited`` to refuse it."""
        ...


@dataclass(slots=True)
class _Who:
    """Who a create or launch turned out to be, as far as its checks got (for the audit)."""

    institution_id: int | None = None
    user_id: str | None = None


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
    lti_state_ttl: int = 600
    jwks_cache_ttl: int = 300
    jwks_min_ttl: int = 60
    jwks_max_ttl: int = 86_400
    exchange_code_ttl: int = 60
    #: How long a single-use claim stays provisional (blocking replays) before the session it
    #: guards is stored; a claim a store fault left behind lapses after it (3 x store_timeout).
    claim_pending: float = 6.0
    #: The whole of a create or launch gives up (503) after this long (``store_timeout``).
    store_timeout: float = 2.0


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
    #: The sessions the browser held, now ended (against fixation): every one it presented.
    replaced: tuple[SessionRecord, ...] = ()
    #: The one-time code the page can trade for the session id if the cookie is blocked.
    exchange_code: str | None = None


@dataclass(frozen=True, slots=True)
class Lti13Login:
    """A started LTI 1.3 login: where to send the browser, and what it must keep."""

    redirect_url: str
    state: str
    #: The browser binding: the state cookie's value (and the Platform Storage value).
    binding: str
    #: The platform's origin, the only one the page may exchange postMessages with.
    platform_origin: str
    #: The login's nonce, also kept in Platform Storage when the platform offers it.
    nonce: str = ""


#: The session contents key of a Deep Linking launch's context (absent in every other session).
DEEP_LINKING_KEY = "deepLinking"


@dataclass(frozen=True, slots=True)
class DeepLinkingAnswer:
    """Where the browser posts the response, and the response itself (``JWT`` form field)."""

    return_url: str
    jwt: str
    kid: str


#: Platforms that registered themselves and wait to be bound; more are refused, so that
#: anonymous registrations cannot fill the table.
MAX_PENDING_REGISTRATIONS = 100

# A login state stays readable this long after it expired, so a late launch is told
# ``state_expired`` rather than ``state_mismatch``; its nonce stays claimed as long.
LTI13_STATE_GRACE = 3_600

# How long a failed create may spend giving its claim back (seconds): a store that is down
# would make it wait a whole store timeout more, and the claim lapses by itself anyway.
CLEANUP_TIMEOUT = 0.25


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


_PROFILE_FIELDS = tuple(f.name for f in dataclasses.fields(Profile))


def _merge(fresh: Profile, stored: Profile) -> Profile:
    """A JWT carries the same parameters as a launch; where it lacks one, keep the launch's."""
    changes = {
        name: kept
        for name in _PROFILE_FIELDS
        if getattr(fresh, name) in (None, ()) and (kept := getattr(stored, name)) not in (None, ())
    }
    return dataclasses.replace(fresh, **changes) if changes else fresh


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SessionService:
    def __init__(
        self,
        stores: Stores,
        policy: Policy,
        terms: Terms,
        clock: Clock = time.time,
        *,
        events: EventSink | None = None,
        guard: InstitutionGuard | None = None,
        jwks_fetcher: v13.JwksFetcher | None = None,
        request_id: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.stores = stores
        #: The id of the request being served (the web layer's), stamped on each audit event.
        self.request_id = request_id
        self.policy = policy
        self.terms = terms
        self.clock = clock
        self.events = events
        self.guard = guard
        self.keys = v13.KeySets(
            jwks_fetcher,
            ttl=policy.jwks_cache_ttl,
            min_ttl=policy.jwks_min_ttl,
            max_ttl=policy.jwks_max_ttl,
            clock=clock,
        )
        #: The tool's own signing keys (Deep Linking responses, our JWKS).
        self.tool_keys = keys.ToolKeys(stores.records)

    async def _emit(
        self,
        event: str,
        reason: str | None = None,
        *,
        user_id: str | None = None,
        institution_id: int | None = None,
        id_hash: bytes | None = None,
        **detail: Any,
    ) -> None:
        if self.events is None:
            return
        try:
            await self.events(
                AuditEvent(
                    event=event,
                    at=self.clock(),
                    reason=reason,
                    user_id=user_id,
                    institution_id=institution_id,
                    session_hash=session_hash(id_hash) if id_hash else None,
                    request_id=self.request_id(),
                    detail=detail,
                )
            )
        except Exception:
            log.warning("audit event %s (%s) was not recorded", event, reason, exc_info=True)

    async def _emit_created(self, via: str, record: SessionRecord) -> None:
        await self._emit(
            "session_created",
            via,
            user_id=record.user_id,
            institution_id=record.institution_id,
            id_hash=record.id_hash,
        )

    async def _emit_ended(self, reason: str, record: SessionRecord) -> None:
        await self._emit(
            "session_ended",
            reason,
            user_id=record.user_id,
            institution_id=record.institution_id,
            id_hash=record.id_hash,
        )

    # -- sessions -------------------------------------------------------------------------

    async def _issue(
        self,
        user: User,
        profile: Profile,
        institution: Institution,
        user_agent: str | None,
        extra: dict[str, Any] | None = None,
    ) -> Issued:
        now = self.clock()
        session_id = new_session_id()
        record = SessionRecord(
            id_hash=hash_id(session_id),
            user_id=user.id,
            institution_id=institution.id,
            contents={**session_contents(user, profile, institution), **(extra or {})},
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
            if await self.stores.sessions.delete(id_hash):
                await self._emit_ended("expired", record)
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
        if not is_well_formed(session_id):
            raise InvalidSession()
        id_hash = hash_id(session_id)
        record = await self.stores.sessions.get(id_hash)  # whose it was, for the audit
        if not await self.stores.sessions.delete(id_hash):
            raise InvalidSession()
        if record is not None:
            await self._emit_ended("logout", record)

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
                if await self.stores.sessions.delete(record.id_hash):
                    await self._emit_ended("ended_by_user", record)
                return hmac.compare_digest(record.id_hash, current.id_hash)
        raise SessionNotFound()

    async def end_other_sessions(self, current: SessionRecord) -> int:
        ended = await self.stores.sessions.delete_for_user(current.user_id, keep=current.id_hash)
        await self._emit(
            "session_ended",
            "logout_others",
            user_id=current.user_id,
            institution_id=current.institution_id,
            sessions=ended,
        )
        return ended

    async def set_user_disabled(self, user_id: str, disabled: bool) -> tuple[User, int]:
        """Disable (ending every session) or enable a user. Returns the user and sessions ended."""
        user = await self.stores.records.set_user_disabled(user_id, disabled, self.clock())
        ended = 0
        if disabled:
            ended = await self.revoke_sessions(user_id=user_id, reason="user_disabled")
        return user, ended

    async def revoke_sessions(
        self, *, user_id: str | None = None, institution_id: int | None = None, reason: str = "operator"
    ) -> int:
        """End every session of a user or of an institution (exactly one of the two)."""
        if (user_id is None) == (institution_id is None):
            raise ValueError("revoke the sessions of a user or of an institution")
        if user_id is not None:
            ended = await self.stores.sessions.delete_for_user(user_id)
            user = await self.stores.records.get_user(user_id)  # whose institution, for the audit
            institution_id = user.identity.institution_id if user else None
        else:
            assert institution_id is not None
            ended = await self.stores.sessions.delete_for_institution(institution_id)
        await self._emit(
            "session_revoked", reason, user_id=user_id, institution_id=institution_id, sessions=ended
        )
        return ended

    # -- Canvas JWT -----------------------------------------------------------------------

    async def create_from_jwt(
        self, token: str, user_agent: str | None = None, held_session_id: Held = None
    ) -> Issued:
        """A session from a Canvas JWT. ``held_session_id`` is the session(s) the browser's
        cookies carried: the new cookie replaces them, so they end (as on a launch, against
        fixation)."""
        who = _Who()
        try:
            async with self._deadline():
                issued = await self._create_from_jwt(token, user_agent, who)
        except _REFUSALS as exc:
            await self._emit(
                "verification_failed",
                exc.code,
                user_id=who.user_id,
                institution_id=who.institution_id,
                via="jwt",
            )
            raise
        for held in await self._end_held(held_session_id):
            await self._emit_ended("jwt_replaced", held)
        return issued

    async def _end_held(self, held_session_id: Held) -> list[SessionRecord]:
        """End every well-formed session id the browser presented; the records that ended."""
        ids = [held_session_id] if isinstance(held_session_id, str) else list(held_session_id or ())
        ended: list[SessionRecord] = []
        for id_hash in dict.fromkeys(hash_id(i) for i in ids if i and is_well_formed(i)):
            held = await self.stores.sessions.get(id_hash)
            if held is not None and await self.stores.sessions.delete(id_hash):
                ended.append(held)
        return ended

    async def _create_from_jwt(self, token: str, user_agent: str | None, who: _Who) -> Issued:
        policy = self.policy
        parsed = tokens.parse(token, policy.jwt_max_bytes)
        # The institution and, within it, the user the claims name, in one lookup. The claims
        # are as sent: nothing read with them is used unless the signature verifies below.
        try:
            named: Identity | None = v11.parse_identity(parsed.payload, 0, from_token=True)
        except InvalidClaims:  # refused below, after the signature, in the order PyJWT refuses
            named = None
        institution, found = await self.stores.records.get_institution_and_user(
            parsed.consumer_key,
            named.tool_consumer_instance_guid if named else "",
            named.lti_user_id if named else None,
            self.terms.version,
        )
        if institution is None:
            raise UnknownKey()
        who.institution_id = institution.id
        if institution.disabled:
            raise InstitutionDisabled()
        now = self.clock()
        claims = tokens.verify(
            parsed, institution, now=now, max_age=policy.jwt_max_age, future_skew=policy.jwt_future_skew
        )
        if named is None or claims is not parsed.payload:  # else the same claims named the user
            identity = v11.parse_identity(claims, institution.id, from_token=True)
            found = await self.stores.records.find_user_accepted(identity, self.terms.version)
        if found is None:
            raise NeverLaunched()
        user, accepted = found
        who.user_id = user.id
        if user.disabled:
            raise UserDisabled()
        if not accepted:
            raise TermsNotAccepted()
        # Claimed last: a token refused above stays usable for a retry.
        # Past the last instant the age check accepts the token (now - iat == jwt_max_age), by
        # a second: every store counts a marker as expired at its expiry (OnceStore.claim).
        if policy.jwt_max_age:
            keep_until = float(claims["iat"]) + policy.jwt_max_age + policy.jwt_future_skew + 1
        else:
            keep_until = now + policy.jwt_replay_retention
        digest = tokens.token_digest(parsed)  # from the verified bytes, not the token's spelling
        profile = _merge(v11.parse_profile(claims), user.profile)
        # The claim, the session and its audit row in one commit where the backend allows
        # (SQLite: one transaction instead of three), and a failed insert keeps no claim.
        replayed, in_transaction = TokenReplayed(), self.stores.claims_in_transaction
        async with self.stores.atomic():
            async with self._single_use(
                "jwt", digest, keep_until, now, replayed, in_transaction=in_transaction
            ) as made:
                await self._admit(institution)
                issued = await self._issue(user, profile, institution, user_agent)
                made.append(issued.record.id_hash)
            await self._emit_created("jwt", issued.record)
        return issued

    @asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        """One ``store_timeout`` for all the store calls of a create or launch (the claim, the
        session, the rate-limit counters), not one each: a stalled Redis answered after three
        timeouts. It counts from ``REQUEST_STARTED`` where the web layer set it, so the
        counter a middleware charged before is inside it too."""
        loop = asyncio.get_running_loop()
        started = REQUEST_STARTED.get()
        try:
            async with asyncio.timeout_at((started or loop.time()) + self.policy.store_timeout):
                yield
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"The store did not answer within {self.policy.store_timeout:g} s."
            ) from exc

    @asynccontextmanager
    async def _single_use(
        self,
        namespace: str,
        key: str,
        keep_until: float,
        now: float,
        replayed: SessionServiceError,
        *,
        in_transaction: bool = False,
    ) -> AsyncIterator[list[bytes]]:
        """Claim ``key`` provisionally (``replayed`` if it is taken), run the body, then make the
        claim final. If the body or the confirmation fails, the claim is given back where the
        store still answers, and where it does not, it lapses by itself after
        ``claim_pending`` seconds: a create that failed for a store fault never uses the token
        up. The body lists the sessions it made, ended again if the claim cannot be confirmed
        (their ids were never handed out).

        ``in_transaction``: the caller is inside ``atomic()`` of stores whose claims are part of
        that transaction (``Stores.claims_in_transaction``). The claim is then written final at
        once: if anything after it fails, the transaction takes it back with the rest, and a
        crash before the commit keeps neither the claim nor the session."""
        if in_transaction:
            if not await self.stores.once.claim(namespace, key, keep_until, now):
                raise replayed
            yield []
            return
        owner = secrets.token_hex(16)
        pending_until = min(keep_until, now + self.policy.claim_pending)
        if not await self.stores.once.claim(namespace, key, pending_until, now, owner):
            raise replayed
        made: list[bytes] = []
        try:
            yield made
            if not await self.stores.once.confirm(namespace, key, owner, keep_until):
                raise StoreUnavailable("The single-use claim lapsed before the session was stored.")
        except BaseException:
            # Best effort, briefly: the store may be down, and then the claim lapses by itself.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await self.stores.once.release(namespace, key, owner)
                    for id_hash in made:
                        await self.stores.sessions.delete(id_hash)
            raise

    # -- LTI 1.1 launch -------------------------------------------------------------------

    async def launch(
        self,
        *,
        uri: str,
        body: str,
        content_type: str,
        held_session_id: Held,
        user_agent: str | None = None,
        authorization: str | None = None,
    ) -> LaunchResult:
        """Verify the launch, record the user and the launch, and start a fresh session
        (revoking every session the browser held, against session fixation). ``authorization``
        is the request's ``Authorization: OAuth`` header, if any: it is signed too."""
        return await self._audited_launch(
            "launch",
            lambda who: self._launch(
                uri, body, content_type, held_session_id, user_agent, who, authorization
            ),
        )

    async def _audited_launch(self, via: str, run: Callable[[_Who], Awaitable[LaunchResult]]) -> LaunchResult:
        """Run an LTI 1.1 or 1.3 launch and say what happened."""
        who = _Who()
        try:
            async with self._deadline():
                result = await run(who)
        except _REFUSALS as exc:
            await self._emit(
                "verification_failed",
                exc.code,
                user_id=who.user_id,
                institution_id=who.institution_id,
                via=via,
            )
            raise
        record = result.issued.record
        await self._emit("launch", user_id=record.user_id, institution_id=record.institution_id)
        for replaced in result.replaced:
            await self._emit_ended("launch_replaced", replaced)
        await self._emit_created("launch", record)
        return result

    async def _launch(
        self,
        uri: str,
        body: str,
        content_type: str,
        held_session_id: Held,
        user_agent: str | None,
        who: _Who,
        authorization: str | None = None,
    ) -> LaunchResult:
        # Every parameter the signature covers, wherever it sits (query, body, OAuth header).
        pairs = v11.signed_pairs(uri, body, authorization)
        oauth = v11.oauth_params(pairs)
        institution = await self.stores.records.get_institution(oauth["oauth_consumer_key"])
        now = self.clock()
        window = self.policy.oauth_timestamp_window
        params = v11.verify_launch(
            uri=uri,
            body=body,
            content_type=content_type,
            pairs=pairs,
            institution=institution,
            now=now,
            timestamp_window=window,
            authorization=authorization,
        )
        assert institution is not None  # verify_launch refused an unknown key
        who.institution_id = institution.id
        # The nonce must stay remembered for as long as its timestamp would still be accepted.
        nonce = ("oauth_nonce", f"{institution.id}:{oauth['oauth_nonce']}")
        keep_until = max(now, float(oauth["oauth_timestamp"])) + window
        return await self._verified_launch(
            institution,
            params,
            who,
            now,
            nonce,
            keep_until,
            ReplayedNonce(),
            held_session_id,
            user_agent,
            check_message=True,
        )

    async def _verified_launch(
        self,
        institution: Institution,
        params: dict[str, Any],
        who: _Who,
        now: float,
        nonce: tuple[str, str],
        keep_until: float,
        replayed: SessionServiceError,
        held_session_id: Held,
        user_agent: str | None,
        *,
        check_message: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> LaunchResult:
        """The rest of every launch once its signature verified (1.1 or 1.3): read who it
        names, claim its nonce (``replayed`` if already used), charge the institution, then
        start the session; a store failure or the institution's limit after the claim gives
        the nonce back (a launch refused with 429 can be sent again)."""
        if institution.disabled:
            raise InstitutionDisabled()
        if check_message:
            v11.check_message(params)
        identity = v11.parse_identity(params, institution.id, from_token=False)
        profile = v11.parse_profile(params)
        await self._refuse_disabled(identity, who)
        namespace, key = nonce
        async with self._single_use(namespace, key, keep_until, now, replayed) as made:
            await self._admit(institution)
            result = await self._start_session(
                institution,
                identity,
                profile,
                v11.launch_context(params),
                now,
                held_session_id,
                user_agent,
                extra,
            )
            made.append(result.issued.record.id_hash)
        return result

    async def _admit(self, institution: Institution) -> None:
        """Charge the institution's rate budget. Called only once a request has passed every
        cheap check, the single-use claim included, so replaying a stale, forged or used
        credential never spends a school's budget (its sender's address pays instead); the
        caller gives the claim back if this refuses. Inside ``atomic`` on SQLite this is safe:
        the counters are then in process memory (Redis counters come with Redis sessions,
        whose ``atomic`` holds no lock), and a memory hit never yields."""
        if self.guard is not None:
            await self.guard.admit_institution(institution.consumer_key)

    async def _refuse_disabled(self, identity: Identity, who: _Who) -> None:
        known = await self.stores.records.find_user(identity)
        if known is not None and known.disabled:
            who.user_id = known.id
            raise UserDisabled()

    async def _start_session(
        self,
        institution: Institution,
        identity: Identity,
        profile: Profile,
        context: dict[str, Any],
        now: float,
        held_session_id: Held,
        user_agent: str | None,
        extra: dict[str, Any] | None = None,
    ) -> LaunchResult:
        """What every verified launch (1.1 or 1.3) does: record the user and the launch, end the
        session the browser held (against fixation), start a fresh one, and leave a one-time
        hand-off code for a page whose cookie is blocked."""
        user = await self.stores.records.record_launch(identity, profile, context, now)
        accepted = await self.stores.records.has_accepted(user.id, self.terms.version)
        replaced = tuple(await self._end_held(held_session_id))
        issued = await self._issue(user, profile, institution, user_agent, extra)
        code = exchange.new_code()
        await self.stores.once.put(
            "exchange",
            exchange.lookup_key(code),
            exchange.seal(code, issued.session_id),
            now + self.policy.exchange_code_ttl,
        )
        return LaunchResult(issued, user, accepted, replaced, code)

    # -- the one-time hand-off code -------------------------------------------------------

    async def exchange_code(self, code: str) -> str:
        """The session id a launch left under ``code``, once, within ``exchange_code_ttl``.
        ``InvalidExchangeCode`` for a malformed, unknown, used or expired code;
        ``InvalidSession`` if the session has ended since."""
        if not exchange.is_well_formed_code(code):
            raise InvalidExchangeCode()
        now = self.clock()
        key = exchange.lookup_key(code)
        sealed = await self.stores.once.get("exchange", key, now)
        session_id = exchange.unseal(code, sealed) if sealed is not None else None
        if session_id is None:
            raise InvalidExchangeCode()
        if not await self.stores.once.claim("exchange_used", key, now + self.policy.exchange_code_ttl, now):
            raise InvalidExchangeCode()
        await self.authenticate(session_id)
        return session_id

    async def exchange_code_session(self, code: str) -> SessionRecord | None:
        """The live session a hand-off code leads to, without using the code up (the page that
        will trade it needs to know which Canvas may frame it). Writes nothing."""
        if not exchange.is_well_formed_code(code):
            return None
        now = self.clock()
        sealed = await self.stores.once.get("exchange", exchange.lookup_key(code), now)
        session_id = exchange.unseal(code, sealed) if sealed is not None else None
        if session_id is None:
            return None
        record = await self.stores.sessions.get(hash_id(session_id))
        return record if record is not None and now < self.expires_at(record) else None

    async def spend_exchange_code(self, code: str) -> None:
        """Mark a hand-off code used without trading it: its page was served by the cookie."""
        if exchange.is_well_formed_code(code):
            now = self.clock()
            await self.stores.once.claim(
                "exchange_used", exchange.lookup_key(code), now + self.policy.exchange_code_ttl, now
            )

    # -- LTI 1.3 --------------------------------------------------------------------------

    async def begin_lti13_login(
        self,
        *,
        issuer: str | None,
        client_id: str | None,
        target_link_uri: str | None,
        launch_url: str,
        login_hint: str | None,
        lti_message_hint: str | None,
        deployment_id: str | None,
        binding: str | None,
    ) -> Lti13Login:
        """OIDC login initiation: check who is asking, remember a fresh state and nonce bound
        to this browser (``binding``, reused if the browser already holds a well-formed one),
        and say where to send the browser."""
        if not issuer:
            raise BadRequest("The login initiation must carry iss.")
        if not login_hint:
            raise BadRequest("The login initiation must carry login_hint.")
        candidates = await self.stores.records.list_lti13_registrations(issuer)
        if not candidates:
            raise UnknownIssuer()
        if client_id:
            registration = next((r for r in candidates if r.client_id == client_id), None)
            if registration is None:
                raise UnknownClientId()
        elif len(candidates) == 1:
            registration = candidates[0]
        else:
            raise UnknownClientId(
                "This issuer has several registrations here; the login must carry client_id."
            )
        if target_link_uri != launch_url:
            raise WrongTargetLinkUri(f"The login's target_link_uri must be {launch_url}.")
        now = self.clock()
        if binding is None or not v13.is_secret_shaped(binding):
            binding = v13.new_secret()
        state, nonce = v13.new_secret(), v13.new_secret()
        login = v13.LoginState(
            issuer=registration.issuer,
            client_id=registration.client_id,
            nonce=nonce,
            binding_hash=v13.binding_hash(binding),
            issued_at=now,
            target_link_uri=launch_url,
            login_hint=login_hint,
            lti_message_hint=lti_message_hint or None,
            deployment_id=deployment_id or None,
        )
        await self.stores.once.put(
            "lti13_state",
            v13.state_key(state),
            login.to_json(),
            now + self.policy.lti_state_ttl + LTI13_STATE_GRACE,
        )
        redirect = v13.auth_request_url(
            registration,
            redirect_uri=launch_url,
            login_hint=login_hint,
            lti_message_hint=login.lti_message_hint,
            state=state,
            nonce=nonce,
        )
        return Lti13Login(redirect, state, binding, v13.platform_origin(registration), nonce)

    async def lti13_pending(self, state: str) -> tuple[v13.LoginState, Lti13Registration]:
        """The login a posted ``state`` belongs to, and its registration. Writes nothing."""
        if not state or len(state) > 256:
            raise StateMismatch()
        now = self.clock()
        raw = await self.stores.once.get("lti13_state", v13.state_key(state), now)
        login = v13.LoginState.from_json(raw) if raw is not None else None
        if login is None:
            raise StateMismatch("The launch's state is not one this service gave out; launch again.")
        if now > login.issued_at + self.policy.lti_state_ttl:
            raise StateExpired()
        registration = await self.stores.records.get_lti13_registration(login.issuer, login.client_id)
        if registration is None:
            raise UnknownRegistration()
        return login, registration

    async def launch13(
        self,
        *,
        id_token: str,
        state: str,
        binding: str | None,
        held_session_id: Held,
        user_agent: str | None = None,
        stored_nonce: str | None = None,
    ) -> LaunchResult:
        """Verify an LTI 1.3 launch (``binding`` is what the browser holds: the state cookie, or
        the value Platform Storage gave back; None if neither) and then do exactly what a 1.1
        launch does. ``stored_nonce`` is the nonce Platform Storage gave back, which must be the
        login's ("OIDC Login with LTI Client Side postMessages")."""
        return await self._audited_launch(
            "lti13",
            lambda who: self._launch13(
                id_token, state, binding, held_session_id, user_agent, who, stored_nonce
            ),
        )

    async def _launch13(
        self,
        id_token: str,
        state: str,
        binding: str | None,
        held_session_id: Held,
        user_agent: str | None,
        who: _Who,
        stored_nonce: str | None = None,
    ) -> LaunchResult:
        login, registration = await self.lti13_pending(state)
        if binding is None:
            raise StateCookieMissing(relaunch_query=login.relaunch_query())
        if not login.binds(binding):
            raise StateMismatch()
        if stored_nonce is not None and not hmac.compare_digest(
            stored_nonce.encode("utf-8", "replace"), login.nonce.encode("utf-8")
        ):
            raise NonceMismatch("The nonce the platform kept for this browser is not this login's.")
        institution: Institution | None = None
        if registration.consumer_key is not None:
            institution = await self.stores.records.get_institution(registration.consumer_key)
            if institution is None:
                raise UnknownRegistration()
            who.institution_id = institution.id
        now = self.clock()
        claims = await v13.verify_id_token(
            id_token,
            registration=registration,
            nonce=login.nonce,
            keys=self.keys,
            now=now,
            leeway=self.policy.jwt_future_skew,
            max_bytes=self.policy.jwt_max_bytes,
            target_link_uri=login.target_link_uri,
        )
        if institution is None:
            institution = await self._bind_by_lti1p1(registration, claims, who)
        # The nonce is the state's own (one each), so claiming it makes the state single-use too.
        nonce = ("lti13_nonce", v13.state_key(login.nonce))
        keep_until = login.issued_at + self.policy.lti_state_ttl + LTI13_STATE_GRACE
        # A Deep Linking launch's session carries the request's context (``deepLinking``).
        context = v13.deep_linking_context(claims, registration)
        return await self._verified_launch(
            institution,
            v13.legacy_params(claims),
            who,
            now,
            nonce,
            keep_until,
            NonceReplayed(),
            held_session_id,
            user_agent,
            extra={DEEP_LINKING_KEY: context} if context is not None else None,
        )

    # -- LTI Deep Linking 2.0 -------------------------------------------------------------

    async def deep_linking_response(
        self, record: SessionRecord, items: Any, messages: dict[str, str] | None = None
    ) -> DeepLinkingAnswer:
        """The signed ``LtiDeepLinkingResponse`` for the content items the app chose on a Deep
        Linking session. One answer per launch, as Canvas takes one: the answer is claimed
        (``deep_linking_used`` after) only once every check passed, so a refused attempt can be
        corrected and sent again."""
        context = record.contents.get(DEEP_LINKING_KEY)
        if not isinstance(context, dict):
            raise NotDeepLinking()
        checked = deeplinking.check_items(items, context)
        now = self.clock()
        key = record.id_hash.hex()
        if not await self.stores.once.claim("deep_linking_used", key, max(now, record.expires_at), now):
            raise DeepLinkingUsed()
        try:
            async with self._deadline():
                signed = await self.tool_keys.sign(
                    deeplinking.response_claims(context, checked, now=now, messages=messages), now
                )
        except BaseException:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await self.stores.once.release("deep_linking_used", key)
            raise
        await self._emit(
            "deep_linking_response",
            str(len(checked)),
            user_id=record.user_id,
            institution_id=record.institution_id,
            id_hash=record.id_hash,
        )
        return DeepLinkingAnswer(str(context["returnUrl"]), signed.token, signed.kid)

    async def _bind_by_lti1p1(
        self, registration: Lti13Registration, claims: dict[str, Any], who: _Who
    ) -> Institution:
        """A pending registration's first proof of its school: the verified id_token's
        ``lti1p1`` claim signed with that consumer key's shared secret. Else the launch is
        refused with ``registration_pending``."""
        key = dynreg.lti1p1_consumer_key(claims)
        institution = await self.stores.records.get_institution(key) if key is not None else None
        if institution is None or not dynreg.lti1p1_verifies(
            claims, client_id=registration.client_id, secrets=institution.secrets
        ):
            raise RegistrationPending(platform_origin=v13.platform_origin(registration))
        try:
            await self.stores.records.bind_lti13_registration(
                registration.issuer, registration.client_id, institution.consumer_key
            )
        except DuplicateRegistration as exc:  # another school's key bound it meanwhile
            raise RegistrationPending(
                "This platform is bound to another school's LTI 1.1 key.",
                platform_origin=v13.platform_origin(registration),
            ) from exc
        who.institution_id = institution.id
        await self._emit("lti13_bound", "lti1p1", institution_id=institution.id)
        return institution

    async def downstream_token(
        self,
        session_id: str,
        record: SessionRecord,
        *,
        audience: str,
        audiences: Sequence[str],
        issuer: str,
        lifetime: int,
    ) -> tuple[str, int]:
        """A short-lived RS256 JWT (our key, in our JWKS) that an app behind us verifies instead
        of calling back on every request: the session's documented keys as claims, ``aud`` one
        of the configured downstream services, and ``sid`` the session's handle (never its id,
        which is a bearer credential). A revoked session gets no new one. Returns the token and
        its lifetime."""
        if audience not in audiences:
            known = (
                ", ".join(audiences)
                if audiences
                else "none is configured (COMMONS_SESSION_DOWNSTREAM_AUDIENCES)"
            )
            raise UnknownAudience(f"No downstream service is called {audience!r}; known: {known}.")
        now = int(self.clock())
        lifetime = max(1, min(lifetime, int(self.expires_at(record)) - now))
        claims = {
            k: v for k, v in self.contents(session_id, record).items() if k not in ("sid", DEEP_LINKING_KEY)
        }
        claims.update(
            iss=issuer,
            aud=audience,
            sub=record.user_id,
            sid=handle_for(record.id_hash),
            iat=now,
            exp=now + lifetime,
            jti=secrets.token_urlsafe(16),
        )
        signed = await self.tool_keys.sign(claims, now)
        return signed.token, lifetime

    async def set_institution_disabled(self, consumer_key: str, disabled: bool) -> tuple[Institution, int]:
        """Disable (ending every session of its people) or enable an institution: its users,
        launches and acceptances stay. Returns it and the sessions ended."""
        institution = await self.stores.records.set_institution_disabled(consumer_key, disabled, self.clock())
        ended = 0
        if disabled:
            ended = await self.revoke_sessions(institution_id=institution.id, reason="institution_disabled")
        await self._emit(
            "institution_disabled" if disabled else "institution_enabled", institution_id=institution.id
        )
        return institution, ended

    async def bind_lti13_registration(
        self, issuer: str, client_id: str, consumer_key: str, *, deployment_id: str | None = None
    ) -> Lti13Registration:
        """An operator binds a platform that registered itself to the institution with this key."""
        registration = await self.stores.records.bind_lti13_registration(
            issuer, client_id, consumer_key, deployment_id=deployment_id
        )
        await self._emit("lti13_bound", "operator", institution_id=registration.institution_id)
        return registration

    # -- LTI Dynamic Registration ---------------------------------------------------------

    async def register_lti13_platform(
        self,
        *,
        openid_configuration: str | None,
        registration_token: str | None,
        base_url: str,
        transport: dynreg.Transport,
        loopback: bool,
    ) -> Lti13Registration:
        """Dynamic Registration: check the request, register with the platform, and store it
        pending (bound to no school) only once everything it said checked out."""
        url, token = dynreg.check_request(openid_configuration, registration_token, loopback=loopback)
        if await self.stores.records.count_pending_lti13_registrations() >= MAX_PENDING_REGISTRATIONS:
            raise TooManyPendingRegistrations()
        platform, client = await dynreg.register(url, token, base_url, transport, loopback=loopback)
        stored = await self.stores.records.add_pending_lti13_registration(
            issuer=platform.issuer,
            client_id=client.client_id,
            deployment_ids=(client.deployment_id,) if client.deployment_id else (),
            jwks_url=platform.jwks_uri,
            auth_url=platform.authorization_endpoint,
            token_url=platform.token_endpoint,
            now=self.clock(),
        )
        await self._emit("lti13_registered", platform.product_family_code)
        return stored

    # -- terms ----------------------------------------------------------------------------

    async def has_accepted_terms(self, record: SessionRecord) -> bool:
        return await self.stores.records.has_accepted(record.user_id, self.terms.version)

    async def accept_terms(self, record: SessionRecord, version: str) -> None:
        if version != self.terms.version:
            raise TermsVersionMismatch(
                f"Version {version!r} is not the current terms of service ({self.terms.version!r})."
            )
        await self.stores.records.accept_terms(record.user_id, version, self.clock())
        await self._emit(
            "terms_accepted",
            version,
            user_id=record.user_id,
            institution_id=record.institution_id,
            id_hash=record.id_hash,
        )
