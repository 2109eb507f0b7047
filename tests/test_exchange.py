"""The hand-off for browsers that block the session cookie (Canvas' cross-site iframe): a launch
redirects with a one-time, short-lived ``code`` (never the id), the page's script trades it at
``POST /api/sessions/exchange`` for the session id, and the pages work with ``x-session-id``.
With cookies, the pages work as before, without any script."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, launch, session_cookie


def _code(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    return location.path, parse_qs(location.query)["code"][0]


def _exchange(server: Server, code: str) -> httpx.Response:
    return httpx.post(server.url + "/api/sessions/exchange", json={"code": code})


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_launch_redirects_with_a_one_time_code_that_trades_once_for_the_session_id(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    response = launch(server, canvas, user)
    path, code = _code(response)
    session_id = session_cookie(response)
    assert path == "/terms"
    assert code != session_id and session_id not in response.headers["location"]

    traded = _exchange(server, code)
    assert traded.status_code == 200, traded.text
    assert traded.json() == {"sessionId": session_id}
    assert set_cookie_names(traded) == set()

    _refused(_exchange(server, code), 401, "invalid_exchange_code")


def set_cookie_names(response: httpx.Response) -> set[str]:
    return {h.partition("=")[0] for h in response.headers.get_list("set-cookie")}


def test_the_traded_id_runs_the_pages_api_without_a_cookie(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    _, code = _code(launch(server, canvas, user))
    session_id = _exchange(server, code).json()["sessionId"]
    header = {"x-session-id": session_id}

    terms = httpx.get(server.url + "/api/terms", headers=header).json()
    assert terms["accepted"] is False
    accepted = httpx.post(
        server.url + "/api/terms/accept", json={"version": terms["version"]}, headers=header
    )
    assert accepted.status_code == 204
    contents = httpx.get(f"{server.url}/api/sessions/{session_id}", headers=header).json()
    assert contents["userFullName"] == user.name
    assert httpx.get(server.url + "/api/sessions/logout", headers=header).status_code == 204

    # After terms are accepted, the next launch lands home, with a code of its own.
    path, second = _code(launch(server, canvas, user))
    assert path == "/" and second != code


def test_wrong_malformed_or_missing_codes_are_refused(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    _, code = _code(launch(server, canvas, user))
    _refused(_exchange(server, secrets.token_urlsafe(32)), 401, "invalid_exchange_code")  # never issued
    _refused(_exchange(server, code[:-1] + ("A" if code[-1] != "A" else "E")), 401, "invalid_exchange_code")
    _refused(_exchange(server, "not-a-code"), 401, "invalid_exchange_code")
    _refused(httpx.post(server.url + "/api/sessions/exchange", json={}), 400, "bad_request")
    _refused(
        httpx.post(server.url + "/api/sessions/exchange", data={"code": code}), 415, "unsupported_media_type"
    )
    # None of that used the real code up.
    assert _exchange(server, code).status_code == 200


def test_a_code_whose_session_has_ended_is_refused(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    response = launch(server, canvas, user)
    _, code = _code(response)
    ended = httpx.get(server.url + "/api/sessions/logout", headers={"x-session-id": session_cookie(response)})
    assert ended.status_code == 204
    _refused(_exchange(server, code), 401, "invalid_session")


def test_the_code_and_the_id_never_reach_the_log(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    response = launch(server, canvas, user)
    _, code = _code(response)
    page = httpx.get(server.url + response.headers["location"])  # the browser follows the redirect
    assert page.status_code == 200
    session_id = _exchange(server, code).json()["sessionId"]
    httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    deadline = time.monotonic() + 5  # access lines (launch, page, exchange, read) follow their answers
    while len(_access_lines(server)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = server.logs()
    assert code not in logs and session_id not in logs
    entries = _access_lines(server)
    assert "code=[redacted]" in [e.get("query") for e in entries if e.get("path") == "/terms"]
    assert any(e.get("path") == "/api/sessions/exchange" for e in entries)  # a route, not an id


def _access_lines(server: Server) -> list[dict[str, Any]]:
    return [e for e in server.log_entries() if e.get("event") == "access"]


def test_pages_with_a_code_and_no_cookie_load_the_exchange_script_under_a_strict_csp(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    response = launch(server, canvas, user)
    _, code = _code(response)
    for path in ("/terms", "/"):
        page = httpx.get(server.url + path, params={"code": code})
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        directives = {d.strip().split(" ", 1)[0]: d.strip() for d in policy.split(";") if d.strip()}
        assert directives["default-src"] == "default-src 'none'"
        assert directives["script-src"] == "script-src 'self'"
        assert directives["connect-src"] == "connect-src 'self'"
        assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/session.js" defer>']
        assert code not in page.text
        assert 'data-action="accept"' in page.text and 'data-action="logout"' in page.text
    # Rendering the page used nothing up: the script's trade still works.
    assert _exchange(server, code).status_code == 200


def test_pages_where_the_cookie_came_back_render_without_script(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    response = launch(server, canvas, user)
    _, code = _code(response)
    page = httpx.get(
        server.url + "/terms",
        params={"code": code},
        headers={"cookie": f"session={session_cookie(response)}"},
    )
    assert page.status_code == 200
    assert "<script" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert '<form method="post" action="/terms">' in page.text


def test_an_expired_code_is_refused(make_server: Callable[..., Server]) -> None:
    srv = make_server(exchange_code_ttl=1)
    canvas = srv.add_institution()
    _, code = _code(launch(srv, canvas, CanvasUser()))
    time.sleep(1.5)
    _refused(_exchange(srv, code), 401, "invalid_exchange_code")
