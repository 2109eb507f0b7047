"""``POST /api/lti``: the LTI 1.1 launch, over real HTTP, signed by oauthlib's client as Canvas signs."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, SIGNATURE_PLAINTEXT, SIGNATURE_TYPE_BODY, Client

from commons_session.domain.models import Identity, Institution, User
from commons_session.errors import DuplicateInstitution

from .canvas import GUID, CanvasUser, FakeCanvas
from .conftest import Server, accept_terms, launch, session_cookie

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# -- helpers ----------------------------------------------------------------------------------


def post(server: Server, body: str, headers: dict[str, str], *, path: str = "/api/lti") -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers=headers)


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert "session" not in response.cookies
    assert not any(h.startswith("session=") for h in response.headers.get_list("set-cookie"))


def institution(server: Server, canvas: FakeCanvas) -> Institution:
    found = server.run(server.stores.records.get_institution(canvas.consumer_key))
    assert found is not None
    return found  # type: ignore[no-any-return]


def identity(server: Server, canvas: FakeCanvas, user: CanvasUser) -> Identity:
    return Identity(institution(server, canvas).id, canvas.guid, user.lti_user_id)


def find_user(server: Server, canvas: FakeCanvas, user: CanvasUser) -> User | None:
    return server.run(server.stores.records.find_user(identity(server, canvas, user)))  # type: ignore[no-any-return]


def count_launches(server: Server, found: User) -> int:
    return int(server.run(server.stores.records.count_launches(found.id)))


def users_named(server: Server, lti_user_id: str) -> int:
    """Users with this LTI user id in any institution (the store contract has no count)."""
    row = server.stores.conn.execute("SELECT count(*) FROM users WHERE lti_user_id = ?", (lti_user_id,))
    return int(row.fetchone()[0])


def sessions_of(server: Server, found: User) -> int:
    row = server.stores.conn.execute("SELECT count(*) FROM sessions WHERE user_id = ?", (found.id,))
    return int(row.fetchone()[0])


def read_session(server: Server, session_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})


def assert_nonce_still_usable(server: Server, canvas: FakeCanvas, user: CanvasUser, nonce: str) -> None:
    """A genuine launch with the nonce succeeds, so the refused request did not burn it."""
    body, headers = canvas.signed_launch(server.url + "/api/lti", user, nonce=nonce)
    response = post(server, body, headers)
    assert response.status_code == 303, response.text


def strip_params(body: str, *names: str) -> str:
    return urlencode([(k, v) for k, v in parse_qsl(body, keep_blank_values=True) if k not in names])


def cookie_attributes(response: httpx.Response) -> tuple[str, dict[str, str]]:
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        if name == "session":
            parsed = {}
            for attribute in attributes:
                key, _, val = attribute.partition("=")
                parsed[key.lower()] = val
            return value, parsed
    raise AssertionError(f"no session cookie in {response.headers}")


# -- the happy path ---------------------------------------------------------------------------


def test_launch_redirects_to_terms_then_home_once_terms_are_accepted(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    first = launch(server, canvas, user)
    assert first.status_code == 303, first.text
    assert first.headers["location"].split("?", 1)[0] == "/terms"  # ?code= is the hand-off
    accept_terms(server, session_cookie(first))

    second = launch(server, canvas, user)
    assert second.status_code == 303, second.text
    assert second.headers["location"].split("?", 1)[0] == "/"


def test_launch_sets_a_secure_httponly_cross_site_session_cookie_that_reads_the_session(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    response = launch(server, canvas, user)
    assert response.status_code == 303, response.text
    session_id, attributes = cookie_attributes(response)
    assert "httponly" in attributes
    assert "secure" in attributes
    assert attributes["path"] == "/"
    assert attributes["samesite"].lower() == "none"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"

    read = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"Cookie": f"session={session_id}"})
    assert read.status_code == 200, read.text
    assert read.json()["sid"] == session_id
    assert read.json()["userFullName"] == user.name


def test_launch_creates_the_user_and_records_the_launch_and_its_profile(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    assert find_user(server, canvas, user) is None
    response = launch(
        server,
        canvas,
        user,
        lis_person_contact_email_primary="ada@example.edu",
        custom_canvas_account_id="12",
        launch_presentation_locale="fr",
    )
    assert response.status_code == 303, response.text

    found = find_user(server, canvas, user)
    assert found is not None
    assert found.identity == identity(server, canvas, user)
    assert count_launches(server, found) == 1
    profile = found.profile
    assert profile.full_name == user.name
    assert profile.email == "ada@example.edu"
    assert profile.avatar_url == user.image
    assert profile.roles == (user.roles,)
    assert profile.canvas_user_id == user.canvas_user_id
    assert profile.canvas_api_domain == canvas.api_domain
    assert profile.locale == "fr"
    assert profile.account_id == "12"
    assert profile.account_name == canvas.instance_name

    contents = read_session(server, session_cookie(response)).json()
    assert contents["userId"] == found.id
    assert contents["canvasUserId"] == user.canvas_user_id
    assert contents["locale"] == "fr"
    assert contents["accountId"] == "12"


def test_a_second_launch_updates_the_profile_without_creating_another_user(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    assert launch(server, canvas, user).status_code == 303
    first = find_user(server, canvas, user)
    assert first is not None

    user.name = "Augusta Ada King"
    response = launch(server, canvas, user, user_image="https://canvas.example.edu/new.png")
    assert response.status_code == 303, response.text
    second = find_user(server, canvas, user)
    assert second is not None
    assert second.id == first.id
    assert second.profile.full_name == "Augusta Ada King"
    assert second.profile.avatar_url == "https://canvas.example.edu/new.png"
    assert count_launches(server, second) == 2
    assert users_named(server, user.lti_user_id) == 1
    assert read_session(server, session_cookie(response)).json()["userFullName"] == "Augusta Ada King"


def test_every_launch_starts_a_new_session(server: Server, canvas: FakeCanvas, user: CanvasUser) -> None:
    ids = {session_cookie(launch(server, canvas, user)) for _ in range(3)}
    assert len(ids) == 3


def test_launch_revokes_the_session_the_browser_held(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    held = session_cookie(launch(server, canvas, user))
    assert read_session(server, held).status_code == 200

    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    response = post(server, body, {**headers, "Cookie": f"session={held}"})
    assert response.status_code == 303, response.text
    fresh = session_cookie(response)
    assert fresh != held
    assert_problem(read_session(server, held), 401, "invalid_session")
    assert read_session(server, fresh).status_code == 200


def two_session_cookies(first: str, second: str, *, one_header: bool) -> list[tuple[str, str]]:
    if one_header:
        return [("cookie", f"session={first}; session={second}")]
    return [("cookie", f"session={first}"), ("cookie", f"session={second}")]


@pytest.mark.parametrize("one_header", [True, False], ids=["one Cookie header", "two Cookie headers"])
def test_launch_and_jwt_create_revoke_every_session_cookie_the_browser_presented(
    server: Server, canvas: FakeCanvas, user: CanvasUser, one_header: bool
) -> None:
    """A browser may send two ``session`` cookies (set for other paths or domains), in one
    Cookie header or in two; each one ends when a launch or a JWT create replaces it, not
    only the first."""
    accept_terms(server, session_cookie(launch(server, canvas, user)))
    first, second = (session_cookie(launch(server, canvas, user)) for _ in range(2))
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    cookies = two_session_cookies(first, second, one_header=one_header)
    response = httpx.post(server.url + "/api/lti", content=body, headers=[*headers.items(), *cookies])
    assert response.status_code == 303, response.text
    for held in (first, second):
        assert_problem(read_session(server, held), 401, "invalid_session")

    first, second = session_cookie(response), session_cookie(launch(server, canvas, user))
    token = canvas.jwt_token(user, resource_link_id=secrets.token_hex(8))
    cookies = two_session_cookies(first, second, one_header=one_header)
    created = httpx.post(
        server.url + "/api/sessions",
        content=f'{{"jwt_token": "{token}"}}',
        headers=[("content-type", "application/json"), *cookies],
    )
    assert created.status_code == 201, created.text
    for held in (first, second):
        assert_problem(read_session(server, held), 401, "invalid_session")
    assert read_session(server, created.json()["sessionId"]).status_code == 200


# -- refusals write nothing -------------------------------------------------------------------


def test_bad_signature_is_refused_and_writes_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    nonce = secrets.token_hex(20)
    body, headers = canvas.signed_launch(server.url + "/api/lti", user, secret="not-the-secret", nonce=nonce)
    assert_problem(post(server, body, headers), 401, "invalid_signature")
    assert find_user(server, canvas, user) is None
    assert_nonce_still_usable(server, canvas, user, nonce)


def test_tampered_launch_parameter_breaks_the_signature(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    tampered = body.replace(f"user_id={user.lti_user_id}", "user_id=someone-else")
    assert tampered != body
    assert_problem(post(server, tampered, headers), 401, "invalid_signature")
    assert users_named(server, "someone-else") == 0
    assert find_user(server, canvas, user) is None


def test_forged_launch_does_not_burn_the_nonce_it_carries(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    nonce = secrets.token_hex(20)
    for _ in range(2):
        forged, headers = canvas.signed_launch(server.url + "/api/lti", user, secret="forger", nonce=nonce)
        assert_problem(post(server, forged, headers), 401, "invalid_signature")
    assert_nonce_still_usable(server, canvas, user, nonce)
    found = find_user(server, canvas, user)
    assert found is not None
    assert count_launches(server, found) == 1


def test_unknown_consumer_key_is_refused_and_writes_nothing(server: Server, user: CanvasUser) -> None:
    stranger = FakeCanvas("key-unregistered-" + secrets.token_hex(6), "whatever")
    body, headers = stranger.signed_launch(server.url + "/api/lti", user)
    assert_problem(post(server, body, headers), 401, "unknown_consumer_key")
    assert users_named(server, user.lti_user_id) == 0


@pytest.mark.parametrize("offset", [-2 * 3600, 2 * 3600], ids=["two-hours-old", "two-hours-ahead"])
def test_stale_timestamp_is_refused_and_writes_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser, offset: int
) -> None:
    nonce = secrets.token_hex(20)
    body, headers = canvas.signed_launch(
        server.url + "/api/lti", user, timestamp=int(time.time()) + offset, nonce=nonce
    )
    assert_problem(post(server, body, headers), 401, "stale_timestamp")
    assert find_user(server, canvas, user) is None
    assert_nonce_still_usable(server, canvas, user, nonce)


@pytest.mark.parametrize("offset", [-80 * 60, 80 * 60], ids=["80-minutes-behind", "80-minutes-ahead"])
def test_timestamp_eighty_minutes_off_is_accepted_because_canvas_clocks_drift(
    server: Server, canvas: FakeCanvas, user: CanvasUser, offset: int
) -> None:
    response = launch(server, canvas, user, timestamp=int(time.time()) + offset)
    assert response.status_code == 303, response.text
    assert find_user(server, canvas, user) is not None


def test_replayed_nonce_is_refused_and_writes_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    assert post(server, body, headers).status_code == 303
    found = find_user(server, canvas, user)
    assert found is not None
    assert (count_launches(server, found), sessions_of(server, found)) == (1, 1)

    assert_problem(post(server, body, headers), 401, "replayed_nonce")
    assert (count_launches(server, found), sessions_of(server, found)) == (1, 1)


def test_same_nonce_from_another_institution_is_not_a_replay(server: Server, user: CanvasUser) -> None:
    first, second = server.add_institution(), server.add_institution()
    nonce = secrets.token_hex(20)
    for canvas in (first, second):
        body, headers = canvas.signed_launch(server.url + "/api/lti", user, nonce=nonce)
        assert post(server, body, headers).status_code == 303


@pytest.mark.parametrize(
    "missing",
    [
        ("oauth_signature",),
        ("oauth_nonce",),
        ("oauth_timestamp",),
        ("oauth_consumer_key",),
        ("oauth_signature_method",),
        (
            "oauth_signature",
            "oauth_nonce",
            "oauth_timestamp",
            "oauth_consumer_key",
            "oauth_signature_method",
            "oauth_version",
            "oauth_callback",
        ),
    ],
    ids=["signature", "nonce", "timestamp", "consumer_key", "signature_method", "all"],
)
def test_launch_missing_oauth_parameters_is_refused_and_writes_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser, missing: tuple[str, ...]
) -> None:
    nonce = secrets.token_hex(20)
    body, headers = canvas.signed_launch(server.url + "/api/lti", user, nonce=nonce)
    assert_problem(post(server, strip_params(body, *missing), headers), 401, "invalid_oauth_request")
    assert find_user(server, canvas, user) is None
    assert_nonce_still_usable(server, canvas, user, nonce)


def test_empty_launch_body_is_refused(server: Server) -> None:
    assert_problem(post(server, "", FORM), 401, "invalid_oauth_request")


@pytest.mark.parametrize("method", [SIGNATURE_HMAC_SHA256, SIGNATURE_PLAINTEXT])
def test_launch_not_signed_with_hmac_sha1_is_refused(
    server: Server, canvas: FakeCanvas, user: CanvasUser, method: str
) -> None:
    params = {k: v for k, v in canvas.launch_params(user).items() if v is not None}
    client = Client(
        canvas.consumer_key,
        client_secret=canvas.secret,
        signature_method=method,
        signature_type=SIGNATURE_TYPE_BODY,
        nonce=secrets.token_hex(20),
    )
    _, headers, body = client.sign(
        server.url + "/api/lti", http_method="POST", body=urlencode(params), headers=FORM
    )
    assert_problem(post(server, body, headers), 401, "invalid_oauth_request")
    assert find_user(server, canvas, user) is None


# -- what Canvas really sends -----------------------------------------------------------------


def _short_institution(server: Server) -> FakeCanvas:
    alphabet = string.ascii_letters + string.digits
    secret = "".join(secrets.choice(alphabet) for _ in range(3))
    while True:  # a three-character key may already be taken on the shared database
        key = "".join(secrets.choice(alphabet) for _ in range(3))
        try:
            server.run(server.stores.records.add_institution(key, "Short U", secret, time.time()))
        except DuplicateInstitution:
            continue
        return FakeCanvas(key, secret)


def test_forty_character_nonce_and_three_character_key_and_secret_verify(
    server: Server, user: CanvasUser
) -> None:
    canvas = _short_institution(server)
    assert len(canvas.consumer_key) == len(canvas.secret) == 3
    nonce = secrets.token_urlsafe(30)
    assert len(nonce) == 40
    response = launch(server, canvas, user, nonce=nonce)
    assert response.status_code == 303, response.text
    assert find_user(server, canvas, user) is not None


def test_both_secrets_verify_during_a_rotation_and_only_the_new_one_after(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    old, new = canvas.secret, "rotated-" + secrets.token_hex(8)
    done = server.cli("institutions", "rotate-secret", "--consumer-key", canvas.consumer_key, "--secret", new)
    assert done.returncode == 0, done.stderr
    rotated = FakeCanvas(canvas.consumer_key, new)

    assert launch(server, rotated, user).status_code == 303
    assert launch(server, canvas, user).status_code == 303  # signed with the old secret

    done = server.cli("institutions", "finish-rotation", "--consumer-key", canvas.consumer_key)
    assert done.returncode == 0, done.stderr
    assert launch(server, rotated, user).status_code == 303
    body, headers = canvas.signed_launch(server.url + "/api/lti", user, secret=old)
    assert_problem(post(server, body, headers), 401, "invalid_signature")


def test_users_are_scoped_to_the_institution_whose_key_signed_the_launch(
    server: Server, user: CanvasUser
) -> None:
    a, b = server.add_institution(), server.add_institution()
    assert a.guid == b.guid == GUID
    response = launch(server, a, user)
    assert response.status_code == 303
    accept_terms(server, session_cookie(response))
    assert find_user(server, a, user) is not None
    assert find_user(server, b, user) is None

    # A's own JWT works, so the refusals below are about scope and nothing else.
    own = httpx.post(server.url + "/api/sessions", json={"jwt_token": a.jwt_token(user)})
    assert own.status_code == 201, own.text

    through_b = httpx.post(server.url + "/api/sessions", json={"jwt_token": b.jwt_token(user)})
    assert_problem(through_b, 403, "never_launched")

    a_vouching_for_b = b.jwt_token(user, secret=a.secret, context_label="forged")
    forged = httpx.post(server.url + "/api/sessions", json={"jwt_token": a_vouching_for_b})
    assert_problem(forged, 401, "invalid_token_signature")


def test_same_person_launching_through_two_institutions_is_two_users(
    server: Server, user: CanvasUser
) -> None:
    a, b = server.add_institution(), server.add_institution()
    assert launch(server, a, user).status_code == 303
    assert launch(server, b, user).status_code == 303
    in_a, in_b = find_user(server, a, user), find_user(server, b, user)
    assert in_a is not None and in_b is not None
    assert in_a.id != in_b.id
    assert users_named(server, user.lti_user_id) == 2


def test_public_url_is_the_url_the_signature_is_checked_against(
    make_server: Callable[..., Server], user: CanvasUser
) -> None:
    server = make_server(public_url="https://lor.example.edu")
    canvas = server.add_institution()

    body, headers = canvas.signed_launch("https://lor.example.edu/api/lti", user)
    response = post(server, body, headers)
    assert response.status_code == 303, response.text

    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    refused = post(server, body, headers)
    assert_problem(refused, 401, "invalid_signature")
    # It says which URL it checked: the first thing to look at behind a proxy.
    assert "https://lor.example.edu/api/lti" in refused.json()["detail"]
    assert "COMMONS_SESSION_PUBLIC_URL" in refused.json()["detail"]


def test_query_parameters_of_the_launch_url_are_part_of_the_signature(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    path = "/api/lti?launch_source=course_navigation&course=7"
    body, headers = canvas.signed_launch(server.url + path, user)
    response = post(server, body, headers, path=path)
    assert response.status_code == 303, response.text

    # Signed without the query but posted with it: the signature must not verify.
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    assert_problem(post(server, body, headers, path=path), 401, "invalid_signature")


@pytest.mark.parametrize(
    ("content_type", "make_body"),
    [
        ("application/json", lambda body: '{"user_id": "x"}'),
        ("text/plain", lambda body: body),
    ],
    ids=["json", "signed-form-as-text"],
)
def test_launch_that_is_not_a_form_gets_415(
    server: Server,
    canvas: FakeCanvas,
    user: CanvasUser,
    content_type: str,
    make_body: Callable[[str], str],
) -> None:
    body, _ = canvas.signed_launch(server.url + "/api/lti", user)
    response = post(server, make_body(body), {"Content-Type": content_type})
    assert_problem(response, 415, "unsupported_media_type")
    assert find_user(server, canvas, user) is None


@pytest.mark.parametrize(
    "overrides",
    [{"user_id": None}, {"user_id": ""}, {"lti_message_type": "ContentItemSelectionRequest"}],
    ids=["no-user-id", "empty-user-id", "wrong-message-type"],
)
def test_signed_launch_that_lacks_what_we_need_gets_400_and_writes_nothing(
    server: Server, canvas: FakeCanvas, user: CanvasUser, overrides: dict[str, Any]
) -> None:
    nonce = secrets.token_hex(20)
    body, headers = canvas.signed_launch(server.url + "/api/lti", user, nonce=nonce, **overrides)
    assert_problem(post(server, body, headers), 400, "invalid_launch")
    assert find_user(server, canvas, user) is None
    assert_nonce_still_usable(server, canvas, user, nonce)


def test_unexpanded_placeholders_and_omitted_fields_become_empty_profile_fields(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    response = launch(
        server,
        canvas,
        user,
        lis_person_name_full="$Person.name.full",
        lis_person_name_given=None,
        lis_person_contact_email_primary="$Person.email.primary",
        custom_canvas_user_id="$Canvas.user.id",
        custom_canvas_api_domain="$Canvas.api.domain",
        user_image=None,
        launch_presentation_locale=None,
        roles=None,
        ext_roles=None,
        tool_consumer_instance_name=None,
    )
    assert response.status_code == 303, response.text
    found = find_user(server, canvas, user)
    assert found is not None
    profile = found.profile
    assert profile.full_name is None
    assert profile.email is None
    assert profile.canvas_user_id is None
    assert profile.canvas_api_domain is None
    assert profile.avatar_url is None
    assert profile.locale is None
    assert profile.roles == ()
    assert profile.account_name is None

    contents = read_session(server, session_cookie(response)).json()
    assert contents["userFullName"] is None
    assert contents["canvasUserId"] is None
    assert contents["userAvatarUrl"] is None
    assert contents["roles"] == []
    assert contents["isAdmin"] is False
    assert contents["locale"] == "en"  # the documented default
    assert contents["accountName"] == institution(server, canvas).name


def test_concurrent_launches_of_one_person_give_exactly_one_user(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    launches = 8
    with ThreadPoolExecutor(launches) as pool:
        responses = list(pool.map(lambda _: launch(server, canvas, user), range(launches)))
    assert [r.status_code for r in responses] == [303] * launches, [r.text for r in responses]
    assert len({session_cookie(r) for r in responses}) == launches
    assert users_named(server, user.lti_user_id) == 1
    found = find_user(server, canvas, user)
    assert found is not None
    assert count_launches(server, found) == launches


def test_a_refused_launch_is_a_page_for_a_person_and_a_problem_for_a_program(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    """Inside the LMS' iframe raw JSON helps nobody: a browser (it asks for HTML) gets a page
    with the reason and the code to quote; a program still gets the problem."""
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    forged = body.replace("oauth_signature=", "oauth_signature=x", 1)
    browser = {**headers, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = post(server, forged, browser)
    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert "<code>invalid_signature</code>" in page.text and "does not verify" in page.text
    assert "frame-ancestors" in page.headers["content-security-policy"]
    assert "session" not in page.cookies
    assert_problem(post(server, forged, headers), 401, "invalid_signature")
    # The same for what the HTTP layer refuses before the launch is read.
    wrong_type = post(server, '{"x": 1}', {"Content-Type": "application/json", "Accept": "text/html"})
    assert wrong_type.status_code == 415 and "<code>unsupported_media_type</code>" in wrong_type.text
