"""Graceful shutdown: on SIGTERM the server stops accepting connections, finishes the requests
it is serving with their normal answers, closes its stores and exits 0 within seconds; the
SQLite file it leaves is consistent, and a new server on it serves the sessions it had."""

from __future__ import annotations

import json
import secrets
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing

import httpx

from .canvas import CanvasUser
from .conftest import Server, onboard
from .test_crash import detached, group_alive

__all__ = ["detached"]  # the fixture, shared with test_crash

SLOW = 3  # slow requests in flight at the SIGTERM


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def accepting(server: Server) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=0.5):
            return True
    except OSError:
        return False


def send_head(server: Server, path: str, body: bytes, headers: str = "") -> socket.socket:
    """Open a connection and send a request's head and the first half of its body: the server
    has the request in hand and is waiting for the rest."""
    sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=20)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n"
    )
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def finish(sock: socket.socket, body: bytes) -> tuple[int, bytes]:
    """Send the rest of the body and read the whole answer: (status, body)."""
    with sock:
        sock.sendall(body[len(body) // 2 :])
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), f"no answer to an in-flight request: {answer[:200]!r}"
    return int(head.split()[1]), payload


def test_sigterm_finishes_in_flight_requests_then_exits_0_leaving_a_consistent_database(
    detached: Callable[..., Server],
) -> None:
    server = detached()
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    before = []
    for _ in range(5):
        token = canvas.jwt_token(user, custom_request=secrets.token_hex(8))
        created = httpx.post(server.url + "/api/sessions", json={"jwt_token": token})
        assert created.status_code == 201, created.text
        before.append(created.json()["sessionId"])

    # Slow creates, and a slow terms acceptance, each halfway through its body.
    bodies = [
        json.dumps({"jwt_token": canvas.jwt_token(user, custom_request=secrets.token_hex(8))}).encode()
        for _ in range(SLOW)
    ]
    creates = [send_head(server, "/api/sessions", body) for body in bodies]
    terms_body = json.dumps({"version": "2026-11-01"}).encode()
    accept = send_head(server, "/api/terms/accept", terms_body, f"x-session-id: {before[0]}\r\n")
    # Reads arriving steadily until the server stops taking them.
    reads: list[tuple[float, int | str]] = []  # (when it was sent, its status or its fate)
    stop_reading = threading.Event()
    signalled = float("inf")

    def read_loop() -> None:
        # A new connection for every read: a read is in flight from its connect on.
        client = httpx.Client(
            base_url=server.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        )
        while not stop_reading.is_set():
            sent = time.monotonic()
            try:
                response = client.get(f"/api/sessions/{before[1]}", headers={"x-session-id": before[1]})
                reads.append((sent, response.status_code))
            except httpx.ConnectError:
                reads.append((sent, "refused"))  # the listener is closed, as it should be
                break
            except (httpx.RemoteProtocolError, httpx.ReadError):
                reads.append((sent, "dropped"))  # connected as the listener closed
                break
        client.close()

    readers = [threading.Thread(target=read_loop) for _ in range(4)]
    for reader in readers:
        reader.start()
    # Let the reads get going; by then the server has read every head and waits for the bodies.
    started, deadline = time.monotonic(), time.monotonic() + 15
    while len(reads) < 2 * len(readers) or time.monotonic() - started < 1.5:
        assert time.monotonic() < deadline, reads
        time.sleep(0.05)
    assert all(code == 200 for _, code in reads), reads

    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)  # to the main process, as an orchestrator does
    deadline = signalled + 5
    while accepting(server):
        assert time.monotonic() < deadline, "still accepting connections 5 s after SIGTERM"
        time.sleep(0.05)
    assert server.process.poll() is None, "exited before finishing its in-flight requests"

    answers = [finish(sock, body) for sock, body in zip(creates, bodies, strict=True)]
    for status, payload in answers:
        assert status == 201, (payload, server.logs()[-2000:])
    accepted_status, payload = finish(accept, terms_body)
    assert accepted_status in (204, 409), payload  # the request was served, not dropped
    stop_reading.set()
    for reader in readers:
        reader.join(15)
    # Every read sent well before the SIGTERM completed normally; later ones completed, were
    # refused, or (connecting just as the listener closed) were dropped unanswered.
    timeline = [(round(sent - signalled, 3), code) for sent, code in reads]
    assert all(code == 200 for sent, code in reads if sent < signalled - 1.0), timeline
    assert {code for _, code in reads} <= {200, "refused", "dropped"}, reads

    assert server.process.wait(10) == 0, server.logs()[-2000:]
    assert time.monotonic() - signalled < 10
    deadline = time.monotonic() + 5
    while group_alive(server):
        assert time.monotonic() < deadline, "a worker outlived the main process"
        time.sleep(0.05)

    # The stores were closed: SQLite checkpointed and removed its write-ahead log.
    assert not server.db_path.with_name(server.db_path.name + "-wal").exists()
    with closing(sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    restarted = detached()
    assert restarted.db_path == server.db_path
    created_in_flight = [json.loads(payload)["sessionId"] for _, payload in answers]
    for session_id in before + created_in_flight:
        read = httpx.get(f"{restarted.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
        assert read.status_code == 200, read.text
