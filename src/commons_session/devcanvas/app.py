"""The stand-in's HTTP routes, shaped like Canvas' own.

- ``GET /api/lti/{accounts|courses}/:id/jwt_token``: Canvas' JWT for the Session API.
- ``GET /courses/:id``: a course page that launches the tool in an iframe (LTI 1.1 by default,
  ``?lti=1.3`` for LTI 1.3, ``?as=<user id>`` to be someone else, ``?storage=canvas|ims|off|silent``
  for the Platform Storage style it plays, see ``pages.STORAGE_STYLES``).
- ``GET|POST /api/lti/authorize_redirect``: the LTI 1.3 authorization endpoint.
- ``GET /api/lti/security/jwks``: the platform's public keys.
- ``GET /courses/:id?lti=1.3&placement=link_selection``: "place a resource", an LTI Deep
  Linking request; ``POST /courses/:id/deep_linking_response`` verifies and shows the answer.
- ``GET /post_message_forwarding``: the hidden frame of the course page that answers LTI Platform
  Storage messages (``lti.put_data``, ``lti.get_data``), for tools whose cookies are blocked; the
  course page itself answers ``lti.capabilities`` and names this frame.

``create_app`` is the factory granian imports; the parent process hands it the configuration,
the RSA key and the message-hint secret through ``COMMONS_SESSION_DEVCANVAS_STATE``, so that
what it printed at start (key id included) is what the worker serves.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import jwt
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import deeplinking, pages
from . import registration as dynreg
from .config import Course, DevCanvasConfig, User, parse_config
from .lti13 import PlatformKey
from .messages import lti11_params, lti13_claims, new_verifier
from .signing import LtiConsumer, form_fields

__all__ = ["STATE_ENV", "Platform", "create_app"]

STATE_ENV = "COMMONS_SESSION_DEVCANVAS_STATE"
LTI11_TOOL_ID = "1"  #: the id of the LTI 1.1 tool, for ``jwt_token?tool_id=``
HINT_LIFETIME = 300  # seconds a course page's LTI 1.3 login initiation stays usable
CLAIM_LTI1P1 = "https://purl.imsglobal.org/spec/lti/claim/lti1p1"
REQUIRED_AUTH_PARAMS = (
    "client_id",
    "login_hint",
    "lti_message_hint",
    "nonce",
    "prompt",
    "redirect_uri",
    "response_mode",
    "response_type",
    "scope",
)


@dataclass
class _Pending:
    claims: dict[str, Any]
    expires_at: float


@dataclass
class Platform:
    """Everything the routes share: the configuration, the keys, and LTI 1.3 launches that
    have been initiated but not yet authorized (single use, as Canvas caches them)."""

    config: DevCanvasConfig
    key: PlatformKey
    hint_secret: str
    clock: Callable[[], float] = time.time
    pending: dict[str, _Pending] = field(default_factory=dict)
    #: Deep Linking requests sent and not yet answered (their ``data``), until they expire.
    deep_links: dict[str, float] = field(default_factory=dict)

    def spend_deep_link(self, verifier: str) -> bool:
        expires = self.deep_links.pop(verifier, None)
        return expires is not None and expires > self.clock()

    #: Tools registered by LTI Dynamic Registration (``devcanvas.registration``).
    dynamic: dynreg.DynamicRegistrations = field(default_factory=dynreg.DynamicRegistrations)

    @property
    def consumer(self) -> LtiConsumer:
        c = self.config
        return LtiConsumer(c.consumer_key, c.shared_secret, c.guid, c.account_name, c.api_domain)

    def state(self) -> str:
        return json.dumps(
            {
                "config": _config_text(self.config),
                "key": self.key.private_pem(),
                "hint_secret": self.hint_secret,
            }
        )

    @classmethod
    def from_state(cls, state: str) -> Platform:
        data = json.loads(state)
        raw = data["config"]
        config = parse_config(
            raw["text"], canvas_url=raw["canvas_url"], tool_url=raw["tool_url"], source=raw["source"]
        )
        return cls(config, PlatformKey.from_pem(data["key"]), data["hint_secret"])

    @classmethod
    def new(cls, config: DevCanvasConfig) -> Platform:
        return cls(config, PlatformKey.generate(), secrets.token_hex(32))


def _config_text(config: DevCanvasConfig) -> dict[str, str]:
    # The worker re-parses the same text with the same URLs: one parser, one result.
    return {
        "text": config.text,
        "canvas_url": config.canvas_url,
        "tool_url": config.tool_url,
        "source": config.source,
    }


# -- Canvas-shaped errors -----------------------------------------------------------------------


def _errors(status_code: int, message: str, *, status: str | None = None) -> JSONResponse:
    """Canvas' API error shape: ``{"errors": [{"message": ...}]}``."""
    headers = {"WWW-Authenticate": 'Bearer realm="canvas-lms"'} if status_code == 401 else None
    body: dict[str, Any] = {"status": status} if status else {}
    body["errors"] = [{"message": message}]
    return JSONResponse(body, status_code=status_code, headers=headers)


def _not_found() -> JSONResponse:
    return _errors(404, "The specified resource does not exist.")


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _api_user(request: Request) -> User | JSONResponse:
    """The user an API access token names, or Canvas' 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = request.query_params.get("access_token", "")
    token = token.strip()
    if not token:
        return _errors(401, "user authorization required", status="unauthenticated")
    user = _platform(request).config.user_by_token(token)
    if user is None:
        return _errors(401, "Invalid access token.")
    return user


# -- jwt_token ----------------------------------------------------------------------------------


async def jwt_token(request: Request) -> Response:
    platform = _platform(request)
    config = platform.config
    user = _api_user(request)
    if isinstance(user, Response):
        return user
    course: Course | None = None
    if "course_id" in request.path_params:
        course = config.course(request.path_params["course_id"])
        if course is None:
            return _not_found()
        if course.role_of(user.id) is None and not user.admin:
            return _errors(401, "user not authorized to perform that action", status="unauthorized")
    elif request.path_params["account_id"] not in {"self", config.account_id}:
        return _not_found()
    tool_id = request.query_params.get("tool_id")
    launch_url = request.query_params.get("tool_launch_url")
    if tool_id is not None:
        found = tool_id == LTI11_TOOL_ID
    else:
        found = launch_url is not None and launch_url == config.launch_url
    if not found:
        return _not_found()
    token = platform.consumer.mint_jwt(lti11_params(config, user, course), iat=platform.clock())
    return JSONResponse({"jwt_token": token})


# -- the course page ----------------------------------------------------------------------------


def _message_hint(
    platform: Platform, user: User, course: Course, verifier: str, now: float, storage_target: str | None
) -> str:
    claims = {
        "verifier": verifier,
        "canvas_domain": platform.config.api_domain,
        "context_type": "Course",
        "context_id": course.id,
        "user_id": user.id,
        "storage_target": storage_target,
        "exp": int(now) + HINT_LIFETIME,
    }
    return jwt.encode(claims, platform.hint_secret, algorithm="HS256")


async def course_page(request: Request) -> Response:
    platform = _platform(request)
    config = platform.config
    course = config.course(request.path_params["course_id"])
    if course is None:
        return pages.message_page("Page not found", "This course does not exist.", 404)
    as_user = request.query_params.get("as") or next(iter((*course.teachers, *course.students)), "")
    user = config.user(as_user)
    if user is None:
        return pages.message_page("Page not found", f"There is no user {as_user!r}.", 404)
    if course.role_of(user.id) is None and not user.admin:
        return pages.message_page("Unauthorized", f"{user.name} is not enrolled in this course.", 403)
    lti = request.query_params.get("lti", "1.1")
    now = platform.clock()
    if lti == "1.1":
        body, _ = platform.consumer.sign(
            config.launch_url, lti11_params(config, user, course), timestamp=int(now)
        )
        return pages.course_page(
            config, course, user, lti=lti, action=config.launch_url, fields=form_fields(body)
        )
    if lti != "1.3":
        return pages.message_page("Bad request", "lti must be 1.1 or 1.3.", 400)
    storage = request.query_params.get("storage", "canvas")
    if storage not in pages.STORAGE_STYLES:
        return pages.message_page(
            "Bad request", f"storage must be one of {', '.join(pages.STORAGE_STYLES)}.", 400
        )
    target = pages.storage_target(storage)
    for stale in [v for v, p in platform.pending.items() if p.expires_at <= now]:
        del platform.pending[stale]
    verifier = new_verifier()
    claims = lti13_claims(config, user, course, now=int(now))
    if request.query_params.get("placement") == deeplinking.PLACEMENT:  # "place a resource"
        link = new_verifier()
        platform.deep_links[link] = now + HINT_LIFETIME
        data = deeplinking.new_data(platform.hint_secret, course, link, now, HINT_LIFETIME)
        claims = deeplinking.request_claims(config, user, course, now=int(now), data=data)
    client_id, deployment_id = config.client_id, config.deployment_id
    target_link_uri, login_url = config.target_link_uri, config.login_url
    tool = platform.dynamic.tools.get(request.query_params.get("client_id", ""))
    if request.query_params.get("client_id") and tool is None:
        return pages.message_page("Page not found", "No developer key has that client_id.", 404)
    if tool is not None:  # a tool registered by Dynamic Registration
        claims = dynreg.tool_claims(claims, tool)
        client_id, deployment_id = tool.client_id, tool.deployment_id
        target_link_uri, login_url = tool.target_link_uri, tool.login_url
    platform.pending[verifier] = _Pending(claims, now + HINT_LIFETIME)
    fields = [
        ("iss", config.issuer),
        ("login_hint", user.lti_user_id),
        ("target_link_uri", target_link_uri),
        ("lti_message_hint", _message_hint(platform, user, course, verifier, now, target)),
        ("client_id", client_id),
        ("lti_deployment_id", deployment_id),
        ("canvas_region", "not_configured"),
        ("canvas_environment", "prod"),
    ]
    if target is not None:
        fields.append(("lti_storage_target", target))
    return pages.course_page(config, course, user, lti=lti, action=login_url, fields=fields, storage=storage)


# -- LTI 1.3 authorization ----------------------------------------------------------------------


def _redirect_allowed(registered_uris: tuple[str, ...], redirect_uri: str) -> bool:
    """Canvas compares the URI without its query to the developer key's redirect URIs."""
    base = redirect_uri.split("?", 1)[0]
    return any(base == registered.split("?", 1)[0] for registered in registered_uris)


def _auth_error(params: dict[str, str], platform: Platform, user: User | None) -> tuple[str, str] | None:
    missing = [name for name in REQUIRED_AUTH_PARAMS if not params.get(name)]
    if missing:
        return "invalid_request_object", f"The following parameters are missing: {','.join(missing)}"
    if params["scope"] != "openid":
        return "invalid_request_object", "The 'scope' must be 'openid'"
    if params["response_type"] != "id_token":
        return "unsupported_response_type", "The 'response_type' must be 'id_token'"
    if params["response_mode"] != "form_post":
        return "invalid_request_object", "The 'response_mode' must be 'form_post'"
    if params["prompt"] != "none":
        return "invalid_request_object", "The 'prompt' must be 'none'"
    if user is None or params["login_hint"] != user.lti_user_id:
        return "login_required", "Must have an active user session"
    return None


async def authorize(request: Request) -> Response:
    """Checks in Canvas' order: a message hint this platform issued, a known client and one of
    its redirect URIs (else a 400, since answering to an unchecked URI would leak the token);
    then the OIDC parameters, the user, and the single-use launch, whose failures are posted
    back to the tool as ``error`` and ``error_description`` with the ``state``."""
    platform = _platform(request)
    config = platform.config
    params = dict(request.query_params)
    if request.method == "POST":
        # Parsed by hand, like the service's own bodies: no multipart parser needed.
        body = (await request.body()).decode("utf-8", "replace")
        params.update(parse_qsl(body, keep_blank_values=True, max_num_fields=100))
    try:
        hint = jwt.decode(params.get("lti_message_hint", ""), platform.hint_secret, algorithms=["HS256"])
    except jwt.PyJWTError:
        return _errors(400, "Invalid lti_message_hint")
    tool = platform.dynamic.tools.get(params.get("client_id", ""))
    if params.get("client_id") != config.client_id and tool is None:
        return _errors(400, "Invalid client_id")
    redirect_uri = params.get("redirect_uri", "")
    if not _redirect_allowed(tool.redirect_uris if tool else config.redirect_uris, redirect_uri):
        return _errors(400, "Invalid redirect_uri")
    state = [("state", params["state"])] if params.get("state") else []
    error = _auth_error(params, platform, config.user(str(hint.get("user_id"))))
    pending = None
    if error is None:
        pending = platform.pending.pop(str(hint.get("verifier")), None)
        if pending is None or pending.expires_at <= platform.clock():
            error = "launch_no_longer_valid", "The launch has either expired or already been consumed"
        elif pending.claims["aud"] != params["client_id"]:
            error = "invalid_request_object", "The client_id is not the launched tool's"
    if error is not None or pending is None:
        code, description = error or ("server_error", "")
        return pages.autopost(
            redirect_uri, [("error", code), ("error_description", description), *state], title="Commons"
        )
    claims = {**pending.claims, "nonce": params["nonce"]}
    # The LTI 1.1 migration claim, signed with the associated 1.1 tool's secret over the tool's
    # nonce, as Canvas does when an LTI 1.1 tool of the same domain is installed.
    claims[CLAIM_LTI1P1] = {
        **claims[CLAIM_LTI1P1],
        "oauth_consumer_key": config.consumer_key,
        "oauth_consumer_key_sign": dynreg.oauth_consumer_key_sign(
            config.consumer_key, config.shared_secret, claims, params["nonce"]
        ),
    }
    id_token = platform.key.sign(claims)
    fields = [("id_token", id_token), *state]
    if isinstance(hint.get("storage_target"), str):
        fields.append(("lti_storage_target", hint["storage_target"]))
    return pages.autopost(redirect_uri, fields, title="Commons")


#: What Canvas' SecurityController#jwks sends (CanvasSecurity::KeyStorage::MAX_CACHE_AGE, 10 days).
JWKS_CACHE_CONTROL = "max-age=864000"


async def deep_linking_response(request: Request) -> Response:
    """Where the tool's Deep Linking answer is posted (Canvas: the same path)."""
    platform = _platform(request)
    course = platform.config.course(request.path_params["course_id"])
    if course is None:
        return pages.message_page("Page not found", "This course does not exist.", 404)
    try:
        claims, kid = await deeplinking.verify_response(
            await request.body(),
            config=platform.config,
            course=course,
            hint_secret=platform.hint_secret,
            spend=platform.spend_deep_link,
        )
    except deeplinking.ResponseRefused as exc:
        return pages.message_page("Deep Linking response refused", str(exc), 400)
    return pages.deep_linking_result(course, claims, kid)


async def jwks(request: Request) -> Response:
    return JSONResponse(_platform(request).key.jwks(), headers={"Cache-Control": JWKS_CACHE_CONTROL})


# -- the rest -----------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return pages.index(_platform(request).config)


async def storage_frame(request: Request) -> Response:
    return pages.storage_frame()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return _errors(
            exc.status_code,
            "The specified resource does not exist." if exc.status_code == 404 else str(exc.detail),
        )
    return pages.message_page(str(exc.detail), "There is no such page on this stand-in.", exc.status_code)


routes = [
    Route("/", index, methods=["GET"]),
    Route("/courses/{course_id}", course_page, methods=["GET"]),
    Route("/api/lti/accounts/{account_id}/jwt_token", jwt_token, methods=["GET"]),
    Route("/api/lti/courses/{course_id}/jwt_token", jwt_token, methods=["GET"]),
    Route("/api/lti/authorize_redirect", authorize, methods=["GET", "POST"]),
    Route("/api/lti/security/jwks", jwks, methods=["GET"]),
    Route("/" + pages.STORAGE_FRAME, storage_frame, methods=["GET"]),
    Route("/courses/{course_id}/deep_linking_response", deep_linking_response, methods=["POST"]),
    *(Route(path, handler, methods=methods) for path, handler, methods in dynreg.routes),
]


def create_app(platform: Platform | None = None) -> Starlette:
    if platform is None:
        state = os.environ.get(STATE_ENV)
        if not state:
            raise RuntimeError(
                f"{STATE_ENV} is not set: start the stand-in with `commons-session dev-canvas`"
            )
        platform = Platform.from_state(state)
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.platform = platform
    return app
