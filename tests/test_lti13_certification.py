"""The 1EdTech LTI 1.3 Core tool certification cases, replayed over real HTTP.

docs/lti13.md "Certification cases" lists every case with its source, our answer and the test
here. Each launch goes through the real OIDC login initiation (``GET /api/lti/login``) and the
real ``id_token`` form post, signed by ``tests/platform13.py`` with its RSA key, whose JWKS the
server fetches over HTTP.

- The known bad payloads (and the attacks the suite does not spell out) must get a 4xx: a
  problem with the check's ``code`` for a program, an HTML page with the same status and code
  for a browser; never a 5xx, and nothing written: no user row, no session, no used nonce (the
  same login's valid launch still works afterwards).
- The known good payloads must succeed and record the user as the payload says.

The message type is a parameter (``MESSAGE_TYPES``): each case is built for every message type
listed, except those marked as one type's own (``only``). A new message type needs its own
claims in ``base_claims``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from commons_session.domain.models import Identity, User

from .conftest import Server, session_cookie
from .platform13 import CLAIM, DL_SETTINGS, JwksServer, Platform, jwks_server, login, post_launch, register

RESOURCE_LINK = "LtiResourceLinkRequest"
DEEP_LINKING = "LtiDeepLinkingRequest"
#: Every message type the cases run for.
MESSAGE_TYPES = [RESOURCE_LINK, DEEP_LINKING]

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
INSTRUCTOR = LIS + "membership#Instructor"
LEARNER = LIS + "membership#Learner"
HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
#: The suite's source (docs/lti13.md cites it): the 1EdTech certification guide's cases.
IMS = "1EdTech"
OURS = "ours"


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as served:
        yield served


@pytest.fixture
def platform(server: Server, jwks: JwksServer) -> Platform:
    return register(server, jwks)


# -- building id_tokens -------------------------------------------------------------------------


def base_claims(platform: Platform, nonce: str, message_type: str, *, role: str = LEARNER) -> dict[str, Any]:
    """The certification suite's launch payload (its student "Carrie A Lowell", with the
    Names and Roles and Assignment and Grade service claims it sends), for this registration:
    no ``azp``, no ``tool_platform``, no ``lti11_legacy_user_id`` (not Canvas), so the user is
    known by ``sub``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": platform.issuer,
        "sub": f"sub-{secrets.token_hex(6)}",
        "aud": platform.client_id,
        "exp": now + 300,
        "iat": now,
        "nonce": nonce,
        "name": "Carrie A Lowell",
        "given_name": "Carrie",
        "family_name": "Lowell",
        "middle_name": "A",
        "email": "c.lowell@district1.com",
        "locale": "en-US",
        CLAIM + "target_link_uri": platform.target_link_uri,
        CLAIM + "deployment_id": platform.deployment_id,
        CLAIM + "message_type": message_type,
        CLAIM + "version": "1.3.0",
        CLAIM + "roles": [role],
        CLAIM + "context": {
            "id": "8893483",
            "label": "Biology 102",
            "title": "Bio Adventures",
            "type": [LIS + "course#CourseSection"],
        },
        "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice": {
            "context_memberships_url": "https://platform.example.edu/namesandroles?memberships=1879",
            "service_versions": ["2.0"],
        },
        "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint": {
            "scope": ["https://purl.imsglobal.org/spec/lti-ags/scope/score"],
            "lineitems": "https://platform.example.edu/assignmentsgrades/1879/lineitems",
        },
    }
    if message_type == RESOURCE_LINK:
        claims[CLAIM + "resource_link"] = {
            "id": "3622bed7314b4f9c8f0e533e158ff797",
            "title": "Introduction Assignment",
            "description": "This is the introduction assignment",
        }
    elif message_type == DEEP_LINKING:
        claims[DL_SETTINGS] = platform.deep_linking_settings("https://platform.example.edu/deep_links")
    else:
        raise AssertionError(f"add the claims of a {message_type} here")
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def compact(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, key: rsa.RSAPrivateKey) -> str:
    """An RS256 JWS over exactly these header and payload bytes (which PyJWT would not write:
    NaN, repeated keys, a header without kid)."""
    head = header if isinstance(header, bytes) else _json(header)
    body = payload if isinstance(payload, bytes) else _json(payload)
    signing_input = f"{_b64(head)}.{_b64(body)}".encode()
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(signing_input, key)
    return f"{signing_input.decode()}.{_b64(signature)}"


def signed(platform: Platform, claims: dict[str, Any], **header: Any) -> str:
    return compact(
        {"typ": "JWT", "alg": "RS256", "kid": platform.kid, **header}, claims, platform.private_key
    )


def _without(claims: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in names}


def _with(claims: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**claims, **{CLAIM + k[1:] if k.startswith("_") else k: v for k, v in changes.items()}}


def _alg_none(p: Platform, c: dict[str, Any]) -> str:
    return f"{_b64(_json({'alg': 'none', 'kid': p.kid}))}.{_b64(_json(c))}."


def _hs256_with_public_key(p: Platform, c: dict[str, Any]) -> str:
    """Key confusion: HMAC keyed with the platform's public key, which anyone can fetch."""
    secret = p.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_b64(_json({'alg': 'HS256', 'kid': p.kid}))}.{_b64(_json(c))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _tampered(p: Platform, c: dict[str, Any]) -> str:
    """Signed, then the payload swapped for one naming another user."""
    head, _, sig = signed(p, c).split(".")
    return f"{head}.{_b64(_json({**c, 'sub': 'someone-else'}))}.{sig}"


def _raw_time(name: str, raw: str) -> Callable[[Platform, dict[str, Any]], str]:
    """A time claim spelled as JSON that PyJWT would never write (NaN, Infinity, 1e9 ...)."""

    def make(p: Platform, c: dict[str, Any]) -> str:
        marker = "__TIME__"
        body = _json({**c, name: marker}).replace(f'"{marker}"'.encode(), raw.encode())
        return compact({"alg": "RS256", "kid": p.kid}, body, p.private_key)

    return make


def _duplicate_sub(p: Platform, c: dict[str, Any]) -> str:
    body = _json(c)[:-1] + b',"sub":"someone-else"}'
    return compact({"alg": "RS256", "kid": p.kid}, body, p.private_key)


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# -- the known bad payloads -----------------------------------------------------------------------

#: Makes the id_token from the platform and the base claims (for the login's nonce).
Make = Callable[[Platform, dict[str, Any]], str]


@dataclass(frozen=True)
class Bad:
    name: str
    source: str
    code: str
    make: Make
    status: int = 401
    #: The message types the case applies to (None: all of them).
    only: tuple[str, ...] | None = None


def _claims(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Make:
    return lambda p, c: signed(p, change(c))


NOW = int(time.time())
BAD: list[Bad] = [
    # The 1EdTech guide's "known bad" payloads, in its order.
    Bad("No KID Sent in JWT header", IMS, "unknown_kid",
        lambda p, c: compact({"alg": "RS256", "badtestonly": "12345"}, c, p.private_key)),
    Bad("Incorrect KID in JWT header", IMS, "unknown_kid", lambda p, c: signed(p, c, kid="imstester_66067")),
    Bad("Wrong LTI Version", IMS, "wrong_version", _claims(lambda c: _with(c, _version="11.3"))),
    Bad("No LTI Version", IMS, "wrong_version", _claims(lambda c: _without(c, CLAIM + "version"))),
    Bad("Invalid LTI message", IMS, "wrong_issuer", _claims(lambda c: {"name": "badltilaunch"})),
    Bad("Invalid LTI message (not a whole JWT)", IMS, "malformed_id_token",
        lambda p, c: signed(p, {"name": "badltilaunch"}).rsplit(".", 1)[0]),
    Bad("Missing LTI Claims (message_type, version, roles)", IMS, "wrong_message_type",
        _claims(lambda c: _without(c, CLAIM + "message_type", CLAIM + "version", CLAIM + "roles"))),
    Bad("Missing LTI Claims (aud, iss, sub, deployment_id, roles)", IMS, "wrong_issuer",
        _claims(lambda c: _without(c, "aud", "iss", "sub", CLAIM + "deployment_id", CLAIM + "roles"))),
    Bad("Timestamps Incorrect (iat 11111, exp 22222)", IMS, "id_token_expired",
        _claims(lambda c: _with(c, iat=11111, exp=22222))),
    Bad("message_type Claim Missing", IMS, "wrong_message_type",
        _claims(lambda c: _without(c, CLAIM + "message_type"))),
    Bad("role Claim Missing", IMS, "missing_roles", _claims(lambda c: _without(c, CLAIM + "roles")),
        only=(RESOURCE_LINK,)),
    Bad("deployment_id Claim Missing", IMS, "unknown_deployment",
        _claims(lambda c: _without(c, CLAIM + "deployment_id"))),
    Bad("resource_link_id Claim Missing", IMS, "missing_resource_link",
        _claims(lambda c: _without(c, CLAIM + "resource_link")), only=(RESOURCE_LINK,)),
    Bad("user Claim Missing (sub empty)", IMS, "anonymous_launch", _claims(lambda c: _with(c, sub=""))),
    Bad("user Claim Missing (no sub)", IMS, "anonymous_launch", _claims(lambda c: _without(c, "sub"))),
    # What else the core spec and the Security Framework require, and what an attacker tries.
    Bad("signed with another key under the right kid", OURS, "invalid_id_token_signature",
        lambda p, c: compact({"alg": "RS256", "kid": p.kid}, c, _other_key())),
    Bad("payload changed after signing", OURS, "invalid_id_token_signature", _tampered),
    Bad("alg none, no signature", OURS, "wrong_algorithm", _alg_none),
    Bad("HS256 keyed with the platform's public key", OURS, "wrong_algorithm", _hs256_with_public_key),
    Bad("RS512 (not the algorithm LTI uses)", OURS, "wrong_algorithm",
        lambda p, c: jwt.encode(c, p.private_key, algorithm="RS512", headers={"kid": p.kid})),
    Bad("header not JSON", OURS, "malformed_id_token",
        lambda p, c: compact(b"{not json", c, p.private_key)),
    Bad("payload a JSON array", OURS, "malformed_id_token",
        lambda p, c: compact({"alg": "RS256", "kid": p.kid}, b"[1,2]", p.private_key)),
    Bad("payload with a repeated key (two subs)", OURS, "malformed_id_token", _duplicate_sub),
    Bad("longer than JWT_MAX_BYTES", OURS, "malformed_id_token",
        _claims(lambda c: _with(c, padding="x" * 20_000))),
    Bad("wrong iss", OURS, "wrong_issuer", _claims(lambda c: _with(c, iss="https://evil.example.com"))),
    Bad("wrong aud", OURS, "wrong_audience", _claims(lambda c: _with(c, aud="someone-else"))),
    Bad("aud a number", OURS, "wrong_audience", _claims(lambda c: _with(c, aud=10000000000001))),
    Bad("aud list without us", OURS, "wrong_audience",
        _claims(lambda c: _with(c, aud=["someone-else", "other"], azp="someone-else"))),
    Bad("aud list without azp", OURS, "wrong_azp",
        _claims(lambda c: _with(c, aud=[c["aud"], "other"]))),
    Bad("aud list with another azp", OURS, "wrong_azp",
        _claims(lambda c: _with(c, aud=[c["aud"], "other"], azp="other"))),
    Bad("single aud with another azp", OURS, "wrong_azp", _claims(lambda c: _with(c, azp="other"))),
    Bad("expired", OURS, "id_token_expired",
        _claims(lambda c: _with(c, iat=NOW - 7200, exp=int(time.time()) - 3600))),
    Bad("exp missing", OURS, "malformed_id_token", _claims(lambda c: _without(c, "exp"))),
    Bad("iat missing", OURS, "malformed_id_token", _claims(lambda c: _without(c, "iat"))),
    Bad("iat in the future", OURS, "id_token_from_future",
        _claims(lambda c: _with(c, iat=int(time.time()) + 3600, exp=int(time.time()) + 7200))),
    Bad("nbf in the future", OURS, "id_token_from_future",
        _claims(lambda c: _with(c, nbf=int(time.time()) + 3600))),
    Bad("exp as a string", OURS, "malformed_id_token", _claims(lambda c: _with(c, exp=str(c["exp"])))),
    Bad("iat as a string", OURS, "malformed_id_token", _claims(lambda c: _with(c, iat=str(c["iat"])))),
    Bad("exp NaN", OURS, "malformed_id_token", _raw_time("exp", "NaN")),
    Bad("exp Infinity", OURS, "malformed_id_token", _raw_time("exp", "Infinity")),
    Bad("iat -Infinity", OURS, "malformed_id_token", _raw_time("iat", "-Infinity")),
    Bad("exp a fraction", OURS, "malformed_id_token", _raw_time("exp", f"{int(time.time()) + 300}.5")),
    Bad("exp true", OURS, "malformed_id_token", _raw_time("exp", "true")),
    Bad("iat negative", OURS, "malformed_id_token", _raw_time("iat", "-1")),
    Bad("nonce missing", OURS, "nonce_mismatch", _claims(lambda c: _without(c, "nonce"))),
    Bad("nonce of another login", OURS, "nonce_mismatch",
        _claims(lambda c: _with(c, nonce=secrets.token_urlsafe(32)))),
    Bad("nonce a number", OURS, "nonce_mismatch", _claims(lambda c: _with(c, nonce=42))),
    Bad("deployment_id not registered", OURS, "unknown_deployment",
        _claims(lambda c: _with(c, _deployment_id="2:unregistered"))),
    Bad("deployment_id a list holding the registered one", OURS, "unknown_deployment",
        _claims(lambda c: _with(c, _deployment_id=[c[CLAIM + "deployment_id"]]))),
    Bad("message_type unknown", OURS, "wrong_message_type",
        _claims(lambda c: _with(c, _message_type="LtiFooRequest"))),
    Bad("message_type an LTI 1.1 one", OURS, "wrong_message_type",
        _claims(lambda c: _with(c, _message_type="basic-lti-launch-request"))),
    Bad("version 1.3 (not 1.3.0)", OURS, "wrong_version", _claims(lambda c: _with(c, _version="1.3"))),
    Bad("sub a number", OURS, "anonymous_launch", _claims(lambda c: _with(c, sub=40899))),
    Bad("sub longer than 255", OURS, "anonymous_launch", _claims(lambda c: _with(c, sub="s" * 256))),
    Bad("target_link_uri missing", OURS, "target_link_uri_mismatch",
        _claims(lambda c: _without(c, CLAIM + "target_link_uri")), only=(RESOURCE_LINK,)),
    Bad("target_link_uri another tool's", OURS, "target_link_uri_mismatch",
        _claims(lambda c: _with(c, _target_link_uri="https://evil.example.com/api/lti/launch")),
        only=(RESOURCE_LINK,)),
    Bad("target_link_uri with a query added", OURS, "target_link_uri_mismatch",
        _claims(lambda c: _with(c, _target_link_uri=c[CLAIM + "target_link_uri"] + "?x=1")),
        only=(RESOURCE_LINK,)),
    Bad("roles a string", OURS, "missing_roles", _claims(lambda c: _with(c, _roles="Instructor")),
        only=(RESOURCE_LINK,)),
    Bad("roles holding a non-string", OURS, "missing_roles",
        _claims(lambda c: _with(c, _roles=[INSTRUCTOR, {"role": "Administrator"}])), only=(RESOURCE_LINK,)),
    Bad("resource_link without id", OURS, "missing_resource_link",
        _claims(lambda c: _with(c, _resource_link={"title": "Introduction Assignment"})),
        only=(RESOURCE_LINK,)),
    Bad("resource_link id empty", OURS, "missing_resource_link",
        _claims(lambda c: _with(c, _resource_link={"id": ""})), only=(RESOURCE_LINK,)),
    Bad("resource_link id a number", OURS, "missing_resource_link",
        _claims(lambda c: _with(c, _resource_link={"id": 3622})), only=(RESOURCE_LINK,)),
    Bad("resource_link id longer than 255", OURS, "missing_resource_link",
        _claims(lambda c: _with(c, _resource_link={"id": "r" * 256})), only=(RESOURCE_LINK,)),
    Bad("resource_link a string", OURS, "missing_resource_link",
        _claims(lambda c: _with(c, _resource_link="3622bed7314b4f9c8f0e533e158ff797")),
        only=(RESOURCE_LINK,)),
    Bad("deep_linking_settings missing", OURS, "invalid_deep_linking_settings",
        _claims(lambda c: _without(c, DL_SETTINGS)), only=(DEEP_LINKING,)),
    Bad("deep_linking_settings a string", OURS, "invalid_deep_linking_settings",
        _claims(lambda c: {**c, DL_SETTINGS: "https://platform.example.edu/dl"}), only=(DEEP_LINKING,)),
    Bad("deep_link_return_url missing", OURS, "invalid_deep_linking_settings",
        _claims(lambda c: {**c, DL_SETTINGS: _without(c[DL_SETTINGS], "deep_link_return_url")}),
        only=(DEEP_LINKING,)),
    Bad("deep_link_return_url plain http", OURS, "invalid_deep_linking_settings",
        _claims(lambda c: {**c, DL_SETTINGS: {**c[DL_SETTINGS], "deep_link_return_url": "http://platform.example.edu/dl"}}),
        only=(DEEP_LINKING,)),
    Bad("accept_types not a list", OURS, "invalid_deep_linking_settings",
        _claims(lambda c: {**c, DL_SETTINGS: {**c[DL_SETTINGS], "accept_types": "ltiResourceLink"}}),
        only=(DEEP_LINKING,)),
]  # fmt: skip


def _cases(cases: list[Any]) -> list[Any]:
    return [
        pytest.param(case, message_type, id=f"{message_type}-{case.name}")
        for case, message_type in itertools.product(cases, MESSAGE_TYPES)
        if case.only is None or message_type in case.only
    ]


def _institution_id(server: Server, platform: Platform) -> int:
    found = server.run(server.stores.records.get_institution(platform.consumer_key))
    assert found is not None
    return int(found.id)


def _users(server: Server, platform: Platform) -> int:
    """Every user row of the platform's institution, whoever the token named."""
    with sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT count(*) FROM users WHERE institution_id = ?", (_institution_id(server, platform),)
        ).fetchone()
    return int(row[0])


def _sessions(server: Server, platform: Platform) -> int:
    return len(server.run(server.stores.sessions.list_for_institution(_institution_id(server, platform))))


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.json()
    assert not any(h.startswith("session=") for h in response.headers.get_list("set-cookie"))


def assert_refused_page(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f"<code>{code}</code>" in response.text
    assert "Traceback" not in response.text
    assert not any(h.startswith("session=") for h in response.headers.get_list("set-cookie"))


def assert_landed(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return session_cookie(response)


@pytest.mark.parametrize(("case", "message_type"), _cases(BAD))
def test_known_bad_payload_is_refused_for_programs_and_browsers_and_writes_nothing(
    server: Server, platform: Platform, case: Bad, message_type: str
) -> None:
    started = login(server, platform)
    claims = base_claims(platform, started.nonce, message_type)
    token = case.make(platform, claims)

    assert_refused(post_launch(server, token, started.state, started.binding), case.status, case.code)
    assert_refused_page(
        post_launch(server, token, started.state, started.binding, accept=HTML), case.status, case.code
    )

    assert _users(server, platform) == 0
    assert _sessions(server, platform) == 0
    # Nothing was used up: the same login's valid launch still works.
    assert_landed(post_launch(server, signed(platform, claims), started.state, started.binding))
    assert _users(server, platform) == 1


# -- the flows around the id_token ----------------------------------------------------------------


@pytest.mark.parametrize("message_type", MESSAGE_TYPES)
def test_a_reused_nonce_is_refused_whichever_login_it_comes_with(
    server: Server, platform: Platform, message_type: str
) -> None:
    started = login(server, platform)
    claims = base_claims(platform, started.nonce, message_type)
    token = signed(platform, claims)
    assert_landed(post_launch(server, token, started.state, started.binding))

    # The same launch again (same id_token and state): the nonce is used.
    assert_refused(post_launch(server, token, started.state, started.binding), 401, "nonce_replayed")
    assert_refused_page(
        post_launch(server, token, started.state, started.binding, accept=HTML), 401, "nonce_replayed"
    )
    # The used nonce with a fresh login: it is not the nonce that login was sent.
    again = login(server, platform)
    assert_refused(post_launch(server, token, again.state, again.binding), 401, "nonce_mismatch")
    assert _users(server, platform) == 1
    assert _sessions(server, platform) == 1
    user = _user(server, platform, "", claims["sub"])
    assert server.run(server.stores.records.count_launches(user.id)) == 1


def _flip(text: str) -> str:
    last = text[-1]
    return text[:-1] + ("A" if last != "A" else "B")


@pytest.mark.parametrize("message_type", MESSAGE_TYPES)
@pytest.mark.parametrize("which", ["unknown", "tampered", "another-browsers"])
def test_a_state_this_browser_was_not_given_is_refused(
    server: Server, platform: Platform, message_type: str, which: str
) -> None:
    started = login(server, platform)
    other = login(server, platform)  # another browser's login, with its own binding
    token = signed(platform, base_claims(platform, started.nonce, message_type))
    state, binding = {
        "unknown": (secrets.token_urlsafe(32), started.binding),
        "tampered": (_flip(started.state), started.binding),
        "another-browsers": (started.state, other.binding),
    }[which]

    assert_refused(post_launch(server, token, state, binding), 401, "state_mismatch")
    assert_refused_page(post_launch(server, token, state, binding, accept=HTML), 401, "state_mismatch")
    assert _users(server, platform) == 0 and _sessions(server, platform) == 0
    assert_landed(post_launch(server, token, started.state, started.binding))


@pytest.mark.parametrize("missing", ["id_token", "state"])
def test_a_launch_without_id_token_or_state_is_a_bad_request(
    server: Server, platform: Platform, missing: str
) -> None:
    started = login(server, platform)
    token = signed(platform, base_claims(platform, started.nonce, RESOURCE_LINK))
    fields = {k: v for k, v in {"id_token": token, "state": started.state}.items() if k != missing}
    cookie = {"cookie": f"lti1p3_state={started.binding}"}
    as_api = httpx.post(
        server.url + "/api/lti/launch", data=fields, headers={**cookie, "accept": "application/json"}
    )
    assert_refused(as_api, 400, "bad_request")
    as_page = httpx.post(server.url + "/api/lti/launch", data=fields, headers={**cookie, "accept": HTML})
    assert_refused_page(as_page, 400, "bad_request")
    assert _users(server, platform) == 0 and _sessions(server, platform) == 0


@pytest.mark.parametrize("message_type", MESSAGE_TYPES)
def test_a_launch_without_the_state_cookie_is_refused(
    server: Server, platform: Platform, message_type: str
) -> None:
    started = login(server, platform)
    token = signed(platform, base_claims(platform, started.nonce, message_type))
    assert_refused(post_launch(server, token, started.state, None), 401, "state_cookie_missing")
    assert _users(server, platform) == 0 and _sessions(server, platform) == 0


def test_an_unreachable_jwks_is_a_503_page_for_a_browser(server: Server, jwks: JwksServer) -> None:
    platform = register(server, jwks)
    started = login(server, platform)
    token = signed(platform, base_claims(platform, started.nonce, RESOURCE_LINK))
    jwks.documents.pop(platform.path)
    page = post_launch(server, token, started.state, started.binding, accept=HTML)
    assert_refused_page(page, 503, "jwks_unavailable")
    assert page.headers["retry-after"]
    assert _users(server, platform) == 0


# -- the known good payloads ----------------------------------------------------------------------

NAMES = ("name", "given_name", "family_name", "middle_name")


@dataclass(frozen=True)
class Good:
    name: str
    source: str
    #: Changes the base claims (built with ``role``).
    change: Callable[[dict[str, Any]], dict[str, Any]]
    #: What the session says: its roles, full name, admin flag; and the stored e-mail.
    roles: list[str]
    full_name: str | None = "Carrie A Lowell"
    email: str | None = "c.lowell@district1.com"
    is_admin: bool = False
    role: str = LEARNER
    only: tuple[str, ...] | None = None
    #: The LTI 1.1 user id it is recorded under (None: its ``sub``).
    user_id: str | None = None
    #: The tool_consumer_instance_guid it is recorded under.
    guid: str = ""


def _same(c: dict[str, Any]) -> dict[str, Any]:
    return c


def _roles(*roles: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda c: _with(c, _roles=list(roles))


def _canvas(c: dict[str, Any]) -> dict[str, Any]:
    """What Canvas adds: azp, its platform, its LTI 1.1 user id, custom claims."""
    return _with(
        c,
        azp=c["aud"],
        _tool_platform={
            "guid": "canvas-guid:canvas-lms",
            "name": "Example University",
            "product_family_code": "canvas",
        },
        _lti11_legacy_user_id="legacy-40899",
        _custom={"canvas_user_id": "4242"},
    )


STAFF, OTHER = LIS + "institution/person#Staff", LIS + "institution/person#Other"
STUDENT, MENTOR = LIS + "institution/person#Student", LIS + "institution/person#Mentor"
GOOD: list[Good] = [
    # The 1EdTech guide's valid instructor launches ...
    Good("Launch LTI 1.3 Message as Instructor", IMS, _same, ["Instructor"], role=INSTRUCTOR),
    Good("Launch Instructor with Multiple Role Values", IMS, _roles(INSTRUCTOR, STAFF, OTHER),
         ["Instructor"]),
    Good("Launch Instructor with Short Role Value", IMS, _roles("Instructor"), ["Instructor"]),
    Good("Launch Instructor with Unknown Role", IMS, _roles(LIS + "unknown/unknown#Helper"), ["Helper"]),
    Good("Launch Instructor With No Role", IMS, _roles(""), [], role=INSTRUCTOR),
    Good("Launch Instructor Only Email", IMS, lambda c: _without(c, *NAMES), ["Instructor"], full_name=None,
         role=INSTRUCTOR),
    Good("Launch Instructor Only Names", IMS, lambda c: _without(c, "email"), ["Instructor"], email=None,
         role=INSTRUCTOR),
    Good("Launch Instructor No PII", IMS, lambda c: _without(c, *NAMES, "email"), ["Instructor"],
         full_name=None, email=None, role=INSTRUCTOR),
    Good("Launch Instructor With Email No Context", IMS, lambda c: _without(c, CLAIM + "context"),
         ["Instructor"], role=INSTRUCTOR),
    # ... and its valid student launches.
    Good("Launch LTI 1.3 Message as Student", IMS, _same, ["Learner"]),
    Good("Launch Student with Multiple Role Values", IMS, _roles(LEARNER, STUDENT, MENTOR), ["Learner"]),
    Good("Launch Student with Short Role Value", IMS, _roles("Learner"), ["Learner"]),
    Good("Launch Student with Unknown Role", IMS, _roles(LEARNER, LIS + "uknownrole/unknown#Unknown"),
         ["Learner"]),
    Good("Launch Student With No Role", IMS, _roles(""), []),
    Good("Launch Student Only Email", IMS, lambda c: _without(c, *NAMES), ["Learner"], full_name=None),
    Good("Launch Student Only Names", IMS, lambda c: _without(c, "email"), ["Learner"], email=None),
    Good("Launch Student No PII", IMS, lambda c: _without(c, *NAMES, "email"), ["Learner"], full_name=None,
         email=None),
    Good("Launch Student With Email No Context", IMS, lambda c: _without(c, CLAIM + "context"), ["Learner"]),
    Good("Launch Student Only Resource Link (no PII, no services)", IMS,
         lambda c: _without(c, *NAMES, "email", "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice",
                            "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"),
         ["Learner"], full_name=None, email=None),
    # What Canvas and other platforms send besides.
    Good("Canvas-shaped: lti11_legacy_user_id, tool_platform, azp", OURS, _canvas, ["Instructor"],
         role=INSTRUCTOR, user_id="legacy-40899", guid="canvas-guid:canvas-lms"),
    Good("institution Administrator", OURS, _roles(LIS + "institution/person#Administrator", INSTRUCTOR),
         ["Instructor"], is_admin=True),
    Good("system SysAdmin, no context role", OURS, _roles(LIS + "system/person#SysAdmin"), ["SysAdmin"],
         is_admin=True),
    Good("roles an empty array", OURS, _roles(), []),
    Good("a role holding a comma is dropped, not split", OURS,
         _roles(INSTRUCTOR, "http://example.com/role#Helper,Administrator"), ["Instructor"]),
    Good("aud a list with our azp", OURS, lambda c: _with(c, aud=[c["aud"], "other-tool"], azp=c["aud"]),
         ["Learner"]),
    Good("aud a one-element list, no azp", OURS, lambda c: _with(c, aud=[c["aud"]]), ["Learner"]),
    Good("unknown extra claims", OURS,
         lambda c: _with(c, **{"https://example.com/claim/x": {"deep": [1, {"a": None}]}, "acr": "0",
                               "_unknown_lti_claim": ["x"], "_custom": {"n": 1, "o": {"p": True}}}),
         ["Learner"]),
    Good("no name or e-mail, only given and family names", OURS,
         lambda c: _without(c, "name", "email", "middle_name"), ["Learner"], full_name="Carrie Lowell",
         email=None),
    Good("iat a minute ahead (within the leeway), nbf now", OURS,
         lambda c: _with(c, iat=int(time.time()) + 30, nbf=int(time.time())), ["Learner"]),
    Good("exp just passed (within the leeway)", OURS, lambda c: _with(c, exp=int(time.time()) - 5),
         ["Learner"]),
]  # fmt: skip


def _user(server: Server, platform: Platform, guid: str, user_id: str) -> User:
    found = server.run(
        server.stores.records.find_user(Identity(_institution_id(server, platform), guid, user_id))
    )
    assert isinstance(found, User), f"no user {user_id!r}"
    return found


@pytest.mark.parametrize(("case", "message_type"), _cases(GOOD))
def test_known_good_payload_launches_and_records_the_user_as_sent(
    server: Server, platform: Platform, case: Good, message_type: str
) -> None:
    started = login(server, platform)
    claims = case.change(base_claims(platform, started.nonce, message_type, role=case.role))

    session_id = assert_landed(post_launch(server, signed(platform, claims), started.state, started.binding))

    contents = httpx.get(
        f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id}
    ).json()
    assert contents["roles"] == case.roles
    assert contents["userFullName"] == case.full_name
    assert contents["isAdmin"] is case.is_admin
    user = _user(server, platform, case.guid, case.user_id or claims["sub"])
    assert contents["userId"] == user.id
    assert user.profile.email == case.email
    assert _users(server, platform) == 1
    assert _sessions(server, platform) == 1


# -- the list in docs/lti13.md is this one --------------------------------------------------------


def test_docs_certification_table_lists_exactly_these_cases_and_answers() -> None:
    """docs/lti13.md "Certification cases" has one row per case here, with the answer asserted
    here, so the page cannot drift from the tests."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "lti13.md").read_text("utf-8")
    section = text.split("## Certification cases", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(bad|good)\[([^\]]+)\]`", section))
    named.discard(("bad", "X"))  # the legend's
    named.discard(("good", "X"))
    assert named == {("bad", c.name) for c in BAD} | {("good", c.name) for c in GOOD}
    for bad in BAD:
        assert f"| {bad.status} `{bad.code}` | `bad[{bad.name}]` |" in section, bad.name
    for good in GOOD:
        row = next(line for line in section.splitlines() if f"`good[{good.name}]`" in line)
        assert "| 303;" in row and ("roles " + (", ".join(good.roles) or "none")) in row, row
