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
    415: "Unsupported content type.",
    503: "The store is unavailable; retry (`store_unavailable`).",
}

_SESSION_AUTH: list[dict[str, list[str]]] = [{"cookie": []}, {"header": []}, {"query": []}, {"state": []}]


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": _ERRORS[s], "content": _PROBLEM} for s in statuses}


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
    },
}

_SESSION_ID_PARAM = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Must equal the session id the request presents.",
}


@cache
def openapi_document() -> dict[str, Any]:
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
                            "headers": {
                                "Location": {"schema": {"type": "string"}},
                                "Set-Cookie": {"schema": {"type": "string"}},
                            },
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
                        "303": {
                            **_REDIRECT,
                            "description": "Launch recorded, fresh session cookie set; to /terms if the "
                            "current terms are not yet accepted, else to /.",
                        },
                        **_errors(400, 401, 413, 415, 503),
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
        },
        "components": {
            "securitySchemes": {
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
                "SessionIdBody": {
                    "type": "object",
                    "properties": {"sessionId": {"type": "string"}},
                },
            },
        },
    }
