"""Where a request may carry its session id, in the order the reference page lists them:
cookie ``session``, header ``x-session-id``, query ``session-id``, the first query ``state``
value, body property ``sessionId``. The first one found wins; two different ids are an error,
never a silent choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

from ..errors import ConflictingSessionIds

__all__ = ["COOKIE_NAME", "Carried", "extract_session_id", "held_session_ids", "query_params"]

COOKIE_NAME = "session"


@dataclass(frozen=True, slots=True)
class Carried:
    session_id: str
    #: "cookie", "header", "query", "state" or "body": the first carrier that held it.
    carrier: str


def _cookie_values(headers: Headers) -> list[str]:
    """Every ``session`` cookie, including duplicates that a dict-based parser would hide."""
    values: list[str] = []
    for name, value in headers.raw:
        if name == b"cookie":
            _add_cookie_values(values, value.decode("latin-1"))
    return values


def held_session_ids(headers: Headers) -> list[str]:
    """Every session id the browser's ``session`` cookies carry (a browser may send two, from
    other paths or domains): a new session replaces all of them, not only the first."""
    return [v for v in dict.fromkeys(_cookie_values(headers)) if v]


def _add_cookie_values(values: list[str], header: str) -> None:
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip() == COOKIE_NAME:
            values.append(value.strip().strip('"'))


_NO_QUERY = QueryParams()


def query_params(request: Request) -> QueryParams:
    """The request's query parameters, without parsing an empty query string (most requests)."""
    return request.query_params if request.scope.get("query_string") else _NO_QUERY


def extract_session_id(
    headers: Headers, query: QueryParams, body: Mapping[str, Any] | None = None
) -> Carried | None:
    """The one session id the request carries, or None. ``ConflictingSessionIds`` if carriers
    disagree. Empty values count as absent (a cleared cookie is ``session=``)."""
    # One pass over the raw headers (the read path's hottest loop), the query only if present.
    cookies: list[str] = []
    header_ids: list[str] = []
    for name, value in headers.raw:
        if name == b"cookie":
            _add_cookie_values(cookies, value.decode("latin-1"))
        elif name == b"x-session-id":
            header_ids.append(value.decode("latin-1"))
    candidates = [("cookie", cookies), ("header", header_ids)]
    if query:
        candidates += [("query", query.getlist("session-id")), ("state", query.getlist("state")[:1])]
    body_value = body.get("sessionId") if body is not None else None
    if isinstance(body_value, str):
        candidates.append(("body", [body_value]))
    found = [(carrier, v.strip()) for carrier, values in candidates for v in values if v and v.strip()]
    if not found:
        return None
    carrier, session_id = found[0]
    if any(other != session_id for _, other in found[1:]):
        raise ConflictingSessionIds()
    return Carried(session_id, carrier)
