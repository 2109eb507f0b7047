"""Several service processes on one store: a session created on one is readable on every other at
once, and a logout, a revoke or an institution's removal on one is seen by all on the very next
request. Run against each shared deployment: PostgreSQL + Redis, one SQLite file, PostgreSQL
alone, PostgreSQL + a Redis Cluster, and ``serve --workers 2``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
from redis.cluster import RedisCluster

from commons_session.domain.ids import hash_id
from commons_session.stores.sqlite import latest_version

from .backends import postgres_database, redis_cluster, redis_server
from .canvas import CanvasUser, FakeCanvas
from .conftest import (
    Server,
    accept_terms,
    create_session,
    free_port,
    launch,
    onboard,
    session_cookie,
    start_server,
)

# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for the module's requests (a new client per request costs ~50 ms)."""
    with httpx.Client(timeout=15) as client:
        yield client


def read(http: httpx.Client, server: Server, session_id: str, **headers: str) -> httpx.Response:
    return http.get(
        f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id, **headers}
    )


def status(http: httpx.Client, server: Server, session_id: str) -> int:
    response = read(http, server, session_id)
    if response.status_code == 200:
        assert response.json()["sid"] == session_id
    return response.status_code


def assert_servers_share_sessions(http: httpx.Client, a: Server, b: Server, canvas: FakeCanvas) -> list[str]:
    """The shared journey: onboard on A, a session from B read on both at once; a logout on B
    is seen on A; a CLI revoke is seen on both and spares other users. Leaves one other user
    with two live sessions. Returns the ids it ended, for the caller to check the store."""
    user = CanvasUser()
    onboard(a, canvas, user)
    on_b = create_session(b, canvas, user)
    assert status(http, a, on_b) == 200  # immediately, no wait
    assert status(http, b, on_b) == 200

    assert http.get(b.url + "/api/sessions/logout", headers={"x-session-id": on_b}).status_code == 204
    assert status(http, a, on_b) == 401  # the very next request, on the other server

    on_a, again_on_b = create_session(a, canvas, user), create_session(b, canvas, user)
    other_user = CanvasUser()
    onboard(b, canvas, other_user)
    bystander = create_session(a, canvas, other_user)
    assert [status(http, s, sid) for s in (a, b) for sid in (on_a, again_on_b)] == [200] * 4

    user_id = read(http, b, on_a).json()["userId"]
    revoked = a.cli("sessions", "revoke", "--user", user_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "ended 3 session(s)" in revoked.stdout  # both JWT sessions and the launch's
    assert [status(http, s, sid) for s in (a, b) for sid in (on_a, again_on_b)] == [401] * 4
    assert status(http, b, bystander) == 200 and status(http, a, bystander) == 200
    return [on_b, on_a, again_on_b]


def assert_removing_the_institution_ends_its_sessions_everywhere(
    http: httpx.Client, a: Server, b: Server, canvas: FakeCanvas, live_before: int
) -> None:
    """``live_before``: the institution's live sessions so far; this adds two more."""
    user = CanvasUser()
    onboard(b, canvas, user)
    session_id = create_session(a, canvas, user)
    assert status(http, b, session_id) == 200
    removed = b.cli("institutions", "remove", "--consumer-key", canvas.consumer_key)
    assert removed.returncode == 0, removed.stderr
    assert f"ended {live_before + 2} session(s)" in removed.stdout
    assert status(http, a, session_id) == 401 and status(http, b, session_id) == 401


def pg_session_rows(database_url: str, session_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM sessions WHERE id_hash = %s", (hash_id(session_id),)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def started() -> Iterator[list[Server]]:
    """The servers a test starts, all stopped afterwards."""
    servers: list[Server] = []
    yield servers
    with ThreadPoolExecutor(max(1, len(servers))) as pool:  # each takes a second to shut down
        list(pool.map(Server.stop, servers))


def start_pair(started: list[Server], tmp: Path, **settings: Any) -> tuple[Server, Server]:
    """Two servers with the same settings, started at once, each in its own directory."""

    def start(name: str) -> Server:
        (tmp / name).mkdir()
        return start_server(tmp / name, **settings)

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(start, ("a", "b"))
    started.extend((a, b))
    return a, b


# -- deployments ------------------------------------------------------------------------------


def test_two_servers_on_one_postgresql_and_one_redis_share_sessions_kept_in_redis(
    http: httpx.Client, started: list[Server], tmp_path: Path
) -> None:
    with postgres_database() as database_url, redis_server() as store:
        a, b = start_pair(started, tmp_path, database_url=database_url, redis_url=store.url)
        canvas = a.add_institution()
        user = CanvasUser()
        onboard(b, canvas, user)
        live = create_session(a, canvas, user)
        assert status(http, b, live) == 200

        # Sessions live in Redis (by hash, with a TTL), not in PostgreSQL; nothing went to SQLite.
        with redis.Redis.from_url(store.url) as client:
            key = "cs:s:" + hash_id(live).hex()
            assert client.exists(key) == 1 and 0 < client.ttl(key) <= 3_600
        assert pg_session_rows(database_url, live) == 0
        assert not list(tmp_path.rglob("*.db"))

        ended = assert_servers_share_sessions(http, a, b, canvas)
        with redis.Redis.from_url(store.url) as client:
            assert [client.exists("cs:s:" + hash_id(sid).hex()) for sid in ended] == [0, 0, 0]
        # live: the first user's launch and JWT sessions, the bystander's two.
        assert_removing_the_institution_ends_its_sessions_everywhere(http, a, b, canvas, live_before=4)


def test_two_servers_started_at_once_on_one_new_sqlite_file_share_sessions(
    http: httpx.Client, started: list[Server], tmp_path: Path
) -> None:
    shared = tmp_path / "shared.db"  # created and migrated by whichever server comes first
    a, b = start_pair(started, tmp_path, database_url=f"sqlite:///{shared}")
    for server in (a, b):
        server.db_path = shared  # for server.stores
        assert not list((tmp_path / "a").glob("*.db")) and not list((tmp_path / "b").glob("*.db"))
    assert_servers_share_sessions(http, a, b, a.add_institution())


def test_two_servers_on_postgresql_alone_share_sessions_kept_in_postgresql(
    http: httpx.Client, started: list[Server], tmp_path: Path
) -> None:
    with postgres_database() as database_url:
        a, b = start_pair(started, tmp_path, database_url=database_url)
        canvas = b.add_institution()
        user = CanvasUser()
        onboard(a, canvas, user)
        live = create_session(b, canvas, user)
        assert pg_session_rows(database_url, live) == 1
        assert status(http, a, live) == 200

        ended = assert_servers_share_sessions(http, a, b, canvas)
        assert [pg_session_rows(database_url, sid) for sid in ended] == [0, 0, 0]


def test_the_full_journey_works_on_postgresql_and_a_redis_cluster_and_a_logout_is_seen_everywhere(
    http: httpx.Client, started: list[Server], tmp_path: Path
) -> None:
    with postgres_database() as database_url, redis_cluster() as cluster_url:
        a, b = start_pair(started, tmp_path, database_url=database_url, redis_url=cluster_url)
        canvas, user = a.add_institution(), CanvasUser()

        launched = launch(a, canvas, user)
        assert launched.status_code == 303 and urlsplit(launched.headers["location"]).path == "/terms"
        launch_session = session_cookie(launched)
        accept_terms(b, launch_session)  # the launch's session, on the other server
        terms = http.get(a.url + "/api/terms", headers={"x-session-id": launch_session})
        assert terms.status_code == 200 and terms.json()["accepted"] is True

        session_id = create_session(a, canvas, user)
        assert status(http, b, session_id) == 200
        listed = http.get(b.url + "/api/sessions", headers={"x-session-id": session_id})
        assert listed.status_code == 200
        assert [s["current"] for s in listed.json()["sessions"]] == [False, True]

        # The session is stored in the cluster (the client follows it to its slot's node).
        nodes = RedisCluster.from_url("redis://" + cluster_url.removeprefix("redis+cluster://"))
        key = "cs:s:" + hash_id(session_id).hex()
        try:
            assert nodes.exists(key) == 1
            assert pg_session_rows(database_url, session_id) == 0

            logout = http.get(a.url + "/api/sessions/logout", headers={"x-session-id": session_id})
            assert logout.status_code == 204
            assert status(http, b, session_id) == 401
            assert nodes.exists(key) == 0
        finally:
            nodes.close()

        again = create_session(b, canvas, user)
        others = http.post(a.url + "/api/sessions/logout-others", json={}, headers={"x-session-id": again})
        assert others.status_code == 200 and others.json() == {"ended": 1}  # the launch's session
        assert http.get(b.url + "/api/terms", headers={"x-session-id": launch_session}).status_code == 401
        assert status(http, b, again) == 200


# -- serve --workers N ------------------------------------------------------------------------


def start_workers(tmp: Path, workers: int) -> Server:
    """Like conftest.start_server, with ``--workers``; ready once the last worker started."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    env["COMMONS_SESSION_DATABASE_URL"] = f"sqlite:///{tmp / 'commons-session.db'}"
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commons_session",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    server = Server(f"http://127.0.0.1:{port}", tmp / "commons-session.db", log_path, env, process)
    deadline = time.monotonic() + 30
    while f"Started worker-{workers}" not in server.logs() or not _healthy(server):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server did not start:\n{server.logs()}")
        time.sleep(0.05)
    return server


def _healthy(server: Server) -> bool:
    try:
        return httpx.get(server.url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_with_two_workers_answers_every_request_from_the_shared_store(
    http: httpx.Client, tmp_path: Path
) -> None:
    server = start_workers(tmp_path, 2)
    try:
        assert "Spawning worker-1" in server.logs() and "Spawning worker-2" in server.logs()
        canvas, user = server.add_institution(), CanvasUser()
        onboard(server, canvas, user)
        sessions = [create_session(server, canvas, user) for _ in range(5)]

        def on_a_new_connection(session_id: str) -> int:
            # "Connection: close" makes the next request open a new connection, which the
            # kernel may hand to either worker.
            response = read(http, server, session_id, connection="close")
            if response.status_code == 200:
                assert response.json()["sid"] == session_id
            return response.status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(on_a_new_connection, sessions * 10)) == [200] * 50
            assert http.get(server.url + "/healthz").status_code == 200

            ended = http.get(server.url + "/api/sessions/logout", headers={"x-session-id": sessions[0]})
            assert ended.status_code == 204
            # Whichever worker answers, the logout is seen on the very next request.
            assert list(pool.map(on_a_new_connection, [sessions[0]] * 20)) == [401] * 20
            assert list(pool.map(on_a_new_connection, sessions[1:] * 3)) == [200] * 12
    finally:
        server.stop()


def test_two_workers_creating_at_once_on_sqlite_answer_every_create_and_keep_each_token_single_use(
    http: httpx.Client, tmp_path: Path
) -> None:
    """Both workers write the one file: one waits for the other's write lock (without stopping
    its event loop) and no create is refused, lost or allowed twice."""
    server = start_workers(tmp_path, 2)
    try:
        canvas, user = server.add_institution(), CanvasUser()
        onboard(server, canvas, user)
        tokens = [canvas.jwt_token(user, resource_link_id=f"link-{i}") for i in range(300)]

        def create(token: str) -> httpx.Response:
            # A new connection each, which the kernel may hand to either worker.
            return http.post(
                server.url + "/api/sessions", json={"jwt_token": token}, headers={"connection": "close"}
            )

        with ThreadPoolExecutor(16) as pool:
            created = list(pool.map(create, tokens))
            assert [r.status_code for r in created] == [201] * len(tokens), {r.text for r in created}
            ids = [r.json()["sessionId"] for r in created]
            assert list(pool.map(lambda i: status(http, server, i), ids)) == [200] * len(ids)
            replayed = list(pool.map(create, tokens[:20]))
        assert {(r.status_code, r.json()["code"]) for r in replayed} == {(401, "token_already_used")}
        with sqlite3.connect(server.db_path) as conn:
            stored = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        conn.close()
        assert stored == len(ids) + 1  # and the launch's
    finally:
        server.stop()


# -- first start ------------------------------------------------------------------------------

_MIGRATE_AT = """
import sys, time
from commons_session.stores.sqlite import SqliteStores
start = float(sys.argv[2])
while time.time() < start:  # every process opens the new file at the same moment
    pass
SqliteStores(sys.argv[1])
"""


def test_processes_creating_one_new_sqlite_file_at_once_all_start_and_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    start = time.time() + 1.5  # after every interpreter has imported the package
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_AT, str(path), repr(start)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [child.communicate(timeout=30)[1] for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0], errors
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sessions'").fetchone()[0] == 1
    conn.close()
