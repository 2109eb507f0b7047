"""GET and POST /api/sessions/logout: the session ends on the server, everywhere, at once."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session

LOGOUT = "/api/sessions/logout"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def cleared_cookie(response: httpx.Response) -> dict[str, str]:
    """The ``session`` Set-Cookie's attributes (names lower-cased), asserting its value is empty."""
    for header in response.headers.get_list("set-cookie"):
        first, *attrs = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        if name == "session":
            assert value in ("", '""'), header
            found = {}
            for attr in attrs:
                key, _, val = attr.partition("=")
                found[key.lower()] = val
            return found
    raise AssertionError(f"no session cookie in {response.headers}")


def assert_cookie_cleared(response: httpx.Response) -> None:
    attrs = cleared_cookie(response)
    assert attrs["max-age"] == "0"
    assert attrs["path"] == "/"


def current_terms(server: Server, session_id: str) -> str:
    response = httpx.get(server.url + "/api/terms", headers={"x-session-id": session_id})
    assert response.status_code == 200, response.text
    return str(response.json()["version"])


def logout_via(server: Server, carrier: str, session_id: str) -> httpx.Response:
    url = server.url + LOGOUT
    if carrier == "cookie":
        return httpx.get(url, headers={"Cookie": f"session={session_id}"})
    if carrier == "header":
        return httpx.get(url, headers={"x-session-id": session_id})
    if carrier == "query":
        return httpx.get(url, params={"session-id": session_id})
    if carrier == "state":
        return httpx.get(url, params={"state": session_id})
    if carrier == "json body":
        return httpx.post(url, json={"sessionId": session_id})
    if carrier == "form body":
        return httpx.post(url, data={"sessionId": session_id})
    raise AssertionError(carrier)


def alive(server: Server, session_id: str) -> bool:
    response = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_is_204_ends_the_session_and_clears_the_cookie(
    server: Server, session_id: str, method: str
) -> None:
    response = httpx.request(method, server.url + LOGOUT, headers={"x-session-id": session_id})
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_cookie_cleared(response)
    assert not alive(server, session_id)


@pytest.mark.parametrize("carrier", ["cookie", "header", "query", "state", "json body", "form body"])
def test_logout_works_through_each_carrier(server: Server, session_id: str, carrier: str) -> None:
    assert alive(server, session_id)
    response = logout_via(server, carrier, session_id)
    assert response.status_code == 204, response.text
    assert_cookie_cleared(response)
    assert not alive(server, session_id)


def test_after_logout_the_id_is_401_through_every_carrier(server: Server, session_id: str) -> None:
    version = current_terms(server, session_id)
    assert httpx.get(server.url + LOGOUT, headers={"x-session-id": session_id}).status_code == 204

    url = server.url
    attempts = {
        "cookie": httpx.get(f"{url}/api/sessions/{session_id}", headers={"Cookie": f"session={session_id}"}),
        "header": httpx.get(f"{url}/api/sessions/{session_id}", headers={"x-session-id": session_id}),
        "query": httpx.get(f"{url}/api/sessions/{session_id}", params={"session-id": session_id}),
        "state": httpx.get(f"{url}/api/sessions/{session_id}", params={"state": session_id}),
        "terms query": httpx.get(f"{url}/api/terms", params={"session-id": session_id}),
        "json body": httpx.post(
            f"{url}/api/terms/accept", json={"sessionId": session_id, "version": version}
        ),
        "form body": httpx.post(
            f"{url}/api/terms/accept", data={"sessionId": session_id, "version": version}
        ),
        "logout json body": httpx.post(f"{url}{LOGOUT}", json={"sessionId": session_id}),
        "logout form body": httpx.post(f"{url}{LOGOUT}", data={"sessionId": session_id}),
    }
    for carrier, response in attempts.items():
        assert response.status_code == 401, (carrier, response.text)
        assert response.json()["code"] == "invalid_session", carrier


def test_logging_out_twice_is_401_the_second_time(server: Server, session_id: str) -> None:
    assert httpx.post(server.url + LOGOUT, headers={"x-session-id": session_id}).status_code == 204
    second = httpx.post(server.url + LOGOUT, headers={"x-session-id": session_id})
    assert_problem(second, 401, "invalid_session")
    assert_cookie_cleared(second)  # a stale cookie is dropped anyway


@pytest.mark.parametrize(
    "presented",
    [pytest.param(secrets.token_urlsafe(32), id="unknown"), pytest.param("garbage", id="malformed")],
)
def test_logging_out_a_session_that_never_existed_is_401(server: Server, presented: str) -> None:
    response = httpx.get(server.url + LOGOUT, headers={"x-session-id": presented})
    assert_problem(response, 401, "invalid_session")


def test_logout_without_a_session_is_401_session_required(server: Server) -> None:
    assert_problem(httpx.post(server.url + LOGOUT), 401, "session_required")


def test_logout_ends_only_the_presented_session(
    server: Server, session_id: str, canvas: FakeCanvas, user: CanvasUser
) -> None:
    other = create_session(server, canvas, user, iat=time.time() - 60)
    assert httpx.get(server.url + LOGOUT, headers={"x-session-id": session_id}).status_code == 204
    assert not alive(server, session_id)
    assert alive(server, other)
