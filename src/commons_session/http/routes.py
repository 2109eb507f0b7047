"""The routes. Each handler reads the request, calls the service once or twice, and shapes the
answer; the rules live in ``domain.service``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

import orjson
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings
from ..domain.ids import same_id
from ..domain.models import SessionRecord
from ..domain.service import SessionService, iso8601
from ..errors import (
    BadRequest,
    CrossOriginRequest,
    InvalidSession,
    MetricsTokenRequired,
    NotYourSession,
    SessionRequired,
    StoreUnavailable,
)
from ..lti.v11 import oauth_authorization
from ..metrics import exposition
from . import admin, pages
from .bodies import FORM, JSON, Body, read_body
from .carriers import _NO_QUERY, Carried, extract_session_id, held_session_ids, query_params
from .cookies import clear_session_cookie, set_session_cookie
from .crosssite import refuse_cross_site
from .deeplinking import deep_linking_response, tool_jwks
from .fastjson import FastJSONResponse
from .framing import framed
from .launch13 import (
    exchange_session,
    lti13_launch,
    lti13_launch_confirm,
    lti13_login,
    redirect_after_launch,
    static_file,
)
from .openapi import openapi_document
from .problems import problem, status_for
from .ratelimit import FAILED_LOOKUP
from .registration import register_platform

__all__ = ["csrf_token_for", "routes"]


def _service(request: Request) -> SessionService:
    service: SessionService = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def csrf_token_for(session_id: str) -> str:
    """A form token only the session's holder can compute: cross-site forms cannot forge it."""
    return hmac.new(session_id.encode(), b"commons-session form", hashlib.sha256).hexdigest()


def _check_csrf(carried: Carried, body: Body) -> None:
    """A cookie rides along on cross-site form posts, so a request authenticated by the cookie
    must also carry the token from our own page, unless its body is JSON: JSON cannot be posted
    cross-site without a CORS preflight, which we never grant. An empty body needs the token
    too (a cross-site form with no fields posts one)."""
    if carried.carrier == "cookie" and body.media_type != JSON:
        token = (body.fields or {}).get("csrf_token")
        if not isinstance(token, str) or not hmac.compare_digest(token, csrf_token_for(carried.session_id)):
            raise CrossOriginRequest()


async def _session_for(scope: Scope, service: SessionService, carried: Carried | None) -> SessionRecord:
    if carried is None:
        raise SessionRequired()
    try:
        return await service.authenticate(carried.session_id)
    except InvalidSession:
        scope[FAILED_LOOKUP] = True  # counts against the address's rate limit
        raise


async def _authenticated(request: Request, body: Body | None = None) -> tuple[Carried, SessionRecord]:
    carried = extract_session_id(request.headers, query_params(request), body.fields if body else None)
    record = await _session_for(request.scope, _service(request), carried)
    assert carried is not None  # _session_for refuses a request without one
    return carried, record


def _signed_url(request: Request) -> str:
    """The URL Canvas signed. Behind a proxy that is the public one, not the one we see."""
    public = _settings(request).public_url
    if public is None:
        return str(request.url)
    query = request.url.query
    return public + request.url.path + (f"?{query}" if query else "")


# -- Session API ----------------------------------------------------------------------------


async def create_session(request: Request) -> Response:
    settings = _settings(request)
    # Its Set-Cookie would sign a victim's browser in as whoever's JWT another site posted
    # (login CSRF), ending the victim's own session too: refused before anything is spent.
    refuse_cross_site(request, settings.public_url)
    body = await read_body(request, settings.max_body_bytes)
    token = (body.fields or {}).get("jwt_token")
    if not isinstance(token, str) or not token.strip():
        raise BadRequest("Send the Canvas JWT as the string property 'jwt_token'.")
    service = _service(request)
    held = held_session_ids(request.headers)  # the cookies this answer replaces, every one
    issued = await service.create_from_jwt(token.strip(), request.headers.get("user-agent"), held)
    content = {"sessionId": issued.session_id, **service.contents(issued.session_id, issued.record)}
    # No Location: it would be /api/sessions/{id}, and an id never goes into a URL (proxies
    # and clients log them). The id travels in the body and the cookie only.
    response = FastJSONResponse(content, status_code=201)
    set_session_cookie(response, issued.session_id, settings)
    return response


async def read_session(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app rather than a request handler: the busiest route skips building a
    ``Request`` and Starlette's per-route wrapper (docs/performance.md). Errors raise as in
    every other route and become problems the same way."""
    query = QueryParams(scope["query_string"]) if scope["query_string"] else _NO_QUERY
    carried = extract_session_id(Headers(scope=scope), query)
    service: SessionService = scope["app"].state.service
    record = await _session_for(scope, service, carried)
    assert carried is not None
    if not same_id(scope["path_params"]["session_id"], carried.session_id):
        raise NotYourSession()
    body = orjson.dumps(service.contents(carried.session_id, record))
    # The same status, headers and bytes FastJSONResponse would send.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def logout(request: Request) -> Response:
    settings = _settings(request)
    body = await read_body(request, settings.max_body_bytes) if request.method == "POST" else None
    carried = extract_session_id(request.headers, request.query_params, body.fields if body else None)
    try:
        if carried is None:
            raise SessionRequired()
        await _service(request).logout(carried.session_id)
    except (SessionRequired, InvalidSession) as exc:
        if isinstance(exc, InvalidSession):
            request.scope[FAILED_LOOKUP] = True
        refused: Response = problem(status_for(exc), exc.code, exc.message)
        clear_session_cookie(refused, settings)
        return refused
    response = Response(status_code=204)
    clear_session_cookie(response, settings)
    return response


async def list_sessions(request: Request) -> Response:
    _, record = await _authenticated(request)
    summaries = await _service(request).list_sessions(record)
    return JSONResponse(
        {
            "sessions": [
                {
                    "handle": s.handle,
                    "created": iso8601(s.created_at),
                    "lastSeen": iso8601(s.last_seen_at),
                    "expires": iso8601(s.expires_at),
                    "userAgent": s.user_agent,
                    "current": s.current,
                }
                for s in summaries
            ]
        }
    )


async def end_session_by_handle(request: Request) -> Response:
    _, record = await _authenticated(request)
    was_current = await _service(request).end_session(record, request.path_params["handle"])
    response = Response(status_code=204)
    if was_current:
        clear_session_cookie(response, _settings(request))
    return response


async def logout_others(request: Request) -> Response:
    refuse_cross_site(request, _settings(request).public_url)
    body = await read_body(request, _settings(request).max_body_bytes)
    carried, record = await _authenticated(request, body)
    _check_csrf(carried, body)
    ended = await _service(request).end_other_sessions(record)
    return JSONResponse({"ended": ended})


async def downstream_token(request: Request) -> Response:
    """A short-lived token for a service behind us (docs/sessions.md#tokens-for-downstream-services)."""
    settings = _settings(request)
    refuse_cross_site(request, settings.public_url)  # it hands out a credential
    body = await read_body(request, settings.max_body_bytes, accept=(JSON,))
    carried, record = await _authenticated(request, body)
    audience = (body.fields or {}).get("audience")
    if not isinstance(audience, str) or not audience:
        raise BadRequest("Send the downstream service as the string property 'audience'.")
    base = settings.public_url or str(request.base_url).rstrip("/")
    token, lifetime = await _service(request).downstream_token(
        carried.session_id,
        record,
        audience=audience,
        audiences=settings.downstream_audiences,
        issuer=base,
        lifetime=settings.downstream_token_ttl,
    )
    return JSONResponse({"token": token, "tokenType": "Bearer", "expiresIn": lifetime, "audience": audience})


# -- Terms of service -----------------------------------------------------------------------


async def terms_status(request: Request) -> Response:
    _, record = await _authenticated(request)
    service = _service(request)
    return JSONResponse(
        {
            "version": service.terms.version,
            "text": service.terms.text,
            "accepted": await service.has_accepted_terms(record),
        }
    )


def _version(body: Body) -> str:
    version = (body.fields or {}).get("version")
    if not isinstance(version, str) or not version:
        raise BadRequest("Send the accepted terms version as the string property 'version'.")
    return version


async def accept_terms(request: Request) -> Response:
    refuse_cross_site(request, _settings(request).public_url)
    body = await read_body(request, _settings(request).max_body_bytes)
    carried, record = await _authenticated(request, body)
    _check_csrf(carried, body)
    await _service(request).accept_terms(record, _version(body))
    return Response(status_code=204)


# -- LTI 1.1 launch -------------------------------------------------------------------------


async def lti_launch(request: Request) -> Response:
    settings = _settings(request)
    body = await read_body(request, settings.max_body_bytes, accept=(FORM,))
    result = await _service(request).launch(
        uri=_signed_url(request),
        body=body.text,
        content_type=FORM,
        held_session_id=held_session_ids(request.headers),
        user_agent=request.headers.get("user-agent"),
        authorization=oauth_authorization(request.headers.get("authorization")),
    )
    return redirect_after_launch(result, settings)


# -- Pages ----------------------------------------------------------------------------------


async def _page_session(request: Request) -> tuple[Carried, SessionRecord] | None:
    """Pages show a signed-out view instead of an error."""
    try:
        return await _authenticated(request)
    except (SessionRequired, InvalidSession):
        return None


async def _spend_landing_code(request: Request, service: SessionService) -> None:
    """The launch's hand-off code, once the page has been served by the cookie, is no longer
    needed: spend it, so the copy left in the URL (history, a proxy's log) is worth nothing."""
    code = request.query_params.get("code")
    if code:
        await service.spend_exchange_code(code)


async def home_page(request: Request) -> Response:
    found = await _page_session(request)
    service = _service(request)
    if found is not None:
        await _spend_landing_code(request, service)
    if found is None and request.query_params.get("code"):
        # the cookie was blocked
        return await framed(request, pages.exchange_shell(service.terms, landing="home"))
    if found is None:
        return await framed(request, pages.signed_out())
    carried, record = found
    page = pages.home(
        service.contents(carried.session_id, record),
        accepted=await service.has_accepted_terms(record),
        csrf_token=csrf_token_for(carried.session_id),
    )
    return await framed(request, page, record)


async def terms_page(request: Request) -> Response:
    found = await _page_session(request)
    service = _service(request)
    if found is not None:
        await _spend_landing_code(request, service)
    if found is None and request.query_params.get("code"):
        # the cookie was blocked
        return await framed(request, pages.exchange_shell(service.terms, landing="terms"))
    if found is None:
        return await framed(request, pages.terms(service.terms, accepted=None, csrf_token=None))
    carried, record = found
    page = pages.terms(
        service.terms,
        accepted=await service.has_accepted_terms(record),
        csrf_token=csrf_token_for(carried.session_id),
    )
    return await framed(request, page, record)


async def accept_terms_form(request: Request) -> Response:
    refuse_cross_site(request, _settings(request).public_url)
    body = await read_body(request, _settings(request).max_body_bytes, accept=(FORM,))
    carried, record = await _authenticated(request, body)
    _check_csrf(carried, body)
    await _service(request).accept_terms(record, _version(body))
    return RedirectResponse("/", status_code=303)


async def terms_route(request: Request) -> Response:
    """One route for both methods, so a 405 on ``/terms`` lists both in ``Allow``."""
    if request.method == "POST":
        return await accept_terms_form(request)
    return await terms_page(request)


async def logout_form(request: Request) -> Response:
    settings = _settings(request)
    refuse_cross_site(request, settings.public_url)
    body = await read_body(request, settings.max_body_bytes, accept=(FORM,))
    carried, _ = await _authenticated(request, body)
    _check_csrf(carried, body)
    await _service(request).logout(carried.session_id)
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(response, settings)
    return response


# -- Meta -----------------------------------------------------------------------------------


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def healthz(request: Request) -> Response:
    """The process answers; no store is asked."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Every configured store answers a cheap query within ``store_timeout``; ``warnings`` lists
    what was allowed but is unsafe (a volatile Redis)."""
    stores = _service(request).stores
    try:
        await asyncio.wait_for(stores.ping(), _settings(request).store_timeout)
    except Exception as exc:  # whatever the store's failure, the answer is "not ready", never 500
        logging.getLogger("commons_session.errors").warning("not ready: %r", exc)
        # A store that knows why (the SQLite file gone, read-only, the disk full) says so.
        detail = exc.message if isinstance(exc, StoreUnavailable) else StoreUnavailable.default_message
        return problem(503, StoreUnavailable.code, detail, headers={"Retry-After": "1"})
    warnings = stores.warnings()
    return JSONResponse({"status": "ready", "warnings": warnings} if warnings else {"status": "ready"})


async def metrics_text(request: Request) -> Response:
    token = _settings(request).metrics_token
    if token is not None:
        scheme, _, offered = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), expected):
            raise MetricsTokenRequired()
    body, content_type = exposition()
    return Response(body, media_type=content_type)


class _Bare:
    """Wraps a bare ASGI function so Starlette's ``Route`` serves it as an app, not as a
    request handler (it decides by whether the endpoint is a function)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.__doc__ = app.__doc__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


routes = [
    Route("/api/sessions", create_session, methods=["POST"]),
    Route("/api/sessions", list_sessions, methods=["GET"]),
    Route("/api/sessions/logout", logout, methods=["GET", "POST"]),
    Route("/api/sessions/logout-others", logout_others, methods=["POST"]),
    Route("/api/sessions/handles/{handle}", end_session_by_handle, methods=["DELETE"]),
    Route("/api/sessions/exchange", exchange_session, methods=["POST"]),
    Route("/api/sessions/token", downstream_token, methods=["POST"]),
    Route("/api/sessions/{session_id}", _Bare(read_session), methods=["GET"]),
    Route("/api/terms", terms_status, methods=["GET"]),
    Route("/api/terms/accept", accept_terms, methods=["POST"]),
    Route("/api/lti", lti_launch, methods=["POST"]),
    Route("/api/lti/login", lti13_login, methods=["GET", "POST"]),
    Route("/api/lti/launch", lti13_launch, methods=["POST"]),
    Route("/api/lti/launch/confirm", lti13_launch_confirm, methods=["POST"]),
    Route("/static/{name}", static_file, methods=["GET"]),
    Route("/", home_page, methods=["GET"]),
    Route("/terms", terms_route, methods=["GET", "POST"]),
    Route("/logout", logout_form, methods=["POST"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_text, methods=["GET"]),
    *admin.routes,
    Route("/api/lti/jwks", tool_jwks, methods=["GET"]),
    Route("/api/lti/deep-linking/response", deep_linking_response, methods=["POST"]),
    Route("/api/lti/register", register_platform, methods=["GET"]),
]
