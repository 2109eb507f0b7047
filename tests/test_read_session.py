"""GET /api/sessions/{id}: the contents, only for the session the caller presents."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, onboard

READ_CARRIERS = ["cookie", "header", "query", "state"]


def carried(carrier: str, session_id: str) -> dict[str, Any]:
    """httpx keyword arguments that present ``session_id`` through one carrier."""
    if carrier == "cookie":
        return {"headers": {"Cookie": f"session={session_id}"}}
    if carrier == "header":
        return {"headers": {"x-session-id": session_id}}
    if carrier == "query":
        return {"params": {"session-id": session_id}}
    if carrier == "state":
        return {"params": {"state": session_id}}
    raise AssertionError(carrier)


def read(server: Server, path_id: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/api/sessions/{path_id}", **kwargs)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def unknown_id() -> str:
    """Well formed, never issued."""
    return secrets.token_urlsafe(32)


def test_reading_your_own_session_returns_its_contents(
    server: Server, session_id: str, user: CanvasUser, canvas: FakeCanvas
) -> None:
    response = read(server, session_id, headers={"x-session-id": session_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sid"] == session_id
    assert body["userFullName"] == user.name
    assert body["canvasApiDomain"] == canvas.api_domain
    assert "sessionId" not in body
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("carrier", READ_CARRIERS)
def test_reading_works_through_each_carrier(server: Server, session_id: str, carrier: str) -> None:
    response = read(server, session_id, **carried(carrier, session_id))
    assert response.status_code == 200, response.text
    assert response.json()["sid"] == session_id


def test_no_session_presented_is_401_session_required(server: Server, session_id: str) -> None:
    assert_problem(read(server, session_id), 401, "session_required")


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(unknown_id(), id="unknown"),
        pytest.param("abc", id="short"),
        pytest.param("A" * 44, id="too long"),
        pytest.param("!" * 43, id="bad characters"),
        pytest.param("A" * 42 + "B", id="impossible last character"),
    ],
)
def test_unknown_or_malformed_session_is_401_invalid_session(server: Server, presented: str) -> None:
    assert_problem(read(server, presented, headers={"x-session-id": presented}), 401, "invalid_session")


def test_ended_session_is_401_invalid_session(server: Server, session_id: str) -> None:
    logout = httpx.post(server.url + "/api/sessions/logout", headers={"x-session-id": session_id})
    assert logout.status_code == 204
    assert_problem(read(server, session_id, headers={"x-session-id": session_id}), 401, "invalid_session")


def test_another_live_sessions_id_is_403_and_reveals_nothing(server: Server, session_id: str) -> None:
    stranger = CanvasUser(name="Grace Hopper")
    other_canvas = server.add_institution()
    onboard(server, other_canvas, stranger)
    other = create_session(server, other_canvas, stranger)

    response = read(server, other, headers={"x-session-id": session_id})
    body = assert_problem(response, 403, "not_your_session")
    assert "Grace Hopper" not in response.text
    assert other not in response.text
    assert "sid" not in body
    # The other session is untouched and still its owner's.
    assert read(server, other, headers={"x-session-id": other}).json()["userFullName"] == "Grace Hopper"


def test_another_session_of_the_same_user_is_still_403(
    server: Server, session_id: str, canvas: FakeCanvas, user: CanvasUser
) -> None:
    second = create_session(server, canvas, user, iat=time.time() - 60)
    assert second != session_id
    assert_problem(read(server, second, headers={"x-session-id": session_id}), 403, "not_your_session")


@pytest.mark.parametrize(
    "path_id",
    [pytest.param(unknown_id(), id="unknown"), pytest.param("not-a-session-id", id="malformed")],
)
def test_an_id_that_does_not_exist_is_403_to_a_valid_session(
    server: Server, session_id: str, path_id: str
) -> None:
    """Whether or not ``{id}`` exists, the answer is the same: it is not yours."""
    assert_problem(read(server, path_id, headers={"x-session-id": session_id}), 403, "not_your_session")
