"""Where a request may carry its session id: cookie ``session``, header ``x-session-id``, query
``session-id``, the first query ``state``, body ``sessionId`` (JSON or form), in that order."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response

from commons_session.config import Settings
from commons_session.domain.ids import new_session_id
from commons_session.domain.models import SessionRecord
from commons_session.domain.service import Policy, SessionService
from commons_session.domain.terms import Terms
from commons_session.errors import ConflictingSessionIds, InvalidSession
from commons_session.http.carriers import Carried, extract_session_id
from commons_session.http.cookies import set_session_cookie
from commons_session.stores.base import SessionStore, Stores
from commons_session.stores.sqlite import SqliteStores

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session

ALL_CARRIERS = ["cookie", "header", "query", "state", "json body", "form body"]
BODY_CARRIERS = {"json body", "form body"}
# The test servers run with the default terms (conftest strips COMMONS_SESSION_* settings).
TERMS_VERSION = str(Settings.model_fields["terms_version"].default)


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


def presenting(server: Server, carriers: list[tuple[str, str]], path_id: str) -> httpx.Response:
    """Send each ``(carrier, id)``. With a body carrier, accept the terms (POST, 204 when
    authenticated); without one, read ``/api/sessions/{path_id}`` (GET, 200)."""
    headers: list[tuple[str, str]] = []
    params: list[tuple[str, str | int | float | bool | None]] = []
    body: dict[str, Any] = {}
    form = False
    for carrier, session_id in carriers:
        if carrier == "cookie":
            headers.append(("Cookie", f"session={session_id}"))
        elif carrier == "header":
            headers.append(("x-session-id", session_id))
        elif carrier == "query":
            params.append(("session-id", session_id))
        elif carrier == "state":
            params.append(("state", session_id))
        elif carrier in BODY_CARRIERS:
            body["sessionId"] = session_id
            form = carrier == "form body"
        else:
            raise AssertionError(carrier)
    if body:
        body["version"] = TERMS_VERSION
        kwargs: dict[str, Any] = {"data": body} if form else {"json": body}
        return httpx.post(server.url + "/api/terms/accept", headers=headers, params=params, **kwargs)
    return httpx.get(f"{server.url}/api/sessions/{path_id}", headers=headers, params=params)


def succeeded(response: httpx.Response) -> bool:
    return response.status_code in (200, 204)


# -- over HTTP --------------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", ALL_CARRIERS)
def test_each_carrier_alone_authenticates(server: Server, session_id: str, carrier: str) -> None:
    response = presenting(server, [(carrier, session_id)], session_id)
    assert succeeded(response), response.text


@pytest.mark.parametrize("carrier", ALL_CARRIERS)
def test_each_carrier_is_read_an_unknown_id_in_it_is_invalid(server: Server, carrier: str) -> None:
    unknown = secrets.token_urlsafe(32)
    assert_problem(presenting(server, [(carrier, unknown)], unknown), 401, "invalid_session")


def test_only_the_first_state_value_counts(server: Server, session_id: str) -> None:
    url = f"{server.url}/api/sessions/{session_id}"
    first = httpx.get(url, params=[("state", session_id), ("state", "junk")])
    assert first.status_code == 200, first.text
    second = httpx.get(url, params=[("state", "junk"), ("state", session_id)])
    assert_problem(second, 401, "invalid_session")


@pytest.fixture
def two_sessions(server: Server, session_id: str, canvas: FakeCanvas, user: CanvasUser) -> tuple[str, str]:
    """Two live sessions of one user."""
    return session_id, create_session(server, canvas, user, iat=time.time() - 60)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("cookie", "header"),
        ("cookie", "query"),
        ("header", "query"),
        ("header", "state"),
        ("query", "state"),
        ("state", "json body"),
        ("cookie", "json body"),
        ("header", "form body"),
        ("cookie", "cookie"),
        ("header", "header"),
        ("query", "query"),
    ],
)
def test_two_carriers_with_different_ids_are_400(
    server: Server, two_sessions: tuple[str, str], first: str, second: str
) -> None:
    a, b = two_sessions
    response = presenting(server, [(first, a), (second, b)], a)
    assert_problem(response, 400, "conflicting_session_ids")


def test_a_live_id_and_garbage_still_conflict(server: Server, session_id: str) -> None:
    """No silent choice of the one that happens to work."""
    response = presenting(server, [("header", "garbage"), ("query", session_id)], session_id)
    assert_problem(response, 400, "conflicting_session_ids")


@pytest.mark.parametrize("carriers", [["cookie", "header"], ["header", "query", "state"], ALL_CARRIERS[:5]])
def test_the_same_id_in_several_carriers_is_fine(
    server: Server, session_id: str, carriers: list[str]
) -> None:
    response = presenting(server, [(c, session_id) for c in carriers], session_id)
    assert succeeded(response), response.text


def test_empty_carriers_are_ignored(server: Server, session_id: str) -> None:
    url = f"{server.url}/api/sessions/{session_id}"
    cases: dict[str, httpx.Response] = {
        "empty cookie": httpx.get(url, headers={"Cookie": "session=", "x-session-id": session_id}),
        "empty header": httpx.get(url, headers={"x-session-id": ""}, params={"session-id": session_id}),
        "empty queries": httpx.get(
            url, params=[("session-id", ""), ("state", "")], headers={"x-session-id": session_id}
        ),
        "empty body": httpx.post(
            server.url + "/api/terms/accept",
            json={"sessionId": "", "version": TERMS_VERSION},
            headers={"x-session-id": session_id},
        ),
    }
    for case, response in cases.items():
        assert succeeded(response), (case, response.text)


def test_only_empty_carriers_is_session_required(server: Server, session_id: str) -> None:
    response = httpx.get(
        f"{server.url}/api/sessions/{session_id}",
        headers={"Cookie": "session=", "x-session-id": ""},
        params=[("session-id", ""), ("state", "")],
    )
    assert_problem(response, 401, "session_required")


# -- malformed ids never reach the store ------------------------------------------------------


class SpySessions(SessionStore):
    """Wraps the real SQLite session store, recording every lookup and delete."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.gets: list[bytes] = []
        self.deletes: list[bytes] = []

    async def create(self, session: SessionRecord) -> None:
        await self.inner.create(session)

    async def get(self, id_hash: bytes) -> SessionRecord | None:
        self.gets.append(id_hash)
        return await self.inner.get(id_hash)

    async def touch(self, id_hash: bytes, last_seen_at: float) -> bool:
        return await self.inner.touch(id_hash, last_seen_at)

    async def delete(self, id_hash: bytes) -> bool:
        self.deletes.append(id_hash)
        return await self.inner.delete(id_hash)


@pytest.fixture
def spied(tmp_path: Path) -> Iterator[tuple[SessionService, SpySessions]]:
    real = SqliteStores(tmp_path / "spy.db")
    spy = SpySessions(real.sessions)
    service = SessionService(Stores(real.records, spy, real.once), Policy(), Terms("1", "Be kind."))
    yield service, spy
    asyncio.run(real.close())


MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("abc", id="short"),
    pytest.param("A" * 42, id="42 chars"),
    pytest.param("A" * 44, id="44 chars"),
    pytest.param("A" * 42 + "B", id="last char carries bits a 256-bit id cannot have"),
    pytest.param("A" * 42 + "=", id="padding"),
    pytest.param("A" * 41 + "+/", id="standard base64 alphabet"),
    pytest.param("é" * 43, id="non-ascii"),
    pytest.param("A" * 42 + "\x00", id="nul"),
    pytest.param(" " + "A" * 42, id="space"),
    pytest.param("' OR 1=1 --" + "A" * 32, id="sql"),
]


@pytest.mark.parametrize("session_id", MALFORMED)
def test_malformed_id_is_rejected_without_a_store_lookup(
    spied: tuple[SessionService, SpySessions], session_id: str
) -> None:
    service, spy = spied
    with pytest.raises(InvalidSession):
        asyncio.run(service.authenticate(session_id))
    with pytest.raises(InvalidSession):
        asyncio.run(service.logout(session_id))
    assert spy.gets == []
    assert spy.deletes == []


def test_well_formed_unknown_id_is_looked_up_by_its_hash(spied: tuple[SessionService, SpySessions]) -> None:
    """The control for the test above: the spy does see lookups, and only hashes reach it."""
    service, spy = spied
    session_id = secrets.token_urlsafe(32)
    with pytest.raises(InvalidSession):
        asyncio.run(service.authenticate(session_id))
    assert spy.gets == [hashlib.sha256(session_id.encode()).digest()]


# -- extract_session_id -----------------------------------------------------------------------

ID_A = secrets.token_urlsafe(32)
ID_B = secrets.token_urlsafe(32)


def extract(
    headers: list[tuple[str, str]] | None = None,
    query: str | list[tuple[str, str]] = "",
    body: dict[str, Any] | None = None,
) -> Carried | None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
    return extract_session_id(Headers(raw=raw), QueryParams(query), body)


def test_extract_finds_nothing_in_a_bare_request() -> None:
    assert extract() is None
    assert extract(body={}) is None
    assert extract(headers=[("cookie", "other=1"), ("authorization", f"Bearer {ID_A}")]) is None


@pytest.mark.parametrize(
    ("kwargs", "carrier"),
    [
        ({"headers": [("cookie", f"session={ID_A}")]}, "cookie"),
        ({"headers": [("x-session-id", ID_A)]}, "header"),
        ({"query": [("session-id", ID_A)]}, "query"),
        ({"query": [("state", ID_A)]}, "state"),
        ({"body": {"sessionId": ID_A}}, "body"),
    ],
)
def test_extract_reads_each_carrier_alone(kwargs: dict[str, Any], carrier: str) -> None:
    assert extract(**kwargs) == Carried(ID_A, carrier)


@pytest.mark.parametrize(
    ("kwargs", "carrier"),
    [
        ({"headers": [("cookie", f"session={ID_A}"), ("x-session-id", ID_A)]}, "cookie"),
        ({"headers": [("x-session-id", ID_A)], "query": [("session-id", ID_A)]}, "header"),
        ({"query": [("state", ID_A), ("session-id", ID_A)]}, "query"),
        ({"query": [("state", ID_A)], "body": {"sessionId": ID_A}}, "state"),
    ],
)
def test_extract_reports_the_first_carrier_in_documented_order(kwargs: dict[str, Any], carrier: str) -> None:
    assert extract(**kwargs) == Carried(ID_A, carrier)


def test_extract_takes_only_the_first_state_value() -> None:
    assert extract(query=[("state", ID_A), ("state", ID_B)]) == Carried(ID_A, "state")
    assert extract(query=[("state", "junk"), ("state", ID_A)]) == Carried("junk", "state")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": [("cookie", f"session={ID_A}"), ("x-session-id", ID_B)]},
        {"headers": [("cookie", f"session={ID_A}; session={ID_B}")]},
        {"headers": [("cookie", f"session={ID_A}"), ("cookie", f"session={ID_B}")]},
        {"headers": [("x-session-id", ID_A), ("x-session-id", ID_B)]},
        {"query": [("session-id", ID_A), ("session-id", ID_B)]},
        {"query": [("session-id", ID_A), ("state", ID_B)]},
        {"query": [("state", ID_A)], "body": {"sessionId": ID_B}},
        {"headers": [("cookie", f"session={ID_A}")], "body": {"sessionId": ID_B}},
    ],
)
def test_extract_refuses_two_different_ids(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConflictingSessionIds):
        extract(**kwargs)


def test_extract_ignores_empty_and_blank_values() -> None:
    assert (
        extract(
            headers=[("cookie", "session="), ("cookie", 'session=""'), ("x-session-id", "  ")],
            query=[("session-id", ""), ("state", "")],
            body={"sessionId": ""},
        )
        is None
    )
    assert extract(headers=[("cookie", "session="), ("x-session-id", ID_A)]) == Carried(ID_A, "header")


@pytest.mark.parametrize("value", [None, 123, True, [ID_A], {"id": ID_A}])
def test_extract_ignores_a_non_string_body_session_id(value: object) -> None:
    assert extract(body={"sessionId": value}) is None


def test_extract_picks_the_session_cookie_among_others() -> None:
    headers = [("cookie", f'theme=dark; sessions=x; xsession=y; other=session=z; session="{ID_A}"; lang=en')]
    assert extract(headers=headers) == Carried(ID_A, "cookie")


@pytest.mark.parametrize("secure", [True, False])
def test_session_cookie_header_is_the_one_starlette_writes(secure: bool) -> None:
    """set_session_cookie writes the header by hand; it must stay what Response.set_cookie writes."""
    settings = Settings(cookie_secure=secure, absolute_timeout=4321)
    session_id = new_session_id()
    ours, theirs = Response(), Response()
    set_session_cookie(ours, session_id, settings)
    theirs.set_cookie(
        "session",
        session_id,
        max_age=4321,
        path="/",
        httponly=True,
        secure=secure,
        samesite="none" if secure else "lax",
    )
    assert ours.raw_headers == theirs.raw_headers
