"""Routes for LTI 1.3 launches and for handing a session to a page whose cookie is blocked.

- ``GET|POST /api/lti/login``: OIDC login initiation; 302 to the platform (or, when the platform
  offers Platform Storage, a page that stores the browser binding there first).
- ``POST /api/lti/launch``: the platform's form post of ``id_token`` and ``state``.
- ``POST /api/lti/launch/confirm``: the same launch completed by our page's script with the
  binding it got back from Platform Storage (JSON only).
- ``POST /api/sessions/exchange``: the one-time ``code`` of a launch's redirect, for its id.
- ``GET /static/{name}``: the two scripts those pages load.

The rules are in ``domain.service`` and ``lti.v13``; docs/lti13.md explains the flow.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..config import Settings
from ..domain.service import LaunchResult, SessionService
from ..errors import BadRequest, RegistrationPending, StateCookieMissing
from ..lti.v13 import platform_origin
from . import pages
from .bodies import FORM, JSON, read_body
from .carriers import held_session_ids
from .cookies import STATE_COOKIE, set_session_cookie, set_state_cookie
from .framing import framed
from .problems import problem

__all__ = [
    "exchange_session",
    "landing_url",
    "lti13_launch",
    "lti13_launch_confirm",
    "lti13_login",
    "redirect_after_launch",
    "static_file",
]

LAUNCH_PATH = "/api/lti/launch"
LOGIN_PATH = "/api/lti/login"
_STATIC = frozenset({"session.js", "lti13.js", "deeplinking.js", "register.js"})


def _service(request: Request) -> SessionService:
    service: SessionService = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _text(fields: dict[str, Any] | None, name: str) -> str | None:
    value = (fields or {}).get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _base(request: Request) -> str:
    return _settings(request).public_url or str(request.base_url).rstrip("/")


def landing_url(result: LaunchResult) -> str:
    """Where a launch sends the browser: the terms until they are accepted, else home, with the
    one-time code the page trades for the session if its cookie was blocked."""
    path = "/" if result.terms_accepted else "/terms"
    return f"{path}?code={result.exchange_code}" if result.exchange_code else path


def redirect_after_launch(result: LaunchResult, settings: Settings) -> Response:
    response = RedirectResponse(landing_url(result), status_code=303)
    set_session_cookie(response, result.issued.session_id, settings)
    return response


def _held_session(request: Request) -> list[str]:
    return held_session_ids(request.headers)


# -- LTI 1.3 --------------------------------------------------------------------------------------


async def lti13_login(request: Request) -> Response:
    settings = _settings(request)
    fields: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        body = await read_body(request, settings.max_body_bytes, accept=(FORM,))
        fields.update(body.fields or {})
    login = await _service(request).begin_lti13_login(
        issuer=_text(fields, "iss"),
        client_id=_text(fields, "client_id"),
        target_link_uri=_text(fields, "target_link_uri"),
        launch_url=_base(request) + LAUNCH_PATH,
        login_hint=_text(fields, "login_hint"),
        lti_message_hint=_text(fields, "lti_message_hint"),
        deployment_id=_text(fields, "lti_deployment_id"),
        binding=request.cookies.get(STATE_COOKIE),
    )
    target = _text(fields, "lti_storage_target")
    response: Response
    if target is not None:
        response = await framed(
            request,
            pages.lti_storage_login(
                redirect_url=login.redirect_url,
                origin=login.platform_origin,
                target=target,
                state=login.state,
                nonce=login.nonce,
                binding=login.binding,
            ),
        )
    else:
        response = RedirectResponse(login.redirect_url, status_code=302)
    set_state_cookie(response, login.binding, settings)
    return response


async def _state_cookie_missing(request: Request, exc: StateCookieMissing) -> Response:
    relaunch = f"{LOGIN_PATH}?{exc.relaunch_query}" if exc.relaunch_query else None
    if "text/html" in request.headers.get("accept", ""):
        return await framed(request, pages.state_cookie_missing(exc.message, relaunch))
    if relaunch is None:
        return problem(401, exc.code, exc.message)
    return problem(401, exc.code, exc.message, relaunchUrl=relaunch)


async def lti13_launch(request: Request) -> Response:
    settings = _settings(request)
    body = await read_body(request, settings.max_body_bytes, accept=(FORM,))
    id_token, state = _text(body.fields, "id_token"), _text(body.fields, "state")
    if id_token is None or state is None:
        error = _text(body.fields, "error")
        if error is not None:  # the platform's OIDC error answer (e.g. login_required)
            described = _text(body.fields, "error_description") or ""
            raise BadRequest(f"Canvas did not complete the sign-in: {error}. {described}".strip())
        raise BadRequest("The launch must post id_token and state as a form.")
    service = _service(request)
    binding = request.cookies.get(STATE_COOKIE)
    target = _text(body.fields, "lti_storage_target")
    if binding is None and target is not None:
        login, registration = await service.lti13_pending(state)
        page = pages.lti_storage_launch(
            id_token=id_token,
            state=state,
            nonce=login.nonce,
            origin=platform_origin(registration),
            target=target,
            relaunch_url=f"{LOGIN_PATH}?{login.relaunch_query()}",
        )
        return await framed(request, page)
    try:
        result = await service.launch13(
            id_token=id_token,
            state=state,
            binding=binding,
            held_session_id=_held_session(request),
            user_agent=request.headers.get("user-agent"),
        )
    except StateCookieMissing as exc:
        return await _state_cookie_missing(request, exc)
    except RegistrationPending as exc:
        if "text/html" not in request.headers.get("accept", ""):
            raise
        framed_page = await framed(request, pages.registration_pending(exc.message))
        return pages.allow_framing(framed_page, [exc.platform_origin] if exc.platform_origin else [])
    return redirect_after_launch(result, settings)


async def lti13_launch_confirm(request: Request) -> Response:
    """JSON only: another site's form cannot post JSON, and a script of another origin would
    need a CORS preflight, which is never granted."""
    settings = _settings(request)
    body = await read_body(request, settings.max_body_bytes, accept=(JSON,))
    id_token, state = _text(body.fields, "id_token"), _text(body.fields, "state")
    binding, nonce = _text(body.fields, "binding"), _text(body.fields, "nonce")
    if id_token is None or state is None or binding is None or nonce is None:
        raise BadRequest("Send id_token, state, binding and nonce as JSON strings.")
    result = await _service(request).launch13(
        id_token=id_token,
        state=state,
        binding=binding,
        held_session_id=_held_session(request),
        user_agent=request.headers.get("user-agent"),
        stored_nonce=nonce,
    )
    response = JSONResponse({"location": landing_url(result)})
    set_session_cookie(response, result.issued.session_id, settings)
    return response


# -- the one-time hand-off code -------------------------------------------------------------------


async def exchange_session(request: Request) -> Response:
    body = await read_body(request, _settings(request).max_body_bytes, accept=(JSON,))
    code = (body.fields or {}).get("code")
    if not isinstance(code, str) or not code.strip():
        raise BadRequest("Send the code from the page's address as the string property 'code'.")
    session_id = await _service(request).exchange_code(code.strip())
    return JSONResponse({"sessionId": session_id})


# -- the pages' scripts ---------------------------------------------------------------------------


@cache
def _static_text(name: str) -> str:
    return resources.files("commons_session.http").joinpath("static", name).read_text("utf-8")


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _STATIC:
        raise HTTPException(404)
    return Response(_static_text(name), media_type="text/javascript; charset=utf-8")
