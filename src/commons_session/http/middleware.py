"""Cross-cutting HTTP concerns, one small ASGI class each (no BaseHTTPMiddleware: it costs a
task per request)."""

from __future__ import annotations

import json
import logging
import re
import time
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLogMiddleware", "SecurityHeadersMiddleware", "redact_path", "redact_query"]

access_log = logging.getLogger("commons_session.access")

# Query parameters that can carry a secret: session ids and tokens.
SECRET_QUERY_PARAMS = frozenset({"session-id", "state", "sessionId", "jwt_token", "code"})
REDACTED = "[redacted]"


# Anything shaped like a session id (43 base64url characters) or a compact JWS, wherever it
# appears: a client that sends an id under a wrong name or in a mistyped path must not get it
# logged either.
_SECRET_SHAPED = re.compile(
    r"(?<![A-Za-z0-9_-])(?:[A-Za-z0-9_-]{43}|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)(?![A-Za-z0-9_-])"
)


def redact_path(path: str) -> str:
    """``/api/sessions/{id}`` carries an id in the path; nothing else should."""
    prefix = "/api/sessions/"
    if path.startswith(prefix):
        rest = path[len(prefix) :]
        if rest not in ("logout", "logout-others", "") and not rest.startswith("handles/"):
            return prefix + REDACTED
    return _SECRET_SHAPED.sub(REDACTED, path)


def redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [
            (
                _SECRET_SHAPED.sub(REDACTED, k),
                REDACTED if k in SECRET_QUERY_PARAMS else _SECRET_SHAPED.sub(REDACTED, v),
            )
            for k, v in pairs
        ],
        safe="[]",
    )


class SecurityHeadersMiddleware:
    """Every answer may carry an id (in a body or a Set-Cookie), so none may be cached or leak
    its URL through a Referer."""

    HEADERS = (
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


class AccessLogMiddleware:
    """One JSON line per request, with session ids and tokens redacted from path and query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app dies before answering, the server answers 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            client = scope.get("client")
            access_log.info(
                json.dumps(
                    {
                        "event": "access",
                        "method": scope["method"],
                        "path": redact_path(scope["path"]),
                        "query": redact_query(query) if query else "",
                        "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                        "client": client[0] if client else None,
                    }
                )
            )
