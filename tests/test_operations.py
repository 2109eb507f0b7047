"""What operators run the service by: /healthz and /readyz, Prometheus /metrics (correct across
workers), and request ids on the response and on every log line of the request."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .backends import redis_server
from .canvas import CanvasUser
from .conftest import Server, free_port, onboard

MakeServer = Callable[..., Server]
UNKNOWN_ID = "Q" * 42 + "A"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _log_entries(server: Server, request_id: str) -> list[dict[str, Any]]:
    """The JSON log lines, once the access line of request ``request_id`` (the last line of a
    request, written after its answer) is among them."""
    deadline = time.monotonic() + 10
    while True:
        entries = server.log_entries()
        if any(e.get("event") == "access" and e.get("request_id") == request_id for e in entries):
            return entries
        assert time.monotonic() < deadline, f"no access line for request {request_id}"
        time.sleep(0.05)


# -- health and readiness --------------------------------------------------------------------


def test_readyz_is_503_while_its_redis_is_down_and_healthz_stays_up(
    make_server: MakeServer,
) -> None:
    with redis_server() as redis:
        srv = make_server(redis_url=redis.url, store_timeout=1)
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}

        redis.stop()
        started = time.monotonic()
        down = httpx.get(srv.url + "/readyz", timeout=10)
        assert time.monotonic() - started < 3  # bounded by store_timeout, not hanging
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["code"] == "store_unavailable"
        # Alive all the same: a liveness probe must not restart a process because Redis is down.
        assert httpx.get(srv.url + "/healthz").json() == {"status": "ok"}
        # What requests met meanwhile is in the metrics: a store error on the sessions' get.
        read = httpx.get(f"{srv.url}/api/sessions/{UNKNOWN_ID}", headers={"x-session-id": UNKNOWN_ID})
        assert read.status_code == 503
        samples = _samples(httpx.get(srv.url + "/metrics").text)
        assert _value(samples, "commons_session_store_errors_total", role="sessions", operation="get") == 1

        redis.start()  # same port: the client reconnects by itself
        deadline = time.monotonic() + 10
        while httpx.get(srv.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "never ready again after Redis returned"
            time.sleep(0.1)


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_move_with_sessions_launches_and_refusals(server: Server) -> None:
    canvas, user = server.add_institution(), CanvasUser()
    before = _samples(httpx.get(server.url + "/metrics").text)

    session_id = onboard(server, canvas, user)  # a launch, a launch session, terms accepted
    token = canvas.jwt_token(user, iat=int(time.time()) - 3)
    created = httpx.post(server.url + "/api/sessions", json={"jwt_token": token})
    assert created.status_code == 201
    new_id = created.json()["sessionId"]
    read = httpx.get(f"{server.url}/api/sessions/{new_id}", headers={"x-session-id": new_id})
    assert read.status_code == 200
    forged = canvas.jwt_token(user, secret="not-the-secret")
    assert httpx.post(server.url + "/api/sessions", json={"jwt_token": forged}).status_code == 401
    assert (
        httpx.get(server.url + "/api/sessions/logout", headers={"x-session-id": session_id}).status_code
        == 204
    )

    # A request is counted once its answer has gone out: wait for the last one.
    logout = {"method": "GET", "route": "/api/sessions/logout", "status": "204"}
    deadline = time.monotonic() + 5
    while True:
        response = httpx.get(server.url + "/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        after = _samples(response.text)
        name = "commons_session_http_requests_total"
        if _value(after, name, **logout) > _value(before, name, **logout):
            break
        assert time.monotonic() < deadline, "the logout was never counted"
        time.sleep(0.05)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/api/sessions/{session_id}"
    assert moved("commons_session_http_requests_total", method="GET", route=route, status="200") == 1
    assert (
        moved("commons_session_http_requests_total", method="POST", route="/api/sessions", status="201") == 1
    )
    assert (
        moved("commons_session_http_requests_total", method="POST", route="/api/sessions", status="401") == 1
    )
    assert (
        moved("commons_session_http_request_duration_seconds_count", method="GET", route=route, status="200")
        == 1
    )
    assert moved("commons_session_sessions_created_total", via="jwt") == 1
    assert moved("commons_session_sessions_created_total", via="launch") == 1
    assert moved("commons_session_launches_total") == 1
    assert moved("commons_session_sessions_ended_total", reason="logout") == 1
    assert moved("commons_session_verification_failures_total", code="invalid_token_signature") == 1
    assert moved("commons_session_store_duration_seconds_count", role="sessions", operation="get") >= 2
    # Labelled by template only: no id, and no path the router did not know, becomes a series.
    assert session_id not in response.text and new_id not in response.text
    httpx.get(f"{server.url}/no/such/{secrets.token_hex(8)}")
    routes = {
        labels
        for (name, labels) in _samples(httpx.get(server.url + "/metrics").text)
        if name == "commons_session_http_requests_total"
    }
    assert all(
        dict(labels)["route"] == "unmatched" or dict(labels)["route"].startswith("/") for labels in routes
    )
    assert not any("/no/such/" in dict(labels)["route"] for labels in routes)


def test_metrics_report_the_totals_of_every_worker(tmp_path: Path) -> None:
    """``serve --workers 2``: whichever worker answers /metrics reports what both counted, and
    the directory their metric files share is removed when the server stops."""
    port, tmp = free_port(), tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMONS_SESSION_", "PROMETHEUS_"))}
    env |= {"COMMONS_SESSION_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "TMPDIR": str(tmp)}
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "commons_session", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, tmp_path / "server.log")
        assert list(tmp.glob("commons-session-metrics-*")), (
            "serve keeps the metric files in a directory of its own"
        )
        for _ in range(30):
            with httpx.Client() as fresh:  # a new connection each time, so both workers answer some
                assert fresh.get(url + "/openapi.json").status_code == 200
        labels = {"method": "GET", "route": "/openapi.json", "status": "200"}

        def counted() -> float:
            with httpx.Client() as fresh:
                samples = _samples(fresh.get(url + "/metrics").text)
            return _value(samples, "commons_session_http_requests_total", **labels)

        deadline = time.monotonic() + 5  # a request is counted just after its answer went out
        while counted() < 30:
            assert time.monotonic() < deadline, "some requests were never counted"
            time.sleep(0.05)
        assert [counted() for _ in range(6)] == [30] * 6  # whichever worker answers
    finally:
        process.terminate()
        process.wait(15)
    assert not list(tmp.glob("commons-session-metrics-*"))


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


# -- request ids -----------------------------------------------------------------------------


def test_request_id_is_echoed_and_on_every_log_line_of_the_request(server: Server) -> None:
    rid = "req-" + secrets.token_hex(8)
    response = httpx.get(
        f"{server.url}/api/sessions/{UNKNOWN_ID}", headers={"x-session-id": UNKNOWN_ID, "x-request-id": rid}
    )
    assert response.status_code == 401
    assert response.headers["x-request-id"] == rid

    lines = [e for e in _log_entries(server, rid) if e.get("request_id") == rid]
    loggers = {e["logger"] for e in lines}
    assert {"commons_session.access", "commons_session.security"} <= loggers, lines
    [access] = [e for e in lines if e.get("event") == "access"]
    assert access["status"] == 401 and access["path"] == "/api/sessions/[redacted]"
    assert all(UNKNOWN_ID not in json.dumps(e) for e in lines)


@pytest.mark.parametrize(
    "offered",
    [
        None,
        "",
        "x" * 65,  # too long
        "has space",
        "semi;colon",
        "Q" * 42 + "A",  # shaped like a session id: must never reach a log
        "trace." + "A" * 43,  # one embedded
    ],
)
def test_an_unacceptable_request_id_is_replaced_by_a_new_one(server: Server, offered: str | None) -> None:
    headers = {} if offered is None else {"x-request-id": offered}
    response = httpx.get(server.url + "/healthz", headers=headers)
    rid = response.headers["x-request-id"]
    assert rid != offered
    assert re.fullmatch(r"[0-9a-f]{16}", rid)
    lines = [e for e in _log_entries(server, rid) if e.get("request_id") == rid]
    assert [e["event"] for e in lines] == ["access"]
    if offered:
        assert offered not in server.logs()


def test_every_response_gets_its_own_request_id(server: Server) -> None:
    ids = {httpx.get(server.url + "/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
