"""Reading request bodies: bounded in size, strict about content types, parsed once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from ..errors import BadRequest

__all__ = ["FORM", "JSON", "Body", "read_body"]

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


class InvalidJson(BadRequest):
    code = "invalid_json"
    default_message = "The body is not valid JSON."


class IncompleteBody(BadRequest):
    code = "incomplete_body"
    default_message = "The body ended before it was complete (short of its Content-Length or badly chunked)."


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
        raise HTTPException(415, f"Send the body as {' or '.join(accept)}.")
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
