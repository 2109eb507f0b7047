"""The home page: signed out, signed in (escaped), and its log out button."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, launch, session_cookie

EVIL_NAME = "<script>alert('pwned')</script> Ada & \"Bob\""


def _csp_forbids_scripts(response: httpx.Response) -> None:
    policy = response.headers["content-security-policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in policy.split(";") if d.strip()}
    assert directives["default-src"] == "default-src 'none'"
    assert "script-src" not in directives


def _signed_in(server: Server, canvas: FakeCanvas, user: CanvasUser) -> str:
    response = launch(server, canvas, user)
    assert response.status_code == 303, response.text
    return session_cookie(response)


def _csrf_token(html: str) -> str:
    found = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', html)
    assert found is not None, "no csrf_token in the page"
    return found.group(1)


def _alive(server: Server, session_id: str) -> bool:
    status = httpx.get(server.url + "/api/terms", headers={"x-session-id": session_id}).status_code
    assert status in (200, 401)
    return status == 200


def test_home_without_a_session_is_the_signed_out_page(server: Server) -> None:
    for headers in ({}, {"cookie": "session=" + "A" * 43}, {"cookie": "session=garbage"}):
        page = httpx.get(server.url + "/", headers=headers)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        _csp_forbids_scripts(page)
        assert "You are not signed in" in page.text
        assert 'action="/logout"' not in page.text


def test_home_with_a_session_shows_the_escaped_full_name_and_a_logout_form(
    server: Server, canvas: FakeCanvas
) -> None:
    session_id = _signed_in(server, canvas, CanvasUser(name=EVIL_NAME))
    page = httpx.get(server.url + "/", headers={"cookie": f"session={session_id}"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    _csp_forbids_scripts(page)
    html = page.text
    assert (
        "Signed in as &lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; Ada &amp; &quot;Bob&quot;" in html
    )
    assert "<script" not in html
    assert '<form method="post" action="/logout">' in html
    assert _csrf_token(html)
    assert session_id not in html  # the page shows a token derived from the id, never the id


def test_home_shows_the_session_of_the_carrier_used(server: Server, canvas: FakeCanvas) -> None:
    session_id = _signed_in(server, canvas, CanvasUser(name="Grace Hopper"))
    page = httpx.get(server.url + "/", params={"session-id": session_id})
    assert page.status_code == 200
    assert "Signed in as Grace Hopper" in page.text


def test_logout_form_with_the_pages_csrf_token_ends_the_session(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _signed_in(server, canvas, user)
    cookie = {"cookie": f"session={session_id}"}
    token = _csrf_token(httpx.get(server.url + "/", headers=cookie).text)

    response = httpx.post(server.url + "/logout", data={"csrf_token": token}, headers=cookie)

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cleared = [h for h in response.headers.get_list("set-cookie") if h.startswith("session=")]
    assert cleared and ('session=""' in cleared[0] or "session=;" in cleared[0])
    assert "max-age=0" in cleared[0].lower()
    assert not _alive(server, session_id)
    after = httpx.get(server.url + "/", headers=cookie)
    assert "You are not signed in" in after.text


def test_logout_form_without_csrf_token_is_refused_and_the_session_lives(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    session_id = _signed_in(server, canvas, user)
    cookie = {"cookie": f"session={session_id}"}
    for body in ({}, {"csrf_token": ""}, {"csrf_token": "0" * 64}, {"other": "field"}):
        response = httpx.post(server.url + "/logout", data=body, headers=cookie)
        assert response.status_code == 403, body
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "cross_origin_request"
    assert _alive(server, session_id)


def test_logout_form_with_another_sessions_csrf_token_is_refused(server: Server, canvas: FakeCanvas) -> None:
    mine = _signed_in(server, canvas, CanvasUser())
    theirs = _signed_in(server, canvas, CanvasUser())
    their_token = _csrf_token(httpx.get(server.url + "/", headers={"cookie": f"session={theirs}"}).text)
    response = httpx.post(
        server.url + "/logout", data={"csrf_token": their_token}, headers={"cookie": f"session={mine}"}
    )
    assert response.status_code == 403
    assert _alive(server, mine) and _alive(server, theirs)


def test_logout_form_without_a_session_is_401(server: Server) -> None:
    response = httpx.post(server.url + "/logout", data={"csrf_token": "0" * 64})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_terms_page_of_a_signed_in_person_offers_a_working_logout(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    """ASVS 7.4.4: every page a signed-in person sees has a visible way to log out."""
    session_id = _signed_in(server, canvas, user)
    cookie = {"cookie": f"session={session_id}"}
    page = httpx.get(server.url + "/terms", headers=cookie).text
    assert '<form method="post" action="/logout">' in page
    response = httpx.post(server.url + "/logout", data={"csrf_token": _csrf_token(page)}, headers=cookie)
    assert response.status_code == 303
    assert not _alive(server, session_id)


def test_terms_page_without_a_session_offers_no_logout(server: Server) -> None:
    assert 'action="/logout"' not in httpx.get(server.url + "/terms").text


# -- who may frame the pages (CSP frame-ancestors) --------------------------------------------


def _frame_ancestors(response: httpx.Response) -> list[str]:
    policy = response.headers["content-security-policy"]
    found = [d.split() for d in policy.split(";") if d.split()[:1] == ["frame-ancestors"]]
    assert len(found) == 1, policy  # one directive: a second would be ignored by browsers
    return found[0][1:]


def test_pages_may_be_framed_only_by_us_the_configured_origins_and_the_canvas_of_the_session(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(frame_ancestors="https://canvas.school.edu, https://other.example.edu")
    configured = ["'self'", "https://canvas.school.edu", "https://other.example.edu"]
    for path in ("/", "/terms"):
        assert _frame_ancestors(httpx.get(server.url + path)) == configured, path
    canvas = server.add_institution(api_domain="canvas.example.edu")
    launched = launch(server, canvas, CanvasUser())
    held = session_cookie(launched)
    with_session = [*configured, "https://canvas.example.edu"]
    for path in ("/", "/terms"):
        page = httpx.get(server.url + path, headers={"cookie": f"session={held}"})
        assert _frame_ancestors(page) == with_session, path
    # The page that trades the code (the cookie was blocked) learns the Canvas through the
    # code, and does not use it up.
    shell = httpx.get(server.url + launched.headers["location"])
    assert _frame_ancestors(shell) == with_session
    code = launched.headers["location"].split("code=", 1)[1]
    traded = httpx.post(server.url + "/api/sessions/exchange", json={"code": code})
    assert traded.status_code == 200 and traded.json()["sessionId"] == held


def test_registered_lti13_platforms_may_frame_the_pages(server: Server) -> None:
    canvas = server.add_institution()
    institution = server.run(server.stores.records.get_institution(canvas.consumer_key))
    issuer = f"https://{canvas.consumer_key}.instructure.example"
    server.run(
        server.stores.records.add_lti13_registration(
            institution.consumer_key,
            issuer=issuer,
            client_id="10000000000042",
            deployment_ids=("1:abc",),
            jwks_url="https://sso.example.com/api/lti/security/jwks",
            auth_url="https://sso.example.com/api/lti/authorize_redirect",
            now=0.0,
        )
    )
    allowed = _frame_ancestors(httpx.get(server.url + "/"))
    assert allowed[0] == "'self'" and issuer in allowed and "https://sso.example.com" in allowed
    assert "*" not in allowed and "'none'" not in allowed


def test_a_launch_cannot_widen_who_may_frame_the_pages(make_server: Callable[..., Server]) -> None:
    """``custom_canvas_api_domain`` is signed, but only a bare host ever reaches the policy."""
    server = make_server()
    canvas = server.add_institution(api_domain="evil.example; script-src *")
    held = session_cookie(launch(server, canvas, CanvasUser()))
    page = httpx.get(server.url + "/", headers={"cookie": f"session={held}"})
    assert _frame_ancestors(page) == ["'self'"]
    assert "script-src" not in page.headers["content-security-policy"]
