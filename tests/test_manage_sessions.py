"""People manage their own sessions: GET /api/sessions lists them by opaque handle (never an id),
DELETE /api/sessions/handles/{handle} ends one, POST /api/sessions/logout-others ends the rest."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from commons_session.domain.ids import hash_id

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, onboard, session_cookie

HANDLE = re.compile(r"[0-9a-f]{32}")
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        yield client


def as_header(session_id: str) -> dict[str, str]:
    return {"x-session-id": session_id}


def listed(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = http.get("/api/sessions", headers=as_header(session_id))
    assert response.status_code == 200, response.text
    sessions: list[dict[str, Any]] = response.json()["sessions"]
    return sessions


def handle_of(http: httpx.Client, session_id: str) -> str:
    """The handle the list marks as the caller's own."""
    (current,) = [s for s in listed(http, session_id) if s["current"]]
    return str(current["handle"])


def status(http: httpx.Client, session_id: str) -> int:
    return http.get(f"/api/sessions/{session_id}", headers=as_header(session_id)).status_code


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def session_set_cookie(response: httpx.Response) -> str | None:
    return next((h for h in response.headers.get_list("set-cookie") if h.startswith("session=")), None)


# -- listing --------------------------------------------------------------------------------


def test_the_list_shows_every_live_session_of_the_caller_by_handle_and_marks_the_current_one(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user, other = CanvasUser(), CanvasUser()
    launched = onboard(server, canvas, user)
    first, mine = create_session(server, canvas, user), create_session(server, canvas, user)
    browser = http.post(
        "/api/sessions",
        json={"jwt_token": canvas.jwt_token(user)},
        headers={"user-agent": "Firefox/999 test"},
    )
    assert browser.status_code == 201
    last = browser.json()["sessionId"]
    theirs = [onboard(server, canvas, other), create_session(server, canvas, other)]

    response = http.get("/api/sessions", headers=as_header(mine))
    assert response.status_code == 200
    sessions = response.json()["sessions"]

    assert len(sessions) == 4  # the launch's and three from JWTs; none of the other user's
    assert all(HANDLE.fullmatch(s["handle"]) for s in sessions)
    assert len({s["handle"] for s in sessions}) == 4
    assert [s["current"] for s in sessions] == [False, False, True, False]  # oldest first
    for s in sessions:
        assert {"handle", "created", "lastSeen", "expires", "userAgent", "current"} <= s.keys()
        assert ISO.fullmatch(s["created"]) and ISO.fullmatch(s["lastSeen"]) and ISO.fullmatch(s["expires"])
        assert s["created"] <= s["lastSeen"] < s["expires"]
    assert sessions[-1]["userAgent"] == "Firefox/999 test"
    # No session id, of the caller or anyone else, and no stored hash, appears anywhere.
    for session_id in [launched, first, mine, last, *theirs]:
        assert session_id not in response.text
        assert hash_id(session_id).hex()[:32] not in response.text

    their_list = listed(http, theirs[1])
    assert len(their_list) == 2
    assert not {s["handle"] for s in their_list} & {s["handle"] for s in sessions}


def test_a_session_that_ended_is_no_longer_listed(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user = CanvasUser()
    onboard(server, canvas, user)
    staying, leaving = create_session(server, canvas, user), create_session(server, canvas, user)
    leaving_handle = handle_of(http, leaving)
    assert leaving_handle in {s["handle"] for s in listed(http, staying)}

    assert http.get("/api/sessions/logout", headers=as_header(leaving)).status_code == 204

    assert leaving_handle not in {s["handle"] for s in listed(http, staying)}
    assert len(listed(http, staying)) == 2


def test_the_list_needs_a_live_session(http: httpx.Client) -> None:
    assert_problem(http.get("/api/sessions"), 401, "session_required")


# -- ending one by handle -------------------------------------------------------------------


def test_ending_another_of_ones_sessions_by_handle_ends_exactly_that_one(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user = CanvasUser()
    onboard(server, canvas, user)
    here, elsewhere, third = (create_session(server, canvas, user) for _ in range(3))

    response = http.delete(f"/api/sessions/handles/{handle_of(http, elsewhere)}", headers=as_header(here))

    assert response.status_code == 204
    assert session_set_cookie(response) is None  # the caller's own cookie is untouched
    assert status(http, elsewhere) == 401
    assert status(http, here) == 200 and status(http, third) == 200


def test_ending_the_current_session_by_handle_ends_it_and_clears_the_cookie(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user = CanvasUser()
    onboard(server, canvas, user)
    current, other = create_session(server, canvas, user), create_session(server, canvas, user)

    response = http.delete(
        f"/api/sessions/handles/{handle_of(http, current)}", headers={"cookie": f"session={current}"}
    )

    assert response.status_code == 204
    cookie = session_set_cookie(response)
    assert cookie is not None and cookie.startswith(('session=""', "session=;")), cookie
    assert "max-age=0" in cookie.lower()
    assert status(http, current) == 401
    assert status(http, other) == 200


def test_a_handle_that_is_not_one_of_yours_is_session_not_found_and_ends_nothing(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user, stranger = CanvasUser(), CanvasUser()
    onboard(server, canvas, user)
    onboard(server, canvas, stranger)
    mine, theirs = create_session(server, canvas, user), create_session(server, canvas, stranger)
    other_institution = server.add_institution()
    onboard(server, other_institution, stranger)
    abroad = create_session(server, other_institution, stranger)

    for handle in (
        secrets.token_hex(16),  # unknown
        handle_of(http, theirs),  # another user's, same institution
        handle_of(http, abroad),  # another user's, another institution
        hash_id(mine).hex()[:32],  # the stored hash is not a handle
        mine,  # nor is an id
    ):
        response = http.delete(f"/api/sessions/handles/{handle}", headers=as_header(mine))
        assert_problem(response, 404, "session_not_found")
        assert session_set_cookie(response) is None

    assert [status(http, s) for s in (mine, theirs, abroad)] == [200, 200, 200]


def test_ending_by_handle_needs_a_live_session(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user = CanvasUser()
    onboard(server, canvas, user)
    session_id = create_session(server, canvas, user)
    handle = handle_of(http, session_id)
    assert_problem(http.delete(f"/api/sessions/handles/{handle}"), 401, "session_required")
    assert status(http, session_id) == 200


# -- logout-others --------------------------------------------------------------------------


def test_logout_others_ends_every_other_session_of_the_user_and_says_how_many(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user, bystander = CanvasUser(), CanvasUser()
    launched = onboard(server, canvas, user)
    first, keep, last = (create_session(server, canvas, user) for _ in range(3))
    onboard(server, canvas, bystander)
    unrelated = create_session(server, canvas, bystander)

    response = http.post("/api/sessions/logout-others", json={}, headers=as_header(keep))

    assert response.status_code == 200
    assert response.json() == {"ended": 3}
    assert session_set_cookie(response) is None
    assert [status(http, s) for s in (launched, first, last)] == [401, 401, 401]
    assert status(http, keep) == 200 and status(http, unrelated) == 200
    assert [s["current"] for s in listed(http, keep)] == [True]

    again = http.post("/api/sessions/logout-others", json={}, headers=as_header(keep))
    assert again.status_code == 200 and again.json() == {"ended": 0}


def test_logout_others_as_a_cookie_form_post_needs_the_csrf_token_from_our_page(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user = CanvasUser()
    onboard(server, canvas, user)
    current, other = create_session(server, canvas, user), create_session(server, canvas, user)
    cookie = {"cookie": f"session={current}"}

    for form in ({}, {"note": "hi"}, {"csrf_token": "0" * 64}):
        response = http.post("/api/sessions/logout-others", data=form, headers=cookie)
        assert_problem(response, 403, "cross_origin_request")
    assert status(http, other) == 200  # the refused posts ended nothing

    page = http.get("/", headers=cookie)
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert match is not None, page.text
    response = http.post("/api/sessions/logout-others", data={"csrf_token": match[1]}, headers=cookie)
    assert response.status_code == 200 and response.json() == {"ended": 2}  # the launch's and `other`
    assert status(http, other) == 401 and status(http, current) == 200


def test_a_launch_in_the_same_browser_replaces_its_session_in_the_list(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    """A launch revokes the session the browser held, so the list never keeps a stale one."""
    user = CanvasUser()
    held = onboard(server, canvas, user)
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    relaunch = http.post("/api/lti", content=body, headers={**headers, "cookie": f"session={held}"})
    assert relaunch.status_code == 303
    fresh = session_cookie(relaunch)
    assert status(http, held) == 401
    assert [s["current"] for s in listed(http, fresh)] == [True]
