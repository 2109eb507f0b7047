"""LTI Dynamic Registration as Canvas does it (``Lti::IMS::DynamicRegistrationController`` and
``Lti::IMS::Registration``; Canvas' doc/api/registration.md).

- ``GET /accounts/:id/developer_keys``: the admin page; "+ LTI Registration" takes the tool's
  registration URL and opens it in an iframe with ``openid_configuration`` and
  ``registration_token``, then waits for ``{subject: "org.imsglobal.lti.close"}``.
- ``GET /api/lti/accounts/:id/registration_token``: what that page asks Canvas for (an admin's
  API token): ``{uuid, oidc_configuration_url, token}``. The token is a JWT with exactly
  ``uuid, initiated_at, user_id, root_account_global_id, exp``, valid for an hour.
- ``GET /api/lti/security/openid-configuration``: Canvas' configuration (token required).
- ``POST /api/lti/registrations``: the tool's registration, bearer token; validated like
  ``Lti::IMS::Registration``; the answer is the registration with ``client_id`` (a new developer
  key) and, here, the deployment Canvas makes when the key is installed. Each token creates one
  registration (its ``uuid`` is the registration's guid): a second POST with it is refused.

Launches for a registered tool: ``/courses/:id?lti=1.3&client_id=<its client id>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

if TYPE_CHECKING:
    from .app import Platform

__all__ = ["DynamicRegistrations", "DynamicTool", "oauth_consumer_key_sign", "routes", "tool_claims"]

TOKEN_LIFETIME = 3600  # Canvas: REGISTRATION_TOKEN_EXPIRATION = 1.hour
TOKEN_KEYS = frozenset({"uuid", "initiated_at", "user_id", "root_account_global_id", "exp"})
TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"
PLATFORM_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-platform-configuration"
CANVAS = "https://canvas.instructure.com/lti/"
CLOSE_SUBJECT = "org.imsglobal.lti.close"
MAX_BODY = 65_536

SCOPES = (
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
    "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
    "https://canvas.instructure.com/lti/public_jwk/scope/update",
    "https://canvas.instructure.com/lti/account_lookup/scope/show",
    "https://canvas.instructure.com/lti-ags/progress/scope/show",
)
RESOURCE_LINK_PLACEMENTS = (
    "account_navigation",
    "course_navigation",
    "global_navigation",
    "link_selection",
    "user_navigation",
    "wiki_page_menu",
)
DEEP_LINKING_PLACEMENTS = (
    "assignment_selection",
    "editor_button",
    "homework_submission",
    "link_selection",
    "migration_selection",
    "submission_type_selection",
)
VARIABLES = (
    "ResourceLink.id",
    "Context.id",
    "Person.name.full",
    "Person.email.primary",
    "User.id",
    "Canvas.api.domain",
    "Canvas.course.id",
    "Canvas.user.id",
    "Canvas.environment.test",
)
PRIVACY_LEVELS = ("public", "name_only", "email_only", "anonymous")
MESSAGE_TYPES = ("LtiResourceLinkRequest", "LtiDeepLinkingRequest")


@dataclass
class DynamicTool:
    """A developer key made by a registration, with its one deployment."""

    client_id: str
    deployment_id: str
    name: str
    login_url: str
    target_link_uri: str
    redirect_uris: tuple[str, ...]
    jwks_uri: str
    response: dict[str, Any]


@dataclass
class DynamicRegistrations:
    """In the one worker's memory, like the pending launches."""

    used: set[str] = field(default_factory=set)
    tools: dict[str, DynamicTool] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10000000000002))


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _error(status: int, message: str) -> JSONResponse:
    """``respond_with_error``: ``{"errorMessage": ...}``."""
    return JSONResponse({"errorMessage": message}, status_code=status)


def _token_key(platform: Platform) -> bytes:
    return ("registration:" + platform.hint_secret).encode()


def _configuration_url(platform: Platform, token: str) -> str:
    return f"{platform.config.canvas_url}/api/lti/security/openid-configuration?" + urlencode(
        {"registration_token": token}
    )


def mint_token(platform: Platform, user_id: str, now: float) -> tuple[str, str]:
    guid = str(uuid.uuid4())
    claims = {
        "uuid": guid,
        "initiated_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "user_id": user_id,
        "root_account_global_id": platform.config.account_id,
        "exp": int(now) + TOKEN_LIFETIME,
    }
    return guid, jwt.encode(claims, _token_key(platform), algorithm="HS256")


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _check_token(platform: Platform, token: str) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(token, _token_key(platform), algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    return claims if set(claims) == TOKEN_KEYS else None


def openid_configuration(platform: Platform) -> dict[str, Any]:
    c = platform.config
    return {
        "issuer": c.issuer,
        "authorization_endpoint": c.auth_url,
        "registration_endpoint": c.canvas_url + "/api/lti/registrations",
        "jwks_uri": c.jwks_url,
        "token_endpoint": c.canvas_url + "/login/oauth2/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", *SCOPES],
        "response_types_supported": ["id_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "picture", "email", "name", "given_name", "family_name", "locale"],
        "subject_types_supported": ["public"],
        "authorization_server": urlsplit(c.canvas_url).netloc,
        PLATFORM_CONFIGURATION: {
            "product_family_code": "canvas",
            "version": "vCloud",
            "messages_supported": [
                {"type": "LtiResourceLinkRequest", "placements": list(RESOURCE_LINK_PLACEMENTS)},
                {"type": "LtiDeepLinkingRequest", "placements": list(DEEP_LINKING_PLACEMENTS)},
            ],
            "variables": list(VARIABLES),
            CANVAS + "account_name": c.account_name,
            CANVAS + "account_lti_guid": c.guid,
        },
    }


# -- validation, as Lti::IMS::Registration does it ------------------------------------------------


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["The registration must be a JSON object."]
    errors = []
    for name in (
        "application_type",
        "grant_types",
        "response_types",
        "redirect_uris",
        "initiate_login_uri",
        "client_name",
        "jwks_uri",
        "token_endpoint_auth_method",
        TOOL_CONFIGURATION,
    ):
        if not body.get(name):
            errors.append(f"{name} can't be blank")
    if body.get("application_type") != "web":
        errors.append("application_type Must be 'web'")
    grants = body.get("grant_types")
    if not isinstance(grants, list) or {"client_credentials", "implicit"} - set(map(str, grants)):
        errors.append("grant_types Must include client_credentials, implicit")
    responses = body.get("response_types")
    if not isinstance(responses, list) or "id_token" not in responses:
        errors.append("response_types Must include id_token")
    if body.get("token_endpoint_auth_method") != "private_key_jwt":
        errors.append("token_endpoint_auth_method Must be 'private_key_jwt'")
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not all(_is_url(u) for u in uris):
        errors.append("redirect_uris Must only contain valid URIs")
    for name in ("initiate_login_uri", "jwks_uri", "logo_uri", "client_uri", "tos_uri", "policy_uri"):
        if body.get(name) and not _is_url(body[name]):
            errors.append(f"{name} is invalid")
    scope = body.get("scope", "")
    if not isinstance(scope, str):
        errors.append("scope must be a string")
    else:
        invalid = [s for s in scope.split() if s not in SCOPES]
        if invalid:
            errors.append(f"scopes Invalid scopes: {', '.join(invalid)}")
    config = body.get(TOOL_CONFIGURATION)
    if isinstance(config, dict):
        errors += _validate_tool_configuration(config)
    elif config:
        errors.append("lti_tool_configuration must be an object")
    return errors


def _validate_tool_configuration(config: dict[str, Any]) -> list[str]:
    """``Schemas::Lti::IMS::LtiToolConfiguration``: domain, target_link_uri, claims, messages."""
    errors = []
    for name in ("domain", "target_link_uri"):
        if not isinstance(config.get(name), str) or not config[name]:
            errors.append(f"lti_tool_configuration {name} is required")
    claims = config.get("claims")
    if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
        errors.append("lti_tool_configuration claims must be an array of strings")
    messages = config.get("messages")
    if not isinstance(messages, list):
        errors.append("lti_tool_configuration messages must be an array")
        messages = []
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("type") not in MESSAGE_TYPES:
            errors.append(
                f"lti_tool_configuration messages[{n}] type must be one of {', '.join(MESSAGE_TYPES)}"
            )
            continue
        if message.get("target_link_uri") is not None and not _is_url(message["target_link_uri"]):
            errors.append(f"lti_tool_configuration messages[{n}] target_link_uri is invalid")
        placements = message.get("placements", [])
        if not isinstance(placements, list) or not all(isinstance(p, str) for p in placements):
            errors.append(f"lti_tool_configuration messages[{n}] placements must be an array of strings")
    privacy = config.get(CANVAS + "privacy_level")
    if privacy is not None and privacy not in PRIVACY_LEVELS:
        errors.append("lti_tool_configuration privacy_level is invalid")
    return errors


# -- routes ---------------------------------------------------------------------------------------


async def registration_token(request: Request) -> Response:
    platform = _platform(request)
    user = platform.config.user_by_token(_bearer(request))
    if user is None:
        return JSONResponse({"errors": [{"message": "Invalid access token."}]}, status_code=401)
    if not user.admin or request.path_params["account_id"] not in {"self", platform.config.account_id}:
        return JSONResponse(
            {"errors": [{"message": "user not authorized to perform that action"}]}, status_code=401
        )
    guid, token = mint_token(platform, user.id, platform.clock())
    return JSONResponse(
        {"uuid": guid, "oidc_configuration_url": _configuration_url(platform, token), "token": token}
    )


async def openid_configuration_route(request: Request) -> Response:
    platform = _platform(request)
    token = _bearer(request) or request.query_params.get("registration_token", "")
    if _check_token(platform, token) is None:
        return _error(401, "Missing or invalid registration token")
    return JSONResponse(openid_configuration(platform))


async def create_registration(request: Request) -> Response:
    platform = _platform(request)
    claims = _check_token(platform, _bearer(request))
    if claims is None:
        return _error(401, "JWT did not include expected contents")
    if claims["uuid"] in platform.dynamic.used:
        return _error(401, "The registration token has already been used")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return _error(413, "The registration is too large")
    try:
        body = json.loads(raw)
    except ValueError:
        return _error(400, "The registration is not JSON")
    errors = validate(body)
    if errors:
        return JSONResponse({"errors": [{"message": e} for e in errors]}, status_code=422)
    platform.dynamic.used.add(claims["uuid"])
    client_id = str(next(platform.dynamic._ids))
    deployment_id = f"{len(platform.dynamic.tools) + 2}:{secrets.token_hex(20)}"
    config = body[TOOL_CONFIGURATION]
    config_url = f"{platform.config.canvas_url}/api/lti/registrations/{claims['uuid']}/view"
    response = {
        "client_id": client_id,
        "application_type": body["application_type"],
        "grant_types": body["grant_types"],
        "initiate_login_uri": body["initiate_login_uri"],
        "redirect_uris": body["redirect_uris"],
        "response_types": body["response_types"],
        "client_name": body["client_name"],
        "jwks_uri": body["jwks_uri"],
        "logo_uri": body.get("logo_uri"),
        "token_endpoint_auth_method": body["token_endpoint_auth_method"],
        "scope": body.get("scope", ""),
        TOOL_CONFIGURATION: {
            **config,
            "deployment_id": deployment_id,
            CANVAS + "registration_config_url": config_url,
        },
    }
    platform.dynamic.tools[client_id] = DynamicTool(
        client_id=client_id,
        deployment_id=deployment_id,
        name=body["client_name"],
        login_url=body["initiate_login_uri"],
        target_link_uri=config["target_link_uri"],
        redirect_uris=tuple(body["redirect_uris"]),
        jwks_uri=body["jwks_uri"],
        response=response,
    )
    return JSONResponse(response)


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


_CLOSE_LISTENER = """
(function () {
  var frame = document.getElementById("registration_frame");
  window.addEventListener("message", function (event) {
    if (!frame || event.source !== frame.contentWindow) return;
    if (!event.data || event.data.subject !== "SUBJECT") return;
    frame.remove();
    var done = document.getElementById("registration_done");
    done.hidden = false;
    done.setAttribute("data-closed-by", event.origin);
  });
})();
""".replace("SUBJECT", CLOSE_SUBJECT)


async def developer_keys(request: Request) -> Response:
    """Admin > Developer Keys. With ``registration_url``, the registration in an iframe."""
    platform = _platform(request)
    config = platform.config
    user = config.user(request.query_params.get("as", "")) or next((u for u in config.users if u.admin), None)
    if user is None or not user.admin or request.path_params["account_id"] not in {"self", config.account_id}:
        return HTMLResponse("<h1>Unauthorized</h1><p>Only an account admin manages developer keys.</p>", 401)
    keys = "".join(
        f"<li><code>{escape(t.client_id)}</code> {escape(t.name)}"
        f" (deployment <code>{escape(t.deployment_id)}</code>)"
        f' · <a href="/courses/1?lti=1.3&amp;client_id={escape(t.client_id)}">launch in course 1</a></li>'
        for t in platform.dynamic.tools.values()
    )
    url = request.query_params.get("registration_url", "")
    default_url = config.tool_url + "/api/lti/register"
    frame = ""
    if url:
        _, token = mint_token(platform, user.id, platform.clock())
        src = _with_query(
            url, {"openid_configuration": _configuration_url(platform, token), "registration_token": token}
        )
        frame = (
            f'<iframe id="registration_frame" title="Tool registration" src="{escape(src)}"'
            ' style="width:100%;height:28rem;border:1px solid #c7cdd1"></iframe>'
            '<p id="registration_done" hidden>The tool has finished registering (it sent '
            f"<code>{CLOSE_SUBJECT}</code>). Its developer key is listed above.</p>"
            f"<script>{_CLOSE_LISTENER}</script>"
        )
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Developer Keys</title></head><body>
<p><em>dev-canvas: a Canvas stand-in for development and tests. It is not Canvas.</em></p>
<h1>Developer Keys</h1>
<form method="get"><label>+ LTI Registration: the tool's registration URL
<input name="registration_url" size="60" value="{escape(url or default_url)}"></label>
<input type="hidden" name="as" value="{escape(user.id)}"><button type="submit">Install</button></form>
<h2>LTI keys made by registration</h2><ul id="keys">{keys or "<li>none yet</li>"}</ul>
{frame}</body></html>"""
    return HTMLResponse(body)


def tool_claims(claims: dict[str, Any], tool: DynamicTool) -> dict[str, Any]:
    """A launch's claims for a registered tool: its client id, deployment and launch URL."""
    claim = "https://purl.imsglobal.org/spec/lti/claim/"
    return {
        **claims,
        "aud": tool.client_id,
        "azp": tool.client_id,
        claim + "deployment_id": tool.deployment_id,
        claim + "target_link_uri": tool.target_link_uri,
    }


def oauth_consumer_key_sign(consumer_key: str, shared_secret: str, claims: dict[str, Any], nonce: str) -> str:
    """``Lti::Helpers::JwtMessageHelper.generate_oauth_consumer_key_sign``: base64 HMAC-SHA256,
    keyed with the 1.1 shared secret, of key, deployment id, iss, aud, exp and nonce joined
    with ``&``."""
    message = "&".join(
        [
            consumer_key,
            str(claims["https://purl.imsglobal.org/spec/lti/claim/deployment_id"]),
            str(claims["iss"]),
            str(claims["aud"]),
            str(claims["exp"]),
            nonce,
        ]
    )
    digest = hmac.new(shared_secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


routes = [
    ("/accounts/{account_id}/developer_keys", developer_keys, ["GET"]),
    ("/api/lti/accounts/{account_id}/registration_token", registration_token, ["GET"]),
    ("/api/lti/security/openid-configuration", openid_configuration_route, ["GET"]),
    ("/api/lti/registrations", create_registration, ["POST"]),
]
