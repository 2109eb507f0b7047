"""LTI 1.1 launches: OAuth 1.0a verification (oauthlib) and reading what the launch says.

oauthlib's defaults reject real Canvas launches (nonces of ~40 characters, consumer keys of any
shape, clocks up to 90 minutes apart, TLS ending at a proxy), so ``_CanvasValidator`` widens them
deliberately. It never records a nonce: oauthlib asks about the nonce *before* it checks the
signature, and recording there would let forged requests burn nonces. The service records the
nonce only once the signature has verified.

What a launch says is read from exactly the parameters the signature covered: the query, the
body and an ``Authorization: OAuth`` header together (RFC 5849 3.4.1.3), collected by the same
oauthlib function that builds the signature base string. Reading the body alone let a signed
parameter moved into the URL vanish (a disabled user re-entered under an empty
``tool_consumer_instance_guid``; roles disappeared). A name given twice is refused, whatever
the values: the base string holds both, so no choice between them is ours to make.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint
from oauthlib.oauth1.rfc5849 import SIGNATURE_HMAC_SHA1
from oauthlib.oauth1.rfc5849.signature import collect_parameters

from ..domain.models import Identity, Institution, Profile
from ..errors import (
    InvalidClaims,
    InvalidLaunch,
    InvalidLaunchSignature,
    InvalidOAuthRequest,
    RepeatedLaunchParameter,
    StaleTimestamp,
    UnknownConsumer,
)

__all__ = [
    "LaunchParams",
    "oauth_authorization",
    "parse_form",
    "parse_identity",
    "parse_profile",
    "signed_pairs",
    "verify_launch",
]

LaunchParams = dict[str, str]

_OAUTH_REQUIRED = (
    "oauth_consumer_key",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
)
_PRINTABLE_ASCII = set(map(chr, range(0x21, 0x7F)))


class _CanvasValidator(RequestValidator):
    def __init__(self, known_client: bool, secret: str, timestamp_window: int) -> None:
        super().__init__()
        self._known = known_client
        self._secret = secret
        self._window = timestamp_window

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        return (SIGNATURE_HMAC_SHA1,)

    @property
    def enforce_ssl(self) -> bool:
        # TLS usually ends at a proxy; the URL we verify against comes from public_url.
        return False

    @property
    def timestamp_lifetime(self) -> int:
        return self._window

    @property
    def dummy_client(self) -> str:
        return "dummy-client"

    def check_client_key(self, client_key: str) -> bool:
        # Canvas admins type consumer keys by hand: any printable ASCII, any length.
        return 0 < len(client_key) <= 255 and set(client_key) <= _PRINTABLE_ASCII

    def check_nonce(self, nonce: str) -> bool:
        return 0 < len(nonce) <= 255 and set(nonce) <= _PRINTABLE_ASCII

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return self._known

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return self._secret

    def validate_timestamp_and_nonce(self, *args: Any, **kwargs: Any) -> bool:
        return True  # the service records the nonce after the signature verifies


def parse_form(body: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body, keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except ValueError as exc:
        raise InvalidOAuthRequest("The launch body is not a valid form.") from exc


_MAX_FIELDS = 1000


def oauth_authorization(header: str | None) -> str | None:
    """The ``Authorization`` header if it carries OAuth parameters (oauthlib signs those), else
    None: a ``Basic`` header added by a proxy is not part of the launch."""
    return header if header is not None and header[:6].lower() == "oauth " else None


def signed_pairs(uri: str, body: str, authorization: str | None = None) -> list[tuple[str, str]]:
    """Every parameter the launch's signature covers, wherever it sits: the query of ``uri``,
    the form ``body`` and an OAuth ``authorization`` header, decoded exactly as oauthlib decodes
    them for the signature base string (``oauth_*`` values unescaped once more, as it does).
    ``InvalidOAuthRequest`` if a part cannot be decoded, if ``oauth_*`` parameters sit in more
    than one of the three places, or past 1000 parameters."""
    headers = {"Authorization": authorization} if authorization else None
    sources: list[list[tuple[str, str]]] = []
    try:
        for part in (
            {"uri_query": urlsplit(uri).query},
            {"body": body},
            {"headers": headers},
        ):
            sources.append(collect_parameters(**part, exclude_oauth_signature=False))
    except (ValueError, TypeError) as exc:  # oauthlib refuses what it cannot decode
        raise InvalidOAuthRequest("The launch's parameters could not be decoded.") from exc
    if sum(any(k.startswith("oauth_") for k, _ in source) for source in sources) > 1:
        raise InvalidOAuthRequest("The launch's oauth_* parameters must all sit in one place.")
    pairs = [pair for source in sources for pair in source]
    if len(pairs) > _MAX_FIELDS:
        raise InvalidOAuthRequest(f"The launch has more than {_MAX_FIELDS} parameters.")
    return pairs


def unique_params(pairs: list[tuple[str, str]]) -> LaunchParams:
    """The parameters by name, or ``RepeatedLaunchParameter`` if any name appears twice (in the
    body, in the query, or across both), even with the same value."""
    params: LaunchParams = {}
    for key, value in pairs:
        if key in params:
            raise RepeatedLaunchParameter(f"The launch gives {key[:64]!r} more than once.")
        params[key] = value
    return params


def oauth_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The ``oauth_*`` parameters, each exactly once, or ``InvalidOAuthRequest``."""
    found: dict[str, str] = {}
    for key, value in pairs:
        if key.startswith("oauth_"):
            if key in found:
                raise InvalidOAuthRequest(f"The launch repeats {key}.")
            found[key] = value
    missing = [name for name in _OAUTH_REQUIRED if not found.get(name)]
    if missing:
        raise InvalidOAuthRequest(f"The launch lacks {', '.join(missing)}.")
    if found["oauth_signature_method"] != SIGNATURE_HMAC_SHA1:
        raise InvalidOAuthRequest("The launch must be signed with HMAC-SHA1.")
    if found.get("oauth_version", "1.0") != "1.0":
        raise InvalidOAuthRequest("The launch's oauth_version must be 1.0.")
    # Checked here, before the key is looked up: a key no registration can have (a NUL, which
    # PostgreSQL cannot even compare, or any other character outside printable ASCII) is refused.
    key = found["oauth_consumer_key"]
    if len(key) > 255 or not set(key) <= _PRINTABLE_ASCII:
        raise InvalidOAuthRequest("The launch's oauth_consumer_key must be printable ASCII.")
    return found


def verify_launch(
    *,
    uri: str,
    body: str,
    content_type: str,
    pairs: list[tuple[str, str]],
    institution: Institution | None,
    now: float,
    timestamp_window: int,
    authorization: str | None = None,
) -> LaunchParams:
    """Verify an LTI 1.1 launch signed with one of the institution's secrets.

    ``uri`` must be the URL Canvas signed (scheme, host, path and query), which behind a proxy
    is the public one; ``pairs`` is :func:`signed_pairs` of the same request. Returns the
    launch parameters, each name once (``oauth_*`` kept): exactly what the signature covered.
    """
    params = unique_params(pairs)
    oauth = oauth_params(pairs)
    if institution is None:
        raise UnknownConsumer()
    try:
        timestamp = int(oauth["oauth_timestamp"])
    except ValueError as exc:
        raise InvalidOAuthRequest("The launch's oauth_timestamp is not an integer.") from exc
    if abs(now - timestamp) > timestamp_window:
        raise StaleTimestamp()
    headers = {"Content-Type": content_type}
    if authorization:
        headers["Authorization"] = authorization
    for secret in institution.secrets:
        endpoint = SignatureOnlyEndpoint(_CanvasValidator(True, secret, timestamp_window))
        try:
            valid, _ = endpoint.validate_request(uri, http_method="POST", body=body, headers=headers)
        except ValueError as exc:  # oauthlib refuses bodies it cannot decode
            raise InvalidOAuthRequest("The launch body could not be decoded.") from exc
        if valid:
            return params
    # The URL is the first thing to look at behind a proxy (scheme or host not what Canvas used).
    checked = uri.split("?", 1)[0]
    raise InvalidLaunchSignature(
        f"The launch's OAuth signature does not verify for {checked} (with the query it was sent with)."
        " Either the shared secret differs from the one registered, or Canvas signed another URL:"
        " behind a proxy, set COMMONS_SESSION_PUBLIC_URL to the address Canvas launches."
    )


# Canvas leaves a variable it cannot expand as literal text, e.g. "$Canvas.user.loginId".
_PLACEHOLDER = re.compile(r"\$[A-Z][A-Za-z0-9]*(\.[A-Za-z0-9_]+)+")


def _value(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if not isinstance(value, str):
        return None  # absent, JSON null, or not text
    value = value.strip()
    if not value or "\x00" in value or (value[0] == "$" and _PLACEHOLDER.fullmatch(value)):
        return None  # a NUL is no text Canvas sends, and PostgreSQL cannot store one
    return value


def _roles(raw: str | None) -> tuple[str, ...]:
    return tuple(r.strip() for r in (raw or "").split(",") if r.strip())


def _is_admin(roles: tuple[str, ...]) -> bool:
    for role in roles:
        name = role.lower().rsplit("/", 1)[-1].rsplit("#", 1)[-1]
        if name in {"administrator", "sysadmin", "accountadmin"}:
            return True
    return False


def parse_identity(params: Mapping[str, Any], institution_id: int, *, from_token: bool) -> Identity:
    """Who the launch (or JWT) names, within the institution whose secret verified it."""
    user_id = _value(params, "user_id")
    if user_id is None:
        if from_token:
            raise InvalidClaims("The JWT carries no user_id, so it names nobody.")
        raise InvalidLaunch("The launch carries no user_id; launch as a signed-in Canvas user.")
    return Identity(
        institution_id=institution_id,
        tool_consumer_instance_guid=_value(params, "tool_consumer_instance_guid") or "",
        lti_user_id=user_id,
    )


def parse_profile(params: Mapping[str, Any]) -> Profile:
    full_name = _value(params, "lis_person_name_full")
    if full_name is None:
        parts = [_value(params, "lis_person_name_given"), _value(params, "lis_person_name_family")]
        full_name = " ".join(p for p in parts if p) or None
    roles = _roles(_value(params, "roles"))
    ext_roles = _roles(_value(params, "ext_roles"))
    return Profile(
        full_name=full_name,
        email=_value(params, "lis_person_contact_email_primary"),
        avatar_url=_value(params, "user_image"),
        roles=roles,
        canvas_user_id=_value(params, "custom_canvas_user_id"),
        canvas_api_domain=_value(params, "custom_canvas_api_domain"),
        locale=_value(params, "launch_presentation_locale"),
        account_id=_value(params, "custom_canvas_account_id")
        or _value(params, "custom_canvas_root_account_id"),
        account_name=_value(params, "tool_consumer_instance_name"),
        is_admin=_is_admin(roles + ext_roles),
        prefers_high_contrast=(_value(params, "custom_canvas_user_prefers_high_contrast") or "").lower()
        == "true",
    )


def launch_context(params: Mapping[str, Any]) -> dict[str, str | None]:
    """What is kept about the launch itself, for the record."""
    return {
        name: _value(params, name)
        for name in (
            "lti_message_type",
            "context_id",
            "context_title",
            "resource_link_id",
            "custom_canvas_course_id",
            "roles",
        )
    }


def check_message(params: Mapping[str, Any]) -> None:
    if params.get("lti_message_type") != "basic-lti-launch-request":
        raise InvalidLaunch("lti_message_type must be basic-lti-launch-request.")
    if params.get("lti_version") not in {"LTI-1p0", "LTI-1p1"}:
        raise InvalidLaunch("lti_version must be LTI-1p0.")
