"""Tokens for downstream services (issue 13): a session is exchanged for a short-lived RS256 JWT
that a service behind us verifies against our JWKS, without calling back. Verified here with
PyJWT's own ``PyJWKClient`` over HTTP, as docs/client.md shows a service doing it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import httpx
import jwt
import pytest

from commons_session.client import Client, CommonsError
from commons_session.domain.ids import handle_for, hash_id

from .canvas import CanvasUser
from .conftest import Server, create_session, onboard

SEARCH, CATALOG = "https://search.internal", "https://catalog.internal"


@pytest.fixture(scope="module")
def issuing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from .conftest import start_server

    server = start_server(tmp_path_factory.mktemp("downstream"), downstream_audiences=f"{SEARCH},{CATALOG}")
    yield server
    server.stop()


def _session(server: Server) -> str:
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    return create_session(server, canvas, user)


def _verify(server: Server, token: str, audience: str) -> dict[str, object]:
    keys = jwt.PyJWKClient(server.url + "/api/lti/jwks")
    key = keys.get_signing_key_from_jwt(token)
    claims: dict[str, object] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, issuer=server.url,
        options={"require": ["exp", "iat", "sub", "sid", "aud", "iss"]},
    )  # fmt: skip
    return claims


def test_a_session_becomes_a_short_lived_token_a_service_verifies_with_our_jwks(issuing: Server) -> None:
    sid = _session(issuing)
    with Client(issuing.url) as client:
        token = client.downstream_token(sid, SEARCH)
        contents = client.read(sid)
    claims = _verify(issuing, token, SEARCH)
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["sub"] == contents.user_id
    assert claims["sid"] == handle_for(hash_id(sid))
    for key in ("userFullName", "roles", "isAdmin", "accountName", "canvasUserId", "locale", "expires"):
        assert key in claims, key
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert sid.encode() not in payload and sid not in token  # the id is a credential: never in it
    # For one service only: another refuses it.
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(issuing, token, CATALOG)


def test_only_configured_services_and_only_live_sessions_get_one(
    issuing: Server, server: Server, make_server: Callable[..., Server]
) -> None:
    sid = _session(issuing)
    url = issuing.url + "/api/sessions/token"
    headers = {"x-session-id": sid}
    unknown = httpx.post(url, json={"audience": "https://evil.example"}, headers=headers)
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_audience"
    assert httpx.post(url, json={}, headers=headers).json()["code"] == "bad_request"
    assert httpx.post(url, json={"audience": ["x"]}, headers=headers).json()["code"] == "bad_request"
    form = httpx.post(url, data={"audience": SEARCH}, headers=headers)
    assert form.status_code == 415
    cross = httpx.post(url, json={"audience": SEARCH}, headers={**headers, "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and cross.json()["code"] == "cross_origin_request"
    assert httpx.post(url, json={"audience": SEARCH}).json()["code"] == "session_required"
    # A revoked session stops getting tokens (a service that refreshes every few minutes notices).
    assert httpx.get(issuing.url + "/api/sessions/logout", headers=headers).status_code == 204
    ended = httpx.post(url, json={"audience": SEARCH}, headers=headers)
    assert ended.status_code == 401 and ended.json()["code"] == "invalid_session"
    with Client(issuing.url) as client, pytest.raises(CommonsError) as refused:
        client.downstream_token(sid, SEARCH)
    assert refused.value.code == "invalid_session"
    # Without any configured service there is nothing to ask for.
    other = _session(server)
    none = httpx.post(
        server.url + "/api/sessions/token", json={"audience": SEARCH}, headers={"x-session-id": other}
    )
    assert none.status_code == 400 and "none is configured" in none.json()["detail"]


def test_a_token_never_outlives_its_session(make_server: Callable[..., Server]) -> None:
    short = make_server(downstream_audiences=SEARCH, absolute_timeout=90)
    sid = _session(short)
    answer = httpx.post(
        short.url + "/api/sessions/token", json={"audience": SEARCH}, headers={"x-session-id": sid}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["expiresIn"] <= 90
    claims = _verify(short, answer.json()["token"], SEARCH)
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] <= 90
    assert json.loads(json.dumps(claims))  # plain JSON throughout
