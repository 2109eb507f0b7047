"""A typed client for the Session API, on httpx: :class:`Client` and :class:`AsyncClient`.

    from commons_session.client import Client

    with Client("https://commons.example.edu") as commons:
        session = commons.create(jwt_token)          # POST /api/sessions
        me = commons.read(session.id)                # GET /api/sessions/{id}
        commons.logout(session.id)                   # GET /api/sessions/logout

Both classes have the same methods (the async ones are coroutines). The session id always
travels in the ``x-session-id`` header; cookies the server sets are never sent back, so one
client can hold several sessions.

Every failure raises a :class:`CommonsError` carrying the problem's ``code``:

- CommonsError(code, status, detail)
  - BadRequestError        400, 413, 415: the request itself is unusable
  - AuthenticationError    401: e.g. ``invalid_session``, ``token_expired``, ``token_already_used``
  - ForbiddenError         403: e.g. ``never_launched``, ``terms_not_accepted``, ``user_disabled``
  - NotFoundError          404
  - ConflictError          409
  - RateLimitedError       429 (``retry_after`` seconds, when the server says)
  - UnavailableError       503, or the server cannot be reached (code ``unreachable``)
  - ServerError            any other 5xx, or an answer this client does not understand
  - CanvasError            Canvas refused to issue a JWT (:meth:`Client.canvas_jwt`)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "CanvasError",
    "Client",
    "CommonsError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
    "Session",
    "SessionSummary",
    "UnavailableError",
    "canvas_error_for",
    "error_for",
]

USER_AGENT = "commons-session-client/0.1"
DEFAULT_TIMEOUT = 10.0  # seconds, for each request

T = TypeVar("T")


# -- errors -------------------------------------------------------------------------------------


class CommonsError(Exception):
    """A failure, with the problem's stable ``code``, the HTTP ``status`` (``None`` when no
    answer came) and the human-readable ``detail``."""

    def __init__(self, code: str, status: int | None, detail: str, problem: Mapping[str, Any] | None = None):
        super().__init__(f"{detail} ({code})" if status is None else f"{status} {code}: {detail}")
        #: Stable machine-readable identifier (the problem's ``code``).
        self.code = code
        #: HTTP status, or None when no answer came.
        self.status = status
        #: Human-readable explanation, safe to show.
        self.detail = detail
        #: The whole problem document, when there was one.
        self.problem: Mapping[str, Any] = problem or {}


class BadRequestError(CommonsError):
    """400, 413 or 415: the request is malformed, too large, or of the wrong media type."""


class AuthenticationError(CommonsError):
    """401: the session or the JWT was refused."""


class ForbiddenError(CommonsError):
    """403: authenticated, but not allowed (e.g. the terms are not accepted)."""


class NotFoundError(CommonsError):
    """404: no such route or no such session handle."""


class ConflictError(CommonsError):
    """409: e.g. accepting a terms version that is not the current one."""


class RateLimitedError(CommonsError):
    """429: too many requests; wait ``retry_after`` seconds (None when not said)."""

    retry_after: float | None = None


class UnavailableError(CommonsError):
    """503, or the server could not be reached: retry later (``retry_after`` when said)."""

    retry_after: float | None = None


class ServerError(CommonsError):
    """Another 5xx, or an answer this client does not understand."""


class CanvasError(CommonsError):
    """Canvas refused to issue a JWT; ``detail`` is Canvas' own message."""


_BY_STATUS: dict[int, type[CommonsError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unexpected status"


def error_for(response: httpx.Response) -> CommonsError:
    """The typed error for a failed answer from the Session API."""
    body = _json(response)
    problem = body if isinstance(body, dict) else {}
    code = problem.get("code") if isinstance(problem.get("code"), str) else f"http_{response.status_code}"
    detail = (
        problem.get("detail") if isinstance(problem.get("detail"), str) else _phrase(response.status_code)
    )
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else CommonsError)
    error = cls(str(code), status, str(detail), problem)
    if isinstance(error, RateLimitedError | UnavailableError):
        error.retry_after = _retry_after(response)
    return error


def _unreachable(url: str, exc: httpx.TransportError) -> UnavailableError:
    reason = str(exc) or type(exc).__name__
    return UnavailableError("unreachable", None, f"cannot reach the server at {url}: {reason}")


def _unexpected(response: httpx.Response, what: str) -> ServerError:
    return ServerError("unexpected_response", response.status_code, f"the answer carries no {what}")


def canvas_error_for(response: httpx.Response) -> CanvasError:
    """Canvas answers ``{"errors": [{"message": ...}]}`` (or an HTML page at a wrong URL)."""
    body = _json(response)
    messages: list[str] = []
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):
            messages = [
                e["message"] for e in errors if isinstance(e, dict) and isinstance(e.get("message"), str)
            ]
        elif isinstance(errors, dict):
            messages = [f"{k}: {v}" for k, v in errors.items()]
        if not messages and isinstance(body.get("message"), str):
            messages = [body["message"]]
    detail = "; ".join(messages) or _phrase(response.status_code)
    code = {401: "canvas_unauthorized", 403: "canvas_forbidden", 404: "canvas_not_found"}.get(
        response.status_code, "canvas_error"
    )
    return CanvasError(code, response.status_code, detail, body if isinstance(body, dict) else None)


# -- results ------------------------------------------------------------------------------------


def _opt(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


@dataclass(frozen=True)
class Session:
    """A session's contents as the server reports them; ``data`` keeps every key as sent."""

    id: str
    expires: str
    user_id: str
    user_full_name: str | None
    account_name: str | None
    account_id: str | None
    canvas_user_id: str | None
    canvas_api_domain: str | None
    locale: str | None
    roles: tuple[str, ...]
    is_admin: bool
    avatar_url: str | None
    data: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], session_id: str) -> Session:
        roles = data.get("roles")
        return cls(
            id=session_id,
            expires=str(data.get("expires", "")),
            user_id=str(data.get("userId", "")),
            user_full_name=_opt(data, "userFullName"),
            account_name=_opt(data, "accountName"),
            account_id=_opt(data, "accountId"),
            canvas_user_id=_opt(data, "canvasUserId"),
            canvas_api_domain=_opt(data, "canvasApiDomain"),
            locale=_opt(data, "locale"),
            roles=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
            is_admin=data.get("isAdmin") is True,
            avatar_url=_opt(data, "userAvatarUrl"),
            data=dict(data),
        )


@dataclass(frozen=True)
class SessionSummary:
    """One of the caller's live sessions, named by its handle (never by its id)."""

    handle: str
    created: str
    last_seen: str
    expires: str
    user_agent: str | None
    current: bool


# -- one call, sent by either client ----------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    url: str
    parse: Callable[[httpx.Response], T]
    session_id: str | None = None
    json: Any = None
    bearer: str | None = None
    params: Mapping[str, str] | None = None
    canvas: bool = False  #: a call to Canvas, whose errors have Canvas' shape

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if self.session_id is not None:
            headers["x-session-id"] = self.session_id
        if self.bearer is not None:
            headers["authorization"] = f"Bearer {self.bearer}"
        request = http.build_request(
            self.method, self.url, headers=headers, json=self.json, params=self.params
        )
        # The id travels in the header only: a cookie the server set for another session
        # would make the request name two sessions.
        request.headers.pop("cookie", None)
        return request

    def unreachable(self, exc: httpx.TransportError) -> CommonsError:
        if self.canvas:
            reason = str(exc) or type(exc).__name__
            return CanvasError("canvas_unreachable", None, f"cannot reach Canvas at {self.url}: {reason}")
        return _unreachable(self.url, exc)

    def result(self, response: httpx.Response) -> T:
        if response.is_success:
            return self.parse(response)
        raise canvas_error_for(response) if self.canvas else error_for(response)


def _session(session_id_key: str | None) -> Callable[[httpx.Response], Session]:
    def parse(response: httpx.Response) -> Session:
        data = _json(response)
        if not isinstance(data, dict):
            raise _unexpected(response, "JSON object")
        sid = data.get(session_id_key or "sid")
        if not isinstance(sid, str) or not sid:
            raise _unexpected(response, session_id_key or "sid")
        return Session.from_json(data, sid)

    return parse


def _nothing(response: httpx.Response) -> None:
    return None


def _summaries(response: httpx.Response) -> list[SessionSummary]:
    data = _json(response)
    items = data.get("sessions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise _unexpected(response, "sessions list")
    return [
        SessionSummary(
            handle=str(item.get("handle", "")),
            created=str(item.get("created", "")),
            last_seen=str(item.get("lastSeen", "")),
            expires=str(item.get("expires", "")),
            user_agent=_opt(item, "userAgent"),
            current=item.get("current") is True,
        )
        for item in items
        if isinstance(item, dict)
    ]


def _ended(response: httpx.Response) -> int:
    data = _json(response)
    ended = data.get("ended") if isinstance(data, dict) else None
    if not isinstance(ended, int):
        raise _unexpected(response, "ended count")
    return ended


def _token(response: httpx.Response) -> str:
    data = _json(response)
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise _unexpected(response, "token")
    return token


def _jwt(response: httpx.Response) -> str:
    data = _json(response)
    token = data.get("jwt_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise CanvasError(
            "canvas_unexpected_response", response.status_code, "the answer carries no jwt_token"
        )
    return token


class _Calls:
    """What each method sends; the two clients differ only in how they send it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def create(self, jwt_token: str) -> _Call[Session]:
        return _Call(
            "POST", f"{self.base_url}/api/sessions", _session("sessionId"), json={"jwt_token": jwt_token}
        )

    def read(self, session_id: str) -> _Call[Session]:
        url = f"{self.base_url}/api/sessions/{quote(session_id, safe='')}"
        return _Call("GET", url, _session("sid"), session_id=session_id)

    def logout(self, session_id: str) -> _Call[None]:
        return _Call("GET", f"{self.base_url}/api/sessions/logout", _nothing, session_id=session_id)

    def list_sessions(self, session_id: str) -> _Call[list[SessionSummary]]:
        return _Call("GET", f"{self.base_url}/api/sessions", _summaries, session_id=session_id)

    def end_session(self, session_id: str, handle: str) -> _Call[None]:
        url = f"{self.base_url}/api/sessions/handles/{quote(handle, safe='')}"
        return _Call("DELETE", url, _nothing, session_id=session_id)

    def logout_others(self, session_id: str) -> _Call[int]:
        url = f"{self.base_url}/api/sessions/logout-others"
        return _Call("POST", url, _ended, session_id=session_id, json={})

    def downstream_token(self, session_id: str, audience: str) -> _Call[str]:
        url = f"{self.base_url}/api/sessions/token"
        return _Call("POST", url, _token, session_id=session_id, json={"audience": audience})

    def canvas_jwt(
        self,
        canvas_url: str,
        canvas_token: str,
        *,
        course_id: str | None,
        tool_launch_url: str | None,
    ) -> _Call[str]:
        context = f"courses/{quote(course_id, safe='')}" if course_id else "accounts/self"
        return _Call(
            "GET",
            f"{canvas_url.rstrip('/')}/api/lti/{context}/jwt_token",
            _jwt,
            bearer=canvas_token,
            params={"tool_launch_url": tool_launch_url or f"{self.base_url}/api/lti"},
            canvas=True,
        )


# -- the clients --------------------------------------------------------------------------------


class Client:
    """Synchronous client. Pass ``http`` to reuse an ``httpx.Client`` (its base URL is not
    used; it is not closed by :meth:`close`)."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT, http: httpx.Client | None = None):
        self._calls = _Calls(base_url)
        self._own = http is None
        self._http = http or httpx.Client(timeout=timeout)

    @property
    def base_url(self) -> str:
        return self._calls.base_url

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise call.unreachable(exc) from exc
        return call.result(response)

    def create(self, jwt_token: str) -> Session:
        """Exchange a Canvas JWT for a session (``POST /api/sessions``)."""
        return self._send(self._calls.create(jwt_token))

    def read(self, session_id: str) -> Session:
        """The session's contents (``GET /api/sessions/{id}``)."""
        return self._send(self._calls.read(session_id))

    def logout(self, session_id: str) -> None:
        """End the session (``GET /api/sessions/logout``)."""
        self._send(self._calls.logout(session_id))

    def list_sessions(self, session_id: str) -> list[SessionSummary]:
        """The live sessions of the session's user (``GET /api/sessions``)."""
        return self._send(self._calls.list_sessions(session_id))

    def end_session(self, session_id: str, handle: str) -> None:
        """End one of the user's sessions by its handle."""
        self._send(self._calls.end_session(session_id, handle))

    def logout_others(self, session_id: str) -> int:
        """End the user's other sessions; returns how many ended."""
        return self._send(self._calls.logout_others(session_id))

    def downstream_token(self, session_id: str, audience: str) -> str:
        """A signed token of the session for the service ``audience`` (docs/client.md)."""
        return self._send(self._calls.downstream_token(session_id, audience))

    def canvas_jwt(
        self,
        canvas_url: str,
        canvas_token: str,
        *,
        course_id: str | None = None,
        tool_launch_url: str | None = None,
    ) -> str:
        """Ask Canvas for a JWT (``GET {canvas}/api/lti/accounts/self/jwt_token``, or the
        course's) with a Canvas API token. ``tool_launch_url`` defaults to this server's
        ``/api/lti``; it must be the launch URL configured in Canvas."""
        return self._send(
            self._calls.canvas_jwt(
                canvas_url, canvas_token, course_id=course_id, tool_launch_url=tool_launch_url
            )
        )

    def login_with_canvas(
        self,
        canvas_url: str,
        canvas_token: str,
        *,
        course_id: str | None = None,
        tool_launch_url: str | None = None,
    ) -> Session:
        """:meth:`canvas_jwt`, then :meth:`create`."""
        return self.create(
            self.canvas_jwt(canvas_url, canvas_token, course_id=course_id, tool_launch_url=tool_launch_url)
        )

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """Asynchronous client, the same methods as :class:`Client` as coroutines."""

    def __init__(
        self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT, http: httpx.AsyncClient | None = None
    ):
        self._calls = _Calls(base_url)
        self._own = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    @property
    def base_url(self) -> str:
        return self._calls.base_url

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise call.unreachable(exc) from exc
        return call.result(response)

    async def create(self, jwt_token: str) -> Session:
        return await self._send(self._calls.create(jwt_token))

    async def read(self, session_id: str) -> Session:
        return await self._send(self._calls.read(session_id))

    async def logout(self, session_id: str) -> None:
        await self._send(self._calls.logout(session_id))

    async def list_sessions(self, session_id: str) -> list[SessionSummary]:
        return await self._send(self._calls.list_sessions(session_id))

    async def end_session(self, session_id: str, handle: str) -> None:
        await self._send(self._calls.end_session(session_id, handle))

    async def logout_others(self, session_id: str) -> int:
        return await self._send(self._calls.logout_others(session_id))

    async def downstream_token(self, session_id: str, audience: str) -> str:
        """A signed token of the session for the service ``audience`` (docs/client.md)."""
        return await self._send(self._calls.downstream_token(session_id, audience))

    async def canvas_jwt(
        self,
        canvas_url: str,
        canvas_token: str,
        *,
        course_id: str | None = None,
        tool_launch_url: str | None = None,
    ) -> str:
        return await self._send(
            self._calls.canvas_jwt(
                canvas_url, canvas_token, course_id=course_id, tool_launch_url=tool_launch_url
            )
        )

    async def login_with_canvas(
        self,
        canvas_url: str,
        canvas_token: str,
        *,
        course_id: str | None = None,
        tool_launch_url: str | None = None,
    ) -> Session:
        token = await self.canvas_jwt(
            canvas_url, canvas_token, course_id=course_id, tool_launch_url=tool_launch_url
        )
        return await self.create(token)

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
