"""``commons-session dev-canvas`` behaves like the parts of Canvas this service touches, and what
it signs is accepted by the real server (and refused once tampered with)."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from commons_session.devcanvas.config import DEFAULT_CONFIG, User, parse_config
from commons_session.devcanvas.lti13 import CLAIM

from .conftest import Server, session_cookie
from .devcanvas_fixture import (
    DevCanvas,
    Form,
    course_launch_form,
    jwt_token,
    onboard_via_course_page,
    only_form,
    read_page,
    register,
    start_dev_canvas,
    submit,
)


@pytest.fixture(scope="module")
def dev_canvas(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCanvas]:
    canvas = start_dev_canvas(tmp_path_factory.mktemp("dev-canvas"), server.url)
    register(server, canvas)
    yield canvas
    canvas.stop()


def _b64json(segment: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value


def _create(server: Server, token: str) -> httpx.Response:
    return httpx.post(server.url + "/api/sessions", json={"jwt_token": token})


# -- jwt_token ------------------------------------------------------------------------------------


def test_stand_in_jwt_is_built_like_canvas_and_creates_a_session(
    server: Server, dev_canvas: DevCanvas
) -> None:
    user = dev_canvas.fresh_user()
    onboard_via_course_page(server, dev_canvas, user)
    answer = jwt_token(dev_canvas, user)
    assert answer.status_code == 200, answer.text
    token = answer.json()["jwt_token"]
    header, payload, _ = token.split(".")
    assert base64.urlsafe_b64decode(header + "==") == b'{"typ":"JWT","alg":"HS256"}'
    claims = _b64json(payload)
    assert claims["consumer_key"] == dev_canvas.config.consumer_key
    assert isinstance(claims["iat"], int)
    assert {"exp", "nbf", "aud", "iss", "jti"}.isdisjoint(claims)
    assert not any(name.startswith("oauth_") for name in claims)
    assert claims["user_id"] == user.lti_user_id
    assert claims["custom_canvas_account_id"] == dev_canvas.config.account_id
    assert "custom_canvas_course_id" not in claims  # an account-context token

    created = _create(server, token)
    assert created.status_code == 201, created.text
    assert created.json()["userFullName"] == user.name
    assert created.json()["canvasUserId"] == user.id


def test_tampered_stand_in_jwt_is_refused(server: Server, dev_canvas: DevCanvas) -> None:
    user = dev_canvas.fresh_user()
    onboard_via_course_page(server, dev_canvas, user)
    header, payload, signature = jwt_token(dev_canvas, user).json()["jwt_token"].split(".")
    claims = _b64json(payload)
    claims["lis_person_name_full"] = "Mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused = _create(server, f"{header}.{forged}.{signature}")
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_token_signature"


def test_course_jwt_carries_the_course_and_tool_id_finds_the_tool(
    server: Server, dev_canvas: DevCanvas
) -> None:
    user = dev_canvas.fresh_user()
    onboard_via_course_page(server, dev_canvas, user)
    answer = jwt_token(dev_canvas, user, course="1", tool_id="1")
    assert answer.status_code == 200, answer.text
    claims = _b64json(answer.json()["jwt_token"].split(".")[1])  # the server verifies it below
    assert claims["custom_canvas_course_id"] == "1"
    assert claims["context_id"] == dev_canvas.config.courses[0].context_id
    assert claims["roles"] == "Learner"
    assert _create(server, answer.json()["jwt_token"]).status_code == 201


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "user authorization required"),
        ({"Authorization": "Bearer not-a-token-it-issued"}, "Invalid access token."),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "user authorization required"),
    ],
    ids=["no-token", "unknown-token", "not-bearer"],
)
def test_jwt_token_without_a_valid_api_token_is_401(
    dev_canvas: DevCanvas, headers: dict[str, str], message: str
) -> None:
    answer = httpx.get(
        f"{dev_canvas.url}/api/lti/accounts/self/jwt_token",
        params={"tool_launch_url": dev_canvas.config.launch_url},
        headers=headers,
    )
    assert answer.status_code == 401
    assert answer.json()["errors"] == [{"message": message}]
    assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("course", "params"),
    [
        (None, {"tool_launch_url": "http://127.0.0.1:1/api/lti"}),
        (None, {"tool_launch_url": "SERVER/api/lti/"}),
        (None, {"tool_id": "2"}),
        (None, {"tool_launch_url": ""}),
        ("999", {}),
    ],
    ids=["another-tool-url", "trailing-slash", "unknown-tool-id", "no-url", "unknown-course"],
)
def test_jwt_token_for_an_unknown_tool_or_course_is_404(
    server: Server, dev_canvas: DevCanvas, course: str | None, params: dict[str, str]
) -> None:
    params = {k: v.replace("SERVER", server.url) for k, v in params.items()}
    answer = jwt_token(dev_canvas, dev_canvas.teacher(), course=course, **params)
    assert answer.status_code == 404, answer.text
    assert answer.json() == {"errors": [{"message": "The specified resource does not exist."}]}


def test_course_jwt_for_someone_not_enrolled_is_401(dev_canvas: DevCanvas) -> None:
    answer = jwt_token(dev_canvas, dev_canvas.outsider(), course="1")
    assert answer.status_code == 401
    assert answer.json()["status"] == "unauthorized"


# -- the LTI 1.1 course page ------------------------------------------------------------------------


def test_course_page_launches_into_its_iframe_with_a_canvas_signed_form(
    server: Server, dev_canvas: DevCanvas
) -> None:
    user = dev_canvas.fresh_user()
    page = httpx.get(f"{dev_canvas.url}/courses/1", params={"as": user.id})
    forms, iframes = read_page(page.text)
    assert len(forms) == 1
    form = forms[0]
    assert form.method == "post"
    assert form.action == server.url + "/api/lti"
    assert form.target is not None and form.target in {frame.get("name") for frame in iframes}
    assert 'document.getElementById("tool_form").submit()' in page.text  # it submits itself
    assert "stand-in" in page.text
    assert form.value("oauth_callback") == "about:blank"
    assert form.value("oauth_signature_method") == "HMAC-SHA1"
    assert form.value("oauth_consumer_key") == dev_canvas.config.consumer_key
    assert len(form.value("oauth_nonce")) == 40
    assert form.value("user_id") == user.lti_user_id
    assert form.value("lti_message_type") == "basic-lti-launch-request"

    launched = submit(form)
    assert launched.status_code == 303, launched.text
    assert urlsplit(launched.headers["location"]).path == "/terms"
    session = session_cookie(launched)
    read = httpx.get(f"{server.url}/api/sessions/{session}", headers={"x-session-id": session})
    assert read.json()["userFullName"] == user.name


def test_changed_launch_form_is_refused_by_the_server(dev_canvas: DevCanvas) -> None:
    form = course_launch_form(dev_canvas, dev_canvas.fresh_user())
    fields = [(k, "Instructor" if k == "roles" else v) for k, v in form.fields]
    refused = submit(Form(form.action, form.method, form.target, fields))
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_signature"


def test_course_page_refuses_unknown_course_user_and_lti_version(dev_canvas: DevCanvas) -> None:
    assert httpx.get(f"{dev_canvas.url}/courses/999").status_code == 404
    assert httpx.get(f"{dev_canvas.url}/courses/1", params={"as": "nobody"}).status_code == 404
    assert (
        httpx.get(f"{dev_canvas.url}/courses/1", params={"as": dev_canvas.outsider().id}).status_code == 403
    )
    assert httpx.get(f"{dev_canvas.url}/courses/1", params={"lti": "2.0"}).status_code == 400


# -- LTI 1.3 ----------------------------------------------------------------------------------------


def _login_initiation(canvas: DevCanvas, user: User) -> Form:
    return course_launch_form(canvas, user, lti="1.3")


def _authorize_params(canvas: DevCanvas, user: User, **changes: str | None) -> dict[str, str]:
    """What a tool sends to the authorization endpoint after the login initiation."""
    initiation = _login_initiation(canvas, user)
    params: dict[str, str | None] = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": initiation.value("client_id"),
        "redirect_uri": canvas.config.redirect_uris[0],
        "login_hint": initiation.value("login_hint"),
        "lti_message_hint": initiation.value("lti_message_hint"),
        "state": "state-" + user.id,
        "nonce": "nonce-" + user.id,
        **changes,
    }
    return {k: v for k, v in params.items() if v is not None}


def _authorize(canvas: DevCanvas, params: dict[str, str], method: str = "GET") -> httpx.Response:
    url = canvas.url + "/api/lti/authorize_redirect"
    if method == "POST":
        return httpx.post(url, data=params)
    return httpx.get(url, params=params)


def test_lti13_login_initiation_carries_what_canvas_sends(dev_canvas: DevCanvas) -> None:
    user = dev_canvas.fresh_user()
    form = _login_initiation(dev_canvas, user)
    config = dev_canvas.config
    assert form.method == "post"
    assert form.action == config.login_url
    assert form.target == "tool_content"
    assert form.names() == {
        "iss",
        "login_hint",
        "target_link_uri",
        "lti_message_hint",
        "client_id",
        "lti_deployment_id",
        "canvas_region",
        "canvas_environment",
        "lti_storage_target",
    }
    assert form.value("iss") == config.issuer
    assert form.value("client_id") == config.client_id
    assert form.value("lti_deployment_id") == config.deployment_id
    assert form.value("target_link_uri") == config.target_link_uri
    assert form.value("login_hint") == user.lti_user_id


def _cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie in {response.headers}")


def test_lti13_launch_from_the_course_page_is_accepted_by_the_server(
    server: Server, dev_canvas: DevCanvas
) -> None:
    """The whole LTI 1.3 dance as a browser with cookies does it, registered with the command
    the stand-in printed."""
    line = next(x for x in dev_canvas.output().splitlines() if "institutions add-lti13 " in x)
    done = server.cli(*shlex.split(line)[1:])
    assert done.returncode == 0, done.stderr
    user = dev_canvas.fresh_user()
    initiation = _login_initiation(dev_canvas, user)
    # Without lti_storage_target the tool binds the launch with its cookie and redirects at once.
    login = httpx.post(
        initiation.action, data={k: v for k, v in initiation.fields if k != "lti_storage_target"}
    )
    assert login.status_code == 302, login.text
    assert login.headers["location"].startswith(dev_canvas.config.auth_url + "?")
    binding = _cookie(login, "lti1p3_state")
    post = only_form(httpx.get(login.headers["location"]).text)
    assert post.action == server.url + "/api/lti/launch"
    launched = httpx.post(post.action, data=dict(post.fields), headers={"cookie": f"lti1p3_state={binding}"})
    assert launched.status_code == 303, launched.text
    assert urlsplit(launched.headers["location"]).path == "/terms"
    session = session_cookie(launched)
    read = httpx.get(f"{server.url}/api/sessions/{session}", headers={"x-session-id": session})
    assert read.json()["userFullName"] == user.name


def test_course_page_offers_platform_storage_in_a_frame_of_its_own(dev_canvas: DevCanvas) -> None:
    page = httpx.get(f"{dev_canvas.url}/courses/1", params={"lti": "1.3", "as": dev_canvas.teacher().id})
    _, iframes = read_page(page.text)
    storage = next(f for f in iframes if f.get("name") == "post_message_forwarding")
    frame = httpx.get(dev_canvas.url + str(storage["src"]))
    assert frame.status_code == 200
    assert "lti.put_data" in frame.text and "lti.get_data" in frame.text


def test_jwks_publishes_the_key_that_signs_id_tokens(dev_canvas: DevCanvas) -> None:
    published = httpx.get(dev_canvas.url + "/api/lti/security/jwks")
    assert published.headers["cache-control"] == "max-age=864000"  # as Canvas sends it: 10 days
    keys = published.json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0]["use"] == "sig"
    assert "d" not in keys[0]  # the public half only
    assert keys[0]["kid"] in dev_canvas.output()  # the key id it printed at start


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_authorize_posts_an_id_token_that_verifies_against_the_jwks(
    dev_canvas: DevCanvas, method: str
) -> None:
    user = dev_canvas.fresh_user()
    config = dev_canvas.config
    answer = _authorize(dev_canvas, _authorize_params(dev_canvas, user), method)
    assert answer.status_code == 200, answer.text
    form = only_form(answer.text)
    assert form.method == "post" and form.action == config.redirect_uris[0]
    assert form.names() == {"id_token", "state", "lti_storage_target"}
    assert form.value("state") == "state-" + user.id
    token = form.value("id_token")

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    key = jwt.PyJWKClient(config.jwks_url).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=config.client_id, issuer=config.issuer)
    assert header["kid"] == key.key_id
    assert claims["nonce"] == "nonce-" + user.id
    assert claims["azp"] == config.client_id
    assert claims["sub"] == user.lti_id
    assert claims["exp"] > claims["iat"]
    assert claims[CLAIM + "message_type"] == "LtiResourceLinkRequest"
    assert claims[CLAIM + "version"] == "1.3.0"
    assert claims[CLAIM + "deployment_id"] == config.deployment_id
    assert claims[CLAIM + "target_link_uri"] == config.target_link_uri
    assert claims[CLAIM + "lti11_legacy_user_id"] == user.lti_user_id
    assert claims[CLAIM + "resource_link"]["id"]
    assert claims[CLAIM + "context"]["id"] == config.courses[0].context_id
    assert "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner" in claims[CLAIM + "roles"]
    assert claims[CLAIM + "tool_platform"]["guid"] == config.guid
    assert claims[CLAIM + "custom"]["canvas_user_id"] == user.id
    assert (claims["name"], claims["given_name"], claims["family_name"], claims["email"]) == (
        user.name,
        user.given_name,
        user.family_name,
        user.email,
    )
    assert claims["picture"].startswith("data:image/svg+xml;base64,")
    assert claims["locale"] == "en"


def test_tampered_id_token_does_not_verify(dev_canvas: DevCanvas) -> None:
    form = only_form(_authorize(dev_canvas, _authorize_params(dev_canvas, dev_canvas.fresh_user())).text)
    header, payload, signature = form.value("id_token").split(".")
    claims = _b64json(payload)
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    key = jwt.PyJWKClient(dev_canvas.config.jwks_url).get_signing_key_from_jwt(form.value("id_token"))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{header}.{forged}.{signature}", key, algorithms=["RS256"], audience=dev_canvas.config.client_id
        )


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"scope": "openid profile"}, "invalid_request_object"),
        ({"response_type": "code"}, "unsupported_response_type"),
        ({"response_mode": "query"}, "invalid_request_object"),
        ({"prompt": "login"}, "invalid_request_object"),
        ({"nonce": None}, "invalid_request_object"),
        ({"login_hint": "0" * 40}, "login_required"),
    ],
    ids=["scope", "response_type", "response_mode", "prompt", "no-nonce", "another-user"],
)
def test_authorize_posts_an_error_back_for_a_wrong_parameter(
    dev_canvas: DevCanvas, changes: dict[str, str | None], error: str
) -> None:
    user = dev_canvas.fresh_user()
    answer = _authorize(dev_canvas, _authorize_params(dev_canvas, user, **changes))
    assert answer.status_code == 200
    form = only_form(answer.text)
    assert form.action == dev_canvas.config.redirect_uris[0]
    assert "id_token" not in form.names()
    assert form.value("error") == error
    assert form.value("error_description")
    assert form.value("state") == "state-" + user.id


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"redirect_uri": "https://attacker.example/launch"}, "Invalid redirect_uri"),
        ({"client_id": "99"}, "Invalid client_id"),
        ({"lti_message_hint": "forged"}, "Invalid lti_message_hint"),
    ],
    ids=["redirect_uri", "client_id", "message-hint"],
)
def test_authorize_refuses_an_unknown_client_redirect_or_hint_without_posting(
    dev_canvas: DevCanvas, changes: dict[str, str], message: str
) -> None:
    answer = _authorize(dev_canvas, _authorize_params(dev_canvas, dev_canvas.fresh_user(), **changes))
    assert answer.status_code == 400
    assert answer.json() == {"errors": [{"message": message}]}


def test_a_login_initiation_authorizes_once(dev_canvas: DevCanvas) -> None:
    params = _authorize_params(dev_canvas, dev_canvas.fresh_user())
    assert "id_token" in only_form(_authorize(dev_canvas, params).text).names()
    again = only_form(_authorize(dev_canvas, params).text)
    assert again.value("error") == "launch_no_longer_valid"
    assert "id_token" not in again.names()


# -- the command ----------------------------------------------------------------------------------


def test_start_output_says_it_is_a_stand_in_and_its_registration_command_works(
    server: Server, tmp_path: Path
) -> None:
    canvas = start_dev_canvas(tmp_path, server.url)
    try:
        output = canvas.output()
        assert "STAND-IN" in output and "tests" in output
        line = next(x for x in output.splitlines() if "institutions add " in x)
        args = shlex.split(line)
        assert args[0] == "commons-session"
        done = server.cli(*args[1:])
        assert done.returncode == 0, done.stderr
        # The institution it registered accepts the stand-in's launches.
        user = canvas.fresh_user()
        assert submit(course_launch_form(canvas, user)).status_code == 303
        assert f"--canvas-token {canvas.teacher().token}" in output
        assert "institutions add-lti13 --consumer-key" in output
    finally:
        canvas.stop()


def test_a_second_stand_in_on_a_taken_port_refuses_to_start(dev_canvas: DevCanvas) -> None:
    """granian shares a port bound with SO_REUSEPORT: two stand-ins would answer in turn."""
    port = dev_canvas.url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "commons_session", "dev-canvas", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == f"commons-session dev-canvas: 127.0.0.1:{port} is already in use\n"


def test_default_configuration_is_printed_and_valid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "commons_session", "dev-canvas", "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == DEFAULT_CONFIG
    config = parse_config(done.stdout, canvas_url="http://127.0.0.1:8001", source="printed")
    assert len(config.users) == 3 and len(config.courses) == 1
    assert config.launch_url == "http://127.0.0.1:8000/api/lti"


def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_CONFIG.replace('teachers = ["1"]', 'teachers = ["7"]'), "utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "commons_session", "dev-canvas", "--config", str(path), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "courses[0].teachers names unknown user(s): 7" in done.stderr


@pytest.mark.parametrize(
    ("storage", "target", "frame"),
    [("canvas", "post_message_forwarding", True), ("ims", "_parent", False), ("off", None, False)],
)
def test_the_storage_switch_sets_the_target_the_login_and_the_launch_carry(
    dev_canvas: DevCanvas, storage: str, target: str | None, frame: bool
) -> None:
    """``?storage=`` plays Canvas (a named frame), the prefixed style answered by the parent,
    or no storage at all; the launch form carries the same target as the login did."""
    user = dev_canvas.teacher()  # no launch reaches the tool: the module's fresh people are kept
    page = httpx.get(f"{dev_canvas.url}/courses/1", params={"lti": "1.3", "as": user.id, "storage": storage})
    assert page.status_code == 200, page.text
    forms, iframes = read_page(page.text)
    initiation = forms[0]
    assert [v for k, v in initiation.fields if k == "lti_storage_target"] == ([target] if target else [])
    assert any(f.get("name") == "post_message_forwarding" for f in iframes) is frame
    assert ('"prefixed": true' in page.text) is (storage == "ims")

    params = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": initiation.value("client_id"),
        "redirect_uri": dev_canvas.config.redirect_uris[0],
        "login_hint": initiation.value("login_hint"),
        "lti_message_hint": initiation.value("lti_message_hint"),
        "state": "s",
        "nonce": "n",
    }
    launch = only_form(_authorize(dev_canvas, params).text)
    assert [v for k, v in launch.fields if k == "lti_storage_target"] == ([target] if target else [])


def test_an_unknown_storage_style_is_a_bad_request(dev_canvas: DevCanvas) -> None:
    page = httpx.get(f"{dev_canvas.url}/courses/1", params={"lti": "1.3", "storage": "moodle"})
    assert page.status_code == 400
    assert "storage must be one of canvas, ims, off, silent" in page.text
