"""The operator's API (``/api/admin/*``, JSON, ``Authorization: Bearer <operator token>``) and
console (``/admin``, HTML forms, signed in with the same token). Both are off unless
``COMMONS_SESSION_OPERATOR_TOKEN`` is set, and both run ``domain.operations``, which the CLI runs
too: the same input is accepted, and refused with the same ``code``, everywhere.

The console's cookie is not the token: it is ``<issued>.<HMAC(token, issued)>``, good for an hour,
``HttpOnly; SameSite=Strict`` and sent only to ``/admin``. Every console form carries a CSRF
token (HMAC of the cookie) and must come from our own page (Fetch Metadata / Origin); the pages
may not be framed by anyone (``frame-ancestors 'none'``). A wrong token counts against the
client address' failure budget, like a guessed session id.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..domain.operations import Operations
from ..domain.service import SessionService
from ..errors import (
    BadRequest,
    OperatorConsoleDisabled,
    OperatorTokenRequired,
    SessionServiceError,
)
from . import console
from .bodies import FORM, JSON, read_body
from .crosssite import refuse_cross_site
from .problems import status_for
from .ratelimit import FAILED_LOOKUP

__all__ = ["routes"]

COOKIE = "operator"
COOKIE_PATH = "/admin"
COOKIE_LIFETIME = 3_600  # seconds


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _operations(request: Request) -> Operations:
    service: SessionService = request.app.state.service
    return Operations(service, flags=False)


def _token(request: Request) -> bytes:
    token = _settings(request).operator_token
    if token is None:
        raise OperatorConsoleDisabled()
    return token.get_secret_value().encode()


def _mac(token: bytes, purpose: str) -> str:
    return hmac.new(token, f"commons-session operator {purpose}".encode(), hashlib.sha256).hexdigest()


def _same(offered: object, expected: str) -> bool:
    return hmac.compare_digest(str(offered).encode(), expected.encode())


def _refused(request: Request) -> OperatorTokenRequired:
    request.scope[FAILED_LOOKUP] = True  # counts against the address, like a guessed id
    return OperatorTokenRequired()


# -- API ------------------------------------------------------------------------------------


def _require_bearer(request: Request) -> None:
    token = _token(request)
    scheme, _, offered = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), token):
        raise _refused(request)


async def _json(request: Request) -> dict[str, Any]:
    body = await read_body(request, _settings(request).max_body_bytes, accept=(JSON,))
    return body.fields or {}


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"Send {name!r} as a string.")
    return value


def _optional(fields: dict[str, Any] | Any, name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"Send {name!r} as a string.")
    return value or None


async def api_institutions(request: Request) -> Response:
    _require_bearer(request)
    ops = _operations(request)
    if request.method == "GET":
        return JSONResponse(await ops.list_institutions())
    fields = await _json(request)
    added = await ops.add_institution(
        _text(fields, "consumer_key"), _text(fields, "name"), _text(fields, "secret")
    )
    return JSONResponse({"consumer_key": added.consumer_key, "name": added.name}, status_code=201)


async def api_institution_action(request: Request) -> Response:
    _require_bearer(request)
    ops, action = _operations(request), request.url.path.rsplit("/", 1)[1]
    fields = await _json(request)
    key = _text(fields, "consumer_key")
    if action == "rotate-secret":
        await ops.rotate_secret(key, _text(fields, "secret"))
    elif action == "finish-rotation":
        await ops.finish_rotation(key)
    elif action in ("disable", "enable"):
        institution, ended = await ops.set_institution_disabled(key, action == "disable")
        return JSONResponse({"consumer_key": key, "disabled": institution.disabled, "ended_sessions": ended})
    else:  # remove
        _, ended = await ops.remove_institution(key)
        return JSONResponse({"consumer_key": key, "ended_sessions": ended})
    return Response(status_code=204)


async def api_user_action(request: Request) -> Response:
    _require_bearer(request)
    fields = await _json(request)
    user, ended = await _operations(request).set_user_disabled(
        _text(fields, "user_id"), request.url.path.endswith("/disable")
    )
    return JSONResponse({"user_id": user.id, "disabled": user.disabled, "ended_sessions": ended})


async def api_sessions(request: Request) -> Response:
    _require_bearer(request)
    query = request.query_params
    found = await _operations(request).live_sessions(
        user_id=_optional(query, "user_id"), key=_optional(query, "consumer_key")
    )
    return JSONResponse({"count": len(found), "sessions": found})


async def api_revoke_sessions(request: Request) -> Response:
    _require_bearer(request)
    fields = await _json(request)
    ended = await _operations(request).revoke_sessions(
        user_id=_optional(fields, "user_id"), key=_optional(fields, "consumer_key")
    )
    return JSONResponse({"ended_sessions": ended})


async def api_pending_platforms(request: Request) -> Response:
    _require_bearer(request)
    return JSONResponse(await _operations(request).pending_platforms())


async def api_bind_platform(request: Request) -> Response:
    _require_bearer(request)
    fields = await _json(request)
    registration = await _operations(request).bind_platform(
        _text(fields, "issuer"),
        _text(fields, "client_id"),
        _text(fields, "consumer_key"),
        _optional(fields, "deployment_id"),
    )
    return JSONResponse(registration.as_dict())


async def api_audit(request: Request) -> Response:
    _require_bearer(request)
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("'limit' must be a whole number from 1 to 1000.")
    return JSONResponse(await _operations(request).recent_audit(int(raw)))


# -- console --------------------------------------------------------------------------------


def _signed_in(request: Request, token: bytes) -> str | None:
    """The console cookie if it is ours and younger than an hour."""
    value = request.cookies.get(COOKIE, "")
    issued, _, mac = value.partition(".")
    if not issued.isdigit() or not hmac.compare_digest(
        mac.encode(), _mac(token, f"console {issued}").encode()
    ):
        return None
    return value if 0 <= time.time() - int(issued) < COOKIE_LIFETIME else None


def _set_cookie(response: Response, value: str, settings: Settings, max_age: int = COOKIE_LIFETIME) -> None:
    response.set_cookie(
        COOKIE, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
        secure=settings.cookie_secure, samesite="strict",
    )  # fmt: skip


async def _dashboard(
    request: Request, cookie: str, token: bytes, *, status: int = 200, **notes: str
) -> Response:
    ops = _operations(request)
    return console.dashboard(
        institutions=await ops.list_institutions(),
        audit=await ops.recent_audit(30),
        pending=await ops.pending_platforms(),
        csrf=_mac(token, f"csrf {cookie}"),
        status=status,
        notice=notes.get("notice") or request.query_params.get("notice"),
        error=notes.get("error"),
        sessions=notes.get("sessions"),
    )


async def console_home(request: Request) -> Response:
    token = _token(request)
    cookie = _signed_in(request, token)
    if cookie is None:
        return console.sign_in()
    return await _dashboard(request, cookie, token)


async def console_login(request: Request) -> Response:
    token = _token(request)
    refuse_cross_site(request, _settings(request).public_url)
    body = await read_body(request, _settings(request).max_body_bytes, accept=(FORM,))
    offered = (body.fields or {}).get("token")
    if not isinstance(offered, str) or not hmac.compare_digest(offered.strip().encode(), token):
        error = _refused(request)
        return console.sign_in(error=f"{error.message} ({error.code})", status=401)
    issued = str(int(time.time()))
    response = RedirectResponse("/admin", status_code=303)
    _set_cookie(response, f"{issued}.{_mac(token, f'console {issued}')}", _settings(request))
    return response


async def console_logout(request: Request) -> Response:
    refuse_cross_site(request, _settings(request).public_url)
    response = RedirectResponse("/admin", status_code=303)
    _set_cookie(response, "", _settings(request), max_age=0)
    return response


async def console_action(request: Request) -> Response:
    token = _token(request)
    refuse_cross_site(request, _settings(request).public_url)
    cookie = _signed_in(request, token)
    if cookie is None:
        return console.sign_in(error="Sign in again: the console session has ended.", status=401)
    body = await read_body(request, _settings(request).max_body_bytes, accept=(FORM,))
    fields: dict[str, Any] = body.fields or {}
    if not hmac.compare_digest(
        str(fields.get("csrf_token", "")).encode(), _mac(token, f"csrf {cookie}").encode()
    ):
        return console.sign_in(error="That form has expired; sign in again.", status=403)
    ops, action = _operations(request), str(fields.get("action", ""))
    value = {k: str(v).strip() for k, v in fields.items()}
    key, user = value.get("consumer_key", ""), value.get("user_id", "")
    try:
        if action == "add_institution":
            added = await ops.add_institution(key, value.get("name", ""), value.get("secret", ""))
            notice = f"Added {added.consumer_key} ({added.name})."
        elif action == "rotate_secret":
            await ops.rotate_secret(key, value.get("secret", ""))
            notice = f"{key}: the new and the previous secret both verify until the rotation is finished."
        elif action == "finish_rotation":
            await ops.finish_rotation(key)
            notice = f"{key}: only the current secret verifies now."
        elif action in ("disable_institution", "enable_institution"):
            institution, ended = await ops.set_institution_disabled(key, action == "disable_institution")
            state = "disabled" if institution.disabled else "enabled"
            notice = f"{institution.consumer_key} {state}; ended {ended} session(s)."
        elif action == "remove_institution":
            gone, ended = await ops.remove_institution(key)
            notice = f"Removed {gone.consumer_key}; ended {ended} session(s)."
        elif action == "bind_platform":
            issuer, client_id = value.get("issuer", ""), value.get("client_id", "")
            await ops.bind_platform(issuer, client_id, key, value.get("deployment_id"))
            notice = f"Bound {issuer} ({client_id}) to {key}."
        elif action in ("disable_user", "enable_user"):
            found, ended = await ops.set_user_disabled(user, action == "disable_user")
            state = "disabled" if found.disabled else "enabled"
            notice = f"User {found.id} {state}; ended {ended} session(s)."
        elif action == "count_sessions":
            live = await ops.live_sessions(user_id=user or None, key=key or None)
            return await _dashboard(request, cookie, token, sessions=f"{len(live)} live session(s).")
        elif action == "revoke_sessions":
            ended = await ops.revoke_sessions(user_id=user or None, key=key or None)
            notice = f"Ended {ended} session(s)."
        else:
            raise BadRequest(f"Unknown action {action!r}.")
    except SessionServiceError as exc:
        error = f"{exc.message} ({exc.code})"
        return await _dashboard(request, cookie, token, status=status_for(exc), error=error)
    return RedirectResponse(f"/admin?notice={quote(notice)}", status_code=303)


def _page_errors(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """The console answers people: its refusals are pages, not problem documents."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except SessionServiceError as exc:
            return console.refused(exc.message, exc.code, status_for(exc))

    return wrapped


routes = [
    Route("/api/admin/institutions", api_institutions, methods=["GET", "POST"]),
    Route("/api/admin/institutions/rotate-secret", api_institution_action, methods=["POST"]),
    Route("/api/admin/institutions/finish-rotation", api_institution_action, methods=["POST"]),
    Route("/api/admin/institutions/remove", api_institution_action, methods=["POST"]),
    Route("/api/admin/institutions/disable", api_institution_action, methods=["POST"]),
    Route("/api/admin/institutions/enable", api_institution_action, methods=["POST"]),
    Route("/api/admin/users/disable", api_user_action, methods=["POST"]),
    Route("/api/admin/users/enable", api_user_action, methods=["POST"]),
    Route("/api/admin/sessions", api_sessions, methods=["GET"]),
    Route("/api/admin/sessions/revoke", api_revoke_sessions, methods=["POST"]),
    Route("/api/admin/audit", api_audit, methods=["GET"]),
    Route("/api/admin/lti13/pending", api_pending_platforms, methods=["GET"]),
    Route("/api/admin/lti13/bind", api_bind_platform, methods=["POST"]),
    Route("/admin", _page_errors(console_home), methods=["GET"]),
    Route("/admin/login", _page_errors(console_login), methods=["POST"]),
    Route("/admin/logout", _page_errors(console_logout), methods=["POST"]),
    Route("/admin/action", _page_errors(console_action), methods=["POST"]),
]
