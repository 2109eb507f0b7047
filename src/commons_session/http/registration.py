"""``GET /api/lti/register``: the LTI Dynamic Registration initiation URL (Canvas: Admin >
Developer Keys > + LTI Registration). The rules are in ``lti.registration`` and
``SessionService.register_lti13_platform``; this module only carries HTTP.

The platform's URLs come from an anonymous request, so every call out is bounded: no redirects
followed, ``TIMEOUT_FACTOR`` x ``COMMONS_SESSION_STORE_TIMEOUT`` for each call (body included),
``MAX_DOCUMENT_BYTES`` for a body, https only (plain http to a loopback host only when we
ourselves are served on one: the local stand-in). A person gets an HTML page either way; a
program gets JSON or problem+json.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import Settings
from ..domain.service import SessionService
from ..errors import (
    InvalidOpenIdConfiguration,
    InvalidRegistrationResponse,
    OpenIdConfigurationUnavailable,
    RegistrationRefused,
    SessionServiceError,
)
from ..lti.registration import Transport
from . import pages
from .framing import origin_of
from .problems import status_for

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "REGISTRATION_TIMEOUT",
    "TIMEOUT_FACTOR",
    "make_transport",
    "register_platform",
]

MAX_DOCUMENT_BYTES = 262_144  # Canvas' configuration, with every variable it supports: ~20 KB
#: Each of the two calls to the platform may take this many times ``store_timeout`` (10 s by
#: default): Canvas creates a developer key while we wait.
TIMEOUT_FACTOR = 5
REGISTRATION_TIMEOUT = 10.0
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


async def _read(response: httpx.Response, too_large: SessionServiceError) -> bytes:
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def make_transport(timeout: float = REGISTRATION_TIMEOUT) -> Transport:
    async def fetch(url: str, token: str) -> bytes:
        headers = {"accept": "application/json", "authorization": f"Bearer {token}"}
        try:
            async with (
                asyncio.timeout(timeout),
                httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code != 200:
                    raise OpenIdConfigurationUnavailable(
                        f"The platform's OpenID configuration answered HTTP {response.status_code}."
                    )
                return await _read(
                    response,
                    InvalidOpenIdConfiguration(
                        f"The platform's OpenID configuration is larger than {MAX_DOCUMENT_BYTES} bytes."
                    ),
                )
        except TimeoutError as exc:
            raise OpenIdConfigurationUnavailable(
                f"The platform's OpenID configuration did not arrive within {timeout:g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise OpenIdConfigurationUnavailable(
                "The platform's OpenID configuration could not be fetched: its address does not answer."
            ) from exc

    async def post(url: str, token: str, body: bytes) -> tuple[int, bytes]:
        headers = {
            "accept": "application/json",
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
        }
        try:
            async with (
                asyncio.timeout(timeout),
                httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
                client.stream("POST", url, headers=headers, content=body) as response,
            ):
                too_large = InvalidRegistrationResponse(
                    f"The platform's registration answer is larger than {MAX_DOCUMENT_BYTES} bytes."
                )
                return response.status_code, await _read(response, too_large)
        except TimeoutError as exc:
            raise RegistrationRefused(
                f"The platform's registration endpoint did not answer within {timeout:g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistrationRefused("The platform's registration endpoint could not be reached.") from exc

    return Transport(fetch, post)


def _base(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return settings.public_url or str(request.base_url).rstrip("/")


def _framers(request: Request, *urls: str | None) -> list[str]:
    """Who may frame the registration pages: the platform that sent us (its page, per
    ``Referer``, and its configuration's origin). They show no button, so this grants nothing."""
    found = [origin_of(u) for u in (request.headers.get("referer"), *urls) if u]
    return list(dict.fromkeys(o for o in found if o))


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def register_platform(request: Request) -> Response:
    service: SessionService = request.app.state.service
    base = _base(request)
    settings: Settings = request.app.state.settings
    transport = make_transport(TIMEOUT_FACTOR * settings.store_timeout)
    configuration = request.query_params.get("openid_configuration")
    try:
        registration = await service.register_lti13_platform(
            openid_configuration=configuration,
            registration_token=request.query_params.get("registration_token"),
            base_url=base,
            transport=transport,
            loopback=urlsplit(base).hostname in _LOOPBACK,
        )
    except SessionServiceError as exc:
        if not _wants_html(request):
            raise
        page = pages.registration_failed(exc.code, exc.message, status_for(exc))
        return pages.allow_framing(page, _framers(request, configuration))
    if not _wants_html(request):
        return JSONResponse(registration.as_dict())
    page = pages.registration_complete(
        issuer=registration.issuer,
        client_id=registration.client_id,
        deployment_ids=registration.deployment_ids,
    )
    return pages.allow_framing(page, _framers(request, configuration, registration.issuer))
