"""The audit stream: every kind of session and launch event is recorded with why it happened,
names sessions only by a hash prefix, is listed by ``commons-session audit`` with its filters,
and never fails the request it describes."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from commons_session.cli import main
from commons_session.domain.audit import AuditEvent
from commons_session.domain.ids import handle_for, hash_id

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, accept_terms, launch, onboard, session_cookie

MakeServer = Callable[..., Server]


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


class Journey:
    """Sessions and tokens of one test, remembered so the test can look for them afterwards."""

    def __init__(self, server: Server, canvas: FakeCanvas) -> None:
        self.server, self.canvas = server, canvas
        self.session_ids: list[str] = []
        self.tokens: list[str] = []
        self._iat = int(time.time())

    def launch(self, user: CanvasUser, holding: str | None = None, request_id: str | None = None) -> str:
        headers = {"cookie": f"session={holding}"} if holding else {}
        headers |= {"x-request-id": request_id} if request_id else {}
        with httpx.Client(base_url=self.server.url, headers=headers) as client:
            response = launch(self.server, self.canvas, user, client=client)
        assert response.status_code == 303, response.text
        self.session_ids.append(session_cookie(response))
        return self.session_ids[-1]

    def token(self, user: CanvasUser, **kw: Any) -> str:
        self._iat -= 1  # a distinct token each time
        self.tokens.append(self.canvas.jwt_token(user, iat=self._iat, **kw))
        return self.tokens[-1]

    def create(self, user: CanvasUser, **kw: Any) -> httpx.Response:
        return httpx.post(self.server.url + "/api/sessions", json={"jwt_token": self.token(user, **kw)})

    def session(self, user: CanvasUser) -> str:
        response = self.create(user)
        assert response.status_code == 201, response.text
        self.session_ids.append(response.json()["sessionId"])
        return self.session_ids[-1]


Cli = Callable[..., str]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``commons-session ARGS`` against a server's database, run in this process (a new Python
    for each command would cost a second each); returns what it printed."""

    def run(server: Server, *args: str) -> str:
        monkeypatch.setenv("COMMONS_SESSION_DATABASE_URL", server.env["COMMONS_SESSION_DATABASE_URL"])
        capsys.readouterr()
        status = main(list(args))
        printed = capsys.readouterr()
        assert status == 0, printed.err
        return printed.out

    return run


def _audit(cli: Cli, server: Server, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli(server, "audit", "--json", *args).splitlines()]


def test_every_event_kind_is_audited_with_its_reason_and_listed_by_the_cli(server: Server, cli: Cli) -> None:
    started = time.time()
    canvas = server.add_institution()
    key = canvas.consumer_key
    journey = Journey(server, canvas)
    ada, grace, never = CanvasUser(), CanvasUser(), CanvasUser()
    marker = "audit-" + secrets.token_hex(6)

    first = journey.launch(ada, request_id=marker)  # launch + session_created(launch)
    accept_terms(server, first)  # terms_accepted
    version = httpx.get(server.url + "/api/terms", headers={"x-session-id": first}).json()["version"]
    by_jwt = journey.session(ada)  # session_created(jwt)
    relaunched = journey.launch(ada, holding=by_jwt)  # launch_replaced + launch + created
    assert (
        httpx.get(server.url + "/api/sessions/logout", headers={"x-session-id": relaunched}).status_code
        == 204
    )
    keeper, doomed, _ = journey.session(ada), journey.session(ada), journey.session(ada)
    handle = handle_for(hash_id(doomed))
    ended = httpx.delete(f"{server.url}/api/sessions/handles/{handle}", headers={"x-session-id": keeper})
    assert ended.status_code == 204  # ended_by_user
    others = httpx.post(server.url + "/api/sessions/logout-others", json={"sessionId": keeper})
    assert others.json() == {"ended": 2}  # first and other: logout_others
    assert journey.create(ada, secret="not-the-secret").status_code == 401  # invalid_token_signature
    assert journey.create(never).status_code == 403  # never_launched
    ada_id = _user_id(server, keeper)
    cli(server, "sessions", "revoke", "--user", ada_id)  # operator
    onboard(server, canvas, grace)
    grace_id = _user_id(server, journey.session(grace))
    cli(server, "users", "disable", "--user", grace_id)  # user_disabled
    body, headers = canvas.signed_launch(server.url + "/api/lti", grace)
    assert httpx.post(server.url + "/api/lti", content=body, headers=headers).status_code == 403

    events = _audit(cli, server, "--institution", key, "--limit", "1000")
    seen = {(e["event"], e["reason"]) for e in events}
    assert seen >= {
        ("launch", None),
        ("session_created", "launch"),
        ("session_created", "jwt"),
        ("terms_accepted", version),
        ("session_ended", "launch_replaced"),
        ("session_ended", "logout"),
        ("session_ended", "ended_by_user"),
        ("session_ended", "logout_others"),
        ("session_revoked", "operator"),
        ("session_revoked", "user_disabled"),
        ("verification_failed", "invalid_token_signature"),
        ("verification_failed", "never_launched"),
        ("verification_failed", "user_disabled"),
    }, seen
    assert {e["institution"] for e in events} == {key}
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)

    def one(event: str, reason: str | None, user_id: str | None = ada_id) -> dict[str, Any]:
        [found] = [e for e in events if (e["event"], e["reason"], e["user_id"]) == (event, reason, user_id)]
        return found

    # Sessions named by hash prefix, and the right one each time.
    assert one("session_ended", "logout")["session"] == _hash(relaunched)
    assert one("session_ended", "launch_replaced")["session"] == _hash(by_jwt)
    assert one("session_ended", "ended_by_user")["session"] == _hash(doomed)
    assert one("terms_accepted", version)["session"] == _hash(first)
    assert one("session_ended", "logout_others")["detail"] == {"sessions": 2}
    assert one("session_revoked", "operator")["detail"] == {"sessions": 1}
    assert one("verification_failed", "user_disabled", grace_id)["institution"] == key
    assert one("session_revoked", "user_disabled", grace_id)["detail"] == {"sessions": 2}
    assert one("verification_failed", "invalid_token_signature", None)["session"] is None
    launched = [e for e in events if e["request_id"] == marker]
    assert {(e["event"], e["reason"]) for e in launched} == {("launch", None), ("session_created", "launch")}
    assert [e["session"] for e in launched if e["event"] == "session_created"] == [_hash(first)]

    # Filters, each of which changes the answer.
    created = [e for e in events if e["event"] == "session_created"]
    assert len(created) == len(journey.session_ids) + 1  # and grace's onboarding launch
    assert (
        _audit(cli, server, "--institution", key, "--event", "session_created", "--limit", "3") == created[:3]
    )
    grace_events = [e for e in events if e["user_id"] == grace_id]
    assert _audit(cli, server, "--user", grace_id, "--since", _iso(started - 1)) == grace_events
    assert _audit(cli, server, "--institution", key, "--since", _iso(time.time() + 3600)) == []
    text = cli(server, "audit", "--institution", key)
    assert len(text.splitlines()) == len(events)

    # No id or token anywhere: not in the CLI's answers, not in the table.
    with sqlite3.connect(server.db_path) as db:
        table = repr(db.execute("SELECT * FROM audit_events").fetchall())
    everything = json.dumps(events) + text + table
    assert len(journey.session_ids) >= 7 and len(journey.tokens) >= 6
    for secret in [*journey.session_ids, *journey.tokens, canvas.secret]:
        assert secret not in everything

    # Removing the institution ends its sessions; the audit outlives it.
    journey.launch(CanvasUser())
    cli(server, "institutions", "remove", "--consumer-key", key)
    revoked = _audit(cli, server, "--event", "session_revoked", "--since", _iso(started - 1))
    assert ("institution_removed", {"sessions": 1}) in [(e["reason"], e["detail"]) for e in revoked]


def test_an_expired_session_presented_again_is_audited_as_expired(make_server: MakeServer, cli: Cli) -> None:
    srv = make_server(idle_timeout=1)
    canvas, user = srv.add_institution(), CanvasUser()
    session_id = onboard(srv, canvas, user)
    time.sleep(1.2)
    response = httpx.get(f"{srv.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    assert response.status_code == 401
    [ended] = _audit(cli, srv, "--event", "session_ended")
    assert (ended["reason"], ended["session"]) == ("expired", _hash(session_id))


def test_a_failed_audit_write_is_logged_and_the_request_still_succeeds(make_server: MakeServer) -> None:
    srv = make_server()
    canvas, user = srv.add_institution(), CanvasUser()
    onboard(srv, canvas, user)
    with sqlite3.connect(srv.db_path) as db:  # the audit table refuses every write from now on
        db.execute(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events"
            " BEGIN SELECT RAISE(ABORT, 'audit down'); END"
        )
    journey = Journey(srv, canvas)
    session_id = journey.session(user)
    read = httpx.get(f"{srv.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    assert read.status_code == 200
    assert (
        httpx.get(srv.url + "/api/sessions/logout", headers={"x-session-id": session_id}).status_code == 204
    )

    logs = srv.logs()
    assert "audit event session_created (jwt) was not recorded" in logs
    assert "audit event session_ended (logout) was not recorded" in logs
    assert session_id not in logs
    assert "commons_session_audit_write_failures_total 2.0" in httpx.get(srv.url + "/metrics").text


def test_purge_deletes_audit_events_past_their_retention(server: Server, cli: Cli) -> None:
    user = "purge-" + secrets.token_hex(6)
    day = 86_400
    for age in (91 * day, 89 * day):  # the default retention is 90 days
        event = AuditEvent(event="launch", at=time.time() - age, user_id=user)
        server.run(server.stores.records.add_audit_event(event))

    printed = cli(server, "purge")

    assert "audit event(s) older than" in printed
    [kept] = _audit(cli, server, "--user", user)
    assert kept["at"] > _iso(time.time() - 90 * day)  # the younger one


# -- helpers ---------------------------------------------------------------------------------


def _user_id(server: Server, session_id: str) -> str:
    response = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
    return str(response.json()["userId"])


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
