"""Errors are RFC 9457 problem details with a stable ``code``, and bad input never earns a 500:
unknown routes 404, wrong methods 405, oversized bodies 413, wrong content types 415."""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from .conftest import Server

PROBLEM_FIELDS = {"type", "title", "status", "code", "detail"}
POST_ROUTES = ["/api/sessions", "/api/sessions/logout", "/api/terms/accept", "/api/lti", "/terms", "/logout"]
MAX_BODY = 65_536  # the default max_body_bytes
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
WELL_FORMED_UNKNOWN_ID = "A" * 43


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:commons-session:problem:{code}"
    assert body["title"] == HTTPStatus(status).phrase
    assert isinstance(body["detail"], str) and body["detail"]
    assert_no_trace(response.text)
    return body


def assert_no_trace(text: str) -> None:
    assert "Traceback" not in text, text
    assert "site-packages" not in text, text
    assert re.search(r'File "[^"]*", line \d+', text) is None, text


def raw_request(server: Server, request: bytes) -> bytes:
    """Send bytes no HTTP client library would, half-close, and read the whole answer."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        with contextlib.suppress(OSError):  # the server may have answered and closed already
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    return answer


def raw_status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def new_errors(server: Server) -> Iterator[None]:
    """Fails the test if the server logged an unhandled error while it ran."""
    before = len(server.logs())
    yield
    added = server.logs()[before:]
    assert "unhandled error" not in added, added
    assert "Traceback" not in added, added


# -- the named error classes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", "/api/nope", "/api/sessions/a/b", "/api/terms/accept/x", "/terms/x"]
)
def test_unknown_route_is_404_not_found(server: Server, path: str) -> None:
    for method in ("GET", "POST"):
        assert_problem(httpx.request(method, server.url + path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/sessions", {"POST"}),
        ("PUT", "/api/sessions", {"POST"}),
        ("PUT", "/api/sessions/logout", {"GET", "POST"}),
        ("DELETE", f"/api/sessions/{WELL_FORMED_UNKNOWN_ID}", {"GET"}),
        ("GET", "/api/terms/accept", {"POST"}),
        ("POST", "/api/terms", {"GET"}),
        ("GET", "/api/lti", {"POST"}),
        ("GET", "/logout", {"POST"}),
        ("POST", "/", {"GET"}),
        ("PATCH", "/terms", {"GET", "POST"}),
        ("POST", "/openapi.json", {"GET"}),
    ],
)
def test_wrong_method_is_405_with_an_allow_header(
    server: Server, method: str, path: str, allowed: set[str]
) -> None:
    response = httpx.request(method, server.url + path)
    assert_problem(response, 405, "method_not_allowed")
    listed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed <= listed and method not in listed


@pytest.mark.parametrize("path", POST_ROUTES)
def test_oversized_body_with_content_length_is_413(server: Server, path: str) -> None:
    body = b"jwt_token=" + b"x" * MAX_BODY
    response = httpx.post(server.url + path, content=body, headers=FORM)
    assert "content-length" in response.request.headers
    assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize("path", POST_ROUTES)
def test_oversized_chunked_body_without_content_length_is_413(server: Server, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"jwt_token="
        for _ in range(MAX_BODY // 4096 + 1):
            yield b"x" * 4096

    response = httpx.post(server.url + path, content=chunks(), headers=FORM)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


def test_a_body_just_under_the_limit_is_read(server: Server) -> None:
    body = json.dumps({"jwt_token": "", "pad": "x" * (MAX_BODY - 100)}).encode()
    assert len(body) <= MAX_BODY
    assert_problem(httpx.post(server.url + "/api/sessions", content=body, headers=JSON), 400, "bad_request")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/sessions", "text/plain"),
        ("/api/sessions", "multipart/form-data; boundary=x"),
        ("/api/sessions", "application/xml"),
        ("/api/sessions/logout", "text/plain"),
        ("/api/terms/accept", "application/octet-stream"),
        ("/api/lti", "application/json"),
        ("/terms", "application/json"),
        ("/logout", "application/json"),
    ],
)
def test_unsupported_content_type_is_415(server: Server, path: str, content_type: str) -> None:
    response = httpx.post(server.url + path, content=b'{"a": "b"}', headers={"content-type": content_type})
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("path", ["/api/sessions", "/api/sessions/logout", "/api/terms/accept"])
@pytest.mark.parametrize("body", [b"{", b'{"jwt_token": }', b"{'a': 1}", b"\xff\xfe\x00", b"[" * 50_000])
def test_malformed_json_is_400_invalid_json(server: Server, path: str, body: bytes) -> None:
    assert_problem(httpx.post(server.url + path, content=body, headers=JSON), 400, "invalid_json")


@pytest.mark.parametrize("body", [b"[]", b'["jwt_token", "x"]', b'"jwt_token"', b"null", b"42"])
def test_json_body_that_is_not_an_object_is_400(server: Server, body: bytes) -> None:
    assert_problem(httpx.post(server.url + "/api/sessions", content=body, headers=JSON), 400, "bad_request")


def test_json_array_to_accept_terms_is_400(server: Server, session_id: str) -> None:
    response = httpx.post(
        server.url + "/api/terms/accept", content=b'["version"]', headers={**JSON, "x-session-id": session_id}
    )
    assert_problem(response, 400, "bad_request")


@pytest.mark.parametrize("path", ["/api/sessions", "/api/terms/accept", "/api/lti", "/terms", "/logout"])
def test_form_body_that_is_not_utf8_is_400(server: Server, path: str) -> None:
    response = httpx.post(server.url + path, content=b"jwt_token=\xff\xfe&version=\xc3\x28", headers=FORM)
    assert_problem(response, 400, "bad_request")


def test_form_with_too_many_fields_is_400(server: Server) -> None:
    body = b"&".join(b"f%d=%d" % (i, i) for i in range(2_000))
    assert_problem(httpx.post(server.url + "/api/sessions", content=body, headers=FORM), 400, "bad_request")


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 50\r\n\r\n{}",
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ],
    ids=["short-of-content-length", "chunked-without-end", "bad-chunk-size"],
)
def test_truncated_body_is_400_not_500(server: Server, new_errors: None, path: str, framing: bytes) -> None:
    answer = raw_request(
        server,
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + framing,
    )
    assert raw_status(answer) == 400, answer[:300]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["code"] == "incomplete_body"


# -- no 500 for any garbage -----------------------------------------------------------------

_rng = random.Random(20261101)  # fixed: the same garbage every run
_GARBAGE: list[tuple[str, bytes, dict[str, str]]] = [
    ("random-json", _rng.randbytes(512), JSON),
    ("random-form", _rng.randbytes(512), FORM),
    ("random-untyped", _rng.randbytes(512), {}),
    ("random-nul", b"\x00" * 300, JSON),
    ("empty-json", b"", JSON),
    ("empty-form", b"", FORM),
    ("json-utf16", '{"jwt_token": "x", "version": "v"}'.encode("utf-16"), JSON),
    ("json-bom", b'\xef\xbb\xbf{"jwt_token": "x"}', JSON),
    ("json-charset", b'{"version": "x"}', {"content-type": "application/json; charset=latin-1"}),
    ("json-huge-number", b'{"version": 1e999999, "jwt_token": 1e999999}', JSON),
    ("json-nan", b'{"version": NaN, "sessionId": Infinity}', JSON),
    ("json-nested", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, JSON),
    (
        "json-wrong-types",
        b'{"jwt_token": ["a"], "sessionId": 5, "version": {"v": 1}, "csrf_token": []}',
        JSON,
    ),
    ("json-nulls", b'{"jwt_token": null, "sessionId": null, "version": null, "csrf_token": null}', JSON),
    ("json-jwt-garbage", b'{"jwt_token": "a.b.c"}', JSON),
    ("json-jwt-none-alg", b'{"jwt_token": "eyJhbGciOiJub25lIn0.eyJjb25zdW1lcl9rZXkiOiJ4In0."}', JSON),
    ("json-jwt-huge", b'{"jwt_token": "' + b"A" * 40_000 + b'"}', JSON),
    (
        "json-unknown-session",
        b'{"sessionId": "' + WELL_FORMED_UNKNOWN_ID.encode() + b'", "version": "v"}',
        JSON,
    ),
    ("json-unicode", '{"jwt_token": "☃\\ud800", "sessionId": "é", "version": "\\u0000"}'.encode(), JSON),
    ("form-percent-junk", b"%%%=%%%&&&==&=&%zz=%", FORM),
    ("form-bad-escapes", b"jwt_token=%ff%fe%00&sessionId=%c3%28&version=%80", FORM),
    ("form-everything", b"jwt_token=x&sessionId=y&version=z&csrf_token=w&oauth_consumer_key=k", FORM),
    ("form-oauth-junk", b"oauth_consumer_key=&oauth_signature=&oauth_nonce=&oauth_timestamp=soon", FORM),
    ("form-oauth-huge-timestamp", b"oauth_consumer_key=k&oauth_timestamp=" + b"9" * 400, FORM),
    ("form-repeated", b"sessionId=a&sessionId=b&version=1&version=2", FORM),
    ("multipart-no-boundary", b"--x\r\n\r\n", {"content-type": "multipart/form-data"}),
    ("content-type-junk", b"{}", {"content-type": ";;;="}),
    ("content-type-params", b"a=b", {"content-type": "application/x-www-form-urlencoded; charset=utf-7"}),
]
_HEADERS: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("none", []),
    ("x-session-id-garbage", [(b"x-session-id", b"not an id")]),
    ("x-session-id-unknown", [(b"x-session-id", WELL_FORMED_UNKNOWN_ID.encode())]),
    ("x-session-id-long", [(b"x-session-id", b"A" * 6_000)]),
    ("x-session-id-latin1", [(b"x-session-id", b"\xe9\xff\xfe")]),
    ("x-session-id-twice", [(b"x-session-id", b"a"), (b"x-session-id", WELL_FORMED_UNKNOWN_ID.encode())]),
    ("cookie-junk", [(b"cookie", b'session=; session="; =session; session==; ;;;')]),
    ("cookie-latin1", [(b"cookie", b"session=\xe9\xff")]),
    ("cookie-two", [(b"cookie", b"session=a; session=" + WELL_FORMED_UNKNOWN_ID.encode())]),
    ("conflicting-carriers", [(b"cookie", b"session=a"), (b"x-session-id", b"b")]),
    ("user-agent-huge", [(b"user-agent", b"U" * 7_000)]),
    ("forwarded-junk", [(b"x-forwarded-for", "☃".encode()), (b"host", b"evil.example:0")]),
]
_QUERIES = [
    "",
    "?session-id=" + "x" * 30_000,
    "?state=a&state=b&session-id=c&sessionId=d",
    "?%ff%fe=%00&%00=%ff",
    "?state=%E2%98%83&session-id=%E2%98%83",
    "?" + "&".join(f"k{i}=v" for i in range(3_000)),
]

# Every header set with no query and with one of the queries, every query with no headers.
_COMBINATIONS = [
    *(
        (headers, query)
        for i, (_, headers) in enumerate(_HEADERS)
        for query in dict.fromkeys(["", _QUERIES[i % len(_QUERIES)]])
    ),
    *(([], query) for query in _QUERIES[1:]),
]


def _send(server: Server, client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    response = client.request(method, server.url + path, **kw)
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
    assert_no_trace(response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.headers
        assert set(response.json()) >= PROBLEM_FIELDS
    return response


@pytest.mark.parametrize("path", POST_ROUTES)
def test_garbage_bodies_never_get_a_500(server: Server, new_errors: None, path: str) -> None:
    with httpx.Client(timeout=10) as client:
        for _, content, headers in _GARBAGE:
            _send(server, client, "POST", path, content=content, headers=headers)


@pytest.mark.parametrize("path", POST_ROUTES)
def test_garbage_headers_and_queries_never_get_a_500(server: Server, new_errors: None, path: str) -> None:
    with httpx.Client(timeout=10) as client:
        for headers, query in _COMBINATIONS:
            json_headers = [*headers, (b"content-type", b"application/json")]
            form_headers = [*headers, (b"content-type", FORM["content-type"].encode())]
            _send(server, client, "POST", path + query, content=b'{"version": "x"}', headers=json_headers)
            _send(
                server, client, "POST", path + query, content=b"version=x&jwt_token=y", headers=form_headers
            )


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/terms",
        "/api/terms",
        "/api/sessions/logout",
        f"/api/sessions/{WELL_FORMED_UNKNOWN_ID}",
        "/healthz",
    ],
)
def test_garbage_headers_and_queries_on_get_routes_never_get_a_500(
    server: Server, new_errors: None, path: str
) -> None:
    with httpx.Client(timeout=10) as client:
        for headers, query in _COMBINATIONS:
            _send(server, client, "GET", path + query, headers=headers)


@pytest.mark.parametrize(
    "path",
    [
        "/caf%C3%A9/%E2%98%83",
        "/api/sessions/%E2%98%83",
        "/api/sessions/%00",
        "/api/sessions/" + "A" * 5_000,
        "/api/sessions/%2e%2e%2fterms",
        "/api/terms/%ff%fe",
        "/%C0%AE%C0%AE/%C0%AE%C0%AE/etc/passwd",
        "/terms/../api/terms",
        "/" + "☃" * 200,
    ],
)
def test_unicode_and_odd_paths_never_get_a_500(server: Server, new_errors: None, path: str) -> None:
    with httpx.Client(timeout=10) as client:
        for method in ("GET", "POST", "DELETE"):
            _send(server, client, method, path, headers={"x-session-id": WELL_FORMED_UNKNOWN_ID})


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /\xff\xfe/caf\xc3\xa9 HTTP/1.1",
        b"GET /api/sessions/\xff HTTP/1.1",
        b"GET /api/terms?session-id=\xff\xfe HTTP/1.1",
        b"GET /api/terms?state=\x01\x02 HTTP/1.1",
    ],
)
def test_bytes_no_client_would_send_never_get_a_500(
    server: Server, new_errors: None, request_line: bytes
) -> None:
    answer = raw_request(server, request_line + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert raw_status(answer) < 500, answer[:300]
    assert_no_trace(answer.decode("latin-1"))


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: abc",
        b"Content-Length: 2\r\nContent-Length: 3",
        b"Content-Length: -1",
        b"Content-Length: 99999999999999999999999999",
        b"Cookie: session=\xff\xfe",
        b"X-Session-Id: \xff\xfe",
        b"Content-Type: \xff/\xfe",
    ],
)
def test_malformed_headers_never_get_a_500(server: Server, new_errors: None, headers: bytes) -> None:
    answer = raw_request(
        server,
        b"POST /api/sessions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + headers + b"\r\n\r\n{}",
    )
    assert raw_status(answer) < 500, answer[:300]
    assert_no_trace(answer.decode("latin-1"))


def test_trailing_slash_is_a_404_problem_not_a_redirect(server: Server) -> None:
    response = httpx.get(server.url + "/terms/", follow_redirects=False)
    assert_problem(response, 404, "not_found")


def test_unexpected_error_answer_has_no_trace_and_keeps_the_security_headers() -> None:
    """The catch-all handler runs outside the middleware stack, so it must add the headers."""
    import asyncio

    from starlette.requests import Request

    from commons_session.http.problems import exception_handlers

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}
    response = asyncio.run(exception_handlers[Exception](Request(scope), RuntimeError("secret detail")))
    assert response.status_code == 500
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert b"secret detail" not in response.body and b"Traceback" not in response.body
