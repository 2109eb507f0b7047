"""dev-canvas plays the Deep Linking platform, end to end over real HTTP: its course page's
"place a resource" link sends an LtiDeepLinkingRequest through the normal LTI 1.3 login, the
tool answers with its signed LtiDeepLinkingResponse, and the stand-in's return endpoint verifies
it against the tool's JWKS (RS256, iss/aud/deployment/exp, the request's data, once)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import Server, session_cookie
from .devcanvas_fixture import DevCanvas, Form, only_form, register, start_dev_canvas


@pytest.fixture(scope="module")
def dev_canvas(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCanvas]:
    canvas = start_dev_canvas(tmp_path_factory.mktemp("dev-canvas-dl"), server.url)
    register(server, canvas)
    line = next(x for x in canvas.output().splitlines() if "institutions add-lti13 " in x)
    done = server.cli(*shlex.split(line)[1:])
    assert done.returncode == 0, done.stderr
    yield canvas
    canvas.stop()


def _cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie in {response.headers}")


def _place_a_resource(server: Server, canvas: DevCanvas) -> str:
    """The teacher clicks "place a resource": login initiation, authorization, launch."""
    teacher = canvas.teacher()
    page = httpx.get(f"{canvas.url}/courses/1", params={"as": teacher.id, "lti": "1.3"})
    assert 'data-placement="link_selection"' in page.text
    page = httpx.get(
        f"{canvas.url}/courses/1", params={"as": teacher.id, "lti": "1.3", "placement": "link_selection"}
    )
    initiation = only_form(page.text)
    login = httpx.post(
        initiation.action, data={k: v for k, v in initiation.fields if k != "lti_storage_target"}
    )
    assert login.status_code == 302, login.text
    binding = _cookie(login, "lti1p3_state")
    post = only_form(httpx.get(login.headers["location"]).text)
    launched = httpx.post(post.action, data=dict(post.fields), headers={"cookie": f"lti1p3_state={binding}"})
    assert launched.status_code == 303, launched.text
    return session_cookie(launched)


def _answer(server: Server, session_id: str, items: list[dict[str, str]]) -> Form:
    page = httpx.post(
        server.url + "/api/lti/deep-linking/response",
        json={"contentItems": items, "msg": "Placed Commons"},
        headers={"x-session-id": session_id},
    )
    assert page.status_code == 200, page.text
    return only_form(page.text)


def test_place_a_resource_round_trip_is_verified_by_the_stand_in_against_the_tools_jwks(
    server: Server, dev_canvas: DevCanvas
) -> None:
    session_id = _place_a_resource(server, dev_canvas)
    context = httpx.get(
        f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id}
    ).json()["deepLinking"]
    assert context["returnUrl"] == f"{dev_canvas.url}/courses/1/deep_linking_response"
    assert context["acceptTypes"] == ["ltiResourceLink", "link"] and context["acceptMultiple"] is False
    assert context["clientId"] == dev_canvas.config.client_id
    form = _answer(server, session_id, [{"type": "ltiResourceLink", "title": "Commons: Photosynthesis"}])
    assert form.action == context["returnUrl"] and form.names() == {"JWT"}

    # a forged answer (the same claims and kid, another key) is refused and spends nothing
    token = form.value("JWT")
    claims = jwt.decode(token, options={"verify_signature": False})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = jwt.get_unverified_header(token)["kid"]
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": kid})
    refused = httpx.post(form.action, data={"JWT": forged})
    assert refused.status_code == 400 and "does not verify" in refused.text

    placed = httpx.post(form.action, data={"JWT": token})
    assert placed.status_code == 200, placed.text
    assert 'data-deep-linking="verified"' in placed.text
    assert "Commons: Photosynthesis" in placed.text and "Placed Commons" in placed.text

    replayed = httpx.post(form.action, data={"JWT": token})
    assert replayed.status_code == 400 and "answered already" in replayed.text


def test_the_stand_in_refuses_answers_without_a_jwt_or_for_an_unknown_course(
    server: Server, dev_canvas: DevCanvas
) -> None:
    return_url = f"{dev_canvas.url}/courses/1/deep_linking_response"
    assert httpx.post(return_url, data={}).status_code == 400
    assert httpx.post(return_url, data={"JWT": "not.a.jwt"}).status_code == 400
    unknown_course = httpx.post(f"{dev_canvas.url}/courses/999/deep_linking_response", data={"JWT": "x"})
    assert unknown_course.status_code == 404
    # the tool's real answer, posted to a course that does not exist, spends nothing
    session_id = _place_a_resource(server, dev_canvas)
    link = {"type": "link", "url": "https://openstax.org/", "title": "OpenStax"}
    form = _answer(server, session_id, [link])
    claims = jwt.decode(form.value("JWT"), options={"verify_signature": False})
    assert claims["https://purl.imsglobal.org/spec/lti-dl/claim/data"]  # Canvas' data came back
    nowhere = f"{dev_canvas.url}/courses/999/deep_linking_response"
    elsewhere = httpx.post(nowhere, data={"JWT": form.value("JWT")})
    assert elsewhere.status_code == 404
    placed = httpx.post(form.action, data={"JWT": form.value("JWT")})
    assert placed.status_code == 200 and "OpenStax" in placed.text
