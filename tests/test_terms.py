"""Terms of service: reading them, accepting the current version, and a new version making
everyone accept again (issue 2, behaviour 3)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, accept_terms, launch, onboard, session_cookie, start_server


def _terms(server: Server, session_id: str) -> dict[str, Any]:
    response = httpx.get(server.url + "/api/terms", headers={"x-session-id": session_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _launched(server: Server, canvas: FakeCanvas, user: CanvasUser) -> str:
    response = launch(server, canvas, user)
    assert response.status_code == 303, response.text
    return session_cookie(response)


def _create(server: Server, canvas: FakeCanvas, user: CanvasUser) -> httpx.Response:
    # A fresh token each time (two minted in the same second would otherwise be one token).
    token = canvas.jwt_token(user, resource_link_id=secrets.token_hex(16))
    return httpx.post(server.url + "/api/sessions", json={"jwt_token": token})


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', html)
    assert found is not None, f"no hidden {name!r} in the page"
    return found.group(1)


@contextmanager
def _serving(tmp: Path, **settings: Any) -> Iterator[Server]:
    srv = start_server(tmp, **settings)
    try:
        yield srv
    finally:
        srv.stop()


# -- GET /api/terms -------------------------------------------------------------------------


def test_terms_status_reports_version_text_and_not_accepted_after_launch(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    status = _terms(server, session_id)
    assert set(status) == {"version", "text", "accepted"}
    assert isinstance(status["version"], str) and status["version"]
    assert isinstance(status["text"], str) and status["text"]
    assert status["accepted"] is False


def test_terms_status_without_a_session_is_401(server: Server) -> None:
    response = httpx.get(server.url + "/api/terms")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "session_required"


def test_terms_status_with_an_unknown_session_is_401(server: Server) -> None:
    response = httpx.get(server.url + "/api/terms", headers={"x-session-id": "A" * 43})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_session"


# -- POST /api/terms/accept -----------------------------------------------------------------


def test_accepting_the_current_version_is_204_and_marks_accepted(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    version = _terms(server, session_id)["version"]
    response = httpx.post(
        server.url + "/api/terms/accept", json={"version": version}, headers={"x-session-id": session_id}
    )
    assert response.status_code == 204
    assert response.content == b""
    assert _terms(server, session_id)["accepted"] is True
    # and the JWT exchange that needed it now works
    assert _create(server, canvas, user).status_code == 201


def test_accepting_twice_is_not_an_error(server: Server, canvas: FakeCanvas, user: CanvasUser) -> None:
    session_id = onboard(server, canvas, user)
    accept_terms(server, session_id)
    assert _terms(server, session_id)["accepted"] is True


def test_accepting_a_version_that_is_not_current_is_409_and_records_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    current = _terms(server, session_id)["version"]
    response = httpx.post(
        server.url + "/api/terms/accept",
        json={"version": current + "-old"},
        headers={"x-session-id": session_id},
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "terms_version_mismatch"
    assert _terms(server, session_id)["accepted"] is False
    refused = _create(server, canvas, user)
    assert refused.status_code == 403 and refused.json()["code"] == "terms_not_accepted"


def test_accepting_without_a_version_is_400_and_records_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    for body in ({}, {"version": ""}, {"version": 1}, {"version": None}):
        response = httpx.post(
            server.url + "/api/terms/accept", json=body, headers={"x-session-id": session_id}
        )
        assert response.status_code == 400, body
        assert response.json()["code"] == "bad_request"
    assert _terms(server, session_id)["accepted"] is False


def test_accepting_without_a_session_is_401(server: Server) -> None:
    response = httpx.post(server.url + "/api/terms/accept", json={"version": "2026-11-01"})
    assert response.status_code == 401
    assert response.json()["code"] == "session_required"


# -- configuration --------------------------------------------------------------------------


def test_terms_version_and_text_come_from_configuration(make_server: Any) -> None:
    text = "Rule 1: be kind.\nRule 2: <share> only what is yours & nothing else."
    srv: Server = make_server(terms_version="v2", terms_text=text)
    canvas, user = srv.add_institution(), CanvasUser()
    session_id = _launched(srv, canvas, user)

    assert _terms(srv, session_id) == {"version": "v2", "text": text, "accepted": False}

    refused = httpx.post(
        srv.url + "/api/terms/accept", json={"version": "2026-11-01"}, headers={"x-session-id": session_id}
    )
    assert refused.status_code == 409
    accepted = httpx.post(
        srv.url + "/api/terms/accept", json={"version": "v2"}, headers={"x-session-id": session_id}
    )
    assert accepted.status_code == 204
    assert _terms(srv, session_id)["accepted"] is True


def test_publishing_a_new_version_makes_everyone_accept_again(tmp_path: Path) -> None:
    user = CanvasUser()
    with _serving(tmp_path, terms_version="v1") as first:
        canvas = first.add_institution()
        session_id = onboard(first, canvas, user)
        assert _terms(first, session_id)["accepted"] is True
        assert _create(first, canvas, user).status_code == 201

    # Same database file, a new version published.
    with _serving(tmp_path, terms_version="v2") as second:
        assert second.db_path == first.db_path
        status = _terms(second, session_id)  # the session itself survives the restart
        assert (status["version"], status["accepted"]) == ("v2", False)

        refused = _create(second, canvas, user)
        assert refused.status_code == 403
        assert refused.json()["code"] == "terms_not_accepted"

        stale = httpx.post(
            second.url + "/api/terms/accept", json={"version": "v1"}, headers={"x-session-id": session_id}
        )
        assert stale.status_code == 409
        assert _create(second, canvas, user).status_code == 403

        accept_terms(second, session_id)
        assert _terms(second, session_id)["accepted"] is True
        assert _create(second, canvas, user).status_code == 201

        # a launch now lands on / rather than /terms
        relaunch = launch(second, canvas, user)
        assert relaunch.status_code == 303 and relaunch.headers["location"].split("?", 1)[0] == "/"


# -- cross-site forms -----------------------------------------------------------------------


def test_cookie_form_post_without_csrf_token_is_refused_and_records_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    version = _terms(server, session_id)["version"]
    for form in ({"version": version}, {"version": version, "csrf_token": "0" * 64}):
        response = httpx.post(
            server.url + "/api/terms/accept", data=form, headers={"cookie": f"session={session_id}"}
        )
        assert response.status_code == 403, form
        assert response.json()["code"] == "cross_origin_request"
    assert _terms(server, session_id)["accepted"] is False


def test_cookie_with_json_body_needs_no_csrf_token(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    version = _terms(server, session_id)["version"]
    response = httpx.post(
        server.url + "/api/terms/accept",
        json={"version": version},
        headers={"cookie": f"session={session_id}"},
    )
    assert response.status_code == 204
    assert _terms(server, session_id)["accepted"] is True


def test_form_post_carrying_the_id_in_a_header_needs_no_csrf_token(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    version = _terms(server, session_id)["version"]
    response = httpx.post(
        server.url + "/api/terms/accept", data={"version": version}, headers={"x-session-id": session_id}
    )
    assert response.status_code == 204
    assert _terms(server, session_id)["accepted"] is True


# -- the HTML page --------------------------------------------------------------------------


def test_terms_page_shows_escaped_text_and_accept_form_that_records_acceptance(make_server: Any) -> None:
    text = "Be kind. <script>alert('terms')</script> & share only what is yours."
    srv: Server = make_server(terms_version="v7", terms_text=text)
    canvas, user = srv.add_institution(), CanvasUser()
    session_id = _launched(srv, canvas, user)
    cookie = {"cookie": f"session={session_id}"}

    page = httpx.get(srv.url + "/terms", headers=cookie)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in page.headers
    html = page.text
    assert "Be kind. &lt;script&gt;alert(&#x27;terms&#x27;)&lt;/script&gt; &amp; share only" in html
    assert "<script>" not in html
    assert '<form method="post" action="/terms">' in html and "<button" in html
    assert _hidden(html, "version") == "v7"
    csrf_token = _hidden(html, "csrf_token")

    response = httpx.post(
        srv.url + "/terms", data={"version": "v7", "csrf_token": csrf_token}, headers=cookie
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert _terms(srv, session_id)["accepted"] is True

    after = httpx.get(srv.url + "/terms", headers=cookie)
    assert "You have accepted these terms." in after.text
    assert '<form method="post" action="/terms">' not in after.text


def test_terms_page_form_post_without_csrf_token_is_refused(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _launched(server, canvas, user)
    version = _terms(server, session_id)["version"]
    response = httpx.post(
        server.url + "/terms", data={"version": version}, headers={"cookie": f"session={session_id}"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "cross_origin_request"
    assert _terms(server, session_id)["accepted"] is False


def test_terms_page_csrf_token_belongs_to_one_session(server: Server, canvas: FakeCanvas) -> None:
    mine = _launched(server, canvas, CanvasUser())
    theirs = _launched(server, canvas, CanvasUser())
    their_token = _hidden(
        httpx.get(server.url + "/terms", headers={"cookie": f"session={theirs}"}).text, "csrf_token"
    )
    version = _terms(server, mine)["version"]
    response = httpx.post(
        server.url + "/terms",
        data={"version": version, "csrf_token": their_token},
        headers={"cookie": f"session={mine}"},
    )
    assert response.status_code == 403
    assert _terms(server, mine)["accepted"] is False


def test_terms_page_without_a_session_shows_the_terms_but_no_accept_form(server: Server) -> None:
    page = httpx.get(server.url + "/terms")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Terms of service" in page.text
    assert 'name="csrf_token"' not in page.text
