"""The whole journey the reference page implies, once, over HTTP."""

from __future__ import annotations

import httpx

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, onboard


def test_launch_accept_create_read_logout(server: Server, canvas: FakeCanvas, user: CanvasUser) -> None:
    onboard(server, canvas, user)
    sid = create_session(server, canvas, user)
    read = httpx.get(f"{server.url}/api/sessions/{sid}", headers={"X-Session-ID": sid})
    assert read.status_code == 200
    assert read.json()["sid"] == sid
    assert read.json()["userFullName"] == "Ada Lovelace"
    assert httpx.get(f"{server.url}/api/sessions/logout", headers={"X-Session-ID": sid}).status_code == 204
    assert httpx.get(f"{server.url}/api/sessions/{sid}", headers={"X-Session-ID": sid}).status_code == 401
