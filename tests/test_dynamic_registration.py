"""LTI Dynamic Registration over real HTTP: dev-canvas plays Canvas (openid configuration,
registration endpoint, single-use registration tokens, lti1p1-signed id_tokens), the server
registers itself, waits pending, and is bound by the CLI or by a launch's lti1p1 claim; on SQLite
and on PostgreSQL. A scripted platform (a thread of this process) lies, errs and stalls for the
bad-input cases; tests/platform13.py mints forged lti1p1 claims.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from commons_session.devcanvas.registration import oauth_consumer_key_sign
from commons_session.domain.models import Identity, Lti13Registration
from commons_session.lti.registration import lti1p1_base_string, lti1p1_signature
from commons_session.stores.base import Stores
from commons_session.stores.factory import make_stores

from .backends import postgres_database
from .conftest import Server, free_port, session_cookie, start_server
from .devcanvas_fixture import DevCanvas, config_text, only_form, read_page, start_dev_canvas
from .platform13 import CLAIM, JwksServer, jwks_server, login, post_launch
from .platform13 import Platform as Platform13

T = TypeVar("T")
LTI1P1 = CLAIM + "lti1p1"
HTML = "text/html,application/xhtml+xml"


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with postgres_database() as url:
        srv = start_server(tmp_path_factory.mktemp("pg-server"), database_url=url)
        yield srv
        srv.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def any_server(request: pytest.FixtureRequest, server: Server) -> Server:
    return server if request.param == "sqlite" else request.getfixturevalue("pg_server")


def records(server: Server, body: Callable[[Stores], Awaitable[T]]) -> T:
    """Run ``body`` against the server's own database, whichever it is."""

    async def main() -> T:
        stores = make_stores(server.env["COMMONS_SESSION_DATABASE_URL"], idle_timeout=60, timeout=5)
        await stores.open()
        try:
            return await body(stores)
        finally:
            await stores.close()

    result: T = asyncio.run(main())
    return result


def registrations(server: Server, issuer: str) -> list[Lti13Registration]:
    return records(server, lambda s: s.records.list_lti13_registrations(issuer))


def add_institution(server: Server, canvas: DevCanvas) -> None:
    c = canvas.config
    records(
        server,
        lambda s: s.records.add_institution(c.consumer_key, c.account_name, c.shared_secret, time.time()),
    )


@pytest.fixture
def dev_canvas(tmp_path: Path, server: Server) -> Iterator[DevCanvas]:
    key, secret = "dev-" + secrets.token_hex(6), secrets.token_urlsafe(12)
    canvas = start_dev_canvas(tmp_path, server.url, text=config_text(key, secret, server.url, admin=True))
    yield canvas
    canvas.stop()


def admin(canvas: DevCanvas) -> Any:
    return canvas.outsider()  # the last user: enrolled nowhere, account admin


def registration_frame(canvas: DevCanvas, server: Server) -> str:
    """Admin > Developer Keys > + LTI Registration: the iframe's address, as Canvas builds it."""
    page = httpx.get(
        f"{canvas.url}/accounts/1/developer_keys",
        params={"registration_url": server.url + "/api/lti/register", "as": admin(canvas).id},
    )
    assert page.status_code == 200, page.text
    _, frames = read_page(page.text)
    assert len(frames) == 1 and frames[0]["id"] == "registration_frame"
    src = frames[0]["src"]
    assert src is not None and src.startswith(server.url + "/api/lti/register?")
    return src


def register_through_canvas(canvas: DevCanvas, server: Server, accept: str = HTML) -> httpx.Response:
    return httpx.get(
        registration_frame(canvas, server), headers={"accept": accept, "referer": canvas.url + "/"}
    )


def launch13(
    server: Server, canvas: DevCanvas, user: Any, client_id: str, accept: str = "application/json"
) -> httpx.Response:
    """Course page -> our login -> dev-canvas' authorization -> our launch, as a browser with
    cookies does it (without Platform Storage)."""
    page = httpx.get(f"{canvas.url}/courses/1", params={"lti": "1.3", "as": user.id, "client_id": client_id})
    assert page.status_code == 200, page.text
    initiation = only_form(page.text)
    started = httpx.post(
        initiation.action, data={k: v for k, v in initiation.fields if k != "lti_storage_target"}
    )
    assert started.status_code == 302, started.text
    binding = next(
        h.split(";", 1)[0].partition("=")[2]
        for h in started.headers.get_list("set-cookie")
        if h.startswith("lti1p3_state=")
    )
    post = only_form(httpx.get(started.headers["location"]).text)
    assert post.action == server.url + "/api/lti/launch"
    return httpx.post(
        post.action,
        data={k: v for k, v in post.fields if k != "lti_storage_target"},
        headers={"cookie": f"lti1p3_state={binding}", "accept": accept},
    )


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def _user_known(server: Server, canvas: DevCanvas, user: Any) -> bool:
    async def body(stores: Stores) -> bool:
        institution = await stores.records.get_institution(canvas.config.consumer_key)
        assert institution is not None
        identity = Identity(institution.id, canvas.config.guid, user.lti_user_id)
        return await stores.records.find_user(identity) is not None

    return records(server, body)


# -- the whole flow, against dev-canvas -----------------------------------------------------------


def _registered(server: Server, canvas: DevCanvas) -> Lti13Registration:
    response = register_through_canvas(canvas, server)
    assert response.status_code == 200, response.text
    policy = response.headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    )
    assert canvas.url in policy.split("frame-ancestors", 1)[1]  # Canvas' iframe may show it
    assert '<script src="/static/register.js"' in response.text
    assert 'data-subject="org.imsglobal.lti.close"' in response.text
    found = registrations(server, canvas.url)
    assert len(found) == 1
    registration = found[0]
    assert registration.pending and registration.consumer_key is None
    assert registration.jwks_url == canvas.url + "/api/lti/security/jwks"
    assert registration.auth_url == canvas.url + "/api/lti/authorize_redirect"
    assert registration.token_url == canvas.url + "/login/oauth2/token"
    assert len(registration.deployment_ids) == 1 and registration.registered_at is not None
    keys = httpx.get(f"{canvas.url}/accounts/1/developer_keys", params={"as": admin(canvas).id}).text
    assert registration.client_id in keys and registration.deployment_ids[0] in keys
    assert registration.client_id in response.text
    return registration


def test_register_then_pending_launch_refused_then_bound_by_the_cli_then_launch_works(
    any_server: Server, dev_canvas: DevCanvas
) -> None:
    server, canvas = any_server, dev_canvas
    registration = _registered(server, canvas)
    user = canvas.fresh_user()

    # Pending: no school has this key yet, so even Canvas' lti1p1 claim cannot bind it.
    problem(launch13(server, canvas, user, registration.client_id), 403, "registration_pending")
    page = launch13(server, canvas, user, registration.client_id, accept=HTML)
    assert page.status_code == 403 and "registration_pending" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert canvas.url in page.headers["content-security-policy"]  # shown in Canvas' frame

    listed = server.cli("institutions", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"(pending)\tLTI 1.3: issuer {canvas.url} client_id {registration.client_id}" in listed.stdout
    assert registration.as_dict() in json.loads(
        server.cli("institutions", "list", "--pending", "--json").stdout
    )
    assert all("consumer_key" in i for i in json.loads(server.cli("institutions", "list", "--json").stdout))

    add_institution(server, canvas)
    bind = server.cli(
        "institutions", "bind-lti13", "--issuer", canvas.url, "--client-id", registration.client_id,
        "--consumer-key", canvas.config.consumer_key,
    )  # fmt: skip
    assert bind.returncode == 0, bind.stderr
    (bound,) = registrations(server, canvas.url)
    assert bound.consumer_key == canvas.config.consumer_key and not bound.pending
    listed_again = server.cli("institutions", "list").stdout
    assert f"(pending)\tLTI 1.3: issuer {canvas.url} client_id {registration.client_id}" not in listed_again
    assert f"\tLTI 1.3: issuer {canvas.url} client_id {registration.client_id}" in listed_again

    launched = launch13(server, canvas, user, registration.client_id)
    assert launched.status_code == 303, launched.text
    session = session_cookie(launched)
    read = httpx.get(f"{server.url}/api/sessions/{session}", headers={"x-session-id": session})
    assert read.status_code == 200 and read.json()["userFullName"] == user.name
    # The person is the one Canvas' LTI 1.1 key names (lti11_legacy_user_id), so its JWTs match.
    assert _user_known(server, canvas, user)


def test_register_then_the_first_launch_with_canvas_lti1p1_claim_binds_it(
    any_server: Server, dev_canvas: DevCanvas
) -> None:
    server, canvas = any_server, dev_canvas
    add_institution(server, canvas)  # the school's 1.1 key exists; the 1.3 platform is new
    registration = _registered(server, canvas)
    user = canvas.fresh_user()
    launched = launch13(server, canvas, user, registration.client_id)
    assert launched.status_code == 303, launched.text
    (bound,) = registrations(server, canvas.url)
    assert bound.consumer_key == canvas.config.consumer_key and bound.id == registration.id
    assert _user_known(server, canvas, user)
    # And the next person's launch needs no claim at all any more: it is bound.
    assert launch13(server, canvas, canvas.fresh_user(), registration.client_id).status_code == 303


def test_a_reused_registration_token_is_refused_by_canvas_and_stores_nothing_more(
    server: Server, dev_canvas: DevCanvas
) -> None:
    src = registration_frame(dev_canvas, server)
    assert httpx.get(src, headers={"accept": "application/json"}).status_code == 200
    again = problem(httpx.get(src, headers={"accept": "application/json"}), 502, "registration_refused")
    assert "HTTP 401" in again["detail"] and "already been used" in again["detail"]
    page = httpx.get(src, headers={"accept": HTML})
    assert (
        page.status_code == 502 and "registration_refused" in page.text and "Nothing was saved" in page.text
    )
    assert len(registrations(server, dev_canvas.url)) == 1


# -- dev-canvas plays Canvas ----------------------------------------------------------------------


def _token(canvas: DevCanvas) -> dict[str, Any]:
    response = httpx.get(
        f"{canvas.url}/api/lti/accounts/self/registration_token",
        headers={"authorization": f"Bearer {admin(canvas).token}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_dev_canvas_serves_canvas_configuration_only_with_a_registration_token(dev_canvas: DevCanvas) -> None:
    token = _token(dev_canvas)
    assert set(token) == {"uuid", "oidc_configuration_url", "token"}
    claims = json.loads(base64.urlsafe_b64decode(token["token"].split(".")[1] + "=="))
    assert set(claims) == {"uuid", "initiated_at", "user_id", "root_account_global_id", "exp"}
    assert claims["exp"] - time.time() == pytest.approx(3600, abs=30)
    url = dev_canvas.url + "/api/lti/security/openid-configuration"
    assert httpx.get(url).status_code == 401
    config = httpx.get(url, headers={"authorization": f"Bearer {token['token']}"}).json()
    assert config["issuer"] == dev_canvas.url
    assert config["registration_endpoint"] == dev_canvas.url + "/api/lti/registrations"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    platform = config["https://purl.imsglobal.org/spec/lti-platform-configuration"]
    assert platform["product_family_code"] == "canvas"
    assert [m["type"] for m in platform["messages_supported"]] == [
        "LtiResourceLinkRequest",
        "LtiDeepLinkingRequest",
    ]
    assert "Canvas.api.domain" in platform["variables"]
    # A student's token may not start a registration.
    student = httpx.get(
        f"{dev_canvas.url}/api/lti/accounts/self/registration_token",
        headers={"authorization": f"Bearer {dev_canvas.teacher().token}"},
    )
    assert student.status_code == 401


def test_dev_canvas_validates_a_registration_like_canvas(dev_canvas: DevCanvas) -> None:
    token = _token(dev_canvas)["token"]
    url = dev_canvas.url + "/api/lti/registrations"
    good = {
        "application_type": "web",
        "grant_types": ["client_credentials", "implicit"],
        "response_types": ["id_token"],
        "redirect_uris": ["https://tool.example/launch"],
        "initiate_login_uri": "https://tool.example/login",
        "client_name": "Tool",
        "jwks_uri": "https://tool.example/jwks",
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": "",
        "https://purl.imsglobal.org/spec/lti-tool-configuration": {
            "domain": "tool.example",
            "target_link_uri": "https://tool.example/launch",
            "claims": ["sub"],
            "messages": [{"type": "LtiResourceLinkRequest"}],
        },
    }
    auth = {"authorization": f"Bearer {token}"}
    assert httpx.post(url, json=good).status_code == 401
    assert (
        httpx.post(url, json=good, headers={"authorization": "Bearer " + token[:-2] + "xx"}).status_code
        == 401
    )
    for change in (
        {"token_endpoint_auth_method": "client_secret_basic"},
        {"grant_types": ["implicit"]},
        {"application_type": "native"},
        {"scope": "https://example.com/scope/everything"},
        {"redirect_uris": ["not a uri"]},
    ):
        bad = httpx.post(url, json={**good, **change}, headers=auth)
        assert bad.status_code == 422, (change, bad.text)
    made = httpx.post(url, json=good, headers=auth)
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["client_id"].isdigit() and body["client_name"] == "Tool"
    assert body["https://purl.imsglobal.org/spec/lti-tool-configuration"]["deployment_id"]
    assert httpx.post(url, json=good, headers=auth).json() == {
        "errorMessage": "The registration token has already been used"
    }


def test_lti1p1_signature_matches_the_migration_guide_vector_in_both_implementations() -> None:
    """The 1EdTech LTI 1.3 migration guide's example (also in Canvas' spec of
    generate_oauth_consumer_key_sign)."""
    expected = "lWd54kFo5qU7xshAna6v8BwoBm6tmUjc6GTax6+12ps="
    base = lti1p1_base_string(
        "179248902", "689302", "https://lmsvendor.com", "PM48OJSfGDTAzAo", 1551290856, "172we8671fd8z"
    )
    assert base == "179248902&689302&https://lmsvendor.com&PM48OJSfGDTAzAo&1551290856&172we8671fd8z"
    assert lti1p1_signature("my-lti11-secret", base) == expected
    claims = {
        CLAIM + "deployment_id": "689302",
        "iss": "https://lmsvendor.com",
        "aud": "PM48OJSfGDTAzAo",
        "exp": 1551290856,
    }
    assert oauth_consumer_key_sign("179248902", "my-lti11-secret", claims, "172we8671fd8z") == expected


# -- lti1p1 binding with a platform of the test's own ---------------------------------------------


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as server:
        yield server


def _pending_platform(server: Server, jwks: JwksServer) -> Platform13:
    canvas = server.add_institution()
    platform = Platform13(jwks, canvas.consumer_key, canvas.secret)
    platform.target_link_uri = server.url + "/api/lti/launch"  # what the login sends, and the claim
    records(
        server,
        lambda s: s.records.add_pending_lti13_registration(
            issuer=platform.issuer,
            client_id=platform.client_id,
            deployment_ids=(platform.deployment_id,),
            jwks_url=platform.jwks_url,
            auth_url=platform.auth_url,
            token_url=None,
            now=time.time(),
        ),
    )
    return platform


def _sign(platform: Platform13, key: str, secret: str, nonce: str, exp: int) -> str:
    return platform.lti1p1_sign(nonce, exp, consumer_key=key, secret=secret)


def _launch_with_lti1p1(
    server: Server, platform: Platform13, sign: Callable[[str, int], dict[str, str]]
) -> httpx.Response:
    from .canvas import CanvasUser

    user = CanvasUser()
    started = login(server, platform)  # a pending platform may log in: its launch may bind it
    exp = int(time.time()) + 3600
    token = platform.id_token(
        user,
        started.nonce,
        exp=exp,
        extra={LTI1P1: {"user_id": user.lti_user_id, **sign(started.nonce, exp)}},
    )
    return post_launch(server, token, started.state, started.binding)


def _still_pending(server: Server, platform: Platform13) -> bool:
    (found,) = registrations(server, platform.issuer)
    return found.pending


def test_a_forged_lti1p1_signature_does_not_bind(server: Server, jwks: JwksServer) -> None:
    platform = _pending_platform(server, jwks)
    other = server.add_institution()
    forgeries: list[Callable[[str, int], dict[str, str]]] = [
        lambda nonce, exp: {
            "oauth_consumer_key": platform.consumer_key,
            "oauth_consumer_key_sign": _sign(platform, platform.consumer_key, "guessed", nonce, exp),
        },
        # the right secret over another exp, or over another nonce (a replayed claim)
        lambda nonce, exp: {
            "oauth_consumer_key": platform.consumer_key,
            "oauth_consumer_key_sign": _sign(
                platform, platform.consumer_key, platform.secret, nonce, exp + 1
            ),
        },
        lambda nonce, exp: {
            "oauth_consumer_key": platform.consumer_key,
            "oauth_consumer_key_sign": _sign(
                platform, platform.consumer_key, platform.secret, "old-nonce", exp
            ),
        },
        # another school's key named, signed with this school's secret
        lambda nonce, exp: {
            "oauth_consumer_key": other.consumer_key,
            "oauth_consumer_key_sign": _sign(platform, other.consumer_key, platform.secret, nonce, exp),
        },
        lambda nonce, exp: {
            "oauth_consumer_key": "no-such-key",
            "oauth_consumer_key_sign": _sign(platform, "no-such-key", "x", nonce, exp),
        },
        lambda nonce, exp: {"oauth_consumer_key": platform.consumer_key},
        lambda nonce, exp: {},
    ]
    for forge in forgeries:
        problem(_launch_with_lti1p1(server, platform, forge), 403, "registration_pending")
        assert _still_pending(server, platform)
    # The control: the school's own secret over this launch's values binds it.
    good = _launch_with_lti1p1(
        server,
        platform,
        lambda nonce, exp: {
            "oauth_consumer_key": platform.consumer_key,
            "oauth_consumer_key_sign": _sign(platform, platform.consumer_key, platform.secret, nonce, exp),
        },
    )
    assert good.status_code == 303, good.text
    assert not _still_pending(server, platform)


# -- bad input: a scripted platform ---------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    #: Seconds to wait before answering (a stalled platform).
    delay: float = 0.0


class ScriptedPlatform:
    """Answers each path as told and remembers every request (method, path, authorization)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, str, str | None, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                owner.requests.append((self.command, path, self.headers.get("authorization"), body))
                answer = owner.answers.get(path, Answer(404, b'{"errors":[{"message":"not found"}]}'))
                time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.issuer = self.url
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def configuration(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.url + "/auth",
            "registration_endpoint": self.url + "/register",
            "jwks_uri": self.url + "/jwks",
            "token_endpoint": self.url + "/token",
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "https://purl.imsglobal.org/spec/lti-platform-configuration": {"product_family_code": "canvas"},
        }
        for name, value in changes.items():
            if value is None:
                config.pop(name, None)
            else:
                config[name] = value
        return config

    def serve(self, config: dict[str, Any] | bytes, registration: Answer | None = None) -> None:
        body = config if isinstance(config, bytes) else json.dumps(config).encode()
        self.answers["/openid-configuration"] = Answer(200, body)
        self.answers["/register"] = registration or Answer(
            200,
            json.dumps(
                {
                    "client_id": "c-" + secrets.token_hex(4),
                    "https://purl.imsglobal.org/spec/lti-tool-configuration": {"deployment_id": "1:x"},
                }
            ).encode(),
        )

    def posts(self) -> list[tuple[str, str, str | None, bytes]]:
        return [r for r in self.requests if r[0] == "POST"]


@pytest.fixture
def scripted() -> Iterator[ScriptedPlatform]:
    platform = ScriptedPlatform()
    yield platform
    platform.httpd.shutdown()
    platform.httpd.server_close()


def _register(
    server: Server,
    config_url: str,
    *,
    token: str = "reg-token",  # noqa: S107
    accept: str = "application/json",
) -> httpx.Response:
    return httpx.get(
        server.url + "/api/lti/register",
        params={"openid_configuration": config_url, "registration_token": token},
        headers={"accept": accept},
        timeout=30,
    )


def test_a_good_scripted_registration_posts_what_canvas_needs_with_the_token_as_bearer(
    server: Server, scripted: ScriptedPlatform
) -> None:
    scripted.serve(scripted.configuration())
    response = _register(server, scripted.url + "/openid-configuration", token="tok-123")
    assert response.status_code == 200, response.text
    assert response.json()["pending"] is True
    get, post = scripted.requests
    assert get[:3] == ("GET", "/openid-configuration", "Bearer tok-123")
    assert post[:3] == ("POST", "/register", "Bearer tok-123")
    sent = json.loads(post[3])
    assert sent["application_type"] == "web" and sent["response_types"] == ["id_token"]
    assert sent["grant_types"] == ["implicit", "client_credentials"]
    assert sent["initiate_login_uri"] == server.url + "/api/lti/login"
    assert sent["redirect_uris"] == [server.url + "/api/lti/launch"]
    assert sent["jwks_uri"] == server.url + "/api/lti/jwks"
    assert sent["token_endpoint_auth_method"] == "private_key_jwt" and isinstance(sent["scope"], str)
    tool = sent["https://purl.imsglobal.org/spec/lti-tool-configuration"]
    assert (
        tool["domain"] == urlsplit(server.url).netloc
        and tool["target_link_uri"] == server.url + "/api/lti/launch"
    )
    assert {m["type"] for m in tool["messages"]} == {"LtiResourceLinkRequest", "LtiDeepLinkingRequest"}
    assert tool["https://canvas.instructure.com/lti/privacy_level"] == "public" and "sub" in tool["claims"]
    (stored,) = registrations(server, scripted.issuer)
    assert stored.deployment_ids == ("1:x",) and stored.pending


def _refused(
    server: Server, scripted: ScriptedPlatform, config_url: str, status: int, code: str
) -> dict[str, Any]:
    before = registrations(server, scripted.issuer)
    body = problem(_register(server, config_url), status, code)
    page = _register(server, config_url, accept=HTML)
    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert f"<code>{code}</code>" in page.text and "Nothing was saved" in page.text
    assert "Traceback" not in page.text + json.dumps(body)
    assert registrations(server, scripted.issuer) == before
    return body


def test_a_missing_or_malformed_request_is_a_400(server: Server, scripted: ScriptedPlatform) -> None:
    scripted.serve(scripted.configuration())
    for params in (
        {},
        {"openid_configuration": scripted.url + "/openid-configuration"},
        {"registration_token": "t"},
    ):
        problem(
            httpx.get(server.url + "/api/lti/register", params=params), 400, "invalid_registration_request"
        )
    for url in (
        "ftp://example.com/c",
        "https://user:pw@example.com/c",
        "not a url",
        "https://example.com/c#f",
    ):
        _refused(server, scripted, url, 400, "invalid_registration_request")
    _refused(server, scripted, "http://example.com/openid-configuration", 400, "invalid_registration_request")
    problem(
        _register(server, scripted.url + "/openid-configuration", token="a b"),
        400,
        "invalid_registration_request",
    )
    problem(
        _register(server, scripted.url + "/openid-configuration", token="t" * 9000),
        400,
        "invalid_registration_request",
    )
    assert scripted.requests == []


def test_an_unreachable_or_failing_configuration_url_is_a_502(
    server: Server, scripted: ScriptedPlatform
) -> None:
    _refused(
        server,
        scripted,
        f"http://127.0.0.1:{free_port()}/openid-configuration",
        502,
        "openid_configuration_unavailable",
    )
    body = _refused(server, scripted, scripted.url + "/nothing-here", 502, "openid_configuration_unavailable")
    assert "HTTP 404" in body["detail"]
    scripted.answers["/moved"] = Answer(302, b"", {"location": "https://example.com/openid-configuration"})
    _refused(server, scripted, scripted.url + "/moved", 502, "openid_configuration_unavailable")
    assert scripted.posts() == []


@pytest.mark.parametrize(
    "document",
    [
        b"<html>not json</html>",
        b"",
        b"[1, 2]",
        b'{"issuer": NaN}',
        b'{"a": 1, "a": 2}',
        b"\xff\xfe{}",
        b" " * 300_000 + b"{}",
    ],
    ids=["html", "empty", "array", "nan", "duplicate-key", "utf16", "oversized"],
)
def test_a_configuration_that_is_not_a_json_object_is_a_clear_502(
    server: Server, scripted: ScriptedPlatform, document: bytes
) -> None:
    scripted.serve(document)
    _refused(server, scripted, scripted.url + "/openid-configuration", 502, "invalid_openid_configuration")
    assert scripted.posts() == []


def test_nan_and_lone_surrogates_inside_a_configuration_are_refused_not_a_500(
    server: Server, scripted: ScriptedPlatform
) -> None:
    good = json.dumps(scripted.configuration())
    for bad in (
        good.replace('"product_family_code": "canvas"', '"product_family_code": NaN'),
        good.replace('"product_family_code": "canvas"', '"product_family_code": "\\ud800"'),
        good.replace(scripted.url + "/jwks", scripted.url + "/jwks\\udfff"),
        good.replace('"product_family_code": "canvas"', '"product_family_code": 1e400'),
    ):
        scripted.serve(bad.encode())
        _refused(
            server, scripted, scripted.url + "/openid-configuration", 502, "invalid_openid_configuration"
        )
    assert scripted.posts() == []


@pytest.mark.parametrize(
    "change",
    [
        {"registration_endpoint": None},
        {"authorization_endpoint": None},
        {"jwks_uri": None},
        {"token_endpoint": None},
        {"issuer": None},
        {"https://purl.imsglobal.org/spec/lti-platform-configuration": None},
        {"https://purl.imsglobal.org/spec/lti-platform-configuration": "canvas"},
        {"jwks_uri": "http://evil.example.com/jwks"},
        {"registration_endpoint": "javascript:alert(1)"},
        {"token_endpoint_auth_methods_supported": ["client_secret_basic"]},
        {"authorization_endpoint": 42},
    ],
    ids=lambda c: "-".join(f"{k.rsplit('/', 1)[-1]}={v}" for k, v in c.items()),
)
def test_a_configuration_missing_or_lying_about_a_field_is_refused(
    server: Server, scripted: ScriptedPlatform, change: dict[str, Any]
) -> None:
    scripted.serve(scripted.configuration(**change))
    _refused(server, scripted, scripted.url + "/openid-configuration", 502, "invalid_openid_configuration")
    assert scripted.posts() == []


def test_an_issuer_on_another_origin_is_refused_before_anything_is_posted(
    server: Server, scripted: ScriptedPlatform
) -> None:
    for issuer in (
        "https://canvas.instructure.com",
        f"http://localhost:{urlsplit(scripted.url).port}",
        scripted.url.replace(str(urlsplit(scripted.url).port), str(free_port())),
    ):
        scripted.serve(scripted.configuration(issuer=issuer))
        body = _refused(server, scripted, scripted.url + "/openid-configuration", 502, "issuer_mismatch")
        assert issuer in body["detail"]
    assert scripted.posts() == []


@pytest.mark.parametrize(
    ("answer", "code", "said"),
    [
        (
            Answer(400, b'{"errorMessage": "JWT did not include expected contents"}'),
            "registration_refused",
            "JWT did not include",
        ),
        (
            Answer(422, b'{"errors": [{"message": "grant_types Must include client_credentials"}]}'),
            "registration_refused",
            "grant_types",
        ),
        (Answer(500, b"<h1>oops</h1>", {"content-type": "text/html"}), "registration_refused", "HTTP 500"),
        (Answer(302, b"", {"location": "https://example.com/"}), "registration_refused", "HTTP 302"),
        (
            Answer(200, b"<h1>garbage</h1>", {"content-type": "text/html"}),
            "invalid_registration_response",
            "not JSON",
        ),
        (Answer(200, b'{"client_id": 12345}'), "invalid_registration_response", "client_id"),
        (Answer(200, b'{"client_name": "Commons"}'), "invalid_registration_response", "client_id"),
        (
            Answer(200, b'{"client_id": "1", "https://purl.imsglobal.org/spec/lti-tool-configuration": []}'),
            "invalid_registration_response",
            "not an object",
        ),
        (
            Answer(
                200,
                b'{"client_id": "1", '
                b'"https://purl.imsglobal.org/spec/lti-tool-configuration": {"deployment_id": 7}}',
            ),
            "invalid_registration_response",
            "deployment_id",
        ),
        (Answer(200, b'{"client_id": "\\ud800"}'), "invalid_registration_response", "surrogate"),
        (Answer(200, b'{"client_id": "1", "x": NaN}'), "invalid_registration_response", "I-JSON"),
        (
            Answer(200, b'{"client_id": "1"' + b" " * 300_000 + b"}"),
            "invalid_registration_response",
            "larger",
        ),
    ],
    ids=[
        "error-json",
        "canvas-422",
        "error-html",
        "redirect",
        "garbage",
        "numeric-client",
        "no-client",
        "bad-block",
        "bad-deployment",
        "surrogate",
        "nan",
        "oversized",
    ],
)
def test_a_registration_endpoint_that_errs_or_answers_garbage_stores_nothing(
    server: Server, scripted: ScriptedPlatform, answer: Answer, code: str, said: str
) -> None:
    scripted.serve(scripted.configuration(), registration=answer)
    body = _refused(server, scripted, scripted.url + "/openid-configuration", 502, code)
    assert said in body["detail"]


def test_an_unreachable_registration_endpoint_is_a_502(server: Server, scripted: ScriptedPlatform) -> None:
    scripted.serve(scripted.configuration(registration_endpoint=f"http://127.0.0.1:{free_port()}/register"))
    _refused(server, scripted, scripted.url + "/openid-configuration", 502, "registration_refused")


def test_a_registration_for_a_pair_bound_to_another_institution_is_a_409_and_changes_nothing(
    server: Server, scripted: ScriptedPlatform
) -> None:
    school = server.add_institution()
    records(
        server,
        lambda s: s.records.add_lti13_registration(
            school.consumer_key,
            issuer=scripted.issuer,
            client_id="taken",
            deployment_ids=("1:a",),
            jwks_url="https://canvas.example.edu/jwks",
            auth_url="https://canvas.example.edu/auth",
            now=time.time(),
        ),
    )
    scripted.serve(scripted.configuration(), Answer(200, b'{"client_id": "taken"}'))
    _refused(server, scripted, scripted.url + "/openid-configuration", 409, "duplicate_lti13_registration")
    (kept,) = registrations(server, scripted.issuer)
    assert kept.consumer_key == school.consumer_key and kept.jwks_url == "https://canvas.example.edu/jwks"


def test_a_pending_platform_may_log_in_but_its_launch_without_proof_is_refused(
    server: Server, jwks: JwksServer
) -> None:
    from .canvas import CanvasUser

    platform = _pending_platform(server, jwks)
    started = login(server, platform)
    assert started.response.headers["location"].startswith(platform.auth_url + "?")
    token = platform.id_token(CanvasUser(), started.nonce)
    page = post_launch(server, token, started.state, started.binding, accept=HTML)
    assert page.status_code == 403 and "<code>registration_pending</code>" in page.text
    assert "frame-ancestors" in page.headers["content-security-policy"]
    assert _still_pending(server, platform)


def test_the_registration_url_is_in_the_openapi_document(server: Server) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert "get" in paths["/api/lti/register"]


def test_a_stalled_configuration_or_registration_endpoint_is_cut_off_and_stores_nothing(
    make_server: Callable[..., Server], scripted: ScriptedPlatform
) -> None:
    """Each call to the platform is bounded (here 5 x 0.4 s): a platform that does not answer
    holds no request of ours for long."""
    server = make_server(store_timeout=0.4)
    scripted.serve(scripted.configuration())
    scripted.answers["/openid-configuration"].delay = 4
    started = time.monotonic()
    body = problem(
        _register(server, scripted.url + "/openid-configuration"), 502, "openid_configuration_unavailable"
    )
    assert "within 2 s" in body["detail"] and time.monotonic() - started < 3.5
    scripted.answers["/openid-configuration"].delay = 0
    scripted.answers["/register"].delay = 4
    started = time.monotonic()
    body = problem(_register(server, scripted.url + "/openid-configuration"), 502, "registration_refused")
    assert "within 2 s" in body["detail"] and time.monotonic() - started < 3.5
    assert registrations(server, scripted.issuer) == []


def test_a_pending_platform_frames_none_of_our_pages_until_it_is_bound(
    server: Server, jwks: JwksServer
) -> None:
    platform = _pending_platform(server, jwks)
    origin = platform.issuer

    def framers() -> str:
        policy: str = httpx.get(server.url + "/").headers["content-security-policy"]
        return policy.split("frame-ancestors", 1)[1].split(";", 1)[0]

    assert origin not in framers()
    records(
        server,
        lambda s: s.records.bind_lti13_registration(
            platform.issuer, platform.client_id, platform.consumer_key
        ),
    )
    assert origin in framers()


def _register_access_line(server: Server) -> bool:
    entries = server.log_entries()
    return any(e.get("event") == "access" and e.get("path") == "/api/lti/register" for e in entries)


def test_the_registration_token_never_reaches_the_log(server: Server, scripted: ScriptedPlatform) -> None:
    """The token is a bearer credential, and Canvas repeats it inside the configuration URL."""
    token = "tok-" + secrets.token_hex(16)
    scripted.serve(scripted.configuration(issuer="https://canvas.instructure.com"))  # refused: logged as such
    config_url = f"{scripted.url}/openid-configuration?registration_token={token}"
    problem(_register(server, config_url, token=token), 502, "issuer_mismatch")
    deadline = time.monotonic() + 5
    while not _register_access_line(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = server.logs()
    assert _register_access_line(server)
    assert token not in logs
    assert "registration refused on /api/lti/register: issuer_mismatch" in logs
    assert "store failure on GET /api/lti/register" not in logs  # the platform's fault, no traceback


def test_origins_compare_as_browsers_compare_them() -> None:
    from commons_session.lti.registration import origin

    assert origin("https://Canvas.Example.edu:443/api/x?y") == "https://canvas.example.edu"
    assert origin("http://127.0.0.1:80/") == "http://127.0.0.1"
    assert origin("http://[::1]:8000/x") == "http://[::1]:8000"
    assert origin("https://canvas.example.edu:8443") != origin("https://canvas.example.edu")
