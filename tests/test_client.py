"""``commons_session.client``: the sync and async clients against a running server, and the typed
errors they raise."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import httpx
import pytest

from commons_session.client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    CanvasError,
    Client,
    CommonsError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnavailableError,
    error_for,
)

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, free_port, onboard
from .devcanvas_fixture import DevCanvas, onboard_via_course_page, register, start_dev_canvas


def fresh_jwt(canvas: FakeCanvas, user: CanvasUser) -> str:
    """A JWT no other call has used (Canvas gives identical tokens within one second)."""
    return canvas.jwt_token(user, resource_link_id=secrets.token_hex(20))


@pytest.fixture
def onboarded(server: Server, canvas: FakeCanvas, user: CanvasUser) -> CanvasUser:
    onboard(server, canvas, user)
    return user


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as commons:
        yield commons


# -- sync ----------------------------------------------------------------------------------------


def test_create_read_list_logout(client: Client, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    session = client.create(fresh_jwt(canvas, onboarded))
    assert session.user_full_name == onboarded.name
    assert session.canvas_user_id == onboarded.canvas_user_id
    assert session.roles == ("Instructor",)
    assert session.data["sessionId"] == session.id

    read = client.read(session.id)
    assert read.id == session.id
    assert read.user_id == session.user_id
    assert read.expires

    listed = client.list_sessions(session.id)
    current = [s for s in listed if s.current]
    assert (
        len(current) == 1
        and current[0].user_agent is not None
        and "commons-session-client" in current[0].user_agent
    )

    client.logout(session.id)
    with pytest.raises(AuthenticationError) as ended:
        client.read(session.id)
    assert (ended.value.code, ended.value.status) == ("invalid_session", 401)


def test_end_by_handle_and_logout_others(client: Client, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    first = client.create(fresh_jwt(canvas, onboarded))
    second = client.create(fresh_jwt(canvas, onboarded))
    third = client.create(fresh_jwt(canvas, onboarded))
    handle = next(s.handle for s in client.list_sessions(second.id) if s.current)
    client.end_session(first.id, handle)
    with pytest.raises(AuthenticationError):
        client.read(second.id)
    assert client.logout_others(first.id) >= 1
    with pytest.raises(AuthenticationError):
        client.read(third.id)
    assert client.read(first.id).id == first.id


def test_unknown_handle_is_not_found(client: Client, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    session = client.create(fresh_jwt(canvas, onboarded))
    with pytest.raises(NotFoundError) as missing:
        client.end_session(session.id, "no-such-handle")
    assert (missing.value.code, missing.value.status) == ("session_not_found", 404)


@pytest.mark.parametrize(
    ("token", "code"),
    [("not.a.jwt", "malformed_token"), ("", "bad_request")],
    ids=["malformed", "empty"],
)
def test_refused_tokens_raise_errors_carrying_the_code(client: Client, token: str, code: str) -> None:
    with pytest.raises(CommonsError) as refused:
        client.create(token)
    assert refused.value.code == code
    assert refused.value.detail
    assert refused.value.problem["code"] == code


def test_never_launched_is_forbidden(client: Client, canvas: FakeCanvas, user: CanvasUser) -> None:
    with pytest.raises(ForbiddenError) as refused:
        client.create(fresh_jwt(canvas, user))
    assert (refused.value.code, refused.value.status) == ("never_launched", 403)


def test_replayed_token_is_an_authentication_error(
    client: Client, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    token = fresh_jwt(canvas, onboarded)
    client.create(token)
    with pytest.raises(AuthenticationError) as replayed:
        client.create(token)
    assert replayed.value.code == "token_already_used"


def test_a_cookie_in_a_shared_jar_never_rides_along(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    """The server would refuse a request naming two sessions (cookie and header)."""
    with httpx.Client(cookies={"session": "another-session-id"}) as http:
        commons = Client(server.url, http=http)
        session = commons.create(fresh_jwt(canvas, onboarded))
        assert commons.read(session.id).id == session.id
        commons.close()  # does not close a client it was given
        assert not http.is_closed


def test_unreachable_server_is_unavailable_without_a_status() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as commons,
        pytest.raises(UnavailableError) as down,
    ):
        commons.read("x" * 43)
    assert (down.value.code, down.value.status) == ("unreachable", None)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, BadRequestError),
        (429, RateLimitedError),
        (500, ServerError),
        (503, UnavailableError),
    ],
)
def test_each_status_maps_to_its_error_class(status: int, cls: type[CommonsError]) -> None:
    problem = {"type": "urn:x", "status": status, "code": f"code_{status}", "detail": "why"}
    response = httpx.Response(
        status, json=problem, headers={"content-type": "application/problem+json", "retry-after": "7"}
    )
    error = error_for(response)
    assert type(error) is cls
    assert (error.code, error.status, error.detail) == (f"code_{status}", status, "why")
    if isinstance(error, RateLimitedError | UnavailableError):
        assert error.retry_after == 7.0


def test_an_answer_that_is_not_a_problem_still_has_a_code() -> None:
    error = error_for(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert type(error) is ServerError
    assert (error.code, error.detail) == ("http_502", "Bad Gateway")


# -- async ---------------------------------------------------------------------------------------


def test_async_client_create_read_list_logout(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    async def journey() -> None:
        async with AsyncClient(server.url) as commons:
            session = await commons.create(fresh_jwt(canvas, onboarded))
            assert (await commons.read(session.id)).user_full_name == onboarded.name
            assert any(s.current for s in await commons.list_sessions(session.id))
            other = await commons.create(fresh_jwt(canvas, onboarded))
            assert await commons.logout_others(session.id) >= 1
            with pytest.raises(AuthenticationError):
                await commons.read(other.id)
            await commons.logout(session.id)
            with pytest.raises(AuthenticationError) as ended:
                await commons.read(session.id)
            assert ended.value.code == "invalid_session"

    asyncio.run(journey())


def test_async_client_raises_the_same_typed_errors(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    async def refused() -> None:
        async with AsyncClient(server.url) as commons:
            with pytest.raises(ForbiddenError) as never:
                await commons.create(fresh_jwt(canvas, user))
            assert never.value.code == "never_launched"
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=2) as down:
            with pytest.raises(UnavailableError) as unreachable:
                await down.logout("x" * 43)
            assert unreachable.value.code == "unreachable"

    asyncio.run(refused())


# -- through Canvas (the stand-in) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_canvas(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCanvas]:
    canvas = start_dev_canvas(tmp_path_factory.mktemp("dev-canvas"), server.url)
    register(server, canvas)
    yield canvas
    canvas.stop()


def test_login_with_canvas_asks_canvas_then_creates(
    server: Server, dev_canvas: DevCanvas, client: Client
) -> None:
    user = dev_canvas.fresh_user()
    onboard_via_course_page(server, dev_canvas, user)
    session = client.login_with_canvas(dev_canvas.url, user.token)
    assert session.user_full_name == user.name
    assert session.canvas_api_domain == dev_canvas.config.api_domain

    async def in_a_course() -> str | None:
        async with AsyncClient(server.url) as commons:
            # A course-context token differs from the account one issued in the same second.
            return (await commons.login_with_canvas(dev_canvas.url, user.token, course_id="1")).canvas_user_id

    assert asyncio.run(in_a_course()) == user.id


@pytest.mark.parametrize(
    ("token", "launch_url", "code", "status"),
    [
        ("wrong-token", None, "canvas_unauthorized", 401),
        (None, "http://127.0.0.1:1/api/lti", "canvas_not_found", 404),
    ],
    ids=["bad-api-token", "unknown-launch-url"],
)
def test_canvas_refusals_are_canvas_errors_with_canvas_message(
    dev_canvas: DevCanvas, client: Client, token: str | None, launch_url: str | None, code: str, status: int
) -> None:
    with pytest.raises(CanvasError) as refused:
        client.canvas_jwt(dev_canvas.url, token or dev_canvas.teacher().token, tool_launch_url=launch_url)
    assert (refused.value.code, refused.value.status) == (code, status)
    assert refused.value.detail in {"Invalid access token.", "The specified resource does not exist."}


def test_unreachable_canvas_is_a_canvas_error(client: Client) -> None:
    with pytest.raises(CanvasError) as down:
        client.canvas_jwt(f"http://127.0.0.1:{free_port()}", "token")
    assert (down.value.code, down.value.status) == ("canvas_unreachable", None)
