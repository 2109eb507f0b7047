"""Routes for LTI Deep Linking 2.0 and the tool's own keys.

- ``GET /api/lti/jwks``: our JWKS (public parts only), which a platform uses to verify what we
  sign.
- ``POST /api/lti/deep-linking/response``: on a session that a Deep Linking launch started, the
  app's chosen ``contentItems``; answers the page whose form posts the signed
  ``LtiDeepLinkingResponse`` (``JWT``) to the platform's return URL, or, for
  ``Accept: application/json``, ``{"returnUrl", "jwt"}`` for an app that posts it itself.

The rules are in ``domain.service`` and ``lti.deeplinking``; docs/lti13.md#deep-linking.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import Settings
from ..domain.service import DeepLinkingAnswer, SessionService
from ..domain.strict_json import json_object
from ..errors import InvalidContentItems
from ..lti.deeplinking import check_messages
from . import pages
from .bodies import FORM, JSON, read_body
from .crosssite import refuse_cross_site
from .framing import framed, origin_of

__all__ = ["deep_linking_response", "tool_jwks"]

#: Platforms cache our JWKS; a rotation's new key signs at once, so keep the cache short
#: (the old key stays published for the whole overlap, far longer than this).
JWKS_MAX_AGE = 300


def _service(request: Request) -> SessionService:
    service: SessionService = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def tool_jwks(request: Request) -> Response:
    document = await _service(request).tool_keys.jwks(time.time())
    return JSONResponse(document, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})


def _request_fields(raw: bytes, media_type: str, form: dict[str, Any] | None) -> dict[str, Any]:
    """The request as one strict JSON object: no NaN, no lone surrogate, no repeated key (a
    form's ``contentItems`` is JSON text, read the same way)."""
    if media_type == JSON:
        return json_object(raw, "The body", InvalidContentItems)
    text = (form or {}).get("contentItems")
    if not isinstance(text, str) or not text.strip():
        raise InvalidContentItems()
    wrapped = b'{"contentItems":' + text.encode("utf-8") + b"}"
    items = json_object(wrapped, "contentItems", InvalidContentItems)
    if set(items) != {"contentItems"}:  # the text was one JSON value, not a splice of several
        raise InvalidContentItems("contentItems must be one JSON array.")
    messages = {k: v for k, v in (form or {}).items() if k in ("msg", "log", "errormsg", "errorlog")}
    return {**messages, **items}


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


async def deep_linking_response(request: Request) -> Response:
    from .routes import _authenticated, _check_csrf  # the session API's own checks (no cycle)

    settings = _settings(request)
    # Another site must not make a signed-in teacher's browser answer the platform.
    refuse_cross_site(request, settings.public_url)
    body = await read_body(request, settings.max_body_bytes, accept=(JSON, FORM))
    carried, record = await _authenticated(request, body)
    _check_csrf(carried, body)
    if not body.raw:
        raise InvalidContentItems()
    fields = _request_fields(body.raw, body.media_type, body.fields)
    answer = await _service(request).deep_linking_response(
        record, fields.get("contentItems"), check_messages(fields)
    )
    headers = {"Cache-Control": "no-store"}
    if _wants_json(request):
        return JSONResponse({"returnUrl": answer.return_url, "jwt": answer.jwt}, headers=headers)
    page = await framed(request, _post_page(answer), record)
    page.headers.update(headers)
    return page


def _post_page(answer: DeepLinkingAnswer) -> Response:
    """The form that carries the response to the platform; ``deeplinking.js`` submits it at
    once, and its button does without script. Its CSP lets forms go to the return URL's origin
    only."""
    response = pages.deep_linking_post(answer.return_url, answer.jwt)
    origin = origin_of(answer.return_url)
    policy = response.headers["content-security-policy"]
    response.headers["content-security-policy"] = policy.replace(
        "form-action 'self'", f"form-action 'self' {origin}" if origin else "form-action 'self'"
    )
    return response
