"""An LTI 1.3 platform for tests, signing like Canvas: an RSA key (cryptography), its public half
published as a JWKS by a small HTTP server on a free loopback port (a thread of the test
process), and ``id_token``s signed by PyJWT with RS256 and the key's ``kid``. Not our verifying
code: the service must fetch the JWKS over HTTP and verify what this signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .canvas import GUID, CanvasUser
from .conftest import Server

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"


class JwksServer:
    """Serves each published JWKS at its own path and counts the fetches of each. A path can
    send caching headers (``headers``) and answer conditional requests as a web server does
    (``etags``: an ETag from the document's hash, 304 to a matching ``If-None-Match``)."""

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.fetches: dict[str, int] = {}
        #: Extra response headers per path, e.g. ``{"cache-control": "max-age=60"}``.
        self.headers: dict[str, dict[str, str]] = {}
        #: Paths that send an ETag and answer 304 when it is sent back.
        self.etags: set[str] = set()
        #: Each request's headers (lower-cased names), per path.
        self.requests: dict[str, list[dict[str, str]]] = {}
        #: How many 304s each path answered.
        self.not_modified: dict[str, int] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = owner.documents.get(self.path)
                owner.fetches[self.path] = owner.fetches.get(self.path, 0) + 1
                sent = {k.lower(): v for k, v in self.headers.items()}
                owner.requests.setdefault(self.path, []).append(sent)
                etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"' if body is not None else None
                use_etag = etag is not None and self.path in owner.etags
                if use_etag and sent.get("if-none-match") == etag:
                    owner.not_modified[self.path] = owner.not_modified.get(self.path, 0) + 1
                    self.send_response(304)
                    self._cache_headers(etag)
                    self.end_headers()
                    return
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "application/json")
                self._cache_headers(etag if use_etag else None)
                self.end_headers()
                self.wfile.write(body or b'{"error": "not found"}')

            def date_time_string(self, timestamp: float | None = None) -> str:
                """The Date header: the path's own, when it sets one (send_response adds it)."""
                return owner.headers.get(self.path, {}).get("date") or super().date_time_string(timestamp)

            def _cache_headers(self, etag: str | None) -> None:
                for name, value in owner.headers.get(self.path, {}).items():
                    if name != "date":
                        self.send_header(name, value)
                if etag is not None:
                    self.send_header("etag", etag)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def publish(self, path: str, document: dict[str, Any]) -> None:
        self.documents[path] = json.dumps(document).encode()


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def _key() -> tuple[rsa.RSAPrivateKey, str]:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), secrets.token_hex(8)


@dataclass
class Platform:
    """One registered platform (issuer + client id) with its own JWKS path."""

    jwks: JwksServer
    consumer_key: str
    secret: str
    issuer: str = field(default_factory=lambda: f"https://canvas-{secrets.token_hex(4)}.example.edu")
    client_id: str = field(default_factory=lambda: "1000000000" + secrets.token_hex(3))
    deployment_id: str = field(default_factory=lambda: f"1:{secrets.token_hex(20)}")
    auth_url: str = "https://sso.example.edu/api/lti/authorize_redirect"
    path: str = field(default_factory=lambda: f"/{secrets.token_hex(6)}/jwks")
    #: The tool's launch URL, sent in the login initiation and as the target_link_uri claim.
    target_link_uri: str = "https://tool.example.edu/api/lti/launch"

    def __post_init__(self) -> None:
        self.private_key, self.kid = _key()
        self.publish()

    @property
    def jwks_url(self) -> str:
        return self.jwks.url + self.path

    @property
    def fetches(self) -> int:
        return self.jwks.fetches.get(self.path, 0)

    def publish(self) -> None:
        public = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        self.jwks.publish(self.path, {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]})

    @property
    def not_modified(self) -> int:
        return self.jwks.not_modified.get(self.path, 0)

    def cache_headers(self, **headers: str) -> None:
        """Send these headers with the JWKS (``cache_control="max-age=60"``), and no others."""
        self.jwks.headers[self.path] = {k.replace("_", "-"): v for k, v in headers.items()}

    def rotate(self) -> None:
        """A new signing key under a new kid; the old one is no longer published."""
        self.private_key, self.kid = _key()
        self.publish()

    def claims(self, user: CanvasUser, nonce: str, **overrides: Any) -> dict[str, Any]:
        """What Canvas puts in a course navigation launch's id_token. An override of ``None``
        removes the claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "azp": self.client_id,
            "sub": f"sub-{user.lti_user_id[:12]}",
            "exp": now + 3600,
            "iat": now,
            "nonce": nonce,
            "name": user.name,
            "given_name": user.given,
            "family_name": "Lovelace",
            "email": "ada@example.edu",
            "picture": user.image,
            "locale": "en",
            CLAIM + "deployment_id": self.deployment_id,
            CLAIM + "message_type": "LtiResourceLinkRequest",
            CLAIM + "version": "1.3.0",
            CLAIM + "target_link_uri": self.target_link_uri,
            CLAIM + "resource_link": {"id": "6e06f2bb1d2ba6e6cf7e7e1d3bd7e8f6d5a8d1e9", "title": "Commons"},
            CLAIM + "roles": [
                "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Instructor",
                "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor",
                "http://purl.imsglobal.org/vocab/lis/v2/system/person#User",
            ],
            CLAIM + "context": {
                "id": "4dde05e8ca1973bcca9bffc13e1548820eee93a3",
                "label": "BIO101",
                "title": "Biology 101",
            },
            CLAIM + "tool_platform": {
                "guid": GUID,
                "name": "Example University",
                "product_family_code": "canvas",
                "version": "cloud",
            },
            CLAIM + "launch_presentation": {"document_target": "iframe", "locale": "en"},
            CLAIM + "custom": {
                "canvas_user_id": user.canvas_user_id,
                "canvas_api_domain": "canvas.example.edu",
                "canvas_course_id": "7",
            },
            CLAIM + "lti11_legacy_user_id": user.lti_user_id,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def lti1p1_sign(
        self, nonce: str, exp: int, *, consumer_key: str | None = None, secret: str | None = None
    ) -> str:
        """Canvas' ``oauth_consumer_key_sign`` for a launch of this platform (LTI 1.3 migration
        guide): base64 HMAC-SHA256 with the 1.1 secret over key, deployment id, iss, client id,
        exp and nonce joined with ``&``. Another key or secret makes a forgery."""
        key = consumer_key if consumer_key is not None else self.consumer_key
        base = "&".join([key, self.deployment_id, self.issuer, self.client_id, str(exp), nonce])
        digest = hmac.new((secret or self.secret).encode(), base.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def id_token(
        self,
        user: CanvasUser,
        nonce: str,
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """``extra`` overrides claims whose names are URIs (``CLAIM + "version"``)."""
        return jwt.encode(
            self.claims(user, nonce, **(extra or {}), **overrides),
            key or self.private_key,
            algorithm="RS256",
            headers={"kid": kid or self.kid},
        )

    def deep_linking_settings(self, return_url: str, **changes: Any) -> dict[str, Any]:
        """What Canvas sends in an editor_button / assignment_selection LtiDeepLinkingRequest.
        A change of ``None`` removes the setting."""
        settings: dict[str, Any] = {
            "deep_link_return_url": return_url,
            "accept_types": ["link", "file", "html", "ltiResourceLink", "image"],
            "accept_presentation_document_targets": ["embed", "iframe", "window"],
            "accept_media_types": "image/*,text/html,application/vnd.ims.lti.v1.ltilink,*/*",
            "accept_multiple": True,
            "auto_create": False,
            "title": "Place Commons",
            "data": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.dl-data.sig",
        }
        for name, value in changes.items():
            if value is None:
                settings.pop(name, None)
            else:
                settings[name] = value
        return settings

    def deep_linking_token(
        self,
        user: CanvasUser,
        nonce: str,
        settings: dict[str, Any] | None,
        *,
        extra: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """An LtiDeepLinkingRequest id_token as Canvas signs it: no resource_link claim, the
        deep_linking_settings claim (absent if ``settings`` is None)."""
        dl = {
            CLAIM + "message_type": "LtiDeepLinkingRequest",
            CLAIM + "resource_link": None,
            DL_SETTINGS: settings,
        }
        return self.id_token(user, nonce, extra={**dl, **(extra or {})}, **overrides)


DL_SETTINGS = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"


def register(server: Server, jwks: JwksServer, **kwargs: Any) -> Platform:
    """A new institution (1.1 key and secret) with an LTI 1.3 registration attached."""
    canvas = server.add_institution()
    kwargs.setdefault("target_link_uri", server.url + "/api/lti/launch")
    platform = Platform(jwks, canvas.consumer_key, canvas.secret, **kwargs)
    server.run(
        server.stores.records.add_lti13_registration(
            canvas.consumer_key,
            issuer=platform.issuer,
            client_id=platform.client_id,
            deployment_ids=(platform.deployment_id,),
            jwks_url=platform.jwks_url,
            auth_url=platform.auth_url,
            now=time.time(),
        )
    )
    return platform


def set_cookie(response: httpx.Response, name: str) -> str | None:
    """A cookie's value from Set-Cookie (Secure cookies are never sent back over plain HTTP by
    a client, so tests carry them by hand)."""
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    return None


def cookie_attributes(response: httpx.Response, name: str) -> dict[str, str]:
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        if first.partition("=")[0] == name:
            return {a.partition("=")[0].lower(): a.partition("=")[2] for a in attributes}
    raise AssertionError(f"no {name} cookie in {response.headers}")


@dataclass
class Login:
    """What a login initiation gave this browser."""

    response: httpx.Response
    state: str
    nonce: str
    binding: str
    query: dict[str, str]


def login(server: Server, platform: Platform, *, method: str = "GET", **params: str) -> Login:
    fields = {
        "iss": platform.issuer,
        "login_hint": "535fa085f22b4655f48cd5a36a9215f64c062838",
        "target_link_uri": server.url + "/api/lti/launch",
        "client_id": platform.client_id,
        "lti_message_hint": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.hint.sig",
        "lti_deployment_id": platform.deployment_id,
        "canvas_region": "not_configured",
        **params,
    }
    if method == "GET":
        response = httpx.get(server.url + "/api/lti/login", params=fields)
    else:
        response = httpx.post(server.url + "/api/lti/login", data=fields)
    assert response.status_code == 302, response.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}
    binding = set_cookie(response, "lti1p3_state")
    assert binding
    return Login(response, query["state"], query["nonce"], binding, query)


def post_launch(
    server: Server,
    id_token: str,
    state: str,
    binding: str | None,
    *,
    accept: str = "application/json",
    **extra: str,
) -> httpx.Response:
    headers = {"accept": accept}
    if binding is not None:
        headers["cookie"] = f"lti1p3_state={binding}"
    return httpx.post(
        server.url + "/api/lti/launch", data={"id_token": id_token, "state": state, **extra}, headers=headers
    )
