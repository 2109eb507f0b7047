"""POST /api/sessions: a Canvas JWT becomes a session, over real HTTP against a real SQLite file.

Every hostile token below is signed for an onboarded user (launched, terms accepted), so the
only reason left to refuse it is the flaw under test: a regression answers 201 and turns it red.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from commons_session.domain.models import Identity

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, accept_terms, launch, onboard, session_cookie

# An RSA public key: the secret a key-confusion attack hopes the server will HMAC with.
PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArBlQJ83m9/WEx02LdaZj
tM3wpTaljtcd5i8fIak8JKRi9cRsdwleG5s3xSjlpqxJXTn1FTvxj/FV63iOoh+U
czWt7Hp/6wTCYatMWoKJCpD6zUjKDxNZgbIv9JLhjQ08qBmZGwmTXvWA+5scpCmH
jVSNQtrdLGV89XXCfSLP40I2XRQhDNPTFu8r4R0L74or5AtBWYT5mjoe7/Tv093c
cK1VVsU8z60krlZHBEYqJmCFqDS7gTFbR73CPKU6XWlku1eoVw5kG7XvgSygH9n+
lUxPCUTxUBFcKhI4VYLn8BT79WUhK2jlnI3LKTNnlAE7IitCojc4QOxy1TZvZ8u4
+QIDAQAB
-----END PUBLIC KEY-----
"""

COMMONS_KEYS = {
    "sid",
    "expires",
    "userId",
    "prefersHighContrast",
    "locale",
    "userFullName",
    "accountName",
    "accountId",
    "canvasUserId",
    "canvasApiDomain",
    "roles",
    "isAdmin",
    "canSharePublic",
    "canShowPublic",
    "showCuratedResourcesFirst",
    "showFederalStandards",
    "showStateStandards",
    "stateStandard",
    "isAccountCurator",
    "userAvatarUrl",
}


# -- helpers ----------------------------------------------------------------------------------


def post_token(server: Server, token: Any) -> httpx.Response:
    return httpx.post(server.url + "/api/sessions", json={"jwt_token": token})


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


def cookie_attributes(response: httpx.Response) -> dict[str, str]:
    """The attributes of the ``session`` Set-Cookie, names lower-cased."""
    for header in response.headers.get_list("set-cookie"):
        first, *attrs = (part.strip() for part in header.split(";"))
        if first.partition("=")[0] == "session":
            found = {}
            for attr in attrs:
                name, _, value = attr.partition("=")
                found[name.lower()] = value
            return found
    raise AssertionError(f"no session cookie in {response.headers}")


def claims(canvas: FakeCanvas, user: CanvasUser, **overrides: Any) -> dict[str, Any]:
    """The payload Canvas' jwt_token endpoint signs."""
    payload = canvas.launch_params(user)
    payload["consumer_key"] = canvas.consumer_key
    payload["iat"] = int(time.time())
    payload.update(overrides)
    return payload


def sign(payload: dict[str, Any] | bytes, secret: str, **headers: Any) -> str:
    """HS256 with PyJWT, quiet about short secrets as Canvas' are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        if isinstance(payload, bytes):
            return jwt.api_jws.encode(payload, secret, algorithm="HS256", headers={"typ": "JWT", **headers})
        return jwt.encode(payload, secret, algorithm="HS256", headers={"typ": "JWT", **headers})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hmac_forged(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A compact JWS whose header PyJWT would refuse to write (e.g. ``RS256`` over an HMAC)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def db_connection(server: Server) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True)


def sessions_of(server: Server, canvas: FakeCanvas, user: CanvasUser) -> int:
    """How many sessions the user has in the server's database."""
    institution = server.run(server.stores.records.get_institution(canvas.consumer_key))
    found = server.run(
        server.stores.records.find_user(Identity(institution.id, canvas.guid, user.lti_user_id))
    )
    if found is None:
        return 0
    with db_connection(server) as conn:
        return int(conn.execute("SELECT count(*) FROM sessions WHERE user_id = ?", (found.id,)).fetchone()[0])


@pytest.fixture
def onboarded(server: Server, canvas: FakeCanvas, user: CanvasUser) -> CanvasUser:
    """The user, launched once and with the terms accepted: every JWT of theirs should work."""
    onboard(server, canvas, user)
    return user


# -- success ----------------------------------------------------------------------------------


def test_created_session_answers_201_with_cookie_and_commons_contents_and_no_location(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    before = time.time()
    response = post_token(server, canvas.jwt_token(onboarded))

    assert response.status_code == 201, response.text
    body = response.json()
    sid = body["sessionId"]
    assert "location" not in response.headers  # /api/sessions/{id} would put the id in a URL
    assert session_cookie(response) == sid
    assert set(body) == COMMONS_KEYS | {"sessionId"}
    assert body["sid"] == sid

    institution = server.run(server.stores.records.get_institution(canvas.consumer_key))
    stored_user = server.run(
        server.stores.records.find_user(Identity(institution.id, canvas.guid, onboarded.lti_user_id))
    )
    assert body["userId"] == stored_user.id
    assert body["userFullName"] == onboarded.name
    assert body["locale"] == "en"
    assert body["canvasUserId"] == onboarded.canvas_user_id
    assert body["canvasApiDomain"] == canvas.api_domain
    assert body["roles"] == [onboarded.roles]
    assert body["isAdmin"] is False
    assert body["prefersHighContrast"] is False
    assert body["userAvatarUrl"] == onboarded.image
    assert body["accountName"] == canvas.instance_name
    assert body["accountId"] is None  # a course launch names no account
    # The documented account-setting defaults.
    assert body["canSharePublic"] is True
    assert body["canShowPublic"] is True
    assert body["showCuratedResourcesFirst"] is False
    assert body["showFederalStandards"] is True
    assert body["showStateStandards"] is False
    assert body["stateStandard"] is None
    assert body["isAccountCurator"] is False

    # ISO 8601 with a zone; a fresh session ends when the default idle timeout (1 hour) runs out.
    expires = datetime.fromisoformat(body["expires"])
    assert expires.tzinfo is not None
    assert before + 3_600 - 5 <= expires.timestamp() <= time.time() + 3_600 + 1


def test_session_cookie_is_httponly_secure_samesite_none_for_the_whole_site(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    response = post_token(server, canvas.jwt_token(onboarded))
    assert response.status_code == 201, response.text
    attrs = cookie_attributes(response)
    assert "httponly" in attrs
    assert "secure" in attrs
    assert attrs["path"] == "/"
    assert attrs["samesite"].lower() == "none"


def test_create_response_is_not_cached_and_sends_no_referrer(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    response = post_token(server, canvas.jwt_token(onboarded))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_contents_come_from_the_canvas_token(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    token = canvas.jwt_token(
        onboarded,
        lis_person_name_full="Ada King",
        launch_presentation_locale="fr",
        roles="Instructor,Learner",
        ext_roles="urn:lti:instrole:ims/lis/Administrator",
        custom_canvas_account_id="17",
        custom_canvas_user_prefers_high_contrast="true",
        tool_consumer_instance_name="Renamed University",
        user_image="https://canvas.example.edu/images/other.png",
        custom_canvas_api_domain="other.example.edu",
        custom_canvas_user_id="4242",
    )
    response = post_token(server, token)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["userFullName"] == "Ada King"
    assert body["locale"] == "fr"
    assert body["roles"] == ["Instructor", "Learner"]
    assert body["isAdmin"] is True
    assert body["accountId"] == "17"
    assert body["prefersHighContrast"] is True
    assert body["accountName"] == "Renamed University"
    assert body["userAvatarUrl"] == "https://canvas.example.edu/images/other.png"
    assert body["canvasApiDomain"] == "other.example.edu"
    assert body["canvasUserId"] == "4242"


def test_session_id_is_256_random_bits_in_base64url_and_new_each_time(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    first = post_token(server, canvas.jwt_token(onboarded)).json()["sessionId"]
    # Canvas gives byte-identical tokens within a second; a different iat makes a new token.
    second = post_token(server, canvas.jwt_token(onboarded, iat=time.time() - 60)).json()["sessionId"]
    for sid in (first, second):
        assert len(sid) == 43
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)
        assert len(base64.urlsafe_b64decode(sid + "=")) == 32
    assert first != second


def test_only_the_sha256_of_the_session_id_is_stored(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    sid = post_token(server, canvas.jwt_token(onboarded)).json()["sessionId"]
    digest = hashlib.sha256(sid.encode("ascii")).digest()

    with db_connection(server) as conn:
        assert conn.execute("SELECT count(*) FROM sessions WHERE id_hash = ?", (digest,)).fetchone()[0] == 1
        dump = "\n".join(conn.iterdump())
    assert sid not in dump
    assert digest.hex().upper() in dump.upper()

    # The raw bytes too, write-ahead log included: neither the id nor its decoded bits appear.
    raw = server.db_path.read_bytes()
    wal = server.db_path.with_name(server.db_path.name + "-wal")
    if wal.exists():
        raw += wal.read_bytes()
    assert sid.encode("ascii") not in raw
    assert base64.urlsafe_b64decode(sid + "=") not in raw
    assert digest in raw


def test_form_body_creates_a_session(server: Server, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    response = httpx.post(server.url + "/api/sessions", data={"jwt_token": canvas.jwt_token(onboarded)})
    assert response.status_code == 201, response.text
    sid = response.json()["sessionId"]
    read = httpx.get(f"{server.url}/api/sessions/{sid}", headers={"x-session-id": sid})
    assert read.status_code == 200
    assert read.json()["userFullName"] == onboarded.name


def test_three_character_shared_secret_works(server: Server, user: CanvasUser) -> None:
    canvas = server.add_institution(secret="abc")
    onboard(server, canvas, user)
    response = post_token(server, canvas.jwt_token(user))
    assert response.status_code == 201, response.text


def test_null_claims_and_unexpanded_canvas_placeholders_fall_back_to_the_launch(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    token = canvas.jwt_token(
        onboarded,
        lis_person_name_full=None,
        lis_person_name_given=None,
        user_image=None,
        roles=None,
        custom_canvas_user_id="$Canvas.user.id",
        launch_presentation_locale="$Canvas.user.locale",
        custom_canvas_api_domain="$Canvas.api.domain",
    )
    response = post_token(server, token)
    assert response.status_code == 201, response.text
    body = response.json()
    assert not [k for k, v in body.items() if isinstance(v, str) and "$Canvas" in v]
    assert body["userFullName"] == onboarded.name
    assert body["userAvatarUrl"] == onboarded.image
    assert body["roles"] == [onboarded.roles]
    assert body["canvasUserId"] == onboarded.canvas_user_id
    assert body["locale"] == "en"
    assert body["canvasApiDomain"] == canvas.api_domain


# -- preconditions: launched, terms accepted --------------------------------------------------


def test_never_launched_is_403_and_the_token_works_after_launch_and_terms(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    token = canvas.jwt_token(user)
    body = assert_problem(post_token(server, token), 403, "never_launched")
    assert "never launched into commons from canvas" in body["detail"].lower()
    assert sessions_of(server, canvas, user) == 0

    onboard(server, canvas, user)
    assert post_token(server, token).status_code == 201


def test_terms_not_accepted_is_403_and_the_same_token_works_after_accepting(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    launched = launch(server, canvas, user)
    assert launched.status_code == 303, launched.text
    token = canvas.jwt_token(user)

    assert_problem(post_token(server, token), 403, "terms_not_accepted")
    assert sessions_of(server, canvas, user) == 1  # only the launch's

    accept_terms(server, session_cookie(launched))
    assert post_token(server, token).status_code == 201


def test_users_are_scoped_to_the_institution_whose_secret_signed_the_token(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    other = server.add_institution()
    onboard(server, other, user)  # same Canvas guid and user_id, launched through the other key
    assert_problem(post_token(server, canvas.jwt_token(user)), 403, "never_launched")


# -- single use -------------------------------------------------------------------------------


def test_replayed_token_is_refused_and_creates_no_second_session(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    token = canvas.jwt_token(onboarded)
    assert post_token(server, token).status_code == 201
    count = sessions_of(server, canvas, onboarded)

    assert_problem(post_token(server, token), 401, "token_already_used")
    assert sessions_of(server, canvas, onboarded) == count


# -- signatures -------------------------------------------------------------------------------


def test_alg_none_token_is_refused(server: Server, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    token = jwt.encode(claims(canvas, onboarded), "", algorithm="none")
    assert token.endswith(".")
    assert_problem(post_token(server, token), 401, "invalid_token_signature")


@pytest.mark.parametrize("key", ["public key PEM", "shared secret"])
def test_rs256_header_is_refused_whatever_the_hmac_key(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser, key: str
) -> None:
    """Key confusion: an HS256 MAC under an ``RS256`` header must never verify."""
    secret = PUBLIC_KEY_PEM if key == "public key PEM" else canvas.secret.encode()
    token = hmac_forged({"typ": "JWT", "alg": "RS256"}, claims(canvas, onboarded), secret)
    assert_problem(post_token(server, token), 401, "invalid_token_signature")


def test_hs256_mac_keyed_with_a_public_key_is_refused(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    token = hmac_forged({"typ": "JWT", "alg": "HS256"}, claims(canvas, onboarded), PUBLIC_KEY_PEM)
    assert_problem(post_token(server, token), 401, "invalid_token_signature")


def test_token_signed_with_another_institutions_secret_is_refused(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    other = server.add_institution()
    token = sign(claims(canvas, onboarded), other.secret)
    assert_problem(post_token(server, token), 401, "invalid_token_signature")


def test_stripped_signature_is_refused(server: Server, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    header, payload, _ = canvas.jwt_token(onboarded).split(".")
    assert_problem(post_token(server, f"{header}.{payload}."), 401, "invalid_token_signature")


def test_tampered_payload_is_refused(server: Server, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    stranger = CanvasUser()
    header, _, signature = canvas.jwt_token(stranger).split(".")
    # The stranger's signature over the onboarded user's payload.
    forged_payload = b64url(json.dumps(claims(canvas, onboarded)).encode())
    assert_problem(
        post_token(server, f"{header}.{forged_payload}.{signature}"), 401, "invalid_token_signature"
    )


@pytest.mark.parametrize(
    "token",
    ["not-a-jwt", "a.b", "a.b.c.d", "....", "!!!.???.***", "é.é.é"],
)
def test_malformed_token_is_refused(server: Server, token: str) -> None:
    assert_problem(post_token(server, token), 401, "malformed_token")


def test_duplicate_json_keys_in_the_payload_are_refused(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    """A reader keeping the last ``user_id`` would log in as the onboarded user."""
    payload = claims(canvas, CanvasUser())
    raw = json.dumps(payload)[:-1] + ", " + json.dumps({"user_id": onboarded.lti_user_id})[1:]
    assert raw.count('"user_id"') == 2
    token = sign(raw.encode(), canvas.secret)
    assert_problem(post_token(server, token), 401, "malformed_token")


def test_unknown_consumer_key_is_refused(server: Server, canvas: FakeCanvas, onboarded: CanvasUser) -> None:
    token = sign(claims(canvas, onboarded, consumer_key="key-nobody-registered"), canvas.secret)
    assert_problem(post_token(server, token), 401, "unknown_consumer_key")


# -- time claims ------------------------------------------------------------------------------


def test_token_older_than_jwt_max_age_is_expired(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    assert_problem(
        post_token(server, canvas.jwt_token(onboarded, iat=time.time() - 360)), 401, "token_expired"
    )
    # Within the default 300 s it is still good.
    assert post_token(server, canvas.jwt_token(onboarded, iat=time.time() - 240)).status_code == 201


def test_token_issued_in_the_future_beyond_the_skew_is_refused(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    future = canvas.jwt_token(onboarded, iat=time.time() + 600)
    assert_problem(post_token(server, future), 401, "invalid_token_claims")
    # A Canvas clock a few seconds ahead is tolerated.
    assert post_token(server, canvas.jwt_token(onboarded, iat=time.time() + 20)).status_code == 201


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: c.pop("iat"), id="missing iat"),
        pytest.param(lambda c: c.update(iat=str(int(time.time()))), id="string iat"),
        pytest.param(lambda c: c.update(iat=None), id="null iat"),
        pytest.param(lambda c: c.pop("consumer_key"), id="missing consumer_key"),
        pytest.param(lambda c: c.pop("user_id"), id="missing user_id"),
    ],
)
def test_token_without_usable_claims_is_refused(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser, change: Callable[[dict[str, Any]], object]
) -> None:
    payload = claims(canvas, onboarded)
    change(payload)
    assert_problem(post_token(server, sign(payload, canvas.secret)), 401, "invalid_token_claims")


def test_zero_jwt_max_age_accepts_an_old_token_but_still_only_once(
    make_server: Callable[..., Server], user: CanvasUser
) -> None:
    """Documented as unsafe, but documented: 0 turns the age check off."""
    srv = make_server(jwt_max_age=0)
    canvas = srv.add_institution()
    onboard(srv, canvas, user)
    token = canvas.jwt_token(user, iat=time.time() - 30 * 86_400)
    assert post_token(srv, token).status_code == 201
    assert_problem(post_token(srv, token), 401, "token_already_used")


# -- size -------------------------------------------------------------------------------------


def token_of_length(canvas: FakeCanvas, user: CanvasUser, target: int) -> str:
    base = len(canvas.jwt_token(user, custom_padding=""))
    token = canvas.jwt_token(user, custom_padding="x" * ((target - base) * 3 // 4))
    assert abs(len(token) - target) < 8
    return token


def test_token_over_jwt_max_bytes_is_413_and_one_under_it_works(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    too_large = token_of_length(canvas, onboarded, 16_384 + 40)
    assert len(too_large) > 16_384
    assert_problem(post_token(server, too_large), 413, "token_too_large")

    fits = token_of_length(canvas, onboarded, 16_384 - 40)
    assert len(fits) <= 16_384
    assert post_token(server, fits).status_code == 201


# -- the request body -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({"json": {}}, id="json without jwt_token"),
        pytest.param({"json": {"jwt_token": ""}}, id="empty"),
        pytest.param({"json": {"jwt_token": "   "}}, id="blank"),
        pytest.param({"json": {"jwt_token": None}}, id="null"),
        pytest.param({"json": {"jwt_token": 42}}, id="number"),
        pytest.param({"json": {"jwt_token": ["a.b.c"]}}, id="list"),
        pytest.param({"json": {"jwt_token": {"token": "a.b.c"}}}, id="object"),
        pytest.param({"json": ["a.b.c"]}, id="json array body"),
        pytest.param({"json": "a.b.c"}, id="json string body"),
        pytest.param({}, id="no body"),
        pytest.param({"data": {"jwt_token": ""}}, id="empty form field"),
        pytest.param({"data": {"token": "a.b.c"}}, id="form without jwt_token"),
    ],
)
def test_missing_empty_or_non_string_jwt_token_is_400(server: Server, request_kwargs: dict[str, Any]) -> None:
    response = httpx.post(server.url + "/api/sessions", **request_kwargs)
    assert_problem(response, 400, "bad_request")


def test_malformed_json_is_400_invalid_json(server: Server) -> None:
    response = httpx.post(
        server.url + "/api/sessions",
        content=b'{"jwt_token": "a.b.c"',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "invalid_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_wrong_content_type_is_415(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser, content_type: str
) -> None:
    token = canvas.jwt_token(onboarded)
    response = httpx.post(
        server.url + "/api/sessions",
        content=json.dumps({"jwt_token": token}).encode(),
        headers={"content-type": content_type},
    )
    assert_problem(response, 415, "unsupported_media_type")
    # Refused before it was read: the token is still good.
    assert post_token(server, token).status_code == 201


def test_body_over_64_kib_is_413(server: Server) -> None:
    body = json.dumps({"jwt_token": "x" * 70_000}).encode()
    response = httpx.post(
        server.url + "/api/sessions", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


def test_chunked_body_over_64_kib_is_413(server: Server) -> None:
    """No Content-Length to trust: the limit holds while streaming."""

    def chunks() -> Iterator[bytes]:
        yield b'{"jwt_token": "'
        for _ in range(80):
            yield b"x" * 1_024
        yield b'"}'

    response = httpx.post(
        server.url + "/api/sessions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


def test_the_session_reads_back_the_contents_the_create_answered(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    created = post_token(server, canvas.jwt_token(onboarded))
    assert created.status_code == 201
    sid = created.json()["sessionId"]
    read = httpx.get(f"{server.url}/api/sessions/{sid}", headers={"x-session-id": sid})
    assert read.status_code == 200
    contents = {k: v for k, v in created.json().items() if k != "sessionId"}
    assert read.json() == contents
    assert datetime.fromisoformat(read.json()["expires"]) > datetime.now(UTC)


def test_jwt_session_replaces_the_session_the_browsers_cookie_held(
    server: Server, canvas: FakeCanvas, onboarded: CanvasUser
) -> None:
    """The new Set-Cookie replaces the browser's session, so that session ends (fixation,
    ASVS 7.2.4); a session carried any other way is left alone: one person may hold several."""
    held = launch(server, canvas, onboarded)
    held_id = session_cookie(held)
    other = launch(server, canvas, onboarded)
    other_id = session_cookie(other)
    token = canvas.jwt_token(onboarded, resource_link_id="replacing-link")
    response = httpx.post(
        server.url + "/api/sessions",
        json={"jwt_token": token},
        headers={"cookie": f"session={held_id}", "x-session-id": held_id},
    )
    assert response.status_code == 201, response.text
    new_id = response.json()["sessionId"]
    assert new_id != held_id

    def status(session_id: str) -> int:
        return httpx.get(
            f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id}
        ).status_code

    assert status(held_id) == 401
    assert status(new_id) == 200
    assert status(other_id) == 200  # not carried by the cookie: untouched
