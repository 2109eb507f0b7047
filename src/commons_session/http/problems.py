"""RFC 9457 problem details: every error answer is ``application/problem+json`` with a stable
``code``. Stack traces never leave the process."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from .. import errors
from ..logs import request_id
from . import pages
from .framing import framed
from .middleware import SECURITY_HEADERS, redact_path

__all__ = ["ProblemResponse", "exception_handlers", "problem", "status_for"]

log = logging.getLogger("commons_session.errors")
security_log = logging.getLogger("commons_session.security")

# Most specific first; the first match wins.
_STATUS: list[tuple[type[errors.SessionServiceError], int]] = [
    (errors.TokenTooLarge, 413),
    (errors.BadRequest, 400),
    (errors.AuthenticationError, 401),
    (errors.Forbidden, 403),
    (errors.TermsVersionMismatch, 409),
    (errors.RateLimited, 429),
    (errors.InstitutionNotFound, 404),
    (errors.UserNotFound, 404),
    (errors.NotFound, 404),
    (errors.DuplicateRegistration, 409),
    (errors.InstitutionError, 400),
    (errors.StoreUnavailable, 503),
    (errors.JwksUnavailable, 503),
    (errors.SchemaTooNew, 503),
    (errors.StoreError, 500),
    (errors.DynamicRegistrationError, 502),
    (errors.TooManyPendingRegistrations, 503),
]

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def status_for(exc: errors.SessionServiceError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    body = {
        "type": f"urn:commons-session:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


# The launch routes a browser navigates to (form posts from the LMS, the OIDC login redirect);
# not /api/lti/launch/confirm, which our own script calls for JSON.
_LAUNCH_PAGES = frozenset({"/api/lti", "/api/lti/login", "/api/lti/launch"})


def _person_in_a_launch(request: Request) -> bool:
    """A browser (it asks for HTML) in the middle of a launch gets a page; programs, problems."""
    return request.url.path in _LAUNCH_PAGES and "text/html" in request.headers.get("accept", "")


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.SessionServiceError)
    status = status_for(exc)
    if status in (401, 403):
        # Details for operators; the caller gets only the stable code and message.
        security_log.info("refused %s %s: %s", request.method, redact_path(request.url.path), exc.code)
    elif isinstance(exc, errors.DynamicRegistrationError | errors.TooManyPendingRegistrations):
        # The platform's failure (or the operator's backlog), not ours: no stack trace.
        log.warning("registration refused on %s: %s", redact_path(request.url.path), exc.code)
    elif status >= 500:
        log.error("store failure on %s %s", request.method, redact_path(request.url.path), exc_info=exc)
    if _person_in_a_launch(request):
        page = await framed(request, pages.launch_error(status, exc.code, exc.message))
        if status == 503:
            page.headers["Retry-After"] = "1"
        return page
    headers = {"Retry-After": "1"} if status == 503 else None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, errors.MetricsTokenRequired):
        headers = {"WWW-Authenticate": 'Bearer realm="metrics"'}
    return problem(status, exc.code, exc.message, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404:
        detail = f"No route {redact_path(request.url.path)!r} here; see /openapi.json."
    if _person_in_a_launch(request):
        return await framed(request, pages.launch_error(exc.status_code, code, detail))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on this route."
        headers["Allow"] = _allowed(request) or headers.get("Allow", "")
    return problem(exc.status_code, code, detail, headers=headers)


def _allowed(request: Request) -> str:
    """Every method of every route on this path: Starlette's own ``Allow`` names only the
    first route that matched the path, and a path may have one route per method."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, redact_path(request.url.path), exc_info=exc)
    # This handler runs outside the middleware stack, so it adds the security headers itself.
    headers = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}
    rid = request_id.get()
    if rid is not None:
        headers["X-Request-ID"] = rid
    return problem(
        500, "internal_error", "Something went wrong on our side; it has been logged.", headers=headers
    )


exception_handlers: dict[Any, Any] = {
    errors.SessionServiceError: _service_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
