"""The OpenAPI 3.1 description served at ``/openapi.json``. Written by hand, checked by
``tests/test_openapi.py`` against the routes and against every response the tests see."""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__

__all__ = ["openapi_document"]

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

_ERRORS = {
    400: "Bad request: malformed body, missing field, or conflicting session ids "
    "(`conflicting_session_ids`).",
    401: "No valid session, token or launch signature (see `code`).",
    403: "Authenticated but not allowed (`never_launched`, `terms_not_accepted`, "
    "`not_your_session`, `cross_origin_request`).",
    404: "No session of yours has that handle (`session_not_found`).",
    409: "Not the current terms version (`terms_version_mismatch`).",
    413: "Body or token too large.",
    429: "Too many failed attempts from your address, or too many sessions and launches for the "
    "institution (`rate_limited`); retry after `Retry-After` seconds.",
    415: "Unsupported content type.",
    503: "The store is unavailable; retry (`store_unavailable`).",
}

_SESSION_AUTH: list[dict[str, list[str]]] = [{"cookie": []}, {"header": []}, {"query": []}, {"state": []}]


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}

# Every path the rate limiter may answer but these (http/ratelimit.py exempts exactly them).
_NOT_RATE_LIMITED = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": _ERRORS[s],
            "content": _PROBLEM,
            **({"headers": _RETRY_AFTER} if s == 429 else {}),
        }
        for s in statuses
    }


def _launch_errors(*statuses: int) -> dict[str, Any]:
    """A browser in a launch (it asks for text/html) gets an error page, a program the problem."""
    page = {"text/html": {"schema": {"type": "string"}}}
    return {code: {**answer, "content": {**_PROBLEM, **page}} for code, answer in _errors(*statuses).items()}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _body(schema: str, *media: str) -> dict[str, Any]:
    ref = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    return {"required": True, "content": {m: ref for m in media}}


_REDIRECT = {
    "description": "See other.",
    "headers": {"Location": {"schema": {"type": "string"}}},
}
_JSON_OR_FORM = ("application/json", "application/x-www-form-urlencoded")
_STRING = {"schema": {"type": "string"}}
_LANDING: dict[str, Any] = {
    "description": "Launch recorded, fresh session cookie set; to `/terms?code=...` if the current terms "
    "are not yet accepted, else to `/?code=...`. The one-time `code` is for a page whose cookie "
    "was blocked (see /api/sessions/exchange).",
    "headers": {"Location": {"schema": {"type": "string"}}},
}

_SESSION_CONTENTS: dict[str, Any] = {
    "type": "object",
    "required": ["sid", "expires", "userId", "roles", "isAdmin"],
    "properties": {
        "sid": {"type": "string", "description": "The session id you presented."},
        "expires": {
            "type": "string",
            "format": "date-time",
            "description": "When the session ends if unused (idle or absolute, earlier).",
        },
        "userId": {"type": "string"},
        "prefersHighContrast": {"type": "boolean"},
        "locale": {"type": "string"},
        "userFullName": {"type": ["string", "null"]},
        "accountName": {"type": ["string", "null"]},
        "accountId": {"type": ["string", "null"]},
        "canvasUserId": {"type": ["string", "null"]},
        "canvasApiDomain": {"type": ["string", "null"]},
        "roles": {"type": "array", "items": {"type": "string"}},
        "isAdmin": {"type": "boolean"},
        "canSharePublic": {"type": "boolean"},
        "canShowPublic": {"type": "boolean"},
        "showCuratedResourcesFirst": {"type": "boolean"},
        "showFederalStandards": {"type": "boolean"},
        "showStateStandards": {"type": "boolean"},
        "stateStandard": {"type": ["string", "null"]},
        "isAccountCurator": {"type": "boolean"},
        "userAvatarUrl": {"type": ["string", "null"]},
        "deepLinking": {"$ref": "#/components/schemas/DeepLinkingContext"},
    },
}

_SESSION_ID_PARAM = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Must equal the session id the request presents.",
}


_OPERATOR: list[dict[str, list[str]]] = [{"operator": []}]
_KEY_BODY = {"consumer_key": {"type": "string"}}


def _admin_operation(
    op_id: str,
    summary: str,
    answer: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    query: list[str] | None = None,
) -> dict[str, Any]:
    """An operator API operation: bearer operator token; off (403) unless the token is set."""
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "security": _OPERATOR,
        "responses": {**answer, **_errors(400, 401, 403, 404, 409, 503)},
    }
    if body is not None:
        schema = {"type": "object", "properties": body}
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        operation["responses"].update(_errors(413, 415))
    if query:
        operation["parameters"] = [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in query
        ]
    return operation


def _console(op_id: str, summary: str, answers: dict[str, Any], form: bool = True) -> dict[str, Any]:
    errors = {
        "400": _html("Refused, with the reason"),
        "401": _html("Sign in (again)"),
        "403": _html("Off, cross-site, or an expired form"),
        "404": _html("Not found"),
    }
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": {**answers, **errors}}
    if form:
        content = {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}
        operation["requestBody"] = {"required": True, "content": content}
        operation["responses"].update(_errors(413, 415, 503))
    return operation


def _admin_paths() -> dict[str, Any]:
    """``/api/admin/*`` and the console under ``/admin`` (http/admin.py)."""
    ok = {"200": {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}}}
    listed = {
        "200": {"description": "The list", "content": {"application/json": {"schema": {"type": "array"}}}}
    }
    done = {"204": {"description": "Done"}}
    back = {"303": {"description": "Back to /admin", "headers": {"Location": _STRING}}}
    user = {"user_id": {"type": "string"}}
    institution = {**_KEY_BODY, "name": {"type": "string"}, "secret": {"type": "string"}}
    return {
        "/api/admin/institutions": {
            "get": _admin_operation(
                "adminListInstitutions", "Institutions with their LTI 1.3 platforms", listed
            ),
            "post": _admin_operation(
                "adminAddInstitution", "Register a Canvas", {"201": ok["200"]}, body=institution
            ),
        },
        "/api/admin/institutions/rotate-secret": {
            "post": _admin_operation(
                "adminRotateSecret",
                "A new secret; the previous one still verifies",
                done,
                body={**_KEY_BODY, "secret": {"type": "string"}},
            )
        },
        "/api/admin/institutions/finish-rotation": {
            "post": _admin_operation(
                "adminFinishRotation", "Stop accepting the previous secret", done, body=_KEY_BODY
            )
        },
        "/api/admin/institutions/remove": {
            "post": _admin_operation(
                "adminRemoveInstitution", "Remove a Canvas, ending its sessions", ok, body=_KEY_BODY
            )
        },
        "/api/admin/institutions/disable": {
            "post": _admin_operation(
                "adminDisableInstitution",
                "Refuse a Canvas' launches and sessions, ending them",
                ok,
                body=_KEY_BODY,
            )
        },
        "/api/admin/institutions/enable": {
            "post": _admin_operation("adminEnableInstitution", "Undo disable", ok, body=_KEY_BODY)
        },
        "/api/admin/users/disable": {
            "post": _admin_operation(
                "adminDisableUser", "Disable a user, ending their sessions", ok, body=user
            )
        },
        "/api/admin/users/enable": {
            "post": _admin_operation("adminEnableUser", "Enable a user", ok, body=user)
        },
        "/api/admin/sessions": {
            "get": _admin_operation(
                "adminListSessions",
                "Live sessions of a user or an institution, by handle",
                ok,
                query=["user_id", "consumer_key"],
            )
        },
        "/api/admin/sessions/revoke": {
            "post": _admin_operation(
                "adminRevokeSessions",
                "End every session of a user or an institution",
                ok,
                body={**user, **_KEY_BODY},
            )
        },
        "/api/admin/lti13/pending": {
            "get": _admin_operation("adminPendingPlatforms", "LTI 1.3 platforms waiting to be bound", listed)
        },
        "/api/admin/lti13/bind": {
            "post": _admin_operation(
                "adminBindPlatform",
                "Bind a self-registered platform to an institution",
                ok,
                body={
                    "issuer": {"type": "string"},
                    "client_id": {"type": "string"},
                    **_KEY_BODY,
                    "deployment_id": {"type": "string"},
                },
            )
        },
        "/api/admin/audit": {
            "get": _admin_operation("adminAudit", "The newest audit events", listed, query=["limit"])
        },
        "/admin": {
            "get": _console(
                "console", "The operator console, or its sign-in", {"200": _html("A page")}, False
            )
        },
        "/admin/login": {"post": _console("consoleLogin", "Sign in with the operator token", back)},
        "/admin/logout": {"post": _console("consoleLogout", "Sign out of the console", back, False)},
        "/admin/action": {
            "post": _console(
                "consoleAction", "A console form", {**back, "200": _html("The console with a result")}
            )
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The document, with the 429 answer added to every operation the rate limiter covers."""
    document = _document()
    for path, item in document["paths"].items():
        if path not in _NOT_RATE_LIMITED:
            for method, operation in item.items():
                if method in ("get", "put", "post", "delete", "patch"):
                    operation["responses"].update(_errors(429))
    return document


def _document() -> dict[str, Any]:
    created = {
        "allOf": [
            {"$ref": "#/components/schemas/SessionContents"},
            {
                "type": "object",
                "required": ["sessionId"],
                "properties": {"sessionId": {"type": "string", "description": "The new session id."}},
            },
        ]
    }
    logout_op: dict[str, Any] = {
        "summary": "Destroy the current session (log out)",
        "security": _SESSION_AUTH,
        "responses": {
            "204": {"description": "The session has ended; the cookie is cleared."},
            **_errors(400, 401, 503),
        },
    }
    post_logout = {
        **logout_op,
        "operationId": "logoutPost",
        "requestBody": {
            "required": False,
            "content": {m: {"schema": {"$ref": "#/components/schemas/SessionIdBody"}} for m in _JSON_OR_FORM},
        },
        "responses": {**logout_op["responses"], **_errors(413, 415)},
    }
    lti13_login: dict[str, Any] = {
        "summary": "LTI 1.3 OIDC login initiation (third-party initiated login)",
        "description": (
            "`iss` must be a registered issuer, `client_id` (if sent) registered for it, and "
            "`target_link_uri` this tool's `/api/lti/launch`. Answers 302 to the platform's "
            "authorization endpoint with a fresh state and nonce, and sets the `lti1p3_state` "
            "cookie that binds them to this browser. With `lti_storage_target` (LTI Platform "
            "Storage), answers a page that also stores the binding with the platform first."
        ),
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in (
                "iss",
                "login_hint",
                "target_link_uri",
                "client_id",
                "lti_message_hint",
                "lti_deployment_id",
                "lti_storage_target",
            )
        ],
        "responses": {
            "302": {
                "description": "To the platform's OIDC authorization endpoint.",
                "headers": {"Location": _STRING, "Set-Cookie": _STRING},
            },
            "200": _html("Platform Storage: stores the browser binding, then goes on to the platform."),
            **_launch_errors(400, 503),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Commons Session API",
            "version": __version__,
            "description": (
                "Turns a Canvas-issued JWT into a Commons session. The session id can be "
                "presented as cookie `session`, header `x-session-id`, query `session-id`, the "
                "first query `state` value, or body property `sessionId` (JSON or form), looked "
                "for in that order; two different ids in one request get 400 "
                "`conflicting_session_ids`. Errors are RFC 9457 problem details with a stable "
                "`code`."
            ),
        },
        "paths": {
            "/api/sessions": {
                "post": {
                    "operationId": "createSession",
                    "summary": "Create a session from a Canvas JWT",
                    "description": (
                        "The JWT comes from `GET https://<canvas>/api/lti/accounts/self/jwt_token"
                        "?tool_launch_url=<this service>/api/lti`. You must have launched Commons "
                        "from Canvas and accepted the current terms first. Each JWT creates one "
                        "session."
                    ),
                    "requestBody": _body("CreateSessionRequest", *_JSON_OR_FORM),
                    "responses": {
                        "201": {
                            **_json("CreatedSession", "Session created successfully."),
                            "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403, 413, 415, 503),
                    },
                },
                "get": {
                    "operationId": "listSessions",
                    "summary": "List your active sessions",
                    "description": "Each session is named by an opaque handle, never by its id.",
                    "security": _SESSION_AUTH,
                    "responses": {
                        "200": _json("SessionList", "Your live sessions, the current one marked."),
                        **_errors(400, 401, 503),
                    },
                },
            },
            "/api/sessions/logout": {
                "get": {**logout_op, "operationId": "logout"},
                "post": post_logout,
            },
            "/api/sessions/logout-others": {
                "post": {
                    "operationId": "logoutOthers",
                    "summary": "End all your sessions except the current one",
                    "security": _SESSION_AUTH,
                    "requestBody": {
                        "required": False,
                        "content": {
                            m: {"schema": {"$ref": "#/components/schemas/SessionIdBody"}}
                            for m in _JSON_OR_FORM
                        },
                    },
                    "responses": {
                        "200": _json("Ended", "How many sessions ended."),
                        **_errors(400, 401, 403, 413, 415, 503),
                    },
                }
            },
            "/api/sessions/handles/{handle}": {
                "delete": {
                    "operationId": "endSession",
                    "summary": "End one of your sessions by its handle",
                    "security": _SESSION_AUTH,
                    "parameters": [
                        {"name": "handle", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "204": {"description": "The session has ended."},
                        **_errors(400, 401, 404, 503),
                    },
                }
            },
            "/api/sessions/{session_id}": {
                "get": {
                    "operationId": "getSession",
                    "summary": "Get contents of your session",
                    "parameters": [_SESSION_ID_PARAM],
                    "security": _SESSION_AUTH,
                    "responses": {
                        "200": _json("SessionContents", "Session information returned successfully."),
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/api/terms": {
                "get": {
                    "operationId": "getTerms",
                    "summary": "The current terms of service and whether you accepted them",
                    "security": _SESSION_AUTH,
                    "responses": {
                        "200": _json("TermsStatus", "The current terms."),
                        **_errors(400, 401, 503),
                    },
                }
            },
            "/api/terms/accept": {
                "post": {
                    "operationId": "acceptTerms",
                    "summary": "Accept the current terms of service",
                    "security": _SESSION_AUTH,
                    "requestBody": _body("AcceptTermsRequest", *_JSON_OR_FORM),
                    "responses": {
                        "204": {"description": "Acceptance recorded."},
                        **_errors(400, 401, 403, 409, 413, 415, 503),
                    },
                }
            },
            "/api/lti": {
                "post": {
                    "operationId": "ltiLaunch",
                    "summary": "LTI 1.1 basic launch from Canvas (OAuth 1.0a HMAC-SHA1)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "303": _LANDING,
                        **_launch_errors(400, 401, 413, 415, 503),
                    },
                }
            },
            "/api/lti/login": {
                "get": {**lti13_login, "operationId": "lti13Login"},
                "post": {
                    **lti13_login,
                    "operationId": "lti13LoginPost",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/Lti13Login"}
                            }
                        },
                    },
                    "responses": {**lti13_login["responses"], **_launch_errors(413, 415)},
                },
            },
            "/api/lti/launch": {
                "post": {
                    "operationId": "lti13Launch",
                    "summary": "LTI 1.3 launch: the platform's form post of id_token and state",
                    "description": (
                        "Checks the state (known, not expired, bound to this browser by the "
                        "`lti1p3_state` cookie), then the id_token (RS256 by `kid` from the "
                        "platform's JWKS; iss, aud/azp, exp/iat, nonce, deployment id, message type, "
                        "version, sub, and for a resource link target_link_uri, roles and "
                        "resource_link.id) and records the launch exactly as an LTI 1.1 launch does. "
                        "Every failed check is a 401 whose `code` names it (docs/lti13.md)."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/Lti13Launch"}
                            }
                        },
                    },
                    "responses": {
                        "303": {**_LANDING, "headers": {**_LANDING["headers"], "Set-Cookie": _STRING}},
                        "200": _html(
                            "The state cookie did not come back but the platform offers Platform "
                            "Storage: a page whose script completes the launch at /api/lti/launch/confirm."
                        ),
                        "401": {
                            "description": "A check failed (see `code`). `state_cookie_missing` is answered "
                            "as an HTML page with a link that opens the launch in a new window when the "
                            "client accepts text/html, else as a problem with `relaunchUrl`.",
                            "content": {**_PROBLEM, "text/html": {"schema": {"type": "string"}}},
                        },
                        **_launch_errors(400, 403, 413, 415, 503),
                        "403": {
                            **_launch_errors(403)["403"],
                            "description": _ERRORS[403] + " `registration_pending`: the platform "
                            "registered itself and is not yet bound to a school.",
                        },
                    },
                }
            },
            "/api/lti/launch/confirm": {
                "post": {
                    "operationId": "lti13LaunchConfirm",
                    "summary": "Complete an LTI 1.3 launch with the binding from Platform Storage",
                    "description": (
                        "Called by the launch page's script (JSON only, so no other site can post it) "
                        "with the binding and nonce the platform kept for this browser. Same checks as "
                        "/api/lti/launch, and the stored nonce must be the login's (`nonce_mismatch`)."
                    ),
                    "requestBody": _body("Lti13Confirm", "application/json"),
                    "responses": {
                        "200": {
                            **_json("Lti13Confirmed", "Launch recorded; go to `location`."),
                            "headers": {"Set-Cookie": _STRING},
                        },
                        **_errors(400, 401, 403, 413, 415, 503),
                    },
                }
            },
            "/api/sessions/exchange": {
                "post": {
                    "operationId": "exchangeCode",
                    "summary": "Trade a launch's one-time code for its session id",
                    "description": (
                        "After a launch the browser lands on `/terms?code=...` or `/?code=...`. When the "
                        "session cookie was blocked, the page's script posts the code here, once, within "
                        "`exchange_code_ttl` seconds (60), and sends the id as `x-session-id` from then on."
                    ),
                    "requestBody": _body("ExchangeRequest", "application/json"),
                    "responses": {
                        "200": _json("ExchangedSession", "The session id, once."),
                        **_errors(400, 401, 413, 415, 503),
                    },
                }
            },
            "/api/sessions/token": {
                "post": {
                    "operationId": "downstreamToken",
                    "summary": "A short-lived signed token of the session, for a service behind us",
                    "description": (
                        "RS256, signed by the tool's key (its `kid` in `/api/lti/jwks`); `aud` one of "
                        "`COMMONS_SESSION_DOWNSTREAM_AUDIENCES`, `exp` at most 5 minutes and never past "
                        "the session's end, `sub` the user id, `sid` the session's handle (never its "
                        "id), and the session's documented keys as claims. A revoked session gets 401."
                    ),
                    "security": _SESSION_AUTH,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["audience"],
                                    "properties": {"audience": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The token",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["token", "tokenType", "expiresIn", "audience"],
                                        "properties": {
                                            "token": {"type": "string"},
                                            "tokenType": {"type": "string", "enum": ["Bearer"]},
                                            "expiresIn": {"type": "integer", "minimum": 1, "maximum": 300},
                                            "audience": {"type": "string"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 403, 413, 415, 503),
                    },
                }
            },
            "/api/lti/jwks": {
                "get": {
                    "operationId": "toolJwks",
                    "summary": "The tool's public signing keys (JWKS)",
                    "description": (
                        "RS256 keys that verify what the tool signs (LTI Deep Linking responses): the "
                        "key that signs now and, after `commons-session keys rotate`, the replaced "
                        "ones until their overlap ends. Public members only."
                    ),
                    "responses": {
                        "200": {
                            **_json("Jwks", "The key set."),
                            "headers": {"Cache-Control": _STRING},
                        },
                        **_errors(503),
                    },
                }
            },
            "/api/lti/deep-linking/response": {
                "post": {
                    "operationId": "deepLinkingResponse",
                    "summary": "Answer a Deep Linking launch with the chosen content items",
                    "description": (
                        "On a session started by an LtiDeepLinkingRequest launch (its contents carry "
                        "`deepLinking`): checks the items against the request's settings and signs an "
                        "LtiDeepLinkingResponse JWT with the tool's key. Answers the page whose form "
                        "posts it (`JWT`) to the platform's return URL, or, with `Accept: "
                        "application/json`, the URL and the JWT. Once per launch. A form post "
                        "authenticated by the cookie needs `csrf_token`; `contentItems` is then JSON text."
                    ),
                    "security": _SESSION_AUTH,
                    "requestBody": _body("DeepLinkingRequest", *_JSON_OR_FORM),
                    "responses": {
                        "200": {
                            "description": "The auto-submitting form, or the JSON answer.",
                            "content": {
                                "text/html": {"schema": {"type": "string"}},
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/DeepLinkingAnswer"}
                                },
                            },
                        },
                        **_errors(400, 401, 403, 413, 415, 503),
                    },
                }
            },
            "/static/{name}": {
                "get": {
                    "operationId": "staticScript",
                    "summary": "The scripts of the cookie-less pages (session.js, lti13.js, deeplinking.js)",
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "JavaScript.",
                            "content": {"text/javascript": {"schema": {"type": "string"}}},
                        },
                        "404": {"description": "No such script.", "content": _PROBLEM},
                    },
                }
            },
            "/": {
                "get": {
                    "operationId": "homePage",
                    "summary": "Who is signed in",
                    "responses": {"200": _html("The home page."), **_errors(400, 503)},
                }
            },
            "/terms": {
                "get": {
                    "operationId": "termsPage",
                    "summary": "The terms of service page",
                    "responses": {"200": _html("The terms page."), **_errors(400, 503)},
                },
                "post": {
                    "operationId": "acceptTermsForm",
                    "summary": "The terms page's accept button (form post)",
                    "requestBody": _body("AcceptTermsForm", "application/x-www-form-urlencoded"),
                    "responses": {"303": _REDIRECT, **_errors(400, 401, 403, 409, 413, 415, 503)},
                },
            },
            "/logout": {
                "post": {
                    "operationId": "logoutForm",
                    "summary": "The home page's log out button (form post)",
                    "requestBody": _body("CsrfForm", "application/x-www-form-urlencoded"),
                    "responses": {"303": _REDIRECT, **_errors(400, 401, 403, 413, 415, 503)},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is alive",
                    "responses": {"200": {"description": "Alive", "content": {"application/json": {}}}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Every configured store answers",
                    "responses": {
                        "200": {
                            "description": "Ready",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {
                                            "status": {"const": "ready"},
                                            # What an operator allowed but should know
                                            # (COMMONS_SESSION_REDIS_ALLOW_VOLATILE).
                                            "warnings": {"type": "array", "items": {"type": "string"}},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(503),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "The metrics of every worker",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401),
                    },
                }
            },
            **_admin_paths(),
            "/api/lti/register": {
                "get": {
                    "operationId": "lti13DynamicRegistration",
                    "summary": "LTI Dynamic Registration initiation URL (Canvas: + LTI Registration)",
                    "description": (
                        "Opened by the platform with `openid_configuration` and `registration_token`. "
                        "Fetches the platform's OpenID configuration (its issuer must be on that URL's "
                        "origin), posts our client registration to its registration_endpoint with the "
                        "token as bearer, and stores the platform pending until it is bound to a school "
                        "(CLI `institutions bind-lti13`, or a launch with a valid lti1p1 claim). A client "
                        "that accepts text/html gets a page (which posts `org.imsglobal.lti.close` to "
                        "the platform's window), else JSON or a problem. Nothing is stored on failure."
                    ),
                    "parameters": [
                        {
                            "name": "openid_configuration",
                            "in": "query",
                            "required": True,
                            "schema": _STRING["schema"],
                        },
                        {
                            "name": "registration_token",
                            "in": "query",
                            "required": True,
                            "schema": _STRING["schema"],
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Registered, pending until bound",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Lti13PendingRegistration"}
                                },
                                "text/html": {"schema": {"type": "string"}},
                            },
                        },
                        **{
                            str(status): {
                                "description": text,
                                "content": {**_PROBLEM, **_html("")["content"]},
                            }
                            for status, text in (
                                (400, "Missing or malformed parameters (`invalid_registration_request`)."),
                                (
                                    409,
                                    "The platform's issuer and client id are bound to another school "
                                    "(`duplicate_lti13_registration`).",
                                ),
                                (
                                    502,
                                    "The platform failed: `openid_configuration_unavailable`, "
                                    "`invalid_openid_configuration`, `issuer_mismatch`, "
                                    "`registration_refused`, `invalid_registration_response`.",
                                ),
                                (
                                    503,
                                    "The store is unavailable, or too many platforms wait to be bound "
                                    "(`too_many_pending_registrations`).",
                                ),
                            )
                        },
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "operator": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "COMMONS_SESSION_OPERATOR_TOKEN (the operator API; off unless it is set).",
                },
                "cookie": {"type": "apiKey", "in": "cookie", "name": "session"},
                "header": {"type": "apiKey", "in": "header", "name": "x-session-id"},
                "query": {"type": "apiKey", "in": "query", "name": "session-id"},
                "state": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "state",
                    "description": "The first `state` value.",
                },
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "code", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "code": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                },
                "SessionContents": _SESSION_CONTENTS,
                "CreatedSession": created,
                "CreateSessionRequest": {
                    "type": "object",
                    "required": ["jwt_token"],
                    "properties": {
                        "jwt_token": {
                            "type": "string",
                            "description": "Exactly as Canvas returned it.",
                        }
                    },
                },
                "TermsStatus": {
                    "type": "object",
                    "required": ["version", "text", "accepted"],
                    "properties": {
                        "version": {"type": "string"},
                        "text": {"type": "string"},
                        "accepted": {"type": "boolean"},
                    },
                },
                "AcceptTermsRequest": {
                    "type": "object",
                    "required": ["version"],
                    "properties": {
                        "version": {"type": "string"},
                        "sessionId": {"type": "string"},
                        "csrf_token": {
                            "type": "string",
                            "description": "Required for a form authenticated by the cookie.",
                        },
                    },
                },
                "AcceptTermsForm": {
                    "type": "object",
                    "required": ["version", "csrf_token"],
                    "properties": {"version": {"type": "string"}, "csrf_token": {"type": "string"}},
                },
                "CsrfForm": {
                    "type": "object",
                    "required": ["csrf_token"],
                    "properties": {"csrf_token": {"type": "string"}},
                },
                "SessionList": {
                    "type": "object",
                    "required": ["sessions"],
                    "properties": {
                        "sessions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["handle", "created", "lastSeen", "expires", "current"],
                                "properties": {
                                    "handle": {"type": "string"},
                                    "created": {"type": "string", "format": "date-time"},
                                    "lastSeen": {"type": "string", "format": "date-time"},
                                    "expires": {"type": "string", "format": "date-time"},
                                    "userAgent": {"type": ["string", "null"]},
                                    "current": {"type": "boolean"},
                                },
                            },
                        }
                    },
                },
                "Ended": {
                    "type": "object",
                    "required": ["ended"],
                    "properties": {"ended": {"type": "integer"}},
                },
                "Lti13Login": {
                    "type": "object",
                    "properties": {
                        name: {"type": "string"}
                        for name in (
                            "iss",
                            "login_hint",
                            "target_link_uri",
                            "client_id",
                            "lti_message_hint",
                            "lti_deployment_id",
                            "lti_storage_target",
                        )
                    },
                },
                "Lti13Launch": {
                    "type": "object",
                    "required": ["id_token", "state"],
                    "properties": {
                        "id_token": {"type": "string", "description": "RS256 JWT from the platform."},
                        "state": {"type": "string"},
                        "lti_storage_target": {"type": "string"},
                    },
                },
                "Lti13Confirm": {
                    "type": "object",
                    "required": ["id_token", "state", "binding", "nonce"],
                    "properties": {
                        "id_token": {"type": "string"},
                        "state": {"type": "string"},
                        "binding": {
                            "type": "string",
                            "description": "The value the platform kept for this browser (lti.get_data).",
                        },
                        "nonce": {
                            "type": "string",
                            "description": "The nonce the platform kept for this login (lti.get_data); "
                            "must be the login's, as the id_token's must.",
                        },
                    },
                },
                "Lti13Confirmed": {
                    "type": "object",
                    "required": ["location"],
                    "properties": {"location": {"type": "string"}},
                },
                "ExchangeRequest": {
                    "type": "object",
                    "required": ["code"],
                    "properties": {"code": {"type": "string"}},
                },
                "ExchangedSession": {
                    "type": "object",
                    "required": ["sessionId"],
                    "properties": {"sessionId": {"type": "string"}},
                },
                "Jwks": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {
                        "keys": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["kty", "n", "e", "kid", "alg", "use"],
                                "properties": {
                                    name: {"type": "string"}
                                    for name in ("kty", "n", "e", "kid", "alg", "use")
                                },
                                "additionalProperties": False,
                            },
                        }
                    },
                },
                "DeepLinkingRequest": {
                    "type": "object",
                    "required": ["contentItems"],
                    "properties": {
                        "contentItems": {
                            "type": ["array", "string"],
                            "description": (
                                "Content items (ltiResourceLink, link, html, image, file); a form sends "
                                "them as JSON text."
                            ),
                            "items": {
                                "type": "object",
                                "required": ["type"],
                                "properties": {"type": {"type": "string"}},
                            },
                        },
                        **{name: {"type": "string"} for name in ("msg", "log", "errormsg", "errorlog")},
                        "sessionId": {"type": "string"},
                        "csrf_token": {"type": "string"},
                    },
                },
                "DeepLinkingAnswer": {
                    "type": "object",
                    "required": ["returnUrl", "jwt"],
                    "properties": {"returnUrl": {"type": "string"}, "jwt": {"type": "string"}},
                },
                "DeepLinkingContext": {
                    "type": "object",
                    "description": "Only in sessions started by an LtiDeepLinkingRequest launch.",
                    "required": ["returnUrl", "acceptTypes", "acceptMultiple", "issuer", "clientId"],
                    "properties": {
                        "returnUrl": {"type": "string"},
                        "acceptTypes": {"type": "array", "items": {"type": "string"}},
                        "acceptPresentationDocumentTargets": {"type": "array", "items": {"type": "string"}},
                        "acceptMediaTypes": {"type": ["string", "null"]},
                        "acceptMultiple": {"type": "boolean"},
                        "acceptLineItem": {"type": "boolean"},
                        "autoCreate": {"type": "boolean"},
                        "title": {"type": ["string", "null"]},
                        "text": {"type": ["string", "null"]},
                        "data": {
                            "description": "The request's data, echoed in the response; absent if none."
                        },
                        "issuer": {"type": "string"},
                        "clientId": {"type": "string"},
                        "deploymentId": {"type": "string"},
                    },
                },
                "SessionIdBody": {
                    "type": "object",
                    "properties": {"sessionId": {"type": "string"}},
                },
                "Lti13PendingRegistration": {
                    "type": "object",
                    "required": ["issuer", "client_id", "deployment_ids", "jwks_url", "auth_url", "pending"],
                    "properties": {
                        "issuer": {"type": "string"},
                        "client_id": {"type": "string"},
                        "deployment_ids": {"type": "array", "items": {"type": "string"}},
                        "jwks_url": {"type": "string"},
                        "auth_url": {"type": "string"},
                        "token_url": {"type": "string"},
                        "registered_at": {"type": "number"},
                        "pending": {"type": "boolean"},
                    },
                },
            },
        },
    }
