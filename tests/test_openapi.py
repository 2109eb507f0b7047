"""``/openapi.json`` describes what the code does: the same routes, the carriers as security
schemes, and every response the server gives to a representative set of requests (successes
and each error class) has a documented status, media type and schema."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from commons_session.http.routes import routes

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, launch, onboard, session_cookie
from .platform13 import jwks_server, login, post_launch, register

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
BASE = "urn:commons-session:openapi"
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
UNKNOWN_ID = "A" * 43
OTHER_UNKNOWN_ID = "B" * 43
TOO_BIG = b"x=" + b"x" * 70_000  # past the default max_body_bytes

Document = dict[str, Any]
Check = Callable[[str, str, httpx.Response], None]

_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339, with a zone (jsonschema checks date-time only with an optional extra)."""
    if not isinstance(value, str):
        return True
    return re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value) is not None and (
        datetime.fromisoformat(value).tzinfo is not None
    )


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@pytest.fixture(scope="module")
def document(server: Server) -> Document:
    response = httpx.get(server.url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc: Document = response.json()
    return doc


@pytest.fixture(scope="module")
def check(document: Document) -> Check:
    """``check(method, path_template, response)`` asserts the response is documented."""
    registry: Registry[Any] = Registry().with_resource(BASE, DRAFT202012.create_resource(document))

    def check(method: str, template: str, response: httpx.Response) -> None:
        where = f"{method} {template} -> {response.status_code}"
        operation = document["paths"][template][method.lower()]
        status = str(response.status_code)
        assert status in operation["responses"], f"{where} is not documented: {response.text[:300]}"
        documented = operation["responses"][status]
        content = documented.get("content") or {}
        if not response.content:
            return
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
        assert media_type in content, f"{where}: {media_type!r} is not documented (only {list(content)})"
        if "schema" not in content[media_type]:
            return
        instance: Any = response.json() if "json" in media_type else response.text
        ref = (
            BASE
            + "#"
            + _pointer("paths", template, method.lower(), "responses", status, "content", media_type)
        )
        validator = Draft202012Validator(
            {"$ref": ref + "/schema"}, registry=registry, format_checker=_formats
        )
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
        assert not errors, f"{where}: body does not match the documented schema: {errors}"

    return check


# -- the document itself ---------------------------------------------------------------------


def test_document_is_openapi_3_1_with_valid_schemas(document: Document) -> None:
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert document["info"]["title"] and document["info"]["version"]
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises SchemaError naming the fault


def test_every_ref_in_the_document_resolves(document: Document) -> None:
    registry: Registry[Any] = Registry().with_resource(BASE, DRAFT202012.create_resource(document))
    resolver = registry.resolver(BASE)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs, "the document should share its schemas through $ref"
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        assert resolver.lookup(ref).contents is not None, ref


def test_documented_operations_are_exactly_the_apps_routes(document: Document) -> None:
    served = {
        (route.path, method.lower())
        for route in routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == served


def test_operation_ids_are_unique_and_path_parameters_declared(document: Document) -> None:
    ids = [
        op["operationId"]
        for item in document["paths"].values()
        for m, op in item.items()
        if m in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)


def test_the_carriers_are_security_schemes(document: Document) -> None:
    schemes = document["components"]["securitySchemes"]
    found = {(s["type"], s["in"], s["name"]) for s in schemes.values() if s["type"] == "apiKey"}
    assert {
        ("apiKey", "cookie", "session"),
        ("apiKey", "header", "x-session-id"),
        ("apiKey", "query", "session-id"),
        ("apiKey", "query", "state"),
    } <= found


def test_every_security_requirement_names_a_documented_scheme(document: Document) -> None:
    schemes = set(document["components"]["securitySchemes"])
    used: set[str] = set()
    for item in document["paths"].values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                for requirement in operation.get("security", []):
                    used |= set(requirement)
    assert used, "session-protected operations must declare their security"
    assert used <= schemes
    session_read = document["paths"]["/api/sessions/{session_id}"]["get"]["security"]
    assert {name for requirement in session_read for name in requirement} == schemes - {"operator"}


def test_session_contents_keys_are_all_documented(
    document: Document, server: Server, session_id: str
) -> None:
    response = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    documented = set(document["components"]["schemas"]["SessionContents"]["properties"])
    # deepLinking is only in a Deep Linking launch's session (tests/test_deep_linking.py)
    assert set(response.json()) == documented - {"deepLinking"}


# -- conformance: the API routes -------------------------------------------------------------


def test_create_session_responses_conform(
    check: Check, server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    url, template = server.url + "/api/sessions", "/api/sessions"
    stranger = CanvasUser()
    seen: set[int] = set()

    def post(**kw: Any) -> None:
        response = httpx.post(url, **kw)
        check("POST", template, response)
        seen.add(response.status_code)

    post(json={"jwt_token": canvas.jwt_token(stranger)})  # 403 never_launched
    launch(server, canvas, user)
    post(json={"jwt_token": canvas.jwt_token(user)})  # 403 terms_not_accepted
    onboard(server, canvas, user)
    post(json={"jwt_token": canvas.jwt_token(user)})  # 201
    post(data={"jwt_token": canvas.jwt_token(user, resource_link_id="form")})  # 201, form body
    post(json={"jwt_token": canvas.jwt_token(user, secret="wrong")})  # 401
    post(json={"jwt_token": "not.a.jwt"})  # 401
    post(json={})  # 400
    post(content=b"{", headers=JSON)  # 400 invalid_json
    post(content=b"[]", headers=JSON)  # 400
    post(json={"jwt_token": "A" * 20_000})  # 413 token_too_large
    post(content=TOO_BIG, headers=FORM)  # 413
    post(content=b"jwt_token=x", headers={"content-type": "text/plain"})  # 415
    assert seen >= {201, 400, 401, 403, 413, 415}


def test_read_session_responses_conform(check: Check, server: Server, session_id: str) -> None:
    template = "/api/sessions/{session_id}"
    seen: set[int] = set()

    def get(path_id: str, **kw: Any) -> None:
        response = httpx.get(f"{server.url}/api/sessions/{path_id}", **kw)
        check("GET", template, response)
        seen.add(response.status_code)

    get(session_id, headers={"x-session-id": session_id})  # 200
    get(session_id, params={"session-id": session_id})  # 200
    get(session_id, headers={"cookie": f"session={session_id}"})  # 200
    get(session_id)  # 401
    get(UNKNOWN_ID, headers={"x-session-id": UNKNOWN_ID})  # 401
    get(UNKNOWN_ID, headers={"x-session-id": session_id})  # 403
    get(session_id, headers={"x-session-id": session_id}, params={"session-id": UNKNOWN_ID})  # 400
    assert seen == {200, 400, 401, 403}


def test_logout_responses_conform(check: Check, server: Server, canvas: FakeCanvas, user: CanvasUser) -> None:
    onboard(server, canvas, user)
    url, template = server.url + "/api/sessions/logout", "/api/sessions/logout"
    seen: set[tuple[str, int]] = set()

    def send(method: str, **kw: Any) -> None:
        response = httpx.request(method, url, **kw)
        check(method, template, response)
        seen.add((method, response.status_code))

    def fresh() -> str:
        return session_cookie(launch(server, canvas, user))

    send("GET", headers={"x-session-id": fresh()})  # 204
    send("GET", params={"state": fresh()})  # 204
    send("GET")  # 401
    send("GET", headers={"x-session-id": UNKNOWN_ID})  # 401
    send("GET", headers={"x-session-id": UNKNOWN_ID, "cookie": f"session={OTHER_UNKNOWN_ID}"})  # 400
    send("POST", json={"sessionId": fresh()})  # 204
    send("POST", data={"sessionId": fresh()})  # 204
    send("POST")  # 401
    send("POST", content=b"{", headers=JSON)  # 400
    send("POST", content=TOO_BIG, headers=FORM)  # 413
    send("POST", content=b"sessionId=x", headers={"content-type": "text/plain"})  # 415
    assert {s for m, s in seen if m == "GET"} == {204, 400, 401}
    assert {s for m, s in seen if m == "POST"} == {204, 400, 401, 413, 415}


def test_terms_responses_conform(check: Check, server: Server, canvas: FakeCanvas, user: CanvasUser) -> None:
    session_id = session_cookie(launch(server, canvas, user))
    seen: set[tuple[str, int]] = set()

    def send(method: str, template: str, **kw: Any) -> dict[str, Any]:
        response = httpx.request(method, server.url + template, **kw)
        check(method, template, response)
        seen.add((template, response.status_code))
        return response.json() if response.headers.get("content-type") == "application/json" else {}

    version = send("GET", "/api/terms", headers={"x-session-id": session_id})["version"]  # 200
    send("GET", "/api/terms")  # 401
    send("GET", "/api/terms", headers={"x-session-id": session_id}, params={"state": UNKNOWN_ID})  # 400

    accept = "/api/terms/accept"
    send("POST", accept, json={"version": version})  # 401
    send("POST", accept, json={}, headers={"x-session-id": session_id})  # 400
    send("POST", accept, content=b"{", headers={**JSON, "x-session-id": session_id})  # 400
    send("POST", accept, json={"version": "nope"}, headers={"x-session-id": session_id})  # 409
    send("POST", accept, data={"version": version}, headers={"cookie": f"session={session_id}"})  # 403
    send("POST", accept, content=TOO_BIG, headers={**FORM, "x-session-id": session_id})  # 413
    send(
        "POST", accept, content=b"version=x", headers={"content-type": "text/xml", "x-session-id": session_id}
    )
    send("POST", accept, json={"version": version, "sessionId": session_id})  # 204
    assert {s for t, s in seen if t == "/api/terms"} == {200, 400, 401}
    assert {s for t, s in seen if t == accept} == {204, 400, 401, 403, 409, 413, 415}


def test_lti_launch_responses_conform(
    check: Check, server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    url = server.url + "/api/lti"
    seen: set[int] = set()

    def post(content: str | bytes, headers: dict[str, str]) -> None:
        response = httpx.post(url, content=content, headers=headers)
        check("POST", "/api/lti", response)
        seen.add(response.status_code)

    post(*canvas.signed_launch(url, user))  # 303
    post(*canvas.signed_launch(url, user, secret="wrong"))  # 401
    post(*canvas.signed_launch(url, user, user_id=None))  # 400 invalid_launch
    post(b"oauth_consumer_key=\xff", FORM)  # 400
    post(TOO_BIG, FORM)  # 413
    post(b"{}", JSON)  # 415
    assert seen == {303, 400, 401, 413, 415}


# -- conformance: pages and meta ------------------------------------------------------------


def test_page_responses_conform(check: Check, server: Server, canvas: FakeCanvas, user: CanvasUser) -> None:
    session_id = session_cookie(launch(server, canvas, user))
    cookie = {"cookie": f"session={session_id}"}
    conflicting = {"cookie": f"session={session_id}", "x-session-id": UNKNOWN_ID}
    seen: set[tuple[str, str, int]] = set()

    def send(method: str, template: str, **kw: Any) -> httpx.Response:
        response = httpx.request(method, server.url + template, **kw)
        check(method, template, response)
        seen.add((method, template, response.status_code))
        return response

    for template in ("/", "/terms"):
        send("GET", template)  # 200 signed out
        send("GET", template, headers=cookie)  # 200
        send("GET", template, headers=conflicting)  # 400

    html = send("GET", "/terms", headers=cookie).text
    version = re.search(r'name="version" value="([^"]+)"', html)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert version and token
    form = {"version": version.group(1), "csrf_token": token.group(1)}
    send("POST", "/terms", data={"version": "nope", "csrf_token": form["csrf_token"]}, headers=cookie)  # 409
    send("POST", "/terms", data={"version": form["version"]}, headers=cookie)  # 403
    send("POST", "/terms", data={"csrf_token": form["csrf_token"]}, headers=cookie)  # 400
    send("POST", "/terms", data=form)  # 401
    send("POST", "/terms", content=TOO_BIG, headers={**FORM, **cookie})  # 413
    send("POST", "/terms", json=form, headers=cookie)  # 415
    send("POST", "/terms", data=form, headers=cookie)  # 303

    send("POST", "/logout", data={}, headers=cookie)  # 403
    send("POST", "/logout", data={"csrf_token": form["csrf_token"]})  # 401
    send("POST", "/logout", content=b"csrf_token=\xff", headers={**FORM, **cookie})  # 400
    send("POST", "/logout", content=TOO_BIG, headers={**FORM, **cookie})  # 413
    send("POST", "/logout", json={"csrf_token": form["csrf_token"]}, headers=cookie)  # 415
    send("POST", "/logout", data={"csrf_token": form["csrf_token"]}, headers=cookie)  # 303

    assert {s for m, t, s in seen if (m, t) == ("GET", "/")} == {200, 400}
    assert {s for m, t, s in seen if (m, t) == ("POST", "/terms")} == {303, 400, 401, 403, 409, 413, 415}
    assert {s for m, t, s in seen if (m, t) == ("POST", "/logout")} == {303, 400, 401, 403, 413, 415}


def test_meta_responses_conform(check: Check, server: Server) -> None:
    for template in ("/openapi.json", "/healthz"):
        response = httpx.get(server.url + template)
        assert response.status_code == 200
        check("GET", template, response)


# -- conformance: every documented operation, probed without credentials -------------------


def test_every_documented_operation_answers_as_documented_to_anonymous_and_garbage_requests(
    check: Check, document: Document, server: Server
) -> None:
    probes: list[dict[str, Any]] = [
        {},
        {"headers": {"x-session-id": UNKNOWN_ID}},
        {"headers": {"x-session-id": "not-an-id"}},
        {"headers": {"x-session-id": UNKNOWN_ID}, "params": {"session-id": OTHER_UNKNOWN_ID}},
    ]
    bodies: list[dict[str, Any]] = [
        {"content": b"{", "headers": JSON},
        {"content": b"[1]", "headers": JSON},
        {"content": b"a=\xff", "headers": FORM},
        {"content": TOO_BIG, "headers": FORM},
        {"content": b"x", "headers": {"content-type": "text/plain"}},
    ]
    for template, item in document["paths"].items():
        path = re.sub(r"{\w+}", UNKNOWN_ID, template)
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            extra = bodies if "requestBody" in operation else []
            for probe in [*probes, *extra]:
                response = httpx.request(method.upper(), server.url + path, **probe)
                check(method.upper(), template, response)


# -- conformance: LTI 1.3 and the cookie-less hand-off -------------------------------------------


def test_lti13_and_exchange_responses_conform(check: Check, server: Server) -> None:
    seen: set[tuple[str, str, int]] = set()

    def record(method: str, template: str, response: httpx.Response) -> httpx.Response:
        check(method, template, response)
        seen.add((method, template, response.status_code))
        return response

    with jwks_server() as jwks:
        platform = register(server, jwks)
        user = CanvasUser()
        target = {"target_link_uri": server.url + "/api/lti/launch"}
        for method in ("GET", "POST"):
            record(method, "/api/lti/login", login(server, platform, method=method).response)  # 302
        storage = httpx.get(
            server.url + "/api/lti/login",
            params={"iss": platform.issuer, "login_hint": "h", "lti_storage_target": "_parent", **target},
        )
        record("GET", "/api/lti/login", storage)  # 200
        record("GET", "/api/lti/login", httpx.get(server.url + "/api/lti/login", params={"iss": "x"}))  # 400

        started = login(server, platform)
        token = platform.id_token(user, started.nonce)
        launch_page = post_launch(server, token, started.state, None, accept="text/html")
        record("POST", "/api/lti/launch", launch_page)  # 401 text/html
        record("POST", "/api/lti/launch", post_launch(server, token, started.state, None))  # 401 problem
        stored = post_launch(server, token, started.state, None, lti_storage_target="_parent")
        record("POST", "/api/lti/launch", stored)  # 200 Platform Storage page
        landed = record("POST", "/api/lti/launch", post_launch(server, token, started.state, started.binding))
        record("POST", "/api/lti/launch", post_launch(server, "x", "y", None))  # 401

        again = login(server, platform)
        confirm = server.url + "/api/lti/launch/confirm"
        body = {
            "id_token": platform.id_token(user, again.nonce),
            "state": again.state,
            "binding": again.binding,
            "nonce": again.nonce,
        }
        record("POST", "/api/lti/launch/confirm", httpx.post(confirm, json=body))  # 200
        record("POST", "/api/lti/launch/confirm", httpx.post(confirm, json=body))  # 401 nonce_replayed
        record("POST", "/api/lti/launch/confirm", httpx.post(confirm, json={}))  # 400

    code = landed.headers["location"].split("code=", 1)[1]
    exchange = server.url + "/api/sessions/exchange"
    record("POST", "/api/sessions/exchange", httpx.post(exchange, json={"code": code}))  # 200
    record("POST", "/api/sessions/exchange", httpx.post(exchange, json={"code": code}))  # 401
    record("POST", "/api/sessions/exchange", httpx.post(exchange, json={"code": 1}))  # 400
    for page in ("/", "/terms"):
        record("GET", page, httpx.get(server.url + page, params={"code": code}))  # 200 exchange shell
    record("GET", "/static/{name}", httpx.get(server.url + "/static/session.js"))  # 200
    record("GET", "/static/{name}", httpx.get(server.url + "/static/other.js"))  # 404

    assert {s for m, t, s in seen if t == "/api/lti/login"} == {200, 302, 400}
    assert {s for m, t, s in seen if t == "/api/lti/launch"} == {200, 303, 401}
    assert {s for m, t, s in seen if t == "/api/lti/launch/confirm"} == {200, 400, 401}
    assert {s for m, t, s in seen if t == "/api/sessions/exchange"} == {200, 400, 401}
    assert {s for m, t, s in seen if t == "/static/{name}"} == {200, 404}
