"""Security evidence that no other file pins (docs/security.md maps every requirement to its test):
revocation through every path ends the session on every carrier, consumer keys that only look
like a registered one match nothing, JWT headers cannot bring their own keys or repeat
themselves, ``exp``/``nbf`` are honoured, responses that carry an id are never cached and never
leak their URL, ids never go into a URL the service writes, and an id the client chose is never
adopted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import socket
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from commons_session.domain.ids import handle_for, hash_id
from commons_session.domain.models import Identity
from commons_session.http.hosts import host_allowed
from commons_session.http.routes import csrf_token_for
from commons_session.stores.base import Stores

from .backends import postgres_database
from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, launch, onboard, session_cookie, start_server

# -- helpers ----------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_token(header: bytes | dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """HS256 over exactly the header bytes given (PyJWT would rewrite them)."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{b64url(head)}.{b64url(json.dumps(payload).encode())}"
    mac = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def claims(canvas: FakeCanvas, user: CanvasUser, **overrides: Any) -> dict[str, Any]:
    payload = canvas.launch_params(user)
    payload.update(
        consumer_key=canvas.consumer_key, iat=int(time.time()), custom_request=secrets.token_hex(6)
    )
    payload.update(overrides)
    return payload


def post_token(server: Server, token: str) -> httpx.Response:
    return httpx.post(server.url + "/api/sessions", json={"jwt_token": token})


def new_session(server: Server, canvas: FakeCanvas, user: CanvasUser) -> str:
    response = post_token(server, canvas.jwt_token(user, custom_request=secrets.token_hex(8)))
    assert response.status_code == 201, response.text
    return str(response.json()["sessionId"])


def refused(response: httpx.Response, status: int, *codes: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] in codes, response.text


def every_carrier(server: Server, session_id: str) -> dict[str, httpx.Response]:
    url = server.url
    read = f"{url}/api/sessions/{session_id}"
    return {
        "cookie": httpx.get(read, headers={"cookie": f"session={session_id}"}),
        "header": httpx.get(read, headers={"x-session-id": session_id}),
        "query": httpx.get(read, params={"session-id": session_id}),
        "state": httpx.get(read, params={"state": session_id}),
        "json body": httpx.post(f"{url}/api/terms/accept", json={"sessionId": session_id, "version": "v"}),
        "form body": httpx.post(f"{url}/api/sessions/logout", data={"sessionId": session_id}),
        "list": httpx.get(f"{url}/api/sessions", headers={"x-session-id": session_id}),
    }


def assert_dead_everywhere(server: Server, session_id: str) -> None:
    for carrier, response in every_carrier(server, session_id).items():
        assert response.status_code == 401, (carrier, response.text)
        assert response.json()["code"] == "invalid_session", (carrier, response.text)


def assert_alive(server: Server, session_id: str) -> None:
    response = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    assert response.status_code == 200, response.text


def user_id_of(server: Server, session_id: str) -> str:
    response = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    return str(response.json()["userId"])


# -- revocation -------------------------------------------------------------------------------


def _by_handle(server: Server, canvas: FakeCanvas, target: str, other: str) -> None:
    response = httpx.delete(
        f"{server.url}/api/sessions/handles/{handle_for(hash_id(target))}", headers={"x-session-id": other}
    )
    assert response.status_code == 204, response.text


def _logout_others(server: Server, canvas: FakeCanvas, target: str, other: str) -> None:
    response = httpx.post(f"{server.url}/api/sessions/logout-others", json={"sessionId": other})
    assert response.status_code == 200, response.text
    assert response.json()["ended"] >= 1


def _cli(*args: str) -> Callable[[Server, FakeCanvas, str, str], None]:
    def revoke(server: Server, canvas: FakeCanvas, target: str, other: str) -> None:
        filled = [{"USER": user_id_of(server, target), "KEY": canvas.consumer_key}.get(a, a) for a in args]
        done = server.cli(*filled)
        assert done.returncode == 0, done.stderr

    return revoke


REVOCATIONS: dict[str, Callable[[Server, FakeCanvas, str, str], None]] = {
    "DELETE /api/sessions/handles/{handle}": _by_handle,
    "POST /api/sessions/logout-others": _logout_others,
    "sessions revoke --user": _cli("sessions", "revoke", "--user", "USER"),
    "sessions revoke --institution": _cli("sessions", "revoke", "--institution", "KEY"),
    "users disable": _cli("users", "disable", "--user", "USER"),
}


@pytest.mark.parametrize("how", list(REVOCATIONS))
def test_revocation_ends_the_session_on_every_carrier(
    server: Server, canvas: FakeCanvas, user: CanvasUser, how: str
) -> None:
    onboard(server, canvas, user)
    target, other = new_session(server, canvas, user), new_session(server, canvas, user)
    stranger = CanvasUser()
    onboard(server, canvas, stranger)
    bystander = new_session(server, canvas, stranger)
    assert_alive(server, target)

    REVOCATIONS[how](server, canvas, target, other)

    assert_dead_everywhere(server, target)
    assert server.run(server.stores.sessions.get(hash_id(target))) is None
    if how != "sessions revoke --institution":
        assert_alive(server, bystander)  # another person's session is untouched


def test_a_disabled_user_can_start_no_new_session_until_enabled(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    onboard(server, canvas, user)
    user_id = user_id_of(server, new_session(server, canvas, user))
    assert server.cli("users", "disable", "--user", user_id).returncode == 0
    refused(post_token(server, canvas.jwt_token(user, custom_request="a")), 403, "user_disabled")
    refused(launch(server, canvas, user), 403, "user_disabled")
    assert server.cli("users", "enable", "--user", user_id).returncode == 0
    assert post_token(server, canvas.jwt_token(user, custom_request="b")).status_code == 201


def test_a_person_lists_their_sessions_by_handle_never_by_id_and_ends_one(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    onboard(server, canvas, user)
    mine, other = new_session(server, canvas, user), new_session(server, canvas, user)
    listed = httpx.get(f"{server.url}/api/sessions", headers={"x-session-id": mine})
    assert listed.status_code == 200, listed.text
    assert mine not in listed.text and other not in listed.text
    handles = {s["handle"]: s["current"] for s in listed.json()["sessions"]}
    assert handles[handle_for(hash_id(mine))] is True
    assert handles[handle_for(hash_id(other))] is False
    # A handle works only for its owner: another person cannot end it.
    stranger = CanvasUser()
    onboard(server, canvas, stranger)
    theirs = new_session(server, canvas, stranger)
    foreign = httpx.delete(
        f"{server.url}/api/sessions/handles/{handle_for(hash_id(other))}", headers={"x-session-id": theirs}
    )
    refused(foreign, 404, "session_not_found")
    assert_alive(server, other)
    # A handle is not an id: presented as one it authenticates nothing.
    refused(
        httpx.get(f"{server.url}/api/terms", headers={"x-session-id": handle_for(hash_id(other))}),
        401,
        "invalid_session",
    )


# -- consumer keys that only look like a registered one ---------------------------------------

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
HOMOGLYPHS = {"e": "\u0435", "a": "\u0430", "o": "\u043e", "c": "\u0441", "k": "\u043a", "y": "\u0443"}


def lookalikes(key: str) -> dict[str, str]:
    """Keys a lenient comparison (Unicode normalisation, case folding, accent or invisible
    character stripping, trimming) would confuse with the ASCII ``key``."""
    i = next(n for n, ch in enumerate(key) if ch in HOMOGLYPHS)
    e = key.index("e")
    variants = {
        "homoglyph": key[:i] + HOMOGLYPHS[key[i]] + key[i + 1 :],
        "nfc accent": key[:e] + "\u00e9" + key[e + 1 :],
        "nfd accent": key[:e] + "e\u0301" + key[e + 1 :],
        "fullwidth": "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in key),
        "upper case": key.upper(),
        "trailing space": key + " ",
        "nbsp": key + "\u00a0",
        "nul": key + "\x00",
    }
    for n, zw in enumerate(ZERO_WIDTH):
        variants[f"zero-width U+{ord(zw):04X}"] = key[: n + 1] + zw + key[n + 1 :]
    # Each variant is a different string that a normalising reader would take for the key.
    assert unicodedata.normalize("NFKC", variants["fullwidth"]) == key
    assert unicodedata.normalize("NFC", variants["nfd accent"]) == variants["nfc accent"]
    assert all(v != key for v in variants.values())
    return variants


@pytest.fixture
def ascii_institution(server: Server) -> FakeCanvas:
    """A key with letters every trick can bend: homoglyphs, accents, case."""
    key = "key-cake-" + secrets.token_hex(4)
    secret = secrets.token_urlsafe(12)
    server.run(server.stores.records.add_institution(key, "Example U", secret, time.time()))
    return FakeCanvas(key, secret)


def test_jwt_consumer_keys_that_only_look_like_a_registered_key_match_nothing(
    server: Server, ascii_institution: FakeCanvas, user: CanvasUser
) -> None:
    canvas = ascii_institution
    onboard(server, canvas, user)
    assert post_token(server, canvas.jwt_token(user, custom_request="real")).status_code == 201
    for name, key in lookalikes(canvas.consumer_key).items():
        # Signed with the real institution's secret: only the key's spelling is wrong.
        token = raw_token(
            {"typ": "JWT", "alg": "HS256"}, claims(canvas, user, consumer_key=key), canvas.secret.encode()
        )
        response = post_token(server, token)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] in ("unknown_consumer_key", "invalid_token_claims"), (
            name,
            response.text,
        )


def test_launch_consumer_keys_that_only_look_like_a_registered_key_match_nothing(
    server: Server, ascii_institution: FakeCanvas
) -> None:
    canvas = ascii_institution
    for name, key in lookalikes(canvas.consumer_key).items():
        person = CanvasUser()
        lookalike = FakeCanvas(key, canvas.secret)  # the real secret, a key spelled differently
        body, headers = lookalike.signed_launch(server.url + "/api/lti", person)
        response = httpx.post(server.url + "/api/lti", content=body, headers=headers)
        assert response.status_code in (400, 401), (name, response.text)
        assert "set-cookie" not in response.headers, name
        institution = server.run(server.stores.records.get_institution(canvas.consumer_key))
        found = server.run(
            server.stores.records.find_user(Identity(institution.id, canvas.guid, person.lti_user_id))
        )
        assert found is None, name


@pytest.fixture(params=["sqlite", "postgres"])
def key_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Stores]]:
    """Makes an empty store of the backend (opened and closed by the test, in its own loop)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            from commons_session.stores.sqlite import SqliteStores

            yield lambda: SqliteStores(tmp_path / "keys.db")
        else:
            from commons_session.stores.postgres import PostgresStores

            url = stack.enter_context(postgres_database())
            yield lambda: PostgresStores(url, timeout=5)


def test_no_store_finds_an_institution_by_a_lookalike_key(key_store: Callable[[], Stores]) -> None:
    key = "key-cake-" + secrets.token_hex(4)

    async def check() -> None:
        stores = key_store()
        await stores.open()
        try:
            await stores.records.add_institution(key, "Example U", "s3cret", time.time())
            assert (await stores.records.get_institution(key)) is not None
            for name, variant in lookalikes(key).items():
                if "\x00" in variant and type(stores).__name__.startswith("Postgres"):
                    continue  # PostgreSQL text cannot hold NUL; the HTTP tests above cover it
                assert (await stores.records.get_institution(variant)) is None, name
        finally:
            await stores.close()

    asyncio.run(check())


# -- JWT headers ------------------------------------------------------------------------------


@pytest.fixture
def onboarded(server: Server, canvas: FakeCanvas, user: CanvasUser) -> CanvasUser:
    onboard(server, canvas, user)
    return user


ATTACKER_KEY = b"the attacker's own key"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"alg": "HS256", "jwk": {"kty": "oct", "k": b64url(ATTACKER_KEY)}}, id="embedded jwk"),
        pytest.param({"alg": "HS256", "jku": "https://attacker.example/jwks.json"}, id="jku"),
        pytest.param({"alg": "HS256", "x5u": "https://attacker.example/cert.pem"}, id="x5u"),
        pytest.param({"alg": "HS256", "kid": "attacker"}, id="kid"),
    ],
)
def test_a_token_cannot_bring_its_own_key(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser, header: dict[str, Any]
) -> None:
    token = raw_token({"typ": "JWT", **header}, claims(canvas, onboarded), ATTACKER_KEY)
    refused(post_token(server, token), 401, "invalid_token_signature")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b'{"alg":"none","alg":"HS256","typ":"JWT"}', id="alg none then HS256"),
        pytest.param(b'{"alg":"HS256","alg":"HS256","typ":"JWT"}', id="alg twice, same value"),
        pytest.param(b'{"typ":"JWT","alg":"HS256","typ":"at+jwt"}', id="typ twice"),
    ],
)
def test_a_header_that_repeats_a_key_is_refused_even_when_correctly_signed(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser, header: bytes
) -> None:
    token = raw_token(header, claims(canvas, onboarded), canvas.secret.encode())
    refused(post_token(server, token), 401, "malformed_token")


def test_exp_and_nbf_are_honoured_when_a_token_carries_them(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    now = time.time()
    key = canvas.secret.encode()
    expired = raw_token({"alg": "HS256"}, claims(canvas, onboarded, exp=int(now) - 120), key)
    refused(post_token(server, expired), 401, "token_expired")
    early = raw_token({"alg": "HS256"}, claims(canvas, onboarded, nbf=int(now) + 600), key)
    refused(post_token(server, early), 401, "invalid_token_claims")
    fine = raw_token({"alg": "HS256"}, claims(canvas, onboarded, exp=int(now) + 120, nbf=int(now) - 5), key)
    assert post_token(server, fine).status_code == 201


# -- responses that carry an id ---------------------------------------------------------------


def test_every_response_that_carries_an_id_is_no_store_and_no_referrer(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    launched = launch(server, canvas, user)
    held = session_cookie(launched)
    accept = httpx.post(
        f"{server.url}/api/terms/accept",
        json={"version": _version(server, held)},
        headers={"x-session-id": held},
    )
    assert accept.status_code == 204
    created = post_token(server, canvas.jwt_token(user, custom_request="headers"))
    sid = created.json()["sessionId"]
    url = server.url
    responses = {
        "launch (Set-Cookie)": launched,
        "create (body, Set-Cookie)": created,
        "read (body)": httpx.get(f"{url}/api/sessions/{sid}", headers={"x-session-id": sid}),
        "read by query (URL)": httpx.get(f"{url}/api/sessions/{sid}", params={"session-id": sid}),
        "list": httpx.get(f"{url}/api/sessions", headers={"x-session-id": sid}),
        "home page (CSRF token)": httpx.get(f"{url}/", headers={"cookie": f"session={sid}"}),
        "terms page (CSRF token)": httpx.get(f"{url}/terms", params={"state": sid}),
        "refused read": httpx.get(f"{url}/api/sessions/{sid}x", params={"session-id": sid}),
        "logout (clears the cookie)": httpx.get(f"{url}/api/sessions/logout", params={"session-id": sid}),
    }
    for name, response in responses.items():
        assert response.headers.get("cache-control") == "no-store", name
        assert response.headers.get("referrer-policy") == "no-referrer", name
        assert response.headers.get("x-content-type-options") == "nosniff", name


def test_the_service_never_writes_an_id_into_a_url(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    launched = launch(server, canvas, user)
    held = session_cookie(launched)
    assert held not in launched.headers["location"]
    for page in ("/", "/terms"):
        html = httpx.get(server.url + page, headers={"cookie": f"session={held}"}).text
        assert held not in html, page  # not in a link, a form action, or anywhere else
    # Nor into an error: a mistyped path, someone else's session, a conflict.
    onboard_accept = httpx.post(
        f"{server.url}/api/terms/accept",
        json={"version": _version(server, held)},
        headers={"x-session-id": held},
    )
    assert onboard_accept.status_code == 204
    other = post_token(server, canvas.jwt_token(user, custom_request="other")).json()["sessionId"]
    errors = [
        httpx.get(f"{server.url}/api/sessions/{held}/extra", headers={"x-session-id": held}),
        httpx.get(f"{server.url}/api/sessions/{other}", headers={"x-session-id": held}),
        httpx.get(f"{server.url}/api/terms", headers={"x-session-id": held}, params={"session-id": other}),
        httpx.get(f"{server.url}/{held}"),
    ]
    assert [e.status_code for e in errors] == [404, 403, 400, 404]
    for error in errors:
        assert held not in error.text and other not in error.text, error.text


def test_no_location_carries_a_session_id_or_a_code_still_worth_one(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    """A create answered ``Location: /api/sessions/{id}``, and the launch's ``?code=`` stayed
    tradeable for its session id after the page had been served by the cookie (the URL sits in
    the history and in a proxy's log)."""
    onboard(server, canvas, user)
    created = post_token(server, canvas.jwt_token(user, custom_request="location"))
    assert created.status_code == 201, created.text
    sid = created.json()["sessionId"]
    assert sid not in created.headers.get("location", "")
    for landing in ("/", "/terms"):
        launched = launch(server, canvas, user)
        held = session_cookie(launched)
        location = launched.headers["location"]
        assert held not in location
        if landing == "/terms":
            location = location.replace("/?", "/terms?", 1)
        page = httpx.get(server.url + location, headers={"cookie": f"session={held}"})
        assert page.status_code == 200 and held not in page.text
        code = location.split("code=", 1)[1]
        traded = httpx.post(f"{server.url}/api/sessions/exchange", json={"code": code})
        refused(traded, 401, "invalid_exchange_code")
        assert held not in traded.text


def test_an_id_the_client_presents_is_never_adopted(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    """Strict session management: a planted, well-formed id stays unknown through a create and
    a launch; the service answers with an id of its own."""
    planted = b64url(secrets.token_bytes(32))
    created = httpx.post(
        server.url + "/api/sessions",
        json={"jwt_token": canvas.jwt_token(onboarded, custom_request="planted")},
        headers={"cookie": f"session={planted}", "x-session-id": planted},
        params={"session-id": planted},
    )
    assert created.status_code == 201, created.text
    assert created.json()["sessionId"] != planted
    assert session_cookie(created) == created.json()["sessionId"]
    with httpx.Client(base_url=server.url, headers={"cookie": f"session={planted}"}) as holding:
        relaunched = launch(server, canvas, onboarded, client=holding)
    assert session_cookie(relaunched) != planted
    assert_dead_everywhere(server, planted)


@pytest.fixture
def insecure(make_server: Callable[..., Server]) -> Server:
    return make_server(cookie_secure=False)


def test_plain_http_cookie_is_httponly_lax_and_not_secure(insecure: Server, user: CanvasUser) -> None:
    canvas = insecure.add_institution()
    header = next(
        h for h in launch(insecure, canvas, user).headers.get_list("set-cookie") if h.startswith("session=")
    )
    attributes = {part.strip().split("=")[0].lower(): part for part in header.split(";")[1:]}
    assert "httponly" in attributes
    assert "secure" not in attributes
    assert attributes["samesite"].strip().lower() == "samesite=lax"
    assert attributes["path"].strip() == "Path=/"


def _version(server: Server, session_id: str) -> str:
    return str(httpx.get(server.url + "/api/terms", headers={"x-session-id": session_id}).json()["version"])


# -- login CSRF -------------------------------------------------------------------------------

# What a browser sends when another site's page posts a form to us (the last two: a page that
# hides its origin with Referrer-Policy: no-referrer, and an older browser without Fetch
# Metadata).
CROSS_SITE = {
    "cross-site": {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
    "sibling subdomain": {"sec-fetch-site": "same-site", "origin": "https://evil.example.edu"},
    "origin null": {"origin": "null"},
    "origin only": {"origin": "https://evil.example"},
}


def _alive(server: Server, session_id: str) -> bool:
    read = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    return read.status_code == 200


@pytest.mark.parametrize("sent", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_another_site_cannot_sign_a_victim_in_with_its_own_jwt(
    server: Server, canvas: FakeCanvas, sent: dict[str, str]
) -> None:
    """Login CSRF: another site's form posted the attacker's fresh JWT to ``/api/sessions`` in
    the victim's browser, and the answer's Set-Cookie signed the victim in as the attacker (and
    ended the victim's own session)."""
    victim, attacker = CanvasUser(), CanvasUser(name="Mallory")
    victims = onboard(server, canvas, victim)
    onboard(server, canvas, attacker)
    token = canvas.jwt_token(attacker, custom_request="csrf")
    posted = httpx.post(
        server.url + "/api/sessions",
        data={"jwt_token": token},
        headers={"cookie": f"session={victims}", **sent},
    )
    refused(posted, 403, "cross_origin_request")
    assert not any(h.startswith("session=") for h in posted.headers.get_list("set-cookie"))
    assert _alive(server, victims)
    # The token was not spent: the attacker's own client (no browser headers) still uses it.
    assert post_token(server, token).status_code == 201


def test_our_own_pages_and_non_browser_clients_still_create_and_post_forms(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    held = onboard(server, canvas, user)
    own = {"sec-fetch-site": "same-origin", "origin": server.url}
    created = httpx.post(
        server.url + "/api/sessions",
        data={"jwt_token": canvas.jwt_token(user, custom_request="own")},
        headers=own,
    )
    assert created.status_code == 201, created.text
    host_only = {"origin": server.url}  # no Fetch Metadata: Origin must name our host
    sid = created.json()["sessionId"]
    accepted = httpx.post(
        f"{server.url}/api/terms/accept",
        json={"version": _version(server, sid)},
        headers={"x-session-id": sid, **host_only},
    )
    assert accepted.status_code == 204, accepted.text
    token = csrf_token_for(held)
    out = httpx.post(
        f"{server.url}/logout", data={"csrf_token": token}, headers={"cookie": f"session={held}", **own}
    )
    assert out.status_code == 303 and not _alive(server, held)


@pytest.mark.parametrize("sent", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_cross_site_posts_to_the_terms_and_logout_steps_are_refused_even_with_the_token(
    server: Server, canvas: FakeCanvas, sent: dict[str, str]
) -> None:
    """The steps after a launch are our own pages' (same-origin) or a client's; another site's
    post is refused before it can act, even carrying a valid token or the id itself."""
    person = CanvasUser()
    held = session_cookie(launch(server, canvas, person))
    cookie = {"cookie": f"session={held}"}
    token = csrf_token_for(held)
    version = _version(server, held)
    attempts = {
        "POST /terms": httpx.post(
            f"{server.url}/terms", data={"version": version, "csrf_token": token}, headers={**cookie, **sent}
        ),
        "POST /api/terms/accept": httpx.post(
            f"{server.url}/api/terms/accept",
            data={"version": version, "sessionId": held},
            headers=sent,
        ),
        "POST /logout": httpx.post(
            f"{server.url}/logout", data={"csrf_token": token}, headers={**cookie, **sent}
        ),
        "POST /api/sessions/logout-others": httpx.post(
            f"{server.url}/api/sessions/logout-others",
            data={"csrf_token": token},
            headers={**cookie, **sent},
        ),
    }
    for name, response in attempts.items():
        assert response.status_code == 403, name
        refused(response, 403, "cross_origin_request")
    assert _alive(server, held)
    terms = httpx.get(f"{server.url}/api/terms", headers={"x-session-id": held}).json()
    assert terms["accepted"] is False


# -- values PostgreSQL cannot store -----------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with postgres_database() as url:
        srv = start_server(tmp_path_factory.mktemp("security-pg"), database_url=url)
        try:
            yield srv
        finally:
            srv.stop()


def test_nul_characters_in_launches_and_tokens_are_refused_or_dropped_never_a_500(pg_server: Server) -> None:
    """PostgreSQL text and JSONB cannot hold U+0000, which a form (%00) or a JWT (\\u0000) can
    carry: such a value must never reach a query."""
    canvas, user = pg_server.add_institution(), CanvasUser()
    url = pg_server.url + "/api/lti"

    def post_launch(signer: FakeCanvas, person: CanvasUser, **overrides: Any) -> httpx.Response:
        body, headers = signer.signed_launch(url, person, **overrides)
        return httpx.post(url, content=body, headers=headers)

    refused(
        post_launch(FakeCanvas(canvas.consumer_key + "\x00", canvas.secret), user),
        401,
        "invalid_oauth_request",
    )
    refused(post_launch(canvas, CanvasUser(lti_user_id="\x00" + user.lti_user_id)), 400, "invalid_launch")
    named = post_launch(canvas, user, lis_person_name_full="Ada\x00 Lovelace", context_title="\x00")
    assert named.status_code == 303, named.text
    session_id = session_cookie(named)
    accept = httpx.post(
        pg_server.url + "/api/terms/accept",
        json={"version": _version(pg_server, session_id)},
        headers={"x-session-id": session_id},
    )
    assert accept.status_code == 204, accept.text

    stranger = CanvasUser(lti_user_id="\x00" + user.lti_user_id)
    refused(post_token(pg_server, canvas.jwt_token(stranger)), 401, "invalid_token_claims")
    created = post_token(pg_server, canvas.jwt_token(user, lis_person_name_full="\x00"))
    assert created.status_code == 201, created.text
    assert "\x00" not in created.text


# -- Host header trust ----------------------------------------------------------------------


def test_without_public_url_only_configured_hosts_are_answered(
    make_server: Callable[..., Server], user: CanvasUser
) -> None:
    """Without PUBLIC_URL the Host decides the URL a launch signature is checked against: a
    launch signed for a host we were never told about must not be verified against it."""
    server = make_server(allowed_hosts="lor.example.edu")
    canvas = server.add_institution()
    body, headers = canvas.signed_launch("http://attacker.example/api/lti", user)
    headers = {**headers, "Host": "attacker.example"}
    refused(httpx.post(server.url + "/api/lti", content=body, headers=headers), 400, "untrusted_host")
    for path in ("/", "/terms", "/api/sessions", "/api/lti/login", "/openapi.json"):
        refused(httpx.get(server.url + path, headers={"Host": "attacker.example"}), 400, "untrusted_host")
    # A lookalike of the allowed host, another port spelling, a userinfo trick: not it either.
    for host in ("lor.example.edu.attacker.example", "attacker.example#lor.example.edu", "a@lor.example.edu"):
        refused(httpx.get(server.url + "/", headers={"Host": host}), 400, "untrusted_host")

    body, headers = canvas.signed_launch("http://lor.example.edu/api/lti", user)
    headers = {**headers, "Host": "lor.example.edu"}
    assert httpx.post(server.url + "/api/lti", content=body, headers=headers).status_code == 303

    # Probes and /metrics build no URL: a load balancer probes by address.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path, headers={"Host": "10.1.2.3:8000"}).status_code == 200


def test_by_default_only_the_loopback_names_are_trusted(server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(server.url + "/openapi.json", headers={"Host": host}).status_code == 200, host
    foreign = httpx.get(server.url + "/openapi.json", headers={"Host": "lor.example.edu"})
    refused(foreign, 400, "untrusted_host")


def test_two_host_headers_are_refused(server: Server) -> None:
    """Which of two a proxy and we would each read is anyone's guess: neither is trusted."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example\r\n\r\n")
        head = conn.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 400"), head
    assert "untrusted_host" in head
    # HTTP/1.0 without a Host: the URL is built from our own listening address, nothing to trust.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /openapi.json HTTP/1.0\r\n\r\n")
        head = conn.recv(65536).decode("latin-1")
    assert head.split(" ", 2)[1] == "200", head[:200]


def test_with_public_url_the_host_header_is_not_consulted(
    make_server: Callable[..., Server], user: CanvasUser
) -> None:
    server = make_server(public_url="https://lor.example.edu")
    canvas = server.add_institution()
    body, headers = canvas.signed_launch("https://lor.example.edu/api/lti", user)
    headers = {**headers, "Host": "internal-name:8000"}  # what a proxy may forward
    assert httpx.post(server.url + "/api/lti", content=body, headers=headers).status_code == 303


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("lor.example.edu", ["lor.example.edu"], True),
        ("LOR.Example.EDU:8443", ["lor.example.edu"], True),
        ("lor.example.edu:8443", ["lor.example.edu:443"], False),
        ("lor.example.edu:443", ["lor.example.edu:443"], True),
        ("a.lor.example.edu", ["*.lor.example.edu"], True),
        ("lor.example.edu", ["*.lor.example.edu"], False),
        ("evil-lor.example.edu", ["*.lor.example.edu"], False),
        ("[::1]:8000", ["[::1]"], True),
        ("[::1", ["[::1]"], False),
        ("", ["lor.example.edu"], False),
        ("lor.example.edu/x", ["lor.example.edu"], False),
        ("lor.example.edu\\@x", ["lor.example.edu"], False),
    ],
)
def test_host_matching(host: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


def test_remembered_host_verdicts_are_the_same_verdicts_and_stay_bounded() -> None:
    """The middleware remembers each Host value's verdict; a client sending a new one every
    time (to grow the memory) finds it cleared, never larger than its bound."""
    from commons_session.http.hosts import _JUDGED_MAX, TrustedHostMiddleware

    allowed = ["lor.example.edu", "*.tools.example.edu"]
    middleware = TrustedHostMiddleware(lambda *a: None, allowed, None)  # type: ignore[arg-type]
    hosts = ["lor.example.edu", "evil.example.edu", "a.tools.example.edu", "lor.example.edu/x"]
    for _ in range(2):  # judged, then remembered: the same answers
        assert [middleware._allowed(h.encode()) for h in hosts] == [host_allowed(h, allowed) for h in hosts]
    for i in range(5 * _JUDGED_MAX):
        assert middleware._allowed(f"h{i}.example.edu".encode()) is False
        assert len(middleware.judged) <= _JUDGED_MAX


def test_a_protected_metrics_endpoint_wants_its_bearer_token(make_server: Callable[..., Server]) -> None:
    token = secrets.token_urlsafe(24)
    server = make_server(metrics_token=token)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
    ):
        response = httpx.get(server.url + "/metrics", headers=headers)
        refused(response, 401, "metrics_token_required")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "commons_session_" not in response.text
    shown = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert shown.status_code == 200
    assert "commons_session_http_requests_total" in shown.text
    assert token not in server.logs()


# -- docs/security.md names real tests --------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_named_in_docs_security_exists() -> None:
    """Each ``file::function[case]`` the evidence tables name is a test in that file (and the
    case one of its parameters), so the page cannot point at a test that was renamed away."""
    text = (ROOT / "docs" / "security.md").read_text("utf-8")
    named = re.findall(r"`(?:tests/)?(test_\w+\.py)::(test_\w+)(?:\[([^\]]+)\])?`", text)
    assert len(named) > 80, len(named)
    for file, function, case in named:
        path = ROOT / "tests" / file
        assert path.exists(), f"{file} does not exist"
        source = path.read_text("utf-8")
        assert re.search(rf"^def {function}\(", source, re.MULTILINE), f"{file}::{function} does not exist"
        if case:
            assert f'"{case}"' in source, f"{file}::{function}[{case}] names no case of that test"
