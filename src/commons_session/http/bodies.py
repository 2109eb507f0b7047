"""Reading request bodies: bounded in size, strict about content types, parsed once."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BadRequest
from ..metrics import metrics
from .problems import problem

__all__ = ["FORM", "JSON", "Body", "BodyDeadlineMiddleware", "read_body"]

security_log = logging.getLogger("commons_session.security")

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


class InvalidJson(BadRequest):
    code = "invalid_json"
    default_message = "The body is not valid JSON."


class IncompleteBody(BadRequest):
    code = "incomplete_body"
    default_message = "The body ended before it was complete (short of its Content-Length or badly chunked)."


class _BodyTimedOut(Exception):
    """Raised out of ``receive`` when the body is late: not a ClientDisconnect, so no handler
    turns it into a 400 on the way up to ``BodyDeadlineMiddleware``."""


class BodyDeadlineMiddleware:
    """A request's body must arrive whole within ``timeout`` seconds of its head, else 408 and
    the connection is closed. Granian bounds the time to read a head but not a body, so without
    this a client sending a byte a second holds a connection (and a worker's task) for as long
    as it likes (docs/security.md#slow-clients)."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _may_have_body(scope):
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        complete = started = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # the body is in: what follows is waiting for a disconnect, untimed
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimedOut from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except _BodyTimedOut:
            metrics().slow_bodies.inc()
            security_log.info("request body not received within %ss; closing", self.timeout)
            if started:  # cannot answer twice; granian closes a connection whose body is unread
                return
            response = problem(
                408,
                "body_timeout",
                f"The request body did not arrive within {self.timeout:g} seconds.",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)


def _may_have_body(scope: Scope) -> bool:
    """In HTTP/1.x a request has a body only if it says so (RFC 9112 §6.3): without a
    Content-Length or a Transfer-Encoding there is none to wait for, and nothing to time (most
    GETs: the session read skips this layer's wrappers). HTTP/2 signals a body by frames, not
    headers, so every HTTP/2 request is timed."""
    if scope.get("http_version") not in ("1.1", "1.0"):
        return True
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


@dataclass(frozen=True, slots=True)
class Body:
    raw: bytes
    media_type: str  # "" when the request sent no body
    #: The parsed object (JSON object or form fields, first value each); None if the body is
    #: empty or a JSON value that is not an object.
    fields: dict[str, Any] | None

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"The body is larger than {limit} bytes.")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"The body is larger than {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect as exc:  # a truncated body is bad input, not our failure
        raise IncompleteBody() from exc
    return b"".join(chunks)


async def read_body(request: Request, limit: int, accept: tuple[str, ...] = (JSON, FORM)) -> Body:
    """Read and parse the body. 413 past ``limit``; 415 for a non-empty body of another media
    type; ``invalid_json`` for JSON that does not parse."""
    raw = await _read_limited(request, limit)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not raw:
        return Body(raw, "", None)
    if media_type not in accept:
        if not media_type:  # the body may well be fine: it is the header that is missing
            raise HTTPException(415, f"No Content-Type was sent; send one of {', '.join(accept)}.")
        raise HTTPException(
            415, f"Content-Type {media_type} is not accepted here; send {' or '.join(accept)}."
        )
    if media_type == JSON:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidJson() from exc
        return Body(raw, media_type, value if isinstance(value, dict) else None)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("The form body could not be decoded.") from exc
    fields: dict[str, Any] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return Body(raw, media_type, fields)
