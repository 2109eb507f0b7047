"""The operator API (``/api/admin``) and console (``/admin``), over real HTTP and in Chromium
(issue 13): off unless a token is set; the same actions and the same refusals as the CLI; the
console's cookie, CSRF token, Fetch Metadata check and framing; a wrong token counts against the
address' failure budget."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .canvas import CanvasUser
from .conftest import ROOT, Server, create_session, onboard

TOKEN = secrets.token_hex(24)
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from .conftest import start_server

    server = start_server(tmp_path_factory.mktemp("operated"), operator_token=TOKEN, cookie_secure=False)
    yield server
    server.stop()


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, str] = response.json()
    assert body["code"] == code, body
    return body


def test_the_api_and_console_are_off_unless_a_token_is_set(server: Server) -> None:
    _problem(
        httpx.get(server.url + "/api/admin/institutions", headers=BEARER), 403, "operator_console_disabled"
    )
    page = httpx.get(server.url + "/admin")
    assert page.status_code == 403 and "operator_console_disabled" in page.text
    assert page.headers["content-type"].startswith("text/html")


def test_a_short_operator_token_is_refused_at_start(make_server: Callable[..., Server]) -> None:
    with pytest.raises(RuntimeError, match="at least 32 characters"):
        make_server(operator_token="short")


def test_the_api_wants_the_bearer_token(operated: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer " + TOKEN[:-1]}, {"Authorization": f"Basic {TOKEN}"}):
        _problem(
            httpx.get(operated.url + "/api/admin/institutions", headers=headers),
            401,
            "operator_token_required",
        )


def test_a_wrong_token_spends_the_address_failure_budget(make_server: Callable[..., Server]) -> None:
    server = make_server(operator_token=TOKEN, rate_limit_address_failures=3)
    wrong = {"Authorization": "Bearer " + "x" * 48}
    answers = [httpx.get(server.url + "/api/admin/audit", headers=wrong).status_code for _ in range(5)]
    assert answers[:3] == [401, 401, 401] and answers[3:] == [429, 429], answers


def test_the_api_does_what_the_cli_does_with_the_same_refusals(operated: Server) -> None:
    api = httpx.Client(base_url=operated.url + "/api/admin", headers=BEARER, timeout=10)
    key = "api-" + secrets.token_hex(4)
    added = api.post("/institutions", json={"consumer_key": key, "name": "API U", "secret": "s3cret"})
    assert added.status_code == 201, added.text
    assert any(i["consumer_key"] == key for i in api.get("/institutions").json())
    # The same duplicate through the API and the CLI: the same refusal.
    duplicate = _problem(
        api.post("/institutions", json={"consumer_key": key, "name": "x", "secret": "y"}),
        400,
        "duplicate_institution",
    )
    cli = operated.cli("institutions", "add", "--consumer-key", key, "--name", "x", "--secret", "y")
    assert cli.returncode == 1 and duplicate["detail"] in cli.stderr
    missing = _problem(
        api.post("/institutions/finish-rotation", json={"consumer_key": "nope"}), 404, "institution_not_found"
    )
    assert (
        missing["detail"] in operated.cli("institutions", "finish-rotation", "--consumer-key", "nope").stderr
    )
    _problem(
        api.post("/institutions", json={"consumer_key": "has space", "name": "n", "secret": "s"}),
        400,
        "invalid_institution",
    )
    _problem(api.post("/institutions", json={"consumer_key": key}), 400, "bad_request")
    _problem(
        api.post(
            "/institutions",
            content=b"consumer_key=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported_media_type",
    )

    assert (
        api.post("/institutions/rotate-secret", json={"consumer_key": key, "secret": "next"}).status_code
        == 204
    )
    assert next(i for i in api.get("/institutions").json() if i["consumer_key"] == key)["rotating"] is True
    assert api.post("/institutions/finish-rotation", json={"consumer_key": key}).status_code == 204

    canvas, user = operated.add_institution(), CanvasUser()
    onboard(operated, canvas, user)
    sids = [create_session(operated, canvas, user) for _ in range(2)]
    listed = api.get("/sessions", params={"consumer_key": canvas.consumer_key}).json()
    assert listed["count"] == 3  # the launch's session and two from JWTs
    assert all(sid not in str(listed) for sid in sids)  # handles only, never ids
    user_id = listed["sessions"][0]["user_id"]
    _problem(
        api.get("/sessions", params={"consumer_key": canvas.consumer_key, "user_id": user_id}),
        400,
        "invalid_institution",
    )
    disabled = api.post("/users/disable", json={"user_id": user_id}).json()
    assert disabled == {"user_id": user_id, "disabled": True, "ended_sessions": 3}
    assert (
        httpx.get(f"{operated.url}/api/sessions/{sids[0]}", headers={"x-session-id": sids[0]}).status_code
        == 401
    )
    assert api.post("/users/enable", json={"user_id": user_id}).json()["disabled"] is False
    _problem(api.post("/users/disable", json={"user_id": "nobody"}), 404, "user_not_found")
    again = create_session(operated, canvas, user)
    assert api.post("/sessions/revoke", json={"consumer_key": canvas.consumer_key}).json() == {
        "ended_sessions": 1
    }
    assert (
        httpx.get(f"{operated.url}/api/sessions/{again}", headers={"x-session-id": again}).status_code == 401
    )
    events = api.get("/audit", params={"limit": "5"}).json()
    assert len(events) == 5 and events[0]["event"] == "session_revoked", events[0]
    _problem(api.get("/audit", params={"limit": "0"}), 400, "bad_request")
    removed = api.post("/institutions/remove", json={"consumer_key": key}).json()
    assert removed == {"consumer_key": key, "ended_sessions": 0}
    api.close()


def _alive(server: Server, sid: str) -> bool:
    return httpx.get(f"{server.url}/api/sessions/{sid}", headers={"x-session-id": sid}).status_code == 200


def _console_cookie(response: httpx.Response) -> str:
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith("operator="))
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/admin" in header
    return header.split(";", 1)[0].split("=", 1)[1]


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert found, page[:500]
    return found.group(1)


def test_the_console_signs_in_acts_and_refuses_forgeries(operated: Server) -> None:
    with httpx.Client(base_url=operated.url, timeout=10) as browser:
        home = browser.get("/admin")
        assert home.status_code == 200 and 'name="token"' in home.text
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
        wrong = browser.post("/admin/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "operator_token_required" in wrong.text
        signed = browser.post("/admin/login", data={"token": TOKEN})
        assert signed.status_code == 303
        cookie = _console_cookie(signed)
        assert TOKEN not in cookie
        dashboard = browser.get("/admin")
        assert "Add institution" in dashboard.text
        csrf = _csrf(dashboard.text)

        key = "console-" + secrets.token_hex(4)
        form = {
            "action": "add_institution",
            "csrf_token": csrf,
            "consumer_key": key,
            "name": "Console U",
            "secret": "x",
        }
        done = browser.post("/admin/action", data=form)
        assert done.status_code == 303 and "notice=" in done.headers["location"]
        assert key in browser.get("/admin").text
        refused = browser.post("/admin/action", data=form)  # the same key again: the CLI's refusal
        assert refused.status_code == 400 and "duplicate_institution" in refused.text

        assert browser.post("/admin/action", data={**form, "csrf_token": "0" * 64}).status_code == 403
        cross = browser.post("/admin/action", data=form, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403 and "cross_origin_request" in cross.text
        unknown = browser.post("/admin/action", data={"action": "drop_everything", "csrf_token": csrf})
        assert unknown.status_code == 400

    # A cookie not made with the token, or made too long ago, signs no one in.
    issued = str(int(time.time()) - 7200)
    mac = hmac.new(
        TOKEN.encode(), f"commons-session operator console {issued}".encode(), hashlib.sha256
    ).hexdigest()
    for forged in (f"{int(time.time())}.{'0' * 64}", f"{issued}.{mac}", "garbage"):
        page = httpx.get(operated.url + "/admin", cookies={"operator": forged})
        assert 'name="token"' in page.text and "Add institution" not in page.text


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="no Chromium (`make browser-deps`)")
@pytest.mark.timeout(60)
@pytest.mark.flaky(reruns=2)
def test_the_console_in_chromium(operated: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    key = "browser-" + secrets.token_hex(4)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1024, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(operated.url + "/admin")
        page.fill("input[name=token]", TOKEN)
        page.click("button:text('Sign in')")
        expect(page.locator("h2", has_text="Institutions")).to_be_visible()
        add = page.locator("form", has=page.locator("button:text('Add institution')"))
        add.locator("input[name=consumer_key]").fill(key)
        add.locator("input[name=name]").fill("Example University")
        add.locator("input[name=secret]").fill("correct horse battery staple")
        add.locator("button").click()
        expect(page.locator("p[role=status]")).to_contain_text(f"Added {key}")
        expect(page.locator("td code", has_text=key)).to_be_visible()
        page.screenshot(path=tmp_path / "operator-console.png", full_page=True)
        browser.close()
    if os.environ.get("COMMONS_SESSION_UPDATE_SCREENSHOTS"):
        shutil.copyfile(
            tmp_path / "operator-console.png", ROOT / "docs" / "screenshots" / "operator-console.png"
        )


def _pending(server: Server) -> tuple[str, str]:
    """A platform that registered itself (Dynamic Registration), waiting to be bound."""
    from .test_dynamic_registration import records

    issuer, client_id = f"https://canvas-{secrets.token_hex(3)}.example.edu", secrets.token_hex(6)
    records(
        server,
        lambda s: s.records.add_pending_lti13_registration(
            issuer=issuer, client_id=client_id, deployment_ids=("1:abc",),
            jwks_url=issuer + "/jwks", auth_url=issuer + "/auth", token_url=None, now=time.time(),
        ),
    )  # fmt: skip
    return issuer, client_id


def test_pending_platforms_are_listed_and_bound_through_the_api_and_the_console(operated: Server) -> None:
    api = httpx.Client(base_url=operated.url + "/api/admin", headers=BEARER, timeout=10)
    issuer, client_id = _pending(operated)
    school, other = operated.add_institution(), operated.add_institution()
    assert {"issuer": issuer, "client_id": client_id} in [
        {"issuer": p["issuer"], "client_id": p["client_id"]} for p in api.get("/lti13/pending").json()
    ]
    bind = {"issuer": issuer, "client_id": client_id, "consumer_key": school.consumer_key}
    _problem(api.post("/lti13/bind", json={**bind, "consumer_key": "nope"}), 404, "institution_not_found")
    bound = api.post("/lti13/bind", json=bind)
    assert bound.status_code == 200, bound.text
    assert all(p["client_id"] != client_id for p in api.get("/lti13/pending").json())
    taken = api.post("/lti13/bind", json={**bind, "consumer_key": other.consumer_key})
    _problem(taken, 409, "duplicate_lti13_registration")
    events = api.get("/audit", params={"limit": "3"}).json()
    assert any(e["event"] == "lti13_bound" and e["reason"] == "operator" for e in events), events
    api.close()

    issuer, client_id = _pending(operated)
    with httpx.Client(base_url=operated.url, timeout=10) as browser:
        browser.post("/admin/login", data={"token": TOKEN})
        page = browser.get("/admin")
        assert client_id in page.text
        form = {
            "action": "bind_platform", "csrf_token": _csrf(page.text), "issuer": issuer,
            "client_id": client_id, "consumer_key": school.consumer_key,
        }  # fmt: skip
        done = browser.post("/admin/action", data=form)
        assert done.status_code == 303, done.text
        assert client_id not in browser.get("/admin").text.split("waiting to be bound", 1)[1].split("<h2>")[0]


def test_a_disabled_institution_gets_no_launch_and_no_session_until_enabled(operated: Server) -> None:
    from .conftest import launch

    api = httpx.Client(base_url=operated.url + "/api/admin", headers=BEARER, timeout=10)
    canvas, user = operated.add_institution(), CanvasUser()
    onboard(operated, canvas, user)
    live = create_session(operated, canvas, user)
    key = {"consumer_key": canvas.consumer_key}
    answer = api.post("/institutions/disable", json=key).json()
    assert answer["disabled"] is True and answer["ended_sessions"] == 2  # the launch's and the JWT's
    assert not _alive(operated, live)
    token = canvas.jwt_token(user, resource_link_id=secrets.token_hex(8))
    refused = httpx.post(operated.url + "/api/sessions", json={"jwt_token": token})
    _problem(refused, 403, "institution_disabled")
    _problem(launch(operated, canvas, user), 403, "institution_disabled")
    listed = next(i for i in api.get("/institutions").json() if i["consumer_key"] == canvas.consumer_key)
    assert listed["disabled"] is True
    # The CLI sees and undoes the same state; the refused token was not used up.
    cli = operated.cli("institutions", "enable", "--consumer-key", canvas.consumer_key)
    assert cli.returncode == 0 and "enabled" in cli.stdout, cli.stderr
    assert httpx.post(operated.url + "/api/sessions", json={"jwt_token": token}).status_code == 201
    assert launch(operated, canvas, user).status_code == 303
    events = [e["event"] for e in api.get("/audit", params={"limit": "20"}).json()]
    assert "institution_disabled" in events and "institution_enabled" in events
    api.close()
