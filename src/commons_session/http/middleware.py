"""Cross-cutting HTTP concerns, one small ASGI class each (no BaseHTTPMiddleware: it costs a
task per request)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..domain.service import REQUEST_STARTED
from ..logs import request_id, write_access_line
from ..metrics import PendingCounter, PendingHistogram, metrics

__all__ = [
    "CLIENT_ADDRESS",
    "SECURITY_HEADERS",
    "RequestMiddleware",
    "accept_request_id",
    "redact_path",
    "redact_query",
]

access_log = logging.getLogger("commons_session.access")

#: Scope key where the rate limiter leaves the client address it settled on (proxies resolved).
CLIENT_ADDRESS = "commons_session.client"

# Query parameters that can carry a secret: session ids and tokens.
SECRET_QUERY_PARAMS = frozenset(
    {"session-id", "state", "sessionId", "jwt_token", "code", "registration_token", "openid_configuration"}
)
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
        if rest not in ("logout", "logout-others", "exchange", "") and not rest.startswith("handles/"):
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


# A caller's X-Request-ID is kept if it is short, in a charset safe in headers and logs, and
# holds no run of base64url long enough to be a session id or a JWT part (those must never
# reach a log, whatever header brings them).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_LONG_RUN = re.compile(r"[A-Za-z0-9_-]{43}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def accept_request_id(offered: str | None) -> str:
    """The caller's ``X-Request-ID`` if it is acceptable, else a new random one. A request id
    correlates log lines and grants nothing, so it comes from ``random`` (reseeded in every
    forked worker) rather than the OS: ``os.urandom`` is a system call that hands the GIL to
    the server's threads on every request."""
    if offered and _REQUEST_ID.fullmatch(offered) and not _LONG_RUN.search(offered):
        return offered
    return f"{random.getrandbits(64):016x}"


def route_template(scope: Scope) -> str:
    """The matched route's path template; never the raw path, which may hold an id."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


#: On every answer: any may carry an id (in a body or a Set-Cookie), so none may be cached or
#: leak its URL through a Referer. A header the route set itself is kept.
SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
)


_Series = tuple[Callable[[float], None], Callable[[float], None]]


class RequestMiddleware:
    """The outermost of our layers, per request: when it began (``REQUEST_STARTED``, so a
    create's one store timeout covers the rate-limit charge made before the route runs), a
    request id (echoed as ``X-Request-ID`` and on every log line of the request), the security
    headers, the request metrics, and one JSON access line with ids and tokens redacted.

    One layer rather than one per concern: each layer is a call and a send wrapper on every
    request, and these four always run together."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (method, route, status) -> its counter's inc and its histogram's observe: looking the
        # labelled children up on every request cost more than using them.
        self._children: dict[tuple[str, str, int], _Series] = {}

    def _series(self, method: str, route: str, status: int) -> _Series:
        key = (method, route, status)
        found = self._children.get(key)
        if found is None:
            labels = (method, route, str(status))
            found = (
                PendingCounter(metrics().requests.labels(*labels)).inc,
                PendingHistogram(metrics().request_seconds.labels(*labels)).observe,
            )
            self._children[key] = found  # bounded: methods x route templates x statuses
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = accept_request_id(offered.decode("latin-1") if offered is not None else None)
        # Not reset afterwards: the 500 handler runs outside this middleware and logs with it.
        # Each request runs in a task of its own, so the value never leaks into another.
        request_id.set(rid)
        clock = asyncio.get_running_loop().time  # monotonic: one clock for both uses
        start = clock()
        REQUEST_STARTED.set(start)
        status = 500  # if the app dies before answering, the server answers 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = clock() - start
            method = scope["method"] if scope["method"] in _METHODS else "other"
            count, observe = self._series(method, route_template(scope), status)
            count(1)
            observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                query = scope.get("query_string", b"").decode("latin-1")
                client = scope.get("client")
                fields = {
                    "event": "access",
                    "method": scope["method"],
                    "path": redact_path(scope["path"]),
                    "query": redact_query(query) if query else "",
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "client": scope.get(CLIENT_ADDRESS) or (client[0] if client else None),
                }
                if not write_access_line(fields):
                    access_log.info("access", extra={"fields": fields})
