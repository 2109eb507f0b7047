"""Concurrency: many simultaneous logouts, reads and revokes of one session never bring it back
or answer 500, and afterwards it is 401 through every carrier and gone from the store;
simultaneous launches of one person create one user; one JWT posted many times at once
creates one session. On SQLite and on PostgreSQL.

The servers record activity on every read (``touch_interval=0``), so each read is a write
racing the deletes: the race a touch must never win by writing the row back."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from commons_session.domain.ids import handle_for, hash_id

from .backends import postgres_database
from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, launch, onboard, session_cookie, start_server

THREADS = 12


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def busy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own, on the backend under test, where every read writes."""
    with contextlib.ExitStack() as stack:
        settings: dict[str, Any] = {"touch_interval": 0}
        if request.param == "postgres":
            settings["database_url"] = stack.enter_context(postgres_database())
        srv = start_server(tmp_path_factory.mktemp("concurrency"), **settings)
        stack.callback(srv.stop)
        yield srv


def query(server: Server, sql: str, *params: Any) -> Any:
    """One value from the server's database, whichever engine it is (``?`` placeholders)."""
    url = server.env["COMMONS_SESSION_DATABASE_URL"]
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True)) as conn:
            return conn.execute(sql, params).fetchone()[0]
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql.replace("?", "%s"), params).fetchone()
        assert row is not None
        return row[0]


def new_session(client: httpx.Client, canvas: FakeCanvas, user: CanvasUser) -> str:
    """A session from a fresh Canvas JWT, made unique by a claim of its own (never a replay)."""
    token = canvas.jwt_token(user, custom_request=secrets.token_hex(8))
    response = client.post("/api/sessions", json={"jwt_token": token})
    assert response.status_code == 201, response.text
    return str(response.json()["sessionId"])


def stored(server: Server, session_id: str) -> int:
    return int(query(server, "SELECT count(*) FROM sessions WHERE id_hash = ?", hash_id(session_id)))


def carriers(client: httpx.Client, session_id: str) -> dict[str, httpx.Response]:
    """The session presented through every carrier, on a read and on the terms status."""
    read = f"/api/sessions/{session_id}"
    return {
        "cookie": client.get(read, headers={"cookie": f"session={session_id}"}),
        "header": client.get(read, headers={"x-session-id": session_id}),
        "query": client.get(read, params={"session-id": session_id}),
        "state": client.get(read, params={"state": session_id}),
        "body": client.post("/api/terms/accept", json={"sessionId": session_id, "version": "x"}),
        "terms": client.get("/api/terms", headers={"x-session-id": session_id}),
    }


def assert_dead(server: Server, client: httpx.Client, session_id: str) -> None:
    for carrier, response in carriers(client, session_id).items():
        assert response.status_code == 401, (carrier, response.status_code, response.text)
    assert stored(server, session_id) == 0


def run_together(actions: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Start every action at the same moment (a barrier), each on its own thread."""
    barrier = threading.Barrier(len(actions))

    def go(action: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return action()

    with ThreadPoolExecutor(len(actions)) as pool:
        return list(pool.map(go, actions))


@pytest.fixture(scope="module")
def client(busy: Server) -> Iterator[httpx.Client]:
    """One pooled client for the module: a new client per request costs more than the request."""
    with httpx.Client(base_url=busy.url, timeout=10, limits=httpx.Limits(max_connections=64)) as c:
        yield c


@pytest.fixture(scope="module")
def person(busy: Server) -> tuple[FakeCanvas, CanvasUser]:
    """One registered institution and one onboarded person per server."""
    canvas, user = busy.add_institution(), CanvasUser()
    onboard(busy, canvas, user)
    return canvas, user


def storm(c: httpx.Client, target: str, witness: str) -> list[tuple[str, httpx.Response]]:
    """Logouts through three carriers, reads through three, an end-by-handle from the person's
    other session and a listing, three of each, all released at the same moment."""
    handle = handle_for(hash_id(target))
    kinds: list[tuple[str, Callable[[], httpx.Response]]] = [
        ("logout", lambda: c.get("/api/sessions/logout", headers={"x-session-id": target})),
        ("logout", lambda: c.post("/api/sessions/logout", json={"sessionId": target})),
        ("logout", lambda: c.get("/api/sessions/logout", headers={"cookie": f"session={target}"})),
        ("read", lambda: c.get(f"/api/sessions/{target}", headers={"x-session-id": target})),
        ("read", lambda: c.get(f"/api/sessions/{target}", params={"session-id": target})),
        ("read", lambda: c.get("/api/terms", params={"state": target})),
        ("revoke", lambda: c.delete(f"/api/sessions/handles/{handle}", headers={"x-session-id": witness})),
        ("list", lambda: c.get("/api/sessions", headers={"x-session-id": target})),
    ]
    plan = [kinds[i % len(kinds)] for i in range(3 * len(kinds))]
    responses = run_together([action for _, action in plan])
    return [(kind, response) for (kind, _), response in zip(plan, responses, strict=True)]


def test_a_storm_of_logouts_reads_and_revokes_never_resurrects_a_session(
    busy: Server, client: httpx.Client, person: tuple[FakeCanvas, CanvasUser]
) -> None:
    canvas, user = person
    witness = new_session(client, canvas, user)  # another session of the same person
    allowed = {"logout": {204, 401}, "read": {200, 401}, "revoke": {204, 404}, "list": {200, 401}}
    for _ in range(4):
        target = new_session(client, canvas, user)
        answers = storm(client, target, witness)
        for kind, response in answers:
            assert response.status_code in allowed[kind], (kind, response.status_code, response.text)
        assert sum(r.status_code == 204 for kind, r in answers if kind == "logout") <= 1, "ended twice"
        assert_dead(busy, client, target)
    assert client.get(f"/api/sessions/{witness}", headers={"x-session-id": witness}).status_code == 200


def test_an_operator_revoke_racing_reads_and_logouts_never_resurrects(
    busy: Server, client: httpx.Client, person: tuple[FakeCanvas, CanvasUser]
) -> None:
    """``commons-session sessions revoke --user`` ends every session of the person while reads
    (each one a write here) and logouts of those sessions keep coming."""
    canvas, user = person
    targets = [new_session(client, canvas, user) for _ in range(3)]
    user_id = client.get(f"/api/sessions/{targets[0]}", headers={"x-session-id": targets[0]}).json()["userId"]
    revoke = subprocess.Popen(
        [sys.executable, "-m", "commons_session", "sessions", "revoke", "--user", user_id],
        env=busy.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    statuses: list[tuple[str, int]] = []

    def hammer(session_id: str, logout_after: float | None) -> None:
        started = time.monotonic()
        while revoke.poll() is None:
            if logout_after is not None and time.monotonic() - started > logout_after:
                logout_after = None
                response = client.get("/api/sessions/logout", headers={"x-session-id": session_id})
                statuses.append(("logout", response.status_code))
            response = client.get(f"/api/sessions/{session_id}", headers={"x-session-id": session_id})
            statuses.append(("read", response.status_code))

    threads = [
        threading.Thread(target=hammer, args=(targets[i % 3], 0.2 * i if i % 3 == 0 else None))
        for i in range(THREADS // 2)
    ]
    for thread in threads:
        thread.start()
    out, err = revoke.communicate(timeout=60)
    for thread in threads:
        thread.join(30)
    assert revoke.returncode == 0, err
    assert out.startswith("ended "), out
    allowed = {"read": {200, 401}, "logout": {204, 401}}
    assert statuses and all(code in allowed[kind] for kind, code in statuses), sorted(set(statuses))
    for target in targets:
        assert_dead(busy, client, target)


def test_simultaneous_launches_of_one_person_create_one_user(
    busy: Server, client: httpx.Client, person: tuple[FakeCanvas, CanvasUser]
) -> None:
    canvas, user = person[0], CanvasUser()
    responses = run_together([lambda: launch(busy, canvas, user, client) for _ in range(THREADS)])
    assert [r.status_code for r in responses] == [303] * THREADS, [r.text for r in responses]
    ids = [session_cookie(r) for r in responses]
    assert len(set(ids)) == THREADS
    count = query(busy, "SELECT count(*) FROM users WHERE lti_user_id = ?", user.lti_user_id)
    assert count == 1
    launches = query(
        busy,
        "SELECT count(*) FROM launches JOIN users ON users.id = launches.user_id WHERE users.lti_user_id = ?",
        user.lti_user_id,
    )
    assert launches == THREADS
    for session_id in ids:
        assert client.get("/api/terms", headers={"x-session-id": session_id}).status_code == 200


def test_one_jwt_posted_many_times_at_once_creates_exactly_one_session(
    busy: Server, client: httpx.Client, person: tuple[FakeCanvas, CanvasUser]
) -> None:
    canvas, user = person
    token = canvas.jwt_token(user, iat=time.time() - 2)
    digest = hashlib.sha256(token.encode()).hexdigest()
    responses = run_together(
        [lambda: client.post("/api/sessions", json={"jwt_token": token}) for _ in range(THREADS)]
    )
    statuses = sorted(r.status_code for r in responses)
    # A loser that arrives while the winner's claim is still provisional is told to retry (503):
    # had the winner then failed, the token would still be good.
    assert statuses.count(201) == 1 and set(statuses) <= {201, 401, 503}, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code != 201} <= {
        "token_already_used",
        "store_unavailable",
    }
    again = client.post("/api/sessions", json={"jwt_token": token})
    assert again.status_code == 401 and again.json()["code"] == "token_already_used"
    assert query(busy, "SELECT count(*) FROM once_claims WHERE key = ?", digest) == 1
