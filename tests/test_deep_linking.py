"""LTI Deep Linking 2.0 over real HTTP: an LtiDeepLinkingRequest launch (signed by the test
platform, ``tests/platform13.py``) starts a session whose contents carry the request's context;
the app answers with content items and gets the LtiDeepLinkingResponse JWT, signed with the
tool's key, which we verify with PyJWT against the tool's own JWKS fetched over HTTP.

Every refused launch or response is followed by the valid one, which must still work: a
refusal writes nothing and uses nothing up.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from typing import Any

import httpx
import jwt
import pytest

from commons_session.stores.factory import make_stores

from .backends import postgres_database, redis_server
from .canvas import CanvasUser
from .conftest import Server, session_cookie
from .platform13 import CLAIM, DL_SETTINGS, JwksServer, Platform, jwks_server, login, post_launch, register

DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"
RETURN_URL = "https://canvas.example.edu/courses/7/deep_linking_response?modal=true"
RESPONSE = "/api/lti/deep-linking/response"
JSON_ACCEPT = {"accept": "application/json"}
DOCUMENTED_KEYS = {
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
LINK = {"type": "link", "title": "OpenStax Biology", "url": "https://openstax.org/details/books/biology-2e"}
RESOURCE = {"type": "ltiResourceLink", "title": "Commons", "custom": {"commons_resource": "42"}}


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as served:
        yield served


@pytest.fixture
def platform(server: Server, jwks: JwksServer) -> Platform:
    return register(server, jwks)


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def dl_launch(
    server: Server,
    platform: Platform,
    user: CanvasUser,
    settings: dict[str, Any] | None = None,
    **overrides: Any,
) -> httpx.Response:
    """Login initiation, then the platform's form post of a Deep Linking id_token."""
    started = login(server, platform)
    if settings is None:
        settings = platform.deep_linking_settings(RETURN_URL)
    token = platform.deep_linking_token(user, started.nonce, settings, **overrides)
    return post_launch(server, token, started.state, started.binding)


def dl_session(server: Server, platform: Platform, user: CanvasUser, **changes: Any) -> str:
    response = dl_launch(server, platform, user, platform.deep_linking_settings(RETURN_URL, **changes))
    assert response.status_code == 303, response.text
    return session_cookie(response)


def respond(server: Server, session_id: str, items: Any, **extra: Any) -> httpx.Response:
    return httpx.post(
        server.url + RESPONSE,
        json={"contentItems": items, **extra},
        headers={"x-session-id": session_id, **JSON_ACCEPT},
    )


def contents(server: Server, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def verified(server: Server, token: str, platform: Platform) -> dict[str, Any]:
    """The response JWT verified as a platform does: the key its kid names in the tool's JWKS,
    fetched over HTTP; RS256 only; aud the platform's issuer, iss our client id."""
    key = jwt.PyJWKClient(server.url + "/api/lti/jwks", cache_keys=False).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=platform.issuer,
        issuer=platform.client_id,
        options={"require": ["exp", "iat", "nonce", "aud", "iss"]},
    )
    return claims


# -- the launch -----------------------------------------------------------------------------------


def test_a_deep_linking_launch_starts_a_session_whose_contents_carry_the_request(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user, accept_multiple=False)
    body = contents(server, session_id)
    assert set(body) == DOCUMENTED_KEYS | {"deepLinking"}
    assert body["userFullName"] == user.name
    assert body["deepLinking"] == {
        "returnUrl": RETURN_URL,
        "acceptTypes": ["link", "file", "html", "ltiResourceLink", "image"],
        "acceptPresentationDocumentTargets": ["embed", "iframe", "window"],
        "acceptMediaTypes": "image/*,text/html,application/vnd.ims.lti.v1.ltilink,*/*",
        "acceptMultiple": False,
        "acceptLineItem": False,
        "autoCreate": False,
        "title": "Place Commons",
        "text": None,
        "data": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.dl-data.sig",
        "issuer": platform.issuer,
        "clientId": platform.client_id,
        "deploymentId": platform.deployment_id,
    }


def test_a_resource_link_session_keeps_exactly_the_documented_keys_and_cannot_answer(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    started = login(server, platform)
    response = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
    assert response.status_code == 303, response.text
    session_id = session_cookie(response)
    assert set(contents(server, session_id)) == DOCUMENTED_KEYS
    _problem(respond(server, session_id, [LINK]), 403, "not_deep_linking")


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        (None, "missing"),
        ("not an object", "not an object"),
        ({"accept_types": ["link"]}, "no return URL"),
        ({"deep_link_return_url": "http://canvas.example.edu/return", "accept_types": ["link"]}, "http"),
        ({"deep_link_return_url": "javascript:alert(1)", "accept_types": ["link"]}, "javascript"),
        ({"deep_link_return_url": "/courses/7/return", "accept_types": ["link"]}, "relative"),
        ({"deep_link_return_url": "https://u:p@canvas.example.edu/r", "accept_types": ["link"]}, "userinfo"),
        ({"deep_link_return_url": "https://canvas.example.edu/ r", "accept_types": ["link"]}, "space"),
        ({"deep_link_return_url": 42, "accept_types": ["link"]}, "not a string"),
        ({"deep_link_return_url": RETURN_URL}, "no accept_types"),
        ({"deep_link_return_url": RETURN_URL, "accept_types": []}, "empty accept_types"),
        ({"deep_link_return_url": RETURN_URL, "accept_types": "link"}, "accept_types a string"),
        ({"deep_link_return_url": RETURN_URL, "accept_types": [1]}, "accept_types of numbers"),
        ({"deep_link_return_url": RETURN_URL, "accept_types": ["link"], "accept_multiple": "true"}, "flag"),
        ({"deep_link_return_url": RETURN_URL, "accept_types": ["link"], "auto_create": 1}, "flag"),
        (
            {
                "deep_link_return_url": RETURN_URL,
                "accept_types": ["link"],
                "accept_presentation_document_targets": "iframe",
            },
            "targets a string",
        ),
        ({"deep_link_return_url": RETURN_URL, "accept_types": ["link"], "title": ["x"]}, "title"),
    ],
)
def test_a_launch_with_a_missing_or_invalid_settings_claim_is_refused_and_uses_nothing_up(
    server: Server, platform: Platform, user: CanvasUser, settings: Any, why: str
) -> None:
    started = login(server, platform)
    bad = platform.deep_linking_token(user, started.nonce, None, extra={DL_SETTINGS: settings})
    refused = post_launch(server, bad, started.state, started.binding)
    _problem(refused, 401, "invalid_deep_linking_settings")
    assert "session=" not in refused.headers.get("set-cookie", "")
    good = platform.deep_linking_token(user, started.nonce, platform.deep_linking_settings(RETURN_URL))
    assert post_launch(server, good, started.state, started.binding).status_code == 303


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({CLAIM + "message_type": "LtiSubmissionReviewRequest"}, "wrong_message_type"),
        ({CLAIM + "message_type": "LtiDeepLinkingResponse"}, "wrong_message_type"),
        ({CLAIM + "message_type": ["LtiDeepLinkingRequest"]}, "wrong_message_type"),
        ({CLAIM + "message_type": None}, "wrong_message_type"),
        ({CLAIM + "version": "1.1.0"}, "wrong_version"),
        ({CLAIM + "version": None}, "wrong_version"),
        ({CLAIM + "deployment_id": "1:someone-else"}, "unknown_deployment"),
        ({CLAIM + "lti11_legacy_user_id": None, "sub": None}, "anonymous_launch"),
    ],
)
def test_certification_style_invalid_deep_linking_launches_get_a_4xx_and_no_session(
    server: Server, platform: Platform, user: CanvasUser, claims: dict[str, Any], code: str
) -> None:
    started = login(server, platform)
    settings = platform.deep_linking_settings(RETURN_URL)
    bad = platform.deep_linking_token(user, started.nonce, settings, extra=claims)
    refused = post_launch(server, bad, started.state, started.binding)
    _problem(refused, 401, code)
    assert "session=" not in refused.headers.get("set-cookie", "")
    good = platform.deep_linking_token(user, started.nonce, settings)
    assert post_launch(server, good, started.state, started.binding).status_code == 303


def test_a_loopback_http_return_url_is_accepted_like_the_other_urls(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user, deep_link_return_url="http://127.0.0.1:3000/dl/return")
    assert contents(server, session_id)["deepLinking"]["returnUrl"] == "http://127.0.0.1:3000/dl/return"


def test_a_request_without_data_gets_a_response_without_data(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user, data=None)
    assert "data" not in contents(server, session_id)["deepLinking"]
    response = respond(server, session_id, [LINK])
    assert response.status_code == 200, response.text
    assert DL + "data" not in verified(server, response.json()["jwt"], platform)


# -- the response ---------------------------------------------------------------------------------


def test_the_response_jwt_is_signed_by_a_key_in_our_jwks_and_says_what_canvas_needs(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    data = {"nested": ["any", 1, True, None], "text": "échec ✓"}
    session_id = dl_session(server, platform, user, data=data)
    before = int(time.time())
    response = respond(server, session_id, [RESOURCE, LINK], msg="Placed 2 items", log="dl ok")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["returnUrl"] == RETURN_URL
    header = jwt.get_unverified_header(answer["jwt"])
    assert header["alg"] == "RS256"
    kids = [k["kid"] for k in httpx.get(server.url + "/api/lti/jwks").json()["keys"]]
    assert header["kid"] in kids
    claims = verified(server, answer["jwt"], platform)
    assert claims["iss"] == claims["azp"] == platform.client_id
    assert claims["aud"] == platform.issuer
    assert claims[CLAIM + "deployment_id"] == platform.deployment_id
    assert claims[CLAIM + "message_type"] == "LtiDeepLinkingResponse"
    assert claims[CLAIM + "version"] == "1.3.0"
    assert claims[DL + "data"] == data
    assert claims[DL + "content_items"] == [RESOURCE, LINK]
    assert claims[DL + "msg"] == "Placed 2 items" and claims[DL + "log"] == "dl ok"
    assert before <= claims["iat"] <= time.time() + 1
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert isinstance(claims["nonce"], str) and len(claims["nonce"]) >= 32


def test_a_response_jwt_signed_with_another_key_or_for_another_audience_does_not_verify(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    """The verification above can fail: a forged token (same kid, another key) and a token
    checked against another platform are refused by the same code."""
    session_id = dl_session(server, platform, user)
    token = respond(server, session_id, [LINK]).json()["jwt"]
    kid = jwt.get_unverified_header(token)["kid"]
    payload = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(payload, platform.private_key, algorithm="RS256", headers={"kid": kid})
    with pytest.raises(jwt.InvalidSignatureError):
        verified(server, forged, platform)
    other = Platform(platform.jwks, platform.consumer_key, platform.secret, client_id=platform.client_id)
    with pytest.raises(jwt.InvalidAudienceError):
        verified(server, token, other)


def test_the_response_is_single_use_and_a_refused_attempt_uses_nothing_up(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user, accept_multiple=False)
    _problem(respond(server, session_id, [LINK, LINK]), 400, "multiple_items_not_accepted")
    assert respond(server, session_id, [LINK]).status_code == 200
    _problem(respond(server, session_id, [LINK]), 403, "deep_linking_used")
    # the session itself lives on
    assert contents(server, session_id)["deepLinking"]["returnUrl"] == RETURN_URL


def test_each_answer_is_audited_with_its_item_count_and_never_its_jwt(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user)
    token = respond(server, session_id, [LINK, RESOURCE]).json()["jwt"]
    audit = server.cli("audit", "--event", "deep_linking_response", "--json", "--limit", "1000")
    assert audit.returncode == 0, audit.stderr
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    mine = [r for r in rows if r["user_id"] == contents(server, session_id)["userId"]]
    assert [r["reason"] for r in mine] == ["2"]
    assert token not in audit.stdout and session_id not in audit.stdout


def test_racing_answers_to_one_launch_sign_exactly_one(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user)
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: respond(server, session_id, [LINK]).status_code, range(8)))
    assert statuses == [200] + [403] * 7


def test_an_empty_selection_is_a_valid_answer(server: Server, platform: Platform, user: CanvasUser) -> None:
    session_id = dl_session(server, platform, user)
    response = respond(server, session_id, [], errormsg="Nothing was chosen.")
    assert response.status_code == 200, response.text
    claims = verified(server, response.json()["jwt"], platform)
    assert claims[DL + "content_items"] == [] and claims[DL + "errormsg"] == "Nothing was chosen."


@pytest.mark.parametrize(
    ("items", "code", "changes"),
    [
        ([RESOURCE], "content_type_not_accepted", {"accept_types": ["link"]}),
        ([{"type": "ltiAssignment"}], "content_type_not_accepted", {}),
        ([{"title": "no type"}], "content_type_not_accepted", {}),
        ([LINK, RESOURCE], "multiple_items_not_accepted", {"accept_multiple": False}),
        ("not a list", "invalid_content_items", {}),
        ({"type": "link"}, "invalid_content_items", {}),
        (None, "invalid_content_items", {}),
        (["not an object"], "invalid_content_items", {}),
        ([{"type": "link"}], "invalid_content_items", {}),
        ([{"type": "link", "url": "javascript:alert(1)"}], "invalid_content_items", {}),
        ([{"type": "link", "url": "http://evil.example.com/"}], "invalid_content_items", {}),
        ([{"type": "link", "url": "https://a.example/", "title": 5}], "invalid_content_items", {}),
        ([{"type": "link", "url": "https://a.example/", "script": "x"}], "invalid_content_items", {}),
        ([{"type": "ltiResourceLink", "custom": {"n": 1}}], "invalid_content_items", {}),
        ([{"type": "ltiResourceLink", "lineItem": {"scoreMaximum": 10}}], "invalid_content_items", {}),
        ([{"type": "html"}], "invalid_content_items", {}),
        ([{**LINK, "thumbnail": {"url": "ftp://x"}}], "invalid_content_items", {}),
        (
            [{**LINK, "iframe": {"height": 400}}],
            "presentation_not_accepted",
            {"accept_presentation_document_targets": ["window"]},
        ),
        ([LINK] * 51, "invalid_content_items", {}),
        ([{"type": "image", "url": "https://a.example/i.png", "width": -1}], "invalid_content_items", {}),
        ([{"type": "image", "url": "https://a.example/i.png", "height": 1.5}], "invalid_content_items", {}),
    ],
)
def test_bad_content_items_are_refused_with_a_stable_code_and_change_nothing(
    server: Server, platform: Platform, user: CanvasUser, items: Any, code: str, changes: dict[str, Any]
) -> None:
    session_id = dl_session(server, platform, user, **changes)
    _problem(respond(server, session_id, items), 400, code)
    assert respond(server, session_id, [LINK]).status_code == 200  # not used up


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{", 400, "invalid_json"),
        (b'{"contentItems": [], "contentItems": []}', 400, "invalid_content_items"),
        (b'{"contentItems": [{"type": "image", "url": "https://a.example/i", "width": NaN}]}', 400, None),
        (b'{"contentItems": [{"type": "link", "url": "https://a.example/", "title": "\\ud800"}]}', 400, None),
        (b'{"contentItems": [], "msg": 5}', 400, "invalid_content_items"),
        (b"[]", 400, "invalid_content_items"),
        (b'{"contentItems": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
        (b"\xff\xfe", 400, "invalid_json"),
    ],
)
def test_garbage_and_oversized_bodies_are_refused_and_change_nothing(
    server: Server, platform: Platform, user: CanvasUser, content: bytes, status: int, code: str | None
) -> None:
    session_id = dl_session(server, platform, user)
    response = httpx.post(
        server.url + RESPONSE,
        content=content,
        headers={"x-session-id": session_id, "content-type": "application/json", **JSON_ACCEPT},
    )
    _problem(response, status, code or "invalid_content_items")
    assert respond(server, session_id, [LINK]).status_code == 200


def test_without_a_session_or_with_an_unknown_one_the_answer_is_401(server: Server) -> None:
    _problem(httpx.post(server.url + RESPONSE, json={"contentItems": []}), 401, "session_required")
    unknown = "A" * 43
    _problem(
        httpx.post(server.url + RESPONSE, json={"contentItems": []}, headers={"x-session-id": unknown}),
        401,
        "invalid_session",
    )


@pytest.mark.parametrize("text", ['[], "msg": "spliced"', "[] ", "not json", "[1", '{"type": "link"}', "NaN"])
def test_a_forms_content_items_must_be_one_json_array(
    server: Server, platform: Platform, user: CanvasUser, text: str
) -> None:
    session_id = dl_session(server, platform, user)
    headers = {"x-session-id": session_id, **JSON_ACCEPT}
    response = httpx.post(server.url + RESPONSE, data={"contentItems": text}, headers=headers)
    if text == "[] ":  # whitespace around one array is still one array
        assert response.status_code == 200, response.text
        return
    _problem(response, 400, "invalid_content_items")
    assert respond(server, session_id, [LINK]).status_code == 200


def test_a_cross_site_post_is_refused_even_with_a_valid_session(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user)
    for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}):
        response = httpx.post(
            server.url + RESPONSE,
            json={"contentItems": [LINK]},
            headers={"x-session-id": session_id, **headers},
        )
        _problem(response, 403, "cross_origin_request")
    # a form authenticated by the cookie alone (what another site could post) needs the token
    form = {"contentItems": json.dumps([LINK])}
    response = httpx.post(server.url + RESPONSE, data=form, headers={"cookie": f"session={session_id}"})
    _problem(response, 403, "cross_origin_request")
    assert respond(server, session_id, [LINK]).status_code == 200


def test_the_home_page_offers_the_picker_and_its_form_answers_with_the_auto_posting_page(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    """What a person in Canvas' dialog sees: the home page's button posts the form (cookie and
    CSRF token), and the answer is a page whose form carries the JWT to the return URL and
    whose only script is the static one."""
    session_id = dl_session(server, platform, user)
    cookie = {"cookie": f"session={session_id}"}
    home = httpx.get(server.url + "/", headers=cookie)
    assert home.status_code == 200
    form = re.search(r'<form method="post" action="/api/lti/deep-linking/response".*?</form>', home.text)
    assert form, home.text
    found = re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(0))
    fields = {unescape(n): unescape(v) for n, v in found}
    assert set(fields) == {"csrf_token", "contentItems"}
    page = httpx.post(server.url + RESPONSE, data=fields, headers={**cookie, "sec-fetch-site": "same-origin"})
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert f'action="{RETURN_URL.replace("&", "&amp;")}"' in page.text
    token = unescape(re.search(r'name="JWT" value="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    claims = verified(server, token, platform)
    assert claims[DL + "content_items"] == [{"type": "ltiResourceLink", "title": "Commons"}]
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page.text, re.S)
    assert scripts == [""] and 'src="/static/deeplinking.js"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "form-action 'self' https://canvas.example.edu" in policy
    script = httpx.get(server.url + "/static/deeplinking.js")
    assert script.status_code == 200 and "submit()" in script.text


def test_a_platform_that_accepts_no_resource_link_gets_no_picker_button(
    server: Server, platform: Platform, user: CanvasUser
) -> None:
    session_id = dl_session(server, platform, user, accept_types=["image"])
    home = httpx.get(server.url + "/", headers={"cookie": f"session={session_id}"})
    assert 'data-deep-linking="none"' in home.text and 'data-deep-linking="picker"' not in home.text


# -- PostgreSQL + Redis ---------------------------------------------------------------------------


def test_a_full_round_trip_on_postgresql_and_redis(
    make_server: Callable[..., Server], jwks: JwksServer, user: CanvasUser
) -> None:
    with postgres_database() as database_url, redis_server() as store:
        server = make_server(database_url=database_url, redis_url=store.url)
        canvas = server.add_institution()
        platform = Platform(jwks, canvas.consumer_key, canvas.secret)

        async def attach() -> None:
            stores = make_stores(database_url, idle_timeout=60, timeout=5)
            await stores.open()
            try:
                await stores.records.add_lti13_registration(
                    canvas.consumer_key,
                    issuer=platform.issuer,
                    client_id=platform.client_id,
                    deployment_ids=(platform.deployment_id,),
                    jwks_url=platform.jwks_url,
                    auth_url=platform.auth_url,
                    now=time.time(),
                )
            finally:
                await stores.close()

        server.run(attach())
        session_id = dl_session(server, platform, user, data="pg-redis")
        assert contents(server, session_id)["deepLinking"]["data"] == "pg-redis"
        response = respond(server, session_id, [RESOURCE])
        assert response.status_code == 200, response.text
        claims = verified(server, response.json()["jwt"], platform)
        assert claims[DL + "data"] == "pg-redis" and claims[DL + "content_items"] == [RESOURCE]
        _problem(respond(server, session_id, [RESOURCE]), 403, "deep_linking_used")
