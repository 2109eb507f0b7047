"""Deep Linking 2.0 as Canvas plays it: the course page's "place a resource" link sends an
``LtiDeepLinkingRequest`` (through the same OIDC login as every 1.3 launch), and
``POST /courses/:id/deep_linking_response`` takes the tool's answer.

Canvas puts a signed ``data`` value in the request and checks it when the answer comes back;
so does the stand-in (HS256 with its message-hint secret, once, within the hint's lifetime).
The answer's ``JWT`` is verified for real: RS256 with the key its ``kid`` names in the tool's
JWKS, fetched over HTTP from the tool (``{tool_url}/api/lti/jwks``), ``iss``/``azp`` the
developer key's client id, ``aud`` our issuer, our deployment id, the message type and version,
``exp``. What it carried is shown as Canvas would list the placed items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt

from .config import Course, DevCanvasConfig, User
from .lti13 import CLAIM
from .messages import lti13_claims

__all__ = [
    "DL_CLAIM",
    "PLACEMENT",
    "ResponseRefused",
    "new_data",
    "request_claims",
    "return_url",
    "verify_response",
]

DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/"
#: The Canvas placement whose message type is LtiDeepLinkingRequest that the stand-in plays.
PLACEMENT = "link_selection"
LEEWAY = 30  # seconds of clock skew Canvas allows
MAX_JWKS_BYTES = 262_144


class ResponseRefused(Exception):
    """The tool's Deep Linking answer does not hold; the message says why."""


def return_url(config: DevCanvasConfig, course: Course) -> str:
    return f"{config.canvas_url}/courses/{course.id}/deep_linking_response"


def new_data(secret: str, course: Course, verifier: str, now: float, lifetime: int) -> str:
    """Canvas' ``data``: a token only the platform can make, naming this request."""
    claims = {"deep_link": verifier, "course_id": course.id, "exp": int(now) + lifetime}
    return jwt.encode(claims, secret, algorithm="HS256")


def request_claims(
    config: DevCanvasConfig, user: User, course: Course, *, now: int, data: str
) -> dict[str, Any]:
    """An ``LtiDeepLinkingRequest`` for the ``link_selection`` placement, as Canvas builds one:
    the resource link launch's claims without ``resource_link``, plus the settings."""
    claims = lti13_claims(config, user, course, now=now)
    claims.pop(CLAIM + "resource_link", None)
    claims[CLAIM + "message_type"] = "LtiDeepLinkingRequest"
    claims["https://www.instructure.com/placement"] = PLACEMENT
    claims[DL_CLAIM + "deep_linking_settings"] = {
        "deep_link_return_url": return_url(config, course),
        "accept_types": ["ltiResourceLink", "link"],
        "accept_presentation_document_targets": ["iframe", "window"],
        "accept_media_types": "application/vnd.ims.lti.v1.ltilink",
        "accept_multiple": False,
        "accept_lineitem": False,
        "auto_create": False,
        "title": "Commons",
        "text": None,
        "data": data,
    }
    return claims


async def _tool_jwks(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=5, follow_redirects=False) as client:
            response = await client.get(url, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ResponseRefused(f"The tool's JWKS at {url} could not be fetched.") from exc
    if response.status_code != 200 or len(response.content) > MAX_JWKS_BYTES:
        raise ResponseRefused(f"The tool's JWKS at {url} answered HTTP {response.status_code}.")
    try:
        document = response.json()
    except ValueError as exc:
        raise ResponseRefused("The tool's JWKS is not JSON.") from exc
    if not isinstance(document, dict):
        raise ResponseRefused("The tool's JWKS is not a JSON object.")
    return document


async def verify_response(
    body: bytes,
    *,
    config: DevCanvasConfig,
    course: Course,
    hint_secret: str,
    spend: Callable[[str], bool],
) -> tuple[dict[str, Any], str]:
    """The claims of the tool's verified ``LtiDeepLinkingResponse`` and the kid that signed it.
    ``spend(verifier)`` uses up the request the ``data`` names, returning False if it was
    already answered or unknown."""
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20))
    token = fields.get("JWT", "")
    if not token:
        raise ResponseRefused("The response carries no JWT.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ResponseRefused("The JWT is malformed.") from exc
    if header.get("alg") != "RS256":
        raise ResponseRefused("The JWT must be signed with RS256.")
    jwks_url = config.tool_url.rstrip("/") + "/api/lti/jwks"
    try:
        keys = jwt.PyJWKSet.from_dict(await _tool_jwks(jwks_url))
        key = next((k for k in keys.keys if k.key_id == header.get("kid")), None)
    except jwt.PyJWTError as exc:
        raise ResponseRefused("The tool's JWKS holds no usable key.") from exc
    if key is None:
        raise ResponseRefused("The JWT's kid is not in the tool's JWKS.")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=config.issuer,
            issuer=config.client_id,
            leeway=LEEWAY,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise ResponseRefused(f"The JWT does not verify: {exc}.") from exc
    if claims.get("azp", config.client_id) != config.client_id:
        raise ResponseRefused("The JWT's azp is not the developer key's client id.")
    if claims.get(CLAIM + "deployment_id") != config.deployment_id:
        raise ResponseRefused("The JWT's deployment_id is not this deployment.")
    if claims.get(CLAIM + "message_type") != "LtiDeepLinkingResponse":
        raise ResponseRefused("The JWT's message_type must be LtiDeepLinkingResponse.")
    if claims.get(CLAIM + "version") != "1.3.0":
        raise ResponseRefused("The JWT's version must be 1.3.0.")
    try:
        data = jwt.decode(str(claims.get(DL_CLAIM + "data", "")), hint_secret, algorithms=["HS256"])
    except jwt.PyJWTError as exc:
        raise ResponseRefused("The JWT does not echo the request's data.") from exc
    if data.get("course_id") != course.id or not spend(str(data.get("deep_link"))):
        raise ResponseRefused("The request this answers was not made here, or was answered already.")
    items = claims.get(DL_CLAIM + "content_items", [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ResponseRefused("The JWT's content_items must be an array of objects.")
    if len(items) > 1:
        raise ResponseRefused("This placement accepts one content item.")
    return claims, str(header["kid"])
