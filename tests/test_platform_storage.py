"""The server's half of LTI Platform Storage, over real HTTP and without a browser: the login
page hands its script the state, nonce and binding to store with the platform; the launch page
asks for them back; ``POST /api/lti/launch/confirm`` holds every check of a cookie launch with the
binding from storage, and also checks the nonce the platform kept (1EdTech "OIDC Login with LTI
Client Side postMessages"). Each refusal is followed by the valid confirmation, which must still
work: a refusal writes nothing, not even a used nonce.

tests/test_browser_storage.py runs the same flow in Chromium against dev-canvas.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from commons_session.domain.models import Identity

from .canvas import GUID, CanvasUser
from .conftest import Server
from .platform13 import JwksServer, Platform, jwks_server, post_launch, register, set_cookie

TARGET = "post_message_forwarding"


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as served:
        yield served


@pytest.fixture
def platform(server: Server, jwks: JwksServer) -> Platform:
    return register(server, jwks)


def _data(html: str, name: str) -> str:
    found = re.search(rf'data-{name}="([^"]*)"', html)
    assert found is not None, f"no data-{name} in the page"
    return unescape(found.group(1))


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "set-cookie" not in response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


@dataclass(frozen=True)
class Stored:
    """What a storage login's page gave its script to put into the platform's storage."""

    state: str
    nonce: str
    binding: str


def _storage_login(server: Server, platform: Platform, target: str = TARGET) -> Stored:
    page = httpx.get(
        server.url + "/api/lti/login",
        params={
            "iss": platform.issuer,
            "login_hint": "hint",
            "target_link_uri": server.url + "/api/lti/launch",
            "client_id": platform.client_id,
            "lti_storage_target": target,
        },
    )
    assert page.status_code == 200, page.text
    redirect = parse_qs(urlsplit(_data(page.text, "redirect")).query)
    stored = Stored(_data(page.text, "state"), _data(page.text, "nonce"), _data(page.text, "binding"))
    # The page stores exactly what the platform is sent and the cookie holds.
    assert redirect["state"] == [stored.state] and redirect["nonce"] == [stored.nonce]
    assert set_cookie(page, "lti1p3_state") == stored.binding
    assert _data(page.text, "target") == target
    return stored


def _fields(token: str, stored: Stored) -> dict[str, str]:
    return {"id_token": token, "state": stored.state, "binding": stored.binding, "nonce": stored.nonce}


def _confirm(server: Server, **fields: Any) -> httpx.Response:
    # json.dumps escapes what UTF-8 cannot carry (a lone surrogate becomes "\\udcff").
    return httpx.post(
        server.url + "/api/lti/launch/confirm",
        content=json.dumps(fields),
        headers={"content-type": "application/json"},
    )


def _launches(server: Server, platform: Platform, user: CanvasUser) -> int:
    found = server.run(server.stores.records.get_institution(platform.consumer_key))
    assert found is not None
    person = server.run(server.stores.records.find_user(Identity(int(found.id), GUID, user.lti_user_id)))
    return 0 if person is None else server.run(server.stores.records.count_launches(person.id))


def _confirmed(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert urlsplit(response.json()["location"]).path == "/terms"
    assert "session=" in response.headers["set-cookie"]


def test_launch_page_asks_for_the_logins_own_state_and_nonce_from_the_platform_origin(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    stored = _storage_login(server, platform, target="_parent")
    token = platform.id_token(user, stored.nonce)

    page = post_launch(server, token, stored.state, None, lti_storage_target="_parent")

    assert page.status_code == 200, page.text
    assert "set-cookie" not in page.headers
    assert _data(page.text, "mode") == "launch"
    assert _data(page.text, "state") == stored.state and _data(page.text, "nonce") == stored.nonce
    assert _data(page.text, "target") == "_parent"
    assert _data(page.text, "origin") == "https://sso.example.edu"
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/lti13.js" defer>']
    # The binding is what storage proves; the page never carries it.
    assert stored.binding not in page.text
    assert _launches(server, platform, user) == 0


def test_forged_state_is_refused_at_the_launch_and_at_the_confirmation(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    stored = _storage_login(server, platform)
    token = platform.id_token(user, stored.nonce)
    forged = secrets.token_urlsafe(32)

    _problem(post_launch(server, token, forged, None, lti_storage_target=TARGET), 401, "state_mismatch")
    _problem(
        _confirm(server, id_token=token, state=forged, binding=stored.binding, nonce=stored.nonce),
        401,
        "state_mismatch",
    )
    _problem(
        _confirm(server, id_token=token, state="x" * 300, binding=stored.binding, nonce=stored.nonce),
        401,
        "state_mismatch",
    )
    assert _launches(server, platform, user) == 0
    _confirmed(
        _confirm(server, id_token=token, state=stored.state, binding=stored.binding, nonce=stored.nonce)
    )


def test_a_binding_that_is_not_this_logins_is_refused(server: Server, platform: Platform) -> None:
    """What another browser (or another origin's slot of the platform's storage) holds does not
    bind this login."""
    user = CanvasUser()
    victim = _storage_login(server, platform)
    other = _storage_login(server, platform)
    token = platform.id_token(user, victim.nonce)

    for binding in (other.binding, secrets.token_urlsafe(32), victim.state, victim.nonce, ""):
        refused = _confirm(server, id_token=token, state=victim.state, binding=binding, nonce=victim.nonce)
        if binding == "":
            _problem(refused, 400, "bad_request")
        else:
            _problem(refused, 401, "state_mismatch")
    assert _launches(server, platform, user) == 0
    _confirmed(
        _confirm(server, id_token=token, state=victim.state, binding=victim.binding, nonce=victim.nonce)
    )


def test_the_nonce_kept_in_storage_must_be_the_logins(server: Server, platform: Platform) -> None:
    user = CanvasUser()
    stored = _storage_login(server, platform)
    other = _storage_login(server, platform)
    token = platform.id_token(user, stored.nonce)

    for nonce in (other.nonce, secrets.token_urlsafe(32), stored.state, stored.nonce + "x", "\udcff"):
        refused = _confirm(server, id_token=token, state=stored.state, binding=stored.binding, nonce=nonce)
        _problem(refused, 401, "nonce_mismatch")
    assert _launches(server, platform, user) == 0
    _confirmed(
        _confirm(server, id_token=token, state=stored.state, binding=stored.binding, nonce=stored.nonce)
    )


def test_the_id_tokens_nonce_must_be_the_logins_even_when_storage_agrees(
    server: Server, platform: Platform
) -> None:
    user = CanvasUser()
    stored = _storage_login(server, platform)
    other = _storage_login(server, platform)
    wrong = platform.id_token(user, other.nonce)

    refused = _confirm(server, id_token=wrong, state=stored.state, binding=stored.binding, nonce=stored.nonce)

    _problem(refused, 401, "nonce_mismatch")
    assert _launches(server, platform, user) == 0
    token = platform.id_token(user, stored.nonce)
    _confirmed(
        _confirm(server, id_token=token, state=stored.state, binding=stored.binding, nonce=stored.nonce)
    )


def test_a_replayed_launch_is_refused_however_it_comes_back(server: Server, platform: Platform) -> None:
    user = CanvasUser()
    stored = _storage_login(server, platform)
    token = platform.id_token(user, stored.nonce)
    fields = {"id_token": token, "state": stored.state, "binding": stored.binding, "nonce": stored.nonce}
    _confirmed(_confirm(server, **fields))

    # The same id_token and state again: through storage, with the cookie, or as a new page.
    _problem(_confirm(server, **fields), 401, "nonce_replayed")
    _problem(post_launch(server, token, stored.state, stored.binding), 401, "nonce_replayed")
    again = post_launch(server, token, stored.state, None, lti_storage_target=TARGET)
    assert again.status_code == 200  # only the page: its confirmation is what is refused
    _problem(_confirm(server, **fields), 401, "nonce_replayed")
    assert _launches(server, platform, user) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"state": "s", "binding": "b", "nonce": "n"},
        {"id_token": "t", "binding": "b", "nonce": "n"},
        {"id_token": "t", "state": "s", "nonce": "n"},
        {"id_token": "t", "state": "s", "binding": "b"},
        {"id_token": "t", "state": "s", "binding": "b", "nonce": 7},
        {"id_token": "t", "state": "s", "binding": None, "nonce": "n"},
    ],
    ids=["no-id_token", "no-state", "no-binding", "no-nonce", "number-nonce", "null-binding"],
)
def test_the_confirmation_needs_every_field_as_a_json_string(
    server: Server, platform: Platform, body: dict[str, Any]
) -> None:
    _problem(_confirm(server, **body), 400, "bad_request")


def test_the_confirmation_is_json_only(server: Server, platform: Platform) -> None:
    user = CanvasUser()
    stored = _storage_login(server, platform)
    token = platform.id_token(user, stored.nonce)
    fields = {"id_token": token, "state": stored.state, "binding": stored.binding, "nonce": stored.nonce}

    as_form = httpx.post(server.url + "/api/lti/launch/confirm", data=fields)

    _problem(as_form, 415, "unsupported_media_type")
    assert _launches(server, platform, user) == 0
    _confirmed(_confirm(server, **fields))
