"""Operator commands: ``sessions list|revoke`` by user or institution (by handle, never by id),
``users disable|enable``, and ``purge`` of expired sessions and single-use markers in batches."""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import SessionRecord

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, onboard

HANDLE = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        yield client


def status(http: httpx.Client, session_id: str) -> int:
    return http.get(f"/api/sessions/{session_id}", headers={"x-session-id": session_id}).status_code


def contents(http: httpx.Client, session_id: str) -> dict[str, Any]:
    response = http.get(f"/api/sessions/{session_id}", headers={"x-session-id": session_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ok(server: Server, *args: str) -> str:
    done = server.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


# -- sessions list ----------------------------------------------------------------------------


def test_sessions_list_prints_a_json_line_per_live_session_with_its_handle_and_never_an_id(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    ada, bob = CanvasUser(), CanvasUser()
    ids = [
        onboard(server, canvas, ada),
        create_session(server, canvas, ada),
        create_session(server, canvas, ada),
    ]
    bobs = [onboard(server, canvas, bob), create_session(server, canvas, bob)]
    ended = create_session(server, canvas, ada)
    assert http.get("/api/sessions/logout", headers={"x-session-id": ended}).status_code == 204
    ada_id, bob_id = contents(http, ids[1])["userId"], contents(http, bobs[1])["userId"]
    # What Ada herself sees, to compare handles with.
    mine = http.get("/api/sessions", headers={"x-session-id": ids[1]}).json()["sessions"]

    with ThreadPoolExecutor(2) as pool:  # independent commands; each takes a second to start
        by_user, by_institution = pool.map(
            lambda args: ok(server, *args),
            [
                ("sessions", "list", "--user", ada_id),
                ("sessions", "list", "--institution", canvas.consumer_key),
            ],
        )

    rows = [json.loads(line) for line in by_user.splitlines()]
    assert [r["handle"] for r in rows] == [s["handle"] for s in mine]  # three, oldest first
    for row in rows:
        assert HANDLE.fullmatch(row["handle"]) and row["user_id"] == ada_id
        assert {"created", "last_seen", "expires", "user_agent"} <= row.keys()
    everyone = [json.loads(line) for line in by_institution.splitlines()]
    assert sorted(r["user_id"] for r in everyone) == sorted([ada_id] * 3 + [bob_id] * 2)
    assert {r["handle"] for r in rows} < {r["handle"] for r in everyone}
    for session_id in [*ids, *bobs, ended]:
        for output in (by_user, by_institution):
            assert session_id not in output
            assert hash_id(session_id).hex() not in output


# -- sessions revoke --------------------------------------------------------------------------


def test_sessions_revoke_by_user_ends_theirs_and_by_institution_ends_the_rest_of_it(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    ada, bob = CanvasUser(), CanvasUser()
    adas = [
        onboard(server, canvas, ada),
        create_session(server, canvas, ada),
        create_session(server, canvas, ada),
    ]
    bobs = [onboard(server, canvas, bob), create_session(server, canvas, bob)]
    elsewhere = server.add_institution()
    onboard(server, elsewhere, ada)
    abroad = create_session(server, elsewhere, ada)  # Ada at another institution is another user

    out = ok(server, "sessions", "revoke", "--user", contents(http, adas[1])["userId"])

    assert "ended 3 session(s)" in out
    assert [status(http, s) for s in adas] == [401] * 3
    assert [status(http, s) for s in [*bobs, abroad]] == [200] * 3

    out = ok(server, "sessions", "revoke", "--institution", canvas.consumer_key)

    assert "ended 2 session(s)" in out
    assert [status(http, s) for s in bobs] == [401] * 2
    assert status(http, abroad) == 200


# -- users disable / enable -------------------------------------------------------------------


def test_a_disabled_user_loses_every_session_and_is_refused_launches_and_jwt_sessions_until_enabled(
    server: Server, canvas: FakeCanvas, http: httpx.Client
) -> None:
    user, colleague = CanvasUser(), CanvasUser()
    launched = onboard(server, canvas, user)
    session_id = create_session(server, canvas, user)
    onboard(server, canvas, colleague)
    colleagues = create_session(server, canvas, colleague)
    user_id = contents(http, session_id)["userId"]
    # Prepared before the disable, used while disabled, and again after the enable.
    launch_body, launch_headers = canvas.signed_launch(server.url + "/api/lti", user)
    token = canvas.jwt_token(user, resource_link_id=secrets.token_hex(8))
    launches = server.run(server.stores.records.count_launches(user_id))

    out = ok(server, "users", "disable", "--user", user_id)

    assert f"user {user_id} disabled; ended 2 session(s)" in out
    assert status(http, launched) == 401 and status(http, session_id) == 401
    assert status(http, colleagues) == 200

    assert_problem(http.post("/api/lti", content=launch_body, headers=launch_headers), 403, "user_disabled")
    assert_problem(http.post("/api/sessions", json={"jwt_token": token}), 403, "user_disabled")
    # The refused launch wrote nothing: no launch row, no session.
    assert server.run(server.stores.records.count_launches(user_id)) == launches
    assert server.run(server.stores.sessions.list_for_user(user_id)) == []
    user_row = server.run(server.stores.records.get_user(user_id))
    assert user_row is not None and user_row.disabled

    out = ok(server, "users", "enable", "--user", user_id)

    assert f"user {user_id} enabled" in out
    # Neither the launch's nonce nor the token was used up by the refusals.
    relaunch = http.post("/api/lti", content=launch_body, headers=launch_headers)
    assert relaunch.status_code == 303, relaunch.text
    assert server.run(server.stores.records.count_launches(user_id)) == launches + 1
    created = http.post("/api/sessions", json={"jwt_token": token})
    assert created.status_code == 201, created.text
    assert status(http, created.json()["sessionId"]) == 200


def test_operator_commands_on_an_unknown_user_or_institution_fail_with_a_clear_message(
    server: Server,
) -> None:
    missing = "no-such-user-" + secrets.token_hex(4)
    cases = {
        ("users", "disable", "--user", missing): f"No user has id {missing!r}",
        ("sessions", "revoke", "--user", missing): f"No user has id {missing!r}",
        ("sessions", "list", "--institution", "no-such-key"): "No institution has consumer key 'no-such-key'",
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        results = dict(zip(cases, pool.map(lambda args: server.cli(*args), cases), strict=True))
    for args, message in cases.items():
        done = results[args]
        assert done.returncode != 0, args
        assert message in done.stderr, (args, done.stderr)
        assert done.stdout == "", args


# -- purge ------------------------------------------------------------------------------------


def test_purge_removes_expired_sessions_and_markers_in_batches_and_leaves_live_ones(
    make_server: Callable[..., Server],
) -> None:
    idle = 4  # seconds: the live session must outlast the purge command's start-up
    server = make_server(idle_timeout=idle)
    canvas, user = server.add_institution(), CanvasUser()
    idled = [
        onboard(server, canvas, user),
        create_session(server, canvas, user),
        create_session(server, canvas, user),
    ]
    started = time.time()
    with httpx.Client(base_url=server.url) as http:
        user_id = contents(http, idled[1])["userId"]
        record = server.run(server.stores.sessions.get(hash_id(idled[1])))
        assert record is not None

        # Far more than one batch of each, arranged directly in the file: sessions long idle,
        # sessions past their absolute end, and single-use markers past their expiry.
        async def arrange() -> None:
            now = time.time()
            for n in range(1_200):
                seen = now - 10 * idle if n % 2 else now - 1
                await server.stores.sessions.create(
                    SessionRecord(
                        id_hash=hash_id(new_session_id()),
                        user_id=user_id,
                        institution_id=record.institution_id,
                        contents={},
                        created_at=now - 100,
                        last_seen_at=seen,
                        expires_at=now + 100 if n % 2 else now - 0.5,
                        user_agent=None,
                    )
                )
            for n in range(700):
                assert await server.stores.once.claim("jwt", f"old-{n}", now - 1, now - 60)

        server.run(arrange())
        time.sleep(max(0.0, started + idle + 0.1 - time.time()))  # the HTTP sessions go idle
        live = create_session(server, canvas, user)

        out = ok(server, "purge")

        assert "purged 1203 expired session(s) and 700 expired single-use marker(s)" in out
        with sqlite3.connect(server.db_path) as db:
            kept = db.execute("SELECT id_hash FROM sessions").fetchall()
            markers = db.execute("SELECT count(*) FROM once_claims WHERE key LIKE 'old-%'").fetchone()
        db.close()
        assert kept == [(hash_id(live),)]
        assert markers == (0,)
        assert status(http, live) == 200
