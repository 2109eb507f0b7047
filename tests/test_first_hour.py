"""What a new operator trips over in the first hour (issue 13): each mistake gets one clear line
naming the setting, the value and the fix, never a traceback, and never a silent default."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import Server, free_port


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    return subprocess.run(
        [sys.executable, "-m", "commons_session", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_a_port_that_is_already_served(tmp_path: Path) -> None:
    """granian binds with SO_REUSEPORT: without the check a second server shares the port."""
    port = free_port()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as granian binds
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = _run(
            "serve", "--port", str(port), cwd=tmp_path, COMMONS_SESSION_DATABASE_URL="sqlite:///x.db"
        )
    assert result.returncode == 1, result.stderr
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was created


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["migrate"], ["institutions", "list"]])
def test_an_sqlite_url_in_a_missing_directory_is_one_line_naming_setting_value_and_fix(
    tmp_path: Path, command: list[str]
) -> None:
    url = "sqlite:///no/such/dir/sessions.db"
    result = _run(*command, cwd=tmp_path, COMMONS_SESSION_DATABASE_URL=url)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert f"COMMONS_SESSION_DATABASE_URL='{url}'" in line
    assert str(tmp_path / "no" / "such" / "dir") in line and "create it" in line
    assert not (tmp_path / "no").exists()


def test_a_one_slash_sqlite_url_is_refused_instead_of_meaning_a_relative_file(tmp_path: Path) -> None:
    result = _run("migrate", cwd=tmp_path, COMMONS_SESSION_DATABASE_URL="sqlite:/x.db")
    assert result.returncode == 2
    assert "three slashes" in result.stderr and "four" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_misspelled_variable_is_warned_about_with_the_nearest_name(tmp_path: Path) -> None:
    result = _run(
        "migrate",
        cwd=tmp_path,
        COMMONS_SESSION_DATABASE_URL="sqlite:///x.db",
        COMMONS_SESSION_IDLE_TIMOUT="5",
        COMMONS_SESSION_NOTHING_LIKE_IT="1",
    )
    assert result.returncode == 0, result.stderr
    assert "COMMONS_SESSION_IDLE_TIMOUT is not a setting" in result.stderr
    assert "did you mean COMMONS_SESSION_IDLE_TIMEOUT?" in result.stderr
    assert "COMMONS_SESSION_NOTHING_LIKE_IT is not a setting" in result.stderr
    # Real names, and the few variables read elsewhere, are not warned about.
    quiet = _run(
        "migrate",
        cwd=tmp_path,
        COMMONS_SESSION_DATABASE_URL="sqlite:///x.db",
        COMMONS_SESSION_TEST_NO_SKIP="1",
    )
    assert "warning" not in quiet.stderr, quiet.stderr


def test_a_bad_value_names_the_variable_and_the_value_but_hides_secrets(tmp_path: Path) -> None:
    result = _run("migrate", cwd=tmp_path, COMMONS_SESSION_IDLE_TIMEOUT="an hour")
    assert result.returncode == 2
    assert "COMMONS_SESSION_IDLE_TIMEOUT='an hour' is invalid" in result.stderr
    token = _run("migrate", cwd=tmp_path, COMMONS_SESSION_METRICS_TOKEN="short-secret")
    assert token.returncode == 2
    assert "COMMONS_SESSION_METRICS_TOKEN='***' is invalid" in token.stderr
    assert "short-secret" not in token.stderr
    url = _run("migrate", cwd=tmp_path, COMMONS_SESSION_DATABASE_URL="mysql://admin:hunter2@db/x")
    assert url.returncode == 2
    assert "hunter2" not in url.stderr and "mysql://admin:***@db/x" in url.stderr


def test_json_without_a_content_type_is_told_about_the_header_not_the_body(server: Server) -> None:
    response = httpx.post(server.url + "/api/sessions", content=b'{"jwt_token": "x"}')
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert "No Content-Type was sent" in response.json()["detail"]
    typed = httpx.post(server.url + "/api/sessions", content=b"x", headers={"content-type": "text/plain"})
    assert typed.status_code == 415
    assert "text/plain is not accepted" in typed.json()["detail"]
