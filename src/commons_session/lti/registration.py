"""LTI Dynamic Registration (1EdTech LTI Dynamic Registration 1.0), as Canvas speaks it, and the
LTI 1.1 migration claim (``lti1p1``) that binds a registered platform to its school.

The platform (Canvas: Admin > Developer Keys > + LTI Registration) opens our initiation URL with
``openid_configuration`` and ``registration_token``. We fetch that configuration, check it is the
issuer's own (its ``issuer`` on the origin it was fetched from), POST our client registration to
its ``registration_endpoint`` with the token as bearer, and keep what the answer says (client id,
deployment id) with the platform's endpoints. No web framework and no HTTP client here: the HTTP
layer passes a ``Transport`` (httpx, ``http/registration.py``), so the rules are testable alone.

A registered platform names no school yet: it is *pending* until an operator binds it to an LTI
1.1 consumer key, or a launch proves the binding with the ``lti1p1`` claim, whose
``oauth_consumer_key_sign`` only the holder of that key's shared secret can compute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..domain.strict_json import json_object
from ..errors import (
    InvalidOpenIdConfiguration,
    InvalidRegistrationRequest,
    InvalidRegistrationResponse,
    IssuerMismatch,
    RegistrationRefused,
)

__all__ = [
    "CLOSE_SUBJECT",
    "LTI1P1",
    "PLATFORM_CONFIGURATION",
    "TOOL_CONFIGURATION",
    "ClientRegistration",
    "PlatformConfiguration",
    "Transport",
    "check_request",
    "lti1p1_base_string",
    "lti1p1_consumer_key",
    "lti1p1_signature",
    "lti1p1_verifies",
    "origin",
    "parse_openid_configuration",
    "parse_registration_response",
    "register",
    "tool_registration",
]

TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"
PLATFORM_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-platform-configuration"
CANVAS_EXTENSION = "https://canvas.instructure.com/lti/"
LTI1P1 = "https://purl.imsglobal.org/spec/lti/claim/lti1p1"
DEPLOYMENT_ID = "https://purl.imsglobal.org/spec/lti/claim/deployment_id"
#: What the registration page posts to the platform's window when it is done.
CLOSE_SUBJECT = "org.imsglobal.lti.close"

LOGIN_PATH = "/api/lti/login"
LAUNCH_PATH = "/api/lti/launch"
JWKS_PATH = "/api/lti/jwks"
CLIENT_NAME = "Commons"
#: A registration token is a bearer credential of the platform's (Canvas: a JWT); a longer one
#: is not one, and would only make us send a huge header.
MAX_TOKEN_CHARS = 8192
MAX_URL_CHARS = 2048
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
#: The claims our launch reads (``lti.v13.legacy_params``); Canvas derives its privacy level
#: from them, and we also say it outright (its extension).
CLAIMS = ("iss", "sub", "name", "given_name", "family_name", "email", "picture", "locale")

#: Fetches a URL (GET, bearer token) and returns the body; raises ``OpenIdConfigurationUnavailable``.
Fetch = Callable[[str, str], Awaitable[bytes]]
#: POSTs JSON (bearer token) and returns ``(status, body)``; raises ``RegistrationRefused`` if the
#: platform cannot be reached.
Post = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]


@dataclass(frozen=True, slots=True)
class Transport:
    fetch: Fetch
    post: Post


@dataclass(frozen=True, slots=True)
class PlatformConfiguration:
    """What we keep of the platform's OpenID configuration."""

    issuer: str
    authorization_endpoint: str
    registration_endpoint: str
    jwks_uri: str
    token_endpoint: str
    product_family_code: str | None


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    """The platform's answer: our client id there, and the deployment, if it made one."""

    client_id: str
    deployment_id: str | None


# -- URLs -----------------------------------------------------------------------------------------


_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin(url: str) -> str:
    """``scheme://host[:port]`` as browsers compare origins: lower-case host, no default port."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    keep = port is not None and port != _DEFAULT_PORTS.get(parts.scheme)
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if keep else "")


def _url(value: Any, what: str, error: Callable[[str], Exception], *, loopback: bool) -> str:
    """An absolute https URL (plain http only for a loopback host, and only when ``loopback``:
    the local stand-in), without credentials or fragment."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_CHARS:
        raise error(f"{what} must be a URL.")
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port  # port: raises on a bad one
    except ValueError as exc:
        raise error(f"{what} is not a valid URL.") from exc
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise error(f"{what} must be an absolute URL without credentials or fragment.")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise error(f"{what} must not contain spaces or control characters.")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback and host in _LOOPBACK):
        return value
    raise error(f"{what} must use https.")


def check_request(
    openid_configuration: str | None, registration_token: str | None, *, loopback: bool
) -> tuple[str, str]:
    """The two parameters the platform adds to our initiation URL."""
    if not openid_configuration or not registration_token:
        raise InvalidRegistrationRequest()
    url = _url(openid_configuration, "openid_configuration", InvalidRegistrationRequest, loopback=loopback)
    token = registration_token
    if (
        len(token) > MAX_TOKEN_CHARS
        or not token.isascii()
        or any(not c.isprintable() or c == " " for c in token)
    ):
        raise InvalidRegistrationRequest("registration_token is not a token a platform issues.")
    return url, token


# -- the platform's configuration -----------------------------------------------------------------


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidOpenIdConfiguration(f"The platform's OpenID configuration lacks {name}.")
    return value


def parse_openid_configuration(url: str, raw: bytes, *, loopback: bool) -> PlatformConfiguration:
    """Read the configuration fetched from ``url``. Its ``issuer`` must be on the same origin as
    ``url`` (Dynamic Registration 3.5.1: else any site could hand out another platform's
    configuration); the endpoints must be URLs we may call; the LTI platform block must be there."""
    document = json_object(raw, "The platform's OpenID configuration", InvalidOpenIdConfiguration)
    issuer = _url(
        _text(document, "issuer"), "The configuration's issuer", InvalidOpenIdConfiguration, loopback=loopback
    )
    if origin(issuer) != origin(url) or urlsplit(issuer).query:
        raise IssuerMismatch(
            f"The configuration names issuer {issuer} but was fetched from {origin(url)}; a platform "
            "publishes its own configuration."
        )
    endpoints = {
        name: _url(
            _text(document, name),
            f"The configuration's {name}",
            InvalidOpenIdConfiguration,
            loopback=loopback,
        )
        for name in ("authorization_endpoint", "registration_endpoint", "jwks_uri", "token_endpoint")
    }
    block = document.get(PLATFORM_CONFIGURATION)
    if not isinstance(block, dict):
        raise InvalidOpenIdConfiguration(
            f"The platform's OpenID configuration lacks the {PLATFORM_CONFIGURATION} object."
        )
    family = block.get("product_family_code")
    if family is not None and not isinstance(family, str):
        raise InvalidOpenIdConfiguration("The configuration's product_family_code must be a string.")
    for name, needed in (
        ("token_endpoint_auth_methods_supported", "private_key_jwt"),
        ("id_token_signing_alg_values_supported", "RS256"),
    ):
        offered = document.get(name)
        if offered is not None and (not isinstance(offered, list) or needed not in offered):
            raise InvalidOpenIdConfiguration(f"The platform does not offer {needed} ({name}).")
    return PlatformConfiguration(
        issuer=issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        registration_endpoint=endpoints["registration_endpoint"],
        jwks_uri=endpoints["jwks_uri"],
        token_endpoint=endpoints["token_endpoint"],
        product_family_code=family,
    )


# -- our registration -----------------------------------------------------------------------------


def tool_registration(
    base: str, *, client_name: str = CLIENT_NAME, scopes: Iterable[str] = ()
) -> dict[str, Any]:
    """The client registration we POST (OpenID Connect Dynamic Client Registration with the LTI
    tool configuration), in the shape Canvas validates (``Lti::IMS::Registration``): web, id_token,
    implicit + client_credentials, private_key_jwt, and Canvas' privacy level and placements.
    We ask for no service scope: we read only the launch."""
    launch = base + LAUNCH_PATH
    messages: list[dict[str, Any]] = [
        {
            "type": "LtiResourceLinkRequest",
            "target_link_uri": launch,
            "label": client_name,
            "placements": [CANVAS_EXTENSION + "course_navigation"],
        },
        {
            "type": "LtiDeepLinkingRequest",
            "target_link_uri": launch,
            "label": client_name,
            "placements": ["ContentArea", "RichTextEditor"],
        },
    ]
    return {
        "application_type": "web",
        "response_types": ["id_token"],
        "grant_types": ["implicit", "client_credentials"],
        "initiate_login_uri": base + LOGIN_PATH,
        "redirect_uris": [launch],
        "client_name": client_name,
        "jwks_uri": base + JWKS_PATH,
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": " ".join(scopes),
        TOOL_CONFIGURATION: {
            "domain": urlsplit(base).netloc,
            "target_link_uri": launch,
            "claims": list(CLAIMS),
            "messages": messages,
            CANVAS_EXTENSION + "privacy_level": "public",
        },
    }


def parse_registration_response(status: int, raw: bytes) -> ClientRegistration:
    """The platform's answer to our POST: 200/201 with ``client_id`` (a string, as Canvas sends
    its developer key's id) and maybe ``deployment_id`` in the tool configuration."""
    if status not in (200, 201):
        raise RegistrationRefused(f"The platform refused the registration (HTTP {status}){_reason(raw)}")
    document = json_object(raw, "The platform's registration answer", InvalidRegistrationResponse)
    client_id = document.get("client_id")
    if not isinstance(client_id, str) or not client_id.strip() or len(client_id) > 255:
        raise InvalidRegistrationResponse("The platform's registration answer carries no client_id.")
    block = document.get(TOOL_CONFIGURATION, {})
    if not isinstance(block, dict):
        raise InvalidRegistrationResponse(f"The answer's {TOOL_CONFIGURATION} is not an object.")
    deployment = block.get("deployment_id")
    if deployment is not None and (
        not isinstance(deployment, str) or not deployment or len(deployment) > 255
    ):
        raise InvalidRegistrationResponse("The answer's deployment_id must be a string.")
    return ClientRegistration(client_id, deployment)


def _reason(raw: bytes) -> str:
    """The platform's own words, if it said any (Canvas: ``errorMessage`` or ``errors``; RFC 7591:
    ``error_description``), cut short and printable."""
    try:
        document = json_object(raw[:8192], "answer", ValueError)
    except ValueError:
        return "."
    said = document.get("error_description") or document.get("errorMessage") or document.get("error")
    errors = document.get("errors")
    if not isinstance(said, str) and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        said = errors[0].get("message")
    if not isinstance(said, str) or not said.strip():
        return "."
    text = "".join(c for c in said.strip()[:300] if c.isprintable())
    return f": {text}"


async def register(
    openid_configuration: str, token: str, base: str, transport: Transport, *, loopback: bool
) -> tuple[PlatformConfiguration, ClientRegistration]:
    """The registration up to what the store keeps: fetch and check the configuration, POST
    our registration, read the answer. Writes nothing; raises a ``DynamicRegistrationError``."""
    raw = await transport.fetch(openid_configuration, token)
    platform = parse_openid_configuration(openid_configuration, raw, loopback=loopback)
    body = json.dumps(tool_registration(base)).encode()
    status, answer = await transport.post(platform.registration_endpoint, token, body)
    return platform, parse_registration_response(status, answer)


# -- the LTI 1.1 migration claim ------------------------------------------------------------------


def lti1p1_base_string(
    consumer_key: str, deployment_id: str, issuer: str, client_id: str, exp: int, nonce: str
) -> str:
    """LTI 1.3 migration guide, ``oauth_consumer_key_sign``: these six joined with ``&``, in this
    order (Canvas: ``Lti::Helpers::JwtMessageHelper.generate_oauth_consumer_key_sign``)."""
    return "&".join([consumer_key, deployment_id, issuer, client_id, str(exp), nonce])


def lti1p1_signature(secret: str, base_string: str) -> str:
    """Base64 (standard alphabet, padded) HMAC-SHA256 keyed with the 1.1 shared secret."""
    digest = hmac.new(secret.encode("utf-8"), base_string.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def lti1p1_consumer_key(claims: Mapping[str, Any]) -> str | None:
    """The 1.1 consumer key a launch's ``lti1p1`` claim names, if it carries a signature."""
    claim = claims.get(LTI1P1)
    if not isinstance(claim, dict):
        return None
    key, sign = claim.get("oauth_consumer_key"), claim.get("oauth_consumer_key_sign")
    if not isinstance(key, str) or not key or not isinstance(sign, str) or not sign:
        return None
    return key


def lti1p1_verifies(claims: Mapping[str, Any], *, client_id: str, secrets: Iterable[str]) -> bool:
    """Whether the verified id_token's ``oauth_consumer_key_sign`` was made with one of
    ``secrets`` over its own key, deployment, issuer, our client id, exp and nonce. The nonce is
    the one our login sent, so a signature never serves twice."""
    key = lti1p1_consumer_key(claims)
    deployment, issuer, exp, nonce = (
        claims.get(DEPLOYMENT_ID),
        claims.get("iss"),
        claims.get("exp"),
        claims.get("nonce"),
    )
    if key is None or type(exp) is not int:
        return False
    if not all(isinstance(v, str) and v for v in (deployment, issuer, nonce)):
        return False
    assert isinstance(deployment, str) and isinstance(issuer, str) and isinstance(nonce, str)
    sent = claims[LTI1P1]["oauth_consumer_key_sign"].encode("utf-8", "replace")
    base_string = lti1p1_base_string(key, deployment, issuer, client_id, exp, nonce)
    return any(hmac.compare_digest(sent, lti1p1_signature(s, base_string).encode()) for s in secrets)
