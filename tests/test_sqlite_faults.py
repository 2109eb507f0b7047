"""The SQLite file deleted, replaced, read-only or on a full disk under a running server
(issue 11): /readyz says so, writes answer 503 and nothing acknowledged is lost; a fault that
clears clears without a restart; a start never silently creates an empty database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, onboard, start_server


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Server, FakeCanvas, CanvasUser]]:
    server = start_server(tmp_path)
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    yield server, canvas, user
    server.stop()


def _create(server: Server, canvas: FakeCanvas, user: CanvasUser) -> httpx.Response:
    with server.client() as c:
        return c.post("/api/sessions", json={"jwt_token": canvas.jwt_token(user)})


def _not_ready(server: Server, reason: str) -> None:
    with server.client() as c:
        ready = c.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.headers["content-type"].startswith("application/problem+json")
    assert ready.json()["code"] == "store_unavailable"
    assert reason in ready.json()["detail"], ready.json()


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "store_unavailable"


def test_a_deleted_database_fails_readiness_and_writes_and_is_never_recreated_empty(
    running: tuple[Server, FakeCanvas, CanvasUser], tmp_path: Path
) -> None:
    server, canvas, user = running
    kept = create_session(server, canvas, user)
    backup = tmp_path / "backup"
    backup.mkdir()
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(server.db_path) + suffix)
        if path.exists():
            shutil.copy2(path, backup / path.name)
            path.unlink()
    _not_ready(server, "gone")
    _refused(_create(server, canvas, user))
    with server.client() as c:  # a logout must not be acknowledged and then lost either
        _refused(c.get("/api/sessions/logout", headers={"x-session-id": kept}))
    server.stop()
    # The next start refuses instead of creating an empty database in its place.
    started = subprocess.run(
        [sys.executable, "-m", "commons_session", "serve", "--port", "1"],
        env=server.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1, started.stderr
    assert "is missing" in started.stderr
    assert not server.db_path.exists()
    # Restored from the backup, it serves again, with the session made before the fault.
    for copy in backup.iterdir():
        shutil.copy2(copy, tmp_path / copy.name)
    again = start_server(tmp_path)
    try:
        with again.client() as c:
            assert c.get("/readyz").status_code == 200
            assert c.get(f"/api/sessions/{kept}", headers={"x-session-id": kept}).status_code == 200
    finally:
        again.stop()


def test_a_replaced_database_fails_readiness_and_writes(
    running: tuple[Server, FakeCanvas, CanvasUser],
) -> None:
    server, canvas, user = running
    create_session(server, canvas, user)
    copy = Path(str(server.db_path) + ".copy")
    shutil.copy2(server.db_path, copy)
    os.replace(copy, server.db_path)
    _not_ready(server, "replaced")
    _refused(_create(server, canvas, user))


def test_a_read_only_database_fails_readiness_and_recovers_when_writable_again(
    running: tuple[Server, FakeCanvas, CanvasUser],
) -> None:
    server, canvas, user = running
    mode = server.db_path.stat().st_mode
    server.db_path.chmod(0o444)
    try:
        _not_ready(server, "read-only")
        _refused(_create(server, canvas, user))
    finally:
        server.db_path.chmod(mode)
    with server.client() as c:
        assert c.get("/readyz").status_code == 200
    made = _create(server, canvas, user)
    assert made.status_code == 201, made.text


def test_a_full_disk_fails_readiness_and_writes_then_recovers_without_a_restart(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        server = start_server(mount)
        try:
            canvas, user = server.add_institution(), CanvasUser()
            onboard(server, canvas, user)
            acknowledged = [create_session(server, canvas, user) for _ in range(3)]
            filler = mount / "filler"
            with filler.open("wb", buffering=0) as f, pytest.raises(OSError):  # nothing left to flush
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            _not_ready(server, "full")
            _refused(_create(server, canvas, user))
            filler.unlink()
            with server.client() as c:
                assert c.get("/readyz").status_code == 200
                for sid in acknowledged:
                    assert c.get(f"/api/sessions/{sid}", headers={"x-session-id": sid}).status_code == 200
            assert _create(server, canvas, user).status_code == 201
        finally:
            server.stop()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *[str(p) for p in paths if p.exists()]], check=True)


def test_an_immutable_database_fails_readiness_never_crashes_and_recovers(
    running: tuple[Server, FakeCanvas, CanvasUser],
) -> None:
    """``chattr +i`` on the file, its -wal and its -shm under writes and reads: SQLite's
    checkpoint into a file it cannot write used to end the process with SIGBUS."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root and chattr")
    server, canvas, user = running
    # Enough writes that the WAL holds pages an auto-checkpoint will want to copy back.
    acknowledged = [create_session(server, canvas, user) for _ in range(40)]
    files = [Path(str(server.db_path) + suffix) for suffix in ("", "-wal", "-shm")]
    try:
        _chattr("+i", *files)
        _not_ready(server, "read-only")
        for _ in range(30):
            _refused(_create(server, canvas, user))
            with server.client() as c:
                _refused(c.get("/api/sessions/logout", headers={"x-session-id": acknowledged[0]}))
                sid = acknowledged[1]
                read = c.get(f"/api/sessions/{sid}", headers={"x-session-id": sid})
                assert read.status_code in (200, 503), read.text
        # Each file on its own is enough to refuse.
        for frozen in files[1:]:
            _chattr("-i", *files)
            _chattr("+i", frozen)
            if frozen.exists():
                _not_ready(server, "read-only")
        assert server.process.poll() is None, server.logs()[-2000:]
    finally:
        _chattr("-i", *files)
    with server.client() as c:
        assert c.get("/readyz").status_code == 200
        for sid in acknowledged:
            assert c.get(f"/api/sessions/{sid}", headers={"x-session-id": sid}).status_code == 200
    assert _create(server, canvas, user).status_code == 201
    assert server.process.poll() is None
