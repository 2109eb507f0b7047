"""LTI 1.3 launches over real HTTP: OIDC login initiation, the id_token launch and each of its
checks, the browser binding of state and nonce, the JWKS cache, Platform Storage, and the link
to the LTI 1.1 identity that Canvas' JWTs name.

The platform (``tests/platform13.py``) signs with its own RSA key and publishes the JWKS over
HTTP; every refused launch is followed by the same login's valid launch, which must still
work: a refusal writes nothing, not even a used nonce.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from commons_session.domain.models import Identity

from .canvas import GUID, CanvasUser, FakeCanvas
from .conftest import Server, accept_terms, launch, session_cookie
from .platform13 import (
    CLAIM,
    JwksServer,
    Platform,
    cookie_attributes,
    jwks_server,
    login,
    post_launch,
    register,
    set_cookie,
)


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as served:
        yield served


@pytest.fixture
def platform(server: Server, jwks: JwksServer) -> Platform:
    return register(server, jwks)


def _institution_id(server: Server, platform: Platform) -> int:
    found = server.run(server.stores.records.get_institution(platform.consumer_key))
    assert found is not None
    return int(found.id)


def _user_exists(server: Server, platform: Platform, user: CanvasUser) -> bool:
    identity = Identity(_institution_id(server, platform), GUID, user.lti_user_id)
    return server.run(server.stores.records.find_user(identity)) is not None


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def _landing(response: httpx.Response) -> tuple[str, str]:
    """The path a launch redirected to and its one-time code."""
    assert response.status_code == 303, response.text
    parts = urlsplit(response.headers["location"])
    return parts.path, parse_qs(parts.query)["code"][0]


# -- registration ---------------------------------------------------------------------------------


def test_cli_attaches_a_registration_lists_it_and_removing_the_institution_removes_it(
    server: Server, jwks: JwksServer
) -> None:
    canvas = server.add_institution()
    issuer = f"https://canvas-{secrets.token_hex(4)}.example.edu"
    base = ["institutions", "add-lti13", "--consumer-key", canvas.consumer_key, "--issuer", issuer]
    urls = [
        "--jwks-url",
        jwks.url + "/x/jwks",
        "--auth-url",
        "https://sso.example.edu/api/lti/authorize_redirect",
    ]
    added = server.cli(
        *base, "--client-id", "10000000000042", "--deployment-id", "1:a", "--deployment-id", "2:b", *urls
    )
    assert added.returncode == 0, added.stderr
    again = server.cli(*base, "--client-id", "10000000000042", "--deployment-id", "3:c", *urls)
    assert again.returncode == 0, again.stderr

    listed = server.cli("institutions", "list", "--json")
    mine = {i["consumer_key"]: i for i in json.loads(listed.stdout)}[canvas.consumer_key]
    assert mine["lti13"] == [
        {
            "issuer": issuer,
            "client_id": "10000000000042",
            "deployment_ids": ["1:a", "2:b", "3:c"],
            "jwks_url": jwks.url + "/x/jwks",
            "auth_url": "https://sso.example.edu/api/lti/authorize_redirect",
        }
    ]
    text = server.cli("institutions", "list").stdout
    assert f"LTI 1.3: issuer {issuer} client_id 10000000000042" in text

    other = server.add_institution()
    stolen = server.cli(
        "institutions", "add-lti13", "--consumer-key", other.consumer_key, "--issuer", issuer,
        "--client-id", "10000000000042", "--deployment-id", "9:z", *urls,
    )  # fmt: skip
    assert stolen.returncode == 1 and "another institution" in stolen.stderr

    removed = server.cli("institutions", "remove", "--consumer-key", canvas.consumer_key)
    assert removed.returncode == 0, removed.stderr
    assert server.run(server.stores.records.get_lti13_registration(issuer, "10000000000042")) is None


@pytest.mark.parametrize(
    ("option", "value"),
    [("--jwks-url", "http://canvas.example.edu/jwks"), ("--auth-url", "ftp://sso.example.edu/auth")],
)
def test_cli_refuses_platform_urls_that_are_not_https_off_this_machine(
    server: Server, option: str, value: str
) -> None:
    canvas = server.add_institution()
    urls = {
        "--jwks-url": "https://sso.example.edu/jwks",
        "--auth-url": "https://sso.example.edu/auth",
        option: value,
    }
    done = server.cli(
        "institutions", "add-lti13", "--consumer-key", canvas.consumer_key, "--issuer", "https://i.example.edu",
        "--client-id", "1", "--deployment-id", "1:a", *[x for pair in urls.items() for x in pair],
    )  # fmt: skip
    assert done.returncode == 1 and option in done.stderr
    assert server.run(server.stores.records.get_lti13_registration("https://i.example.edu", "1")) is None


def test_cli_refuses_a_registration_for_an_unknown_institution(server: Server) -> None:
    done = server.cli(
        "institutions", "add-lti13", "--consumer-key", "no-such-key", "--issuer", "https://i.example.edu",
        "--client-id", "2", "--deployment-id", "1:a", "--jwks-url", "https://sso.example.edu/jwks",
        "--auth-url", "https://sso.example.edu/auth",
    )  # fmt: skip
    assert done.returncode == 1 and "no-such-key" in done.stderr


# -- login initiation -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_login_redirects_to_the_platform_with_a_fresh_state_and_nonce_and_a_state_cookie(
    server: Server, platform: Platform, method: str
) -> None:
    first = login(server, platform, method=method)
    location = first.response.headers["location"]
    assert location.startswith(platform.auth_url + "?")
    assert first.query == {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": platform.client_id,
        "redirect_uri": server.url + "/api/lti/launch",
        "login_hint": "535fa085f22b4655f48cd5a36a9215f64c062838",
        "lti_message_hint": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.hint.sig",
        "state": first.state,
        "nonce": first.nonce,
    }
    assert len(first.state) >= 43 and len(first.nonce) >= 43 and first.state != first.nonce
    attributes = cookie_attributes(first.response, "lti1p3_state")
    assert attributes["path"] == "/api/lti"
    assert attributes["max-age"] == "600"
    assert {"httponly", "secure"} <= set(attributes) and attributes["samesite"].lower() == "none"
    assert first.binding not in (first.state, first.nonce)

    second = login(server, platform, method=method)
    assert {second.state, second.nonce}.isdisjoint({first.state, first.nonce})


def test_login_without_client_id_uses_the_issuers_only_registration(
    server: Server, platform: Platform
) -> None:
    done = login(server, platform, client_id="")
    assert done.query["client_id"] == platform.client_id


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"iss": "https://unknown.example.edu"}, "unknown_issuer"),
        ({"client_id": "999"}, "unknown_client_id"),
        ({"target_link_uri": "https://evil.example.com/api/lti/launch"}, "wrong_target_link_uri"),
        ({"login_hint": ""}, "bad_request"),
        ({"iss": ""}, "bad_request"),
    ],
)
def test_login_is_refused_for_an_unknown_platform_or_a_foreign_target(
    server: Server, platform: Platform, change: dict[str, str], code: str
) -> None:
    fields = {
        "iss": platform.issuer,
        "login_hint": "hint",
        "target_link_uri": server.url + "/api/lti/launch",
        "client_id": platform.client_id,
        **change,
    }
    response = httpx.get(server.url + "/api/lti/login", params=fields)
    _problem(response, 400, code)
    assert "location" not in response.headers
    assert set_cookie(response, "lti1p3_state") is None


def test_login_reuses_the_binding_this_browser_already_holds(server: Server, platform: Platform) -> None:
    first = login(server, platform)
    again = httpx.get(
        server.url + "/api/lti/login",
        params={**first.query, "iss": platform.issuer, "target_link_uri": server.url + "/api/lti/launch"},
        headers={"cookie": f"lti1p3_state={first.binding}"},
    )
    assert again.status_code == 302
    assert set_cookie(again, "lti1p3_state") == first.binding


# -- the launch ----------------------------------------------------------------------------------


def test_launch_records_the_user_and_links_to_the_lti11_identity_for_canvas_jwts(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser(name="Ada Lovelace", canvas_user_id="4242")
    started = login(server, platform)
    response = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
    path, code = _landing(response)
    assert path == "/terms"
    session_id = session_cookie(response)
    assert code != session_id
    assert cookie_attributes(response, "session")["samesite"].lower() == "none"

    contents = httpx.get(
        f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id}
    ).json()
    assert contents["userFullName"] == "Ada Lovelace"
    assert contents["canvasUserId"] == "4242"
    assert contents["canvasApiDomain"] == "canvas.example.edu"
    assert contents["roles"] == ["Instructor"]
    assert contents["isAdmin"] is False
    assert contents["locale"] == "en"
    assert contents["accountName"] == "Example University"
    assert contents["userAvatarUrl"] == user.image

    # The same person's Canvas JWT (LTI 1.1 user_id = lti11_legacy_user_id) now creates sessions.
    accept_terms(server, session_id)
    canvas = FakeCanvas(platform.consumer_key, platform.secret)
    created = httpx.post(server.url + "/api/sessions", json={"jwt_token": canvas.jwt_token(user)})
    assert created.status_code == 201, created.text
    assert created.json()["userId"] == contents["userId"]

    # ... and an LTI 1.1 launch of that person is the same user.
    relaunched = launch(server, canvas, user)
    other_id = session_cookie(relaunched)
    again = httpx.get(f"{server.url}/api/sessions/{other_id}", headers={"x-session-id": other_id}).json()
    assert again["userId"] == contents["userId"]
    assert urlsplit(relaunched.headers["location"]).path == "/"


def test_launch_without_the_legacy_user_id_identifies_the_person_by_sub(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    started = login(server, platform)
    token = platform.id_token(
        user, started.nonce, extra={CLAIM + "lti11_legacy_user_id": None, "sub": "only-sub"}
    )
    response = post_launch(server, token, started.state, started.binding)
    _landing(response)
    identity = Identity(_institution_id(server, platform), GUID, "only-sub")
    assert server.run(server.stores.records.find_user(identity)) is not None
    assert not _user_exists(server, platform, user)


def test_launch_after_terms_lands_home_and_ends_the_session_the_browser_held(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    started = login(server, platform)
    first = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
    held = session_cookie(first)
    accept_terms(server, held)

    again = login(server, platform)
    second = httpx.post(
        server.url + "/api/lti/launch",
        data={"id_token": platform.id_token(user, again.nonce), "state": again.state},
        headers={"cookie": f"lti1p3_state={again.binding}; session={held}"},
    )
    assert _landing(second)[0] == "/"
    assert session_cookie(second) != held
    gone = httpx.get(f"{server.url}/api/sessions/{held}", headers={"x-session-id": held})
    assert gone.status_code == 401


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# Each bad launch: (expected code, how to make the id_token). Every one is followed by the
# valid launch of the same login, which must still work.
BadToken = Callable[[Platform, CanvasUser, str], str]
BAD_TOKENS: dict[str, tuple[str, BadToken]] = {
    "signature": ("invalid_id_token_signature", lambda p, u, n: p.id_token(u, n, key=_other_key())),
    "unknown-kid": ("unknown_kid", lambda p, u, n: p.id_token(u, n, kid="no-such-kid")),
    "hs256": (
        "wrong_algorithm",
        lambda p, u, n: jwt.encode(p.claims(u, n), "s" * 32, algorithm="HS256", headers={"kid": p.kid}),
    ),
    "not-a-jwt": ("malformed_id_token", lambda p, u, n: "not.a-jwt"),
    "issuer": ("wrong_issuer", lambda p, u, n: p.id_token(u, n, iss="https://other.example.edu")),
    "audience": ("wrong_audience", lambda p, u, n: p.id_token(u, n, aud="someone-else", azp=None)),
    "azp": ("wrong_azp", lambda p, u, n: p.id_token(u, n, aud=[p.client_id, "other"], azp="other")),
    "azp-missing": ("wrong_azp", lambda p, u, n: p.id_token(u, n, aud=[p.client_id, "other"], azp=None)),
    "expired": (
        "id_token_expired",
        lambda p, u, n: p.id_token(u, n, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    ),
    "from-future": (
        "id_token_from_future",
        lambda p, u, n: p.id_token(u, n, iat=int(time.time()) + 3600, exp=int(time.time()) + 7200),
    ),
    "no-exp": ("malformed_id_token", lambda p, u, n: p.id_token(u, n, exp=None)),
    "nonce": ("nonce_mismatch", lambda p, u, n: p.id_token(u, n + "x")),
    "deployment": (
        "unknown_deployment",
        lambda p, u, n: p.id_token(u, n, extra={CLAIM + "deployment_id": "2:unregistered"}),
    ),
    "message-type": (
        "wrong_message_type",
        lambda p, u, n: p.id_token(u, n, extra={CLAIM + "message_type": "LtiSubmissionReviewRequest"}),
    ),
    "version": ("wrong_version", lambda p, u, n: p.id_token(u, n, extra={CLAIM + "version": "1.2.0"})),
    "anonymous": (
        "anonymous_launch",
        lambda p, u, n: p.id_token(u, n, sub=None, extra={CLAIM + "lti11_legacy_user_id": None}),
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_each_failed_id_token_check_is_a_401_naming_it_and_writes_nothing(
    server: Server, platform: Platform, case: str
) -> None:
    code, make = BAD_TOKENS[case]
    user = CanvasUser()
    started = login(server, platform)

    refused = post_launch(server, make(platform, user, started.nonce), started.state, started.binding)

    _problem(refused, 401, code)
    assert set_cookie(refused, "session") is None
    assert not _user_exists(server, platform, user)
    # Nothing was used up: the same login's valid launch still works.
    valid = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
    _landing(valid)
    assert _user_exists(server, platform, user)


def test_replayed_launch_is_refused_as_nonce_replayed_and_records_one_launch(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    started = login(server, platform)
    token = platform.id_token(user, started.nonce)
    _landing(post_launch(server, token, started.state, started.binding))

    replayed = post_launch(server, token, started.state, started.binding)

    _problem(replayed, 401, "nonce_replayed")
    identity = Identity(_institution_id(server, platform), GUID, user.lti_user_id)
    found = server.run(server.stores.records.find_user(identity))
    assert found is not None
    assert server.run(server.stores.records.count_launches(found.id)) == 1


def test_unknown_state_is_refused_as_state_mismatch(server: Server, platform: Platform) -> None:
    user = CanvasUser()
    started = login(server, platform)
    refused = post_launch(
        server, platform.id_token(user, started.nonce), secrets.token_urlsafe(32), started.binding
    )
    _problem(refused, 401, "state_mismatch")
    assert not _user_exists(server, platform, user)


def test_state_from_another_browser_is_refused_and_writes_nothing(server: Server, platform: Platform) -> None:
    user = CanvasUser()
    victim = login(server, platform)  # this browser's login
    attacker = login(server, platform)  # another browser's login, with its own binding
    token = platform.id_token(user, attacker.nonce)

    refused = post_launch(server, token, attacker.state, victim.binding)

    _problem(refused, 401, "state_mismatch")
    assert not _user_exists(server, platform, user)
    _landing(post_launch(server, token, attacker.state, attacker.binding))


def test_launch_without_the_state_cookie_offers_a_new_window_and_writes_nothing(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    started = login(server, platform)
    token = platform.id_token(user, started.nonce)

    as_api = post_launch(server, token, started.state, None)
    body = _problem(as_api, 401, "state_cookie_missing")
    relaunch = urlsplit(body["relaunchUrl"])
    assert relaunch.path == "/api/lti/login"
    again = parse_qs(relaunch.query)
    assert again["iss"] == [platform.issuer] and again["client_id"] == [platform.client_id]
    assert again["target_link_uri"] == [server.url + "/api/lti/launch"]
    assert again["login_hint"] == [started.query["login_hint"]]

    as_page = post_launch(server, token, started.state, None, accept="text/html,application/xhtml+xml")
    assert as_page.status_code == 401
    assert as_page.headers["content-type"].startswith("text/html")
    link = re.search(r'<a class="button" href="([^"]+)" target="_blank" rel="noopener">', as_page.text)
    assert link is not None and unescape(link.group(1)) == body["relaunchUrl"]
    assert "state_cookie_missing" in as_page.text

    # The relaunch, opened top-level, is an ordinary login.
    restarted = httpx.get(server.url + body["relaunchUrl"])
    assert restarted.status_code == 302 and restarted.headers["location"].startswith(platform.auth_url)

    assert not _user_exists(server, platform, user)
    _landing(post_launch(server, token, started.state, started.binding))


def test_launch_whose_registration_was_removed_is_refused(server: Server, platform: Platform) -> None:
    user = CanvasUser()
    started = login(server, platform)
    server.run(server.stores.records.remove_lti13_registration(platform.issuer, platform.client_id))
    refused = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
    _problem(refused, 401, "unknown_registration")
    assert not _user_exists(server, platform, user)


def test_launch_without_id_token_or_with_the_platforms_error_is_a_bad_request(
    server: Server, platform: Platform
) -> None:
    started = login(server, platform)
    missing = httpx.post(server.url + "/api/lti/launch", data={"state": started.state})
    _problem(missing, 400, "bad_request")
    declined = httpx.post(
        server.url + "/api/lti/launch",
        data={"error": "login_required", "error_description": "Must be logged in", "state": started.state},
    )
    assert "login_required" in _problem(declined, 400, "bad_request")["detail"]


def test_a_disabled_user_is_refused_and_the_nonce_stays_unused(server: Server, platform: Platform) -> None:
    user = CanvasUser()
    started = login(server, platform)
    first = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
    user_id = httpx.get(
        f"{server.url}/api/sessions/{session_cookie(first)}", headers={"x-session-id": session_cookie(first)}
    ).json()["userId"]
    assert server.cli("users", "disable", "--user", user_id).returncode == 0

    again = login(server, platform)
    token = platform.id_token(user, again.nonce)
    _problem(post_launch(server, token, again.state, again.binding), 403, "user_disabled")

    assert server.cli("users", "enable", "--user", user_id).returncode == 0
    _landing(post_launch(server, token, again.state, again.binding))


# -- the platform's keys --------------------------------------------------------------------------


def test_jwks_is_cached_and_fetched_again_when_the_platform_rotates_its_key(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    for _ in range(2):
        started = login(server, platform)
        _landing(post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding))
    assert platform.fetches == 1  # the second launch used the cached set

    platform.rotate()
    started = login(server, platform)
    _landing(post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding))
    assert platform.fetches == 2  # the unknown kid made it fetch once more


def test_unreachable_jwks_is_a_503_and_writes_nothing(server: Server, jwks: JwksServer) -> None:
    platform = register(server, jwks)
    user = CanvasUser()
    started = login(server, platform)
    jwks.documents.pop(platform.path)  # the platform's JWKS now answers 404
    refused = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
    _problem(refused, 503, "jwks_unavailable")
    assert refused.headers["retry-after"]
    platform.publish()
    _landing(post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding))


# -- Platform Storage (cookies blocked in Canvas' iframe) -----------------------------------------


def _data(html: str, name: str) -> str:
    found = re.search(rf'data-{name}="([^"]*)"', html)
    assert found is not None, f"no data-{name} in the page"
    return unescape(found.group(1))


def test_platform_storage_login_and_launch_complete_without_the_state_cookie(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    page = httpx.get(
        server.url + "/api/lti/login",
        params={
            "iss": platform.issuer,
            "login_hint": "hint",
            "target_link_uri": server.url + "/api/lti/launch",
            "client_id": platform.client_id,
            "lti_storage_target": "post_message_forwarding",
        },
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1]
    assert '<script src="/static/lti13.js" defer></script>' in page.text
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/lti13.js" defer>']
    binding = _data(page.text, "binding")
    assert set_cookie(page, "lti1p3_state") == binding
    assert _data(page.text, "origin") == "https://sso.example.edu"
    assert _data(page.text, "target") == "post_message_forwarding"
    redirect = _data(page.text, "redirect")
    state = _data(page.text, "state")
    query = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}
    assert redirect.startswith(platform.auth_url) and query["state"] == state
    token = platform.id_token(user, query["nonce"])

    # The platform posts the launch; the browser kept no cookie.
    launched = post_launch(server, token, state, None, lti_storage_target="post_message_forwarding")
    assert launched.status_code == 200, launched.text
    assert _data(launched.text, "state") == state and _data(launched.text, "id-token") == token
    assert _data(launched.text, "origin") == "https://sso.example.edu"
    assert not _user_exists(server, platform, user)

    assert _data(launched.text, "nonce") == query["nonce"] == _data(page.text, "nonce")
    assert not _user_exists(server, platform, user)

    # The page's script got the binding and the nonce back from the platform and confirms.
    # (tests/test_platform_storage.py holds each refusal of the confirmation.)
    confirm = server.url + "/api/lti/launch/confirm"
    fields = {"id_token": token, "state": state, "binding": binding, "nonce": query["nonce"]}
    done = httpx.post(confirm, json=fields)
    assert done.status_code == 200, done.text
    landing = urlsplit(done.json()["location"])
    assert landing.path == "/terms" and parse_qs(landing.query)["code"]
    assert _user_exists(server, platform, user)
    _problem(httpx.post(confirm, json=fields), 401, "nonce_replayed")


def test_scripts_are_served_as_javascript_and_nothing_else_is(server: Server) -> None:
    for name in ("lti13.js", "session.js"):
        script = httpx.get(f"{server.url}/static/{name}")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "use strict" in script.text
    _problem(httpx.get(server.url + "/static/../pages.py"), 404, "not_found")
    _problem(httpx.get(server.url + "/static/nope.js"), 404, "not_found")


# -- timing, on a server of its own ---------------------------------------------------------------


def test_state_expires_and_plain_http_uses_a_lax_cookie(
    make_server: Callable[..., Server], jwks: JwksServer
) -> None:
    srv = make_server(lti_state_ttl=1, cookie_secure=False)
    platform = register(srv, jwks)
    user = CanvasUser()
    started = login(srv, platform)
    attributes = cookie_attributes(started.response, "lti1p3_state")
    assert "secure" not in attributes and attributes["samesite"].lower() == "lax"
    time.sleep(1.5)
    refused = post_launch(srv, platform.id_token(user, started.nonce), started.state, started.binding)
    _problem(refused, 401, "state_expired")
    assert not _user_exists(srv, platform, user)
