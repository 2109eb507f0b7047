"""Ids never reach a log: session ids and Canvas JWTs, whichever carrier brought them, in the
path, in the query, refused or accepted. The access log is one JSON line per request with the
secrets replaced by ``[redacted]``."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import httpx

from .canvas import CanvasUser
from .conftest import Server, launch, onboard, session_cookie

REDACTED = "[redacted]"


def _wait_for(server: Server, marker: str) -> str:
    """The log once the line for the request carrying ``marker`` has been written."""
    deadline = time.monotonic() + 10
    while True:
        logs = server.logs()
        if marker in logs:
            return logs
        assert time.monotonic() < deadline, "the access log never showed the marker request"
        time.sleep(0.05)


def _access_lines(logs: str) -> list[dict[str, Any]]:
    lines = []
    for line in logs.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "access":
                lines.append(entry)
    return lines


def test_no_session_id_or_jwt_reaches_the_log(make_server: Any) -> None:
    srv: Server = make_server()
    canvas = srv.add_institution()
    user, other_user = CanvasUser(), CanvasUser()
    url = srv.url
    used_ids: list[str] = []
    used_tokens: list[str] = []

    def token(person: CanvasUser) -> str:
        minted = canvas.jwt_token(person, resource_link_id=secrets.token_hex(8))
        used_tokens.append(minted)
        return minted

    def create(person: CanvasUser, **kw: Any) -> str:
        response = httpx.post(url + "/api/sessions", **kw) if kw else None
        if response is None:
            response = httpx.post(url + "/api/sessions", json={"jwt_token": token(person)})
        assert response.status_code == 201, response.text
        sid = str(response.json()["sessionId"])
        used_ids.append(sid)
        return sid

    # Launch (cookie) and accept the terms; both people.
    used_ids.append(onboard(srv, canvas, user))
    used_ids.append(onboard(srv, canvas, other_user))
    mine = create(user)
    by_form = create(user, data={"jwt_token": token(user)})
    with_query_token = create(user, json={"jwt_token": token(user)}, params={"jwt_token": used_tokens[-1]})
    theirs = create(other_user)

    # Read through every carrier, with the id in the path too.
    read = f"{url}/api/sessions/{mine}"
    assert httpx.get(read, headers={"cookie": f"session={mine}"}).status_code == 200
    assert httpx.get(read, headers={"x-session-id": mine}).status_code == 200
    assert httpx.get(read, params={"session-id": mine}).status_code == 200
    assert httpx.get(read, params=[("state", mine), ("state", "second")]).status_code == 200
    # ... and under names or paths that carry nothing, as a confused client might send it.
    assert httpx.get(f"{url}/api/terms", params={"sessionid": mine, mine: "x"}).status_code == 401
    assert httpx.get(f"{url}/api/session/{mine}", headers={"x-session-id": mine}).status_code == 404
    assert httpx.get(f"{url}/{mine}/{used_tokens[0]}").status_code == 404
    assert httpx.get(f"{url}/api/terms?session%2Did={mine}").status_code == 200
    assert (
        httpx.post(
            url + "/api/terms/accept", json={"version": _version(srv, mine), "sessionId": mine}
        ).status_code
        == 204
    )
    assert httpx.get(url + "/", headers={"cookie": f"session={by_form}"}).status_code == 200

    # Refused requests: not yours, unknown, malformed, conflicting, replayed, forged.
    assert httpx.get(f"{url}/api/sessions/{theirs}", headers={"x-session-id": mine}).status_code == 403
    unknown = "Q" * 42 + "A"
    used_ids.append(unknown)
    assert httpx.get(f"{url}/api/sessions/{unknown}", params={"session-id": unknown}).status_code == 401
    assert httpx.get(f"{url}/api/sessions/{mine}/extra", params={"state": mine}).status_code == 404
    conflict = httpx.get(f"{url}/api/terms", headers={"x-session-id": mine}, params={"session-id": theirs})
    assert conflict.status_code == 400
    replayed = httpx.post(url + "/api/sessions", json={"jwt_token": used_tokens[0]})
    assert replayed.status_code == 401
    forged = canvas.jwt_token(user, secret="not-the-secret")
    used_tokens.append(forged)
    assert httpx.post(url + "/api/sessions", json={"jwt_token": forged}).status_code == 401
    never = canvas.jwt_token(CanvasUser())
    used_tokens.append(never)
    assert httpx.post(url + "/api/sessions", data={"jwt_token": never}).status_code == 403

    # A launch while holding a session (the old one is revoked).
    with httpx.Client(base_url=url, headers={"cookie": f"session={mine}"}) as holding:
        relaunched = launch(srv, canvas, user, client=holding)
    assert relaunched.status_code == 303
    used_ids.append(session_cookie(relaunched))

    # Logouts through each carrier, then the same ids again (refused).
    assert httpx.get(url + "/api/sessions/logout", params={"session-id": by_form}).status_code == 204
    assert httpx.post(url + "/api/sessions/logout", json={"sessionId": with_query_token}).status_code == 204
    assert httpx.get(url + "/api/sessions/logout", params={"state": theirs}).status_code == 204
    assert httpx.get(url + "/api/sessions/logout", params={"session-id": by_form}).status_code == 401
    assert httpx.get(f"{url}/api/sessions/{theirs}", headers={"x-session-id": theirs}).status_code == 401

    marker = "marker-" + secrets.token_hex(8)
    assert httpx.get(url + "/healthz", params={"probe": marker}).status_code == 200
    logs = _wait_for(srv, marker)

    assert len(used_ids) == len(set(used_ids)) >= 8
    for session_id in used_ids:
        assert session_id not in logs
    for jwt_token in used_tokens:
        assert jwt_token not in logs
        assert jwt_token.rsplit(".", 1)[1] not in logs  # not even the signature
    assert canvas.secret not in logs
    assert "Traceback" not in logs

    access = _access_lines(logs)
    assert access, logs
    for entry in access:
        assert {"method", "path", "status"} <= set(entry)
    reads = [e for e in access if (e["method"], e["path"]) == ("GET", "/api/sessions/" + REDACTED)]
    assert {e["status"] for e in reads} >= {200, 401, 403}
    queries = " ".join(str(e["query"]) for e in access)
    for name in ("session-id", "state", "jwt_token"):
        assert f"{name}={REDACTED}" in queries, queries
    assert re.search(r"state=\[redacted\]&state=\[redacted\]", queries), "every state value is redacted"
    assert any(e["path"] == "/api/sessions/" + REDACTED and e["status"] == 404 for e in access)
    assert "refused GET /api/sessions/[redacted]: not_your_session" in logs


def _version(server: Server, session_id: str) -> str:
    response = httpx.get(server.url + "/api/terms", headers={"x-session-id": session_id})
    return str(response.json()["version"])


def test_the_server_output_is_all_json_by_default_and_all_text_when_asked(make_server: Any) -> None:
    """granian's own lines (start, workers, shutdown) used to be plain text among our JSON."""
    as_json = make_server()
    httpx.get(as_json.url + "/healthz")
    as_json.stop()
    lines = [line for line in as_json.logs().splitlines() if line.strip()]
    assert any("granian" in line.lower() for line in lines), lines  # granian's lines are there
    for line in lines:
        entry = json.loads(line)  # every line, granian's included
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    assert any(json.loads(line).get("event") == "access" for line in lines)

    as_text = make_server(log_format="text")
    httpx.get(as_text.url + "/healthz")
    as_text.stop()
    lines = [line for line in as_text.logs().splitlines() if line.strip()]
    assert any(
        re.search(r"INFO +access: GET /healthz 200 [0-9.]+ ms \[[0-9a-f]{16}\]", line) for line in lines
    ), lines
    for line in lines:
        assert not line.startswith("{"), line
