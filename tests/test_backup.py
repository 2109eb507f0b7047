"""``commons-session backup`` / ``restore`` of the embedded SQLite database (issue 13): a backup
taken under a steady create/logout load holds everything acknowledged before it began and
nothing half-written; a restore refuses a server that is serving, a damaged or foreign file,
and a schema newer than this release."""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, onboard, start_server


@dataclass
class Acks:
    """When each answer reached the client (time.time()), by session id."""

    created: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load(server: Server, canvas: FakeCanvas, user: CanvasUser, acks: Acks, stop: threading.Event) -> None:
    """Create sessions and end some of them; every fourth session is never ended, so sessions
    created before the backup are still alive after it however long the backup takes."""
    mine: list[str] = []
    made = 0
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while not stop.is_set():
            if len(mine) > 3 and secrets.randbelow(3) == 0:
                sid = mine.pop(0)
                if client.get("/api/sessions/logout", headers={"x-session-id": sid}).status_code == 204:
                    with acks.lock:
                        acks.ended[sid] = time.time()
                continue
            token = canvas.jwt_token(user, resource_link_id=secrets.token_hex(20))
            response = client.post("/api/sessions", json={"jwt_token": token})
            if response.status_code == 201:
                sid = response.json()["sessionId"]
                made += 1
                if made % 4:
                    mine.append(sid)
                with acks.lock:
                    acks.created[sid] = time.time()


def _alive(client: httpx.Client, sid: str) -> bool:
    status = client.get(f"/api/sessions/{sid}", headers={"x-session-id": sid}).status_code
    assert status in (200, 401), status
    return status == 200


def test_a_backup_under_load_holds_everything_acknowledged_before_it_began(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    server = start_server(live)
    canvas, people = server.add_institution(), [CanvasUser() for _ in range(2)]
    for person in people:
        onboard(server, canvas, person)
    acks, stop = Acks(), threading.Event()
    threads = [threading.Thread(target=_load, args=(server, canvas, p, acks, stop)) for p in people]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        began = time.time()
        made = server.cli("backup", str(tmp_path / "copy.db"))
        finished = time.time()
        assert made.returncode == 0, made.stderr
        assert "backup: 100%" in made.stderr
        time.sleep(0.5)  # more writes after the backup: they must not be in it
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    # Restoring over a served database is refused, and changes nothing.
    refused = server.cli("restore", str(tmp_path / "copy.db"))
    assert refused.returncode == 1
    assert "A server is serving" in refused.stderr
    server.stop()

    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    restored = start_server(restored_dir)  # a fresh database, then the backup put into it
    restored.stop()
    put_back = restored.cli("restore", str(tmp_path / "copy.db"))
    assert put_back.returncode == 0, put_back.stderr
    again = start_server(restored_dir)
    try:
        with acks.lock:
            created, ended = dict(acks.created), dict(acks.ended)
        before = [s for s, t in created.items() if t < began and ended.get(s, finished + 1) > finished]
        ended_before = [s for s, t in ended.items() if t < began]
        after = [s for s, t in created.items() if t > finished + 0.05]
        assert len(before) >= 5 and len(ended_before) >= 1 and len(after) >= 1, (before, ended_before, after)
        with httpx.Client(base_url=again.url, timeout=10) as client:
            assert all(_alive(client, s) for s in before), "an acknowledged session is not in the backup"
            assert not any(_alive(client, s) for s in ended_before), "a logout acknowledged before is undone"
            assert not any(_alive(client, s) for s in after), "the backup holds writes made after it finished"
    finally:
        again.stop()
    with sqlite3.connect(restored_dir / "commons-session.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_restore_refuses_damaged_foreign_and_newer_files_and_leaves_the_database_alone(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    server.stop()
    before = (tmp_path / "commons-session.db").read_bytes()

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(secrets.token_bytes(8192))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    newer = tmp_path / "newer.db"
    assert server.cli("backup", str(newer)).returncode == 0
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 999")
    damaged = tmp_path / "damaged.db"
    assert server.cli("backup", str(damaged)).returncode == 0
    data = bytearray(damaged.read_bytes())
    for page in range(1, len(data) // 4096):  # every b-tree page header but the first page's
        data[page * 4096 : page * 4096 + 12] = b"\xff" * 12
    damaged.write_bytes(bytes(data))

    cases = {
        garbage: "not an SQLite database",
        foreign: "not a commons-session one",
        newer: "newer than this release",
        damaged: "damaged",
        tmp_path / "missing.db": "does not exist",
    }
    for path, message in cases.items():
        result = server.cli("restore", str(path))
        assert result.returncode == 1, (path, result.stderr)
        assert message in result.stderr, (path, result.stderr)
        assert "Traceback" not in result.stderr
    assert (tmp_path / "commons-session.db").read_bytes() == before


def test_backup_refuses_to_overwrite_and_points_postgresql_to_its_own_tools(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    server.stop()
    existing = tmp_path / "existing.db"
    existing.write_text("keep me")
    result = server.cli("backup", str(existing))
    assert result.returncode == 1 and "already exists" in result.stderr
    assert existing.read_text() == "keep me"
    env = {**server.env, "COMMONS_SESSION_DATABASE_URL": "postgresql://127.0.0.1/test"}
    pg = subprocess.run(
        [sys.executable, "-m", "commons_session", "backup", str(tmp_path / "x.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pg.returncode == 1 and "pg_dump" in pg.stderr
