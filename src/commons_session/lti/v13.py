"""LTI 1.3 launches: OIDC third-party login, then an RS256 ``id_token`` posted with ``state``.

No web framework and no HTTP client here: the platform's JWKS is fetched by an injected async
callable (``JwksFetcher``; the HTTP layer supplies one on httpx), so this module stays testable
and the event loop is never blocked by a fetch.

What is checked, and in which order, is in ``verify_id_token`` and docs/lti13.md; each failed
check raises its own error class, whose ``code`` names the check.

A verified launch is turned into the LTI 1.1 parameters it corresponds to (``legacy_params``),
so that ``lti.v11`` reads identity and profile the same way for both versions. The person's
LTI 1.1 ``user_id`` comes from Canvas' ``lti11_legacy_user_id`` claim, which is what links a 1.3
launch to the 1.1 identity that Canvas' JWTs name; without it, ``sub`` stands in (such a user
can then only be matched by a JWT whose ``user_id`` equals that ``sub``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt

from ..domain import jws
from ..domain.models import Lti13Registration
from ..domain.strict_json import json_object, numeric_date
from ..errors import (
    AnonymousLaunch,
    IdTokenExpired,
    IdTokenFromFuture,
    InvalidIdTokenSignature,
    JwksUnavailable,
    MalformedIdToken,
    MissingResourceLink,
    MissingRoles,
    NonceMismatch,
    TargetLinkUriMismatch,
    UnknownDeployment,
    UnknownKid,
    WrongAlgorithm,
    WrongAudience,
    WrongAzp,
    WrongIssuer,
    WrongMessageType,
    WrongVersion,
)
from . import deeplinking, http_cache

__all__ = [
    "JwksFetcher",
    "JwksResponse",
    "KeySets",
    "LoginState",
    "auth_request_url",
    "binding_hash",
    "check_resource_link",
    "deep_linking_context",
    "legacy_params",
    "new_secret",
    "platform_origin",
    "state_key",
    "verify_id_token",
]

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
MESSAGE_TYPE = CLAIM + "message_type"
VERSION = CLAIM + "version"
DEPLOYMENT_ID = CLAIM + "deployment_id"
ROLES = CLAIM + "roles"
CONTEXT = CLAIM + "context"
RESOURCE_LINK = CLAIM + "resource_link"
TOOL_PLATFORM = CLAIM + "tool_platform"
LAUNCH_PRESENTATION = CLAIM + "launch_presentation"
CUSTOM = CLAIM + "custom"
TARGET_LINK_URI = CLAIM + "target_link_uri"
LTI11_LEGACY_USER_ID = CLAIM + "lti11_legacy_user_id"

RESOURCE_LINK_REQUEST = "LtiResourceLinkRequest"
DEEP_LINKING_REQUEST = deeplinking.DEEP_LINKING_REQUEST
#: The launches we accept (check 18); a deep linking one must also carry valid settings.
MESSAGE_TYPES = frozenset({RESOURCE_LINK_REQUEST, DEEP_LINKING_REQUEST})

#: Fetches the JWKS at a URL, sending the given (conditional) request headers; raises
#: ``JwksUnavailable`` if it cannot.
JwksFetcher = Callable[[str, Mapping[str, str]], Awaitable["JwksResponse"]]
Clock = Callable[[], float]


def new_secret() -> str:
    """A state, nonce or browser binding: 256 CSPRNG bits, base64url."""
    return secrets.token_urlsafe(32)


def is_secret_shaped(value: str) -> bool:
    return len(value) == 43 and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)


def state_key(state: str) -> str:
    """Where a login's state is kept: a hash, so the store never holds a usable state."""
    return hashlib.sha256(b"commons-session lti13 state:" + state.encode("utf-8", "replace")).hexdigest()


def binding_hash(binding: str) -> str:
    """What is kept of the browser binding (the state cookie's value)."""
    return hashlib.sha256(b"commons-session lti13 binding:" + binding.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class LoginState:
    """What a login initiation remembers until the launch, under ``state_key(state)``."""

    issuer: str
    client_id: str
    nonce: str
    #: ``binding_hash`` of the secret this browser holds (state cookie or platform storage).
    binding_hash: str
    issued_at: float
    target_link_uri: str
    login_hint: str
    lti_message_hint: str | None = None
    deployment_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LoginState | None:
        try:
            data = json.loads(text)
            return cls(**data) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            return None

    def binds(self, binding: str) -> bool:
        return hmac.compare_digest(self.binding_hash, binding_hash(binding))

    def relaunch_query(self) -> str:
        """The login initiation again, to be opened in a top-level window (first-party cookies)."""
        params = {
            "iss": self.issuer,
            "client_id": self.client_id,
            "login_hint": self.login_hint,
            "target_link_uri": self.target_link_uri,
        }
        if self.lti_message_hint is not None:
            params["lti_message_hint"] = self.lti_message_hint
        if self.deployment_id is not None:
            params["lti_deployment_id"] = self.deployment_id
        return urlencode(params)


def platform_origin(registration: Lti13Registration) -> str:
    """The origin of the platform's OIDC authorization endpoint: the only origin the tool may
    exchange LTI postMessages with (LTI Platform Storage)."""
    parts = urlsplit(registration.auth_url)
    return f"{parts.scheme}://{parts.netloc}"


def auth_request_url(
    registration: Lti13Registration,
    *,
    redirect_uri: str,
    login_hint: str,
    lti_message_hint: str | None,
    state: str,
    nonce: str,
) -> str:
    """The OIDC authentication request the browser is sent to (IMS Security Framework 5.1.1.2)."""
    params = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": registration.client_id,
        "redirect_uri": redirect_uri,
        "login_hint": login_hint,
        "state": state,
        "nonce": nonce,
    }
    if lti_message_hint is not None:
        params["lti_message_hint"] = lti_message_hint
    separator = "&" if urlsplit(registration.auth_url).query else "?"
    return registration.auth_url + separator + urlencode(params)


# -- the platform's keys ------------------------------------------------------------------------


def parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """The RS256 signing keys of a JWKS, by ``kid``. Keys for other uses or algorithms, and
    keys that do not parse, are skipped: they can never verify an id_token."""
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise JwksUnavailable("The platform's JWKS is not a JSON object with a 'keys' array.")
    found: dict[str, jwt.PyJWK] = {}
    for jwk in keys:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or jwk.get("kty") != "RSA":
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            found[kid] = jwt.PyJWK(jwk, algorithm="RS256")
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
    return found


@dataclass(frozen=True, slots=True)
class JwksResponse:
    """What a JWKS fetch got: the document (``None`` for 304 Not Modified, the copy we sent
    validators for is still current) and the response's headers, lower-cased names."""

    document: Mapping[str, Any] | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Cached:
    keys: dict[str, jwt.PyJWK]
    fetched_at: float
    #: Seconds from ``fetched_at`` the set is fresh (the platform's headers, bounded).
    lifetime: float
    etag: str | None = None
    last_modified: str | None = None
    #: When an unknown kid last forced a refetch (they are rate limited).
    forced_at: float = -math.inf
    #: When a refetch of the stale set last failed (retried at the same rate).
    failed_at: float = -math.inf

    def conditions(self) -> dict[str, str]:
        """The validators to revalidate this copy with (RFC 9110 13.1)."""
        if self.etag is not None:
            return {"if-none-match": self.etag}
        if self.last_modified is not None:
            return {"if-modified-since": self.last_modified}
        return {}


class KeySets:
    """Each platform's JWKS, fetched on first use and cached as its HTTP headers say
    (``Cache-Control: max-age``/``no-store``/``no-cache``, ``Expires``, ``Age``), held within
    ``[min_ttl, max_ttl]`` so a broken or hostile platform can make us neither fetch on every
    launch nor keep a key forever; ``ttl`` when the headers say nothing. A stale set with an
    ``ETag`` or ``Last-Modified`` is revalidated (``If-None-Match``; a 304 keeps the keys).

    An id_token naming a ``kid`` the cached set lacks makes us fetch again at once (the
    platform rotated its key), at most once per ``refetch_interval`` per URL so random kids
    cannot make us hammer the platform. If a refetch fails, the keys already known keep
    working and the next try waits ``refetch_interval``. One fetch per URL at a time;
    concurrent launches wait for it."""

    def __init__(
        self,
        fetch: JwksFetcher | None,
        *,
        ttl: float = 300.0,
        min_ttl: float = 60.0,
        max_ttl: float = 86_400.0,
        refetch_interval: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.min_ttl = min_ttl
        self.max_ttl = max(max_ttl, min_ttl)
        self.refetch_interval = refetch_interval
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lifetime(self, said: float | None) -> float:
        """How long to keep a set whose headers said ``said`` (None: nothing)."""
        if said is None:
            return self.ttl
        return min(max(said, self.min_ttl), self.max_ttl)

    def _stale(self, entry: _Cached, now: float) -> bool:
        return now - entry.fetched_at >= entry.lifetime

    async def _refresh(self, url: str, seen: _Cached | None, *, forced: bool) -> _Cached:
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            current = self._cache.get(url)
            if current is not None and current is not seen:
                return current  # another launch refreshed it while we waited
            now = self.clock()
            if seen is not None:
                # A launch that waited for a refetch which failed (or was just forced) must
                # not fetch again straight away.
                if now - seen.failed_at < self.refetch_interval:
                    return seen
                if forced and now - seen.forced_at < self.refetch_interval:
                    return seen
                if forced:
                    seen.forced_at = now
            if self._fetch is None:
                raise JwksUnavailable("No JWKS fetcher is configured.")
            try:
                got = await self._fetch(url, seen.conditions() if seen is not None else {})
                if got.document is not None:
                    keys = parse_jwks(got.document)
                elif seen is not None:
                    keys = seen.keys  # 304 Not Modified
                else:
                    raise JwksUnavailable("The platform's JWKS answered 304 to a request without validators.")
            except JwksUnavailable:
                if seen is not None:
                    seen.failed_at = now
                    return seen  # keep verifying with the keys we have
                raise
            said = http_cache.freshness(got.headers, now)
            etag, last_modified = said.etag, said.last_modified
            if got.document is None and seen is not None and etag is None and last_modified is None:
                etag, last_modified = seen.etag, seen.last_modified  # a 304 need not repeat them
            entry = _Cached(
                keys,
                now,
                self.lifetime(said.lifetime),
                etag,
                last_modified,
                forced_at=seen.forced_at if seen is not None else -math.inf,
            )
            if forced:
                entry.forced_at = now
            self._cache[url] = entry
            return entry

    async def key(self, url: str, kid: str) -> jwt.PyJWK:
        cached = self._cache.get(url)
        now = self.clock()
        fresh = False
        if cached is None or self._stale(cached, now):
            cached = await self._refresh(url, cached, forced=False)
            fresh = True
        if kid not in cached.keys and not fresh and now - cached.forced_at >= self.refetch_interval:
            cached = await self._refresh(url, cached, forced=True)
        found = cached.keys.get(kid)
        if found is None:
            raise UnknownKid()
        return found


# -- the id_token -------------------------------------------------------------------------------

# An RS256-only verifier: "none", HS256 (key confusion) and every other alg are not even known.
_jws = jwt.PyJWS(algorithms=["RS256"])


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    return json_object(raw, f"The id_token {what}", MalformedIdToken)


def _split(token: str, max_bytes: int) -> tuple[jws.CompactJws, dict[str, Any]]:
    """The token's canonical segments and its header. PyJWT decodes base64url leniently
    (padding, whitespace and stray bits pass), so one id_token would have many spellings; here
    it has one, checked before PyJWT sees it (``jws``)."""
    if len(token) > max_bytes:
        raise MalformedIdToken(f"The id_token is longer than {max_bytes} bytes.")
    compact = jws.split(token, "The id_token", MalformedIdToken)
    return compact, _json_object(compact.header, "header")


def _time(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    return numeric_date(claims, name, "The id_token's", MalformedIdToken, required=required)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def verify_id_token(
    token: str,
    *,
    registration: Lti13Registration,
    nonce: str,
    keys: KeySets,
    now: float,
    leeway: float,
    max_bytes: int,
    target_link_uri: str,
) -> dict[str, Any]:
    """Verify an id_token for ``registration`` and the login that sent ``nonce`` (and asked for
    ``target_link_uri``); return its claims. Signature first (RS256 with the key its ``kid``
    names in the platform's JWKS); no claim is trusted before it verifies. Then ``iss``,
    ``aud``/``azp``, ``exp``/``iat``, ``nonce``, deployment id, message type, version, subject
    and the message type's own claims (``check_resource_link``), each its own error."""
    compact, header = _split(token, max_bytes)
    if header.get("alg") != "RS256":
        raise WrongAlgorithm()
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKid("The id_token's header carries no kid.")
    key = await keys.key(registration.jwks_url, kid)
    try:
        payload = _jws.decode_complete(token, key=key, algorithms=["RS256"])["payload"]
    except jwt.InvalidSignatureError as exc:
        raise InvalidIdTokenSignature() from exc
    except jwt.InvalidAlgorithmError as exc:
        raise WrongAlgorithm() from exc
    except jwt.PyJWTError as exc:
        raise MalformedIdToken("The id_token could not be decoded.") from exc
    if payload != compact.payload:  # one token, one reading: PyJWT verified what we decoded
        raise MalformedIdToken("The id_token could not be decoded.")
    claims = _json_object(compact.payload, "payload")

    if claims.get("iss") != registration.issuer:
        raise WrongIssuer()
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise WrongAudience("The id_token's aud must be a string or a list of strings.")
    if registration.client_id not in audiences:
        raise WrongAudience()
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != registration.client_id:
        raise WrongAzp()
    exp = _time(claims, "exp", required=True)
    iat = _time(claims, "iat", required=True)
    assert exp is not None and iat is not None
    if now >= exp + leeway:
        raise IdTokenExpired()
    nbf = _time(claims, "nbf", required=False)
    if iat > now + leeway or (nbf is not None and nbf > now + leeway):
        raise IdTokenFromFuture()
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
        raise NonceMismatch()
    deployment = claims.get(DEPLOYMENT_ID)
    # A platform that registered itself without naming a deployment (Canvas makes them when the
    # admin installs the key) may launch from any deployment it signs.
    if not isinstance(deployment, str) or not deployment:
        raise UnknownDeployment()
    if registration.deployment_ids and deployment not in registration.deployment_ids:
        raise UnknownDeployment()
    message_type = claims.get(MESSAGE_TYPE)
    if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
        raise WrongMessageType()
    if claims.get(VERSION) != "1.3.0":
        raise WrongVersion()
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        # OIDC Core 2: a non-empty string of at most 255 ASCII characters. LTI allows omitting
        # it only for an anonymous launch, and this service admits no anonymous users.
        raise AnonymousLaunch()
    if claims.get(MESSAGE_TYPE) == RESOURCE_LINK_REQUEST:
        check_resource_link(claims, target_link_uri)
    elif claims.get(MESSAGE_TYPE) == DEEP_LINKING_REQUEST:
        deeplinking.settings_context(claims, issuer=registration.issuer, client_id=registration.client_id)
    return claims


def check_resource_link(claims: Mapping[str, Any], target_link_uri: str) -> None:
    """The claims LTI 1.3 Core (5.3, 5.4) requires of a resource link launch, checked after the
    generic ones: the ``target_link_uri`` the login asked for, a ``roles`` array (it may be
    empty, and its entries are not judged: unknown and short roles are valid), and a
    ``resource_link`` with an ``id`` of 1 to 255 characters."""
    if claims.get(TARGET_LINK_URI) != target_link_uri:
        raise TargetLinkUriMismatch()
    roles = claims.get(ROLES)
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise MissingRoles()
    link = claims.get(RESOURCE_LINK)
    link_id = link.get("id") if isinstance(link, dict) else None
    if not isinstance(link_id, str) or not link_id or len(link_id) > 255:
        raise MissingResourceLink()


def deep_linking_context(claims: Mapping[str, Any], registration: Lti13Registration) -> dict[str, Any] | None:
    """The Deep Linking context of verified claims, or None for a resource link launch."""
    if claims.get(MESSAGE_TYPE) != DEEP_LINKING_REQUEST:
        return None
    return deeplinking.settings_context(claims, issuer=registration.issuer, client_id=registration.client_id)


# -- what the launch says, in LTI 1.1 terms -----------------------------------------------------


def _object(claims: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = claims.get(name)
    return value if isinstance(value, dict) else {}


def _role_name(role: str) -> str:
    """``http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor`` -> ``Instructor``."""
    return role.rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def _custom_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def legacy_params(claims: Mapping[str, Any]) -> dict[str, str]:
    """The LTI 1.1 launch parameters this verified 1.3 launch corresponds to.

    ``user_id`` is ``lti11_legacy_user_id``, else ``sub``; ``tool_consumer_instance_guid`` is the
    ``tool_platform`` guid (Canvas uses its root account's LTI guid for both). Context roles
    (``membership#Instructor``) become 1.1's short names (``Instructor``) in ``roles``; every role
    URI goes to ``ext_roles``. ``custom`` claims become ``custom_<name>`` as in 1.1."""
    platform = _object(claims, TOOL_PLATFORM)
    context = _object(claims, CONTEXT)
    link = _object(claims, RESOURCE_LINK)
    presentation = _object(claims, LAUNCH_PRESENTATION)
    raw_roles = claims.get(ROLES)
    # A role holding a comma would become two roles in 1.1's comma-separated list (one of
    # them perhaps "Administrator"): such a role is no role of the vocabulary, and is dropped.
    listed = raw_roles if isinstance(raw_roles, list) else []
    roles = [r for r in listed if isinstance(r, str) and r and "," not in r]
    membership = [_role_name(r) for r in roles if "/membership" in r]
    everyone = list(dict.fromkeys(_role_name(r) for r in roles))
    params: dict[str, Any] = {
        "lti_message_type": claims.get(MESSAGE_TYPE),
        "lti_version": claims.get(VERSION),
        "user_id": _text(claims.get(LTI11_LEGACY_USER_ID)) or _text(claims.get("sub")),
        "tool_consumer_instance_guid": platform.get("guid"),
        "tool_consumer_instance_name": platform.get("name"),
        "lis_person_name_full": claims.get("name"),
        "lis_person_name_given": claims.get("given_name"),
        "lis_person_name_family": claims.get("family_name"),
        "lis_person_contact_email_primary": claims.get("email"),
        "user_image": claims.get("picture"),
        "roles": ",".join(list(dict.fromkeys(membership)) or everyone),
        "ext_roles": ",".join(roles),
        "launch_presentation_locale": presentation.get("locale") or claims.get("locale"),
        "context_id": context.get("id"),
        "context_label": context.get("label"),
        "context_title": context.get("title"),
        "resource_link_id": link.get("id"),
        "resource_link_title": link.get("title"),
    }
    for name, value in _object(claims, CUSTOM).items():
        text = _custom_value(value)
        if isinstance(name, str) and text is not None:
            params.setdefault(f"custom_{name}", text)
    return {k: v for k, v in params.items() if isinstance(v, str)}
