"""``commons-session login``, ``whoami`` and ``logout`` as real processes, against a running server
and a running dev-canvas: the session id alone on standard output, one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from commons_session.devcanvas.config import User

from .conftest import Server, free_port
from .devcanvas_fixture import DevCanvas, onboard_via_course_page, register, start_dev_canvas


@pytest.fixture(scope="module")
def dev_canvas(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCanvas]:
    canvas = start_dev_canvas(tmp_path_factory.mktemp("dev-canvas"), server.url)
    register(server, canvas)
    yield canvas
    canvas.stop()


@pytest.fixture
def kept(tmp_path: Path) -> Path:
    """Where login keeps the session, for this test only."""
    return tmp_path / "state" / "session.json"


def cli(kept: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    env["COMMONS_SESSION_LOGIN_FILE"] = str(kept)
    return subprocess.run(
        [sys.executable, "-m", "commons_session", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def login(
    kept: Path, canvas: DevCanvas, server: Server, token: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return cli(
        kept, "login", "--canvas-url", canvas.url, "--canvas-token", token, "--server", server.url, *extra
    )


def one_line_error(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.endswith("\n") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def onboarded(server: Server, canvas: DevCanvas) -> User:
    user = canvas.fresh_user()
    onboard_via_course_page(server, canvas, user)
    return user


def read(server: Server, session_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})


# -- the journey ----------------------------------------------------------------------------------


def test_login_prints_only_the_id_and_keeps_it_private(
    server: Server, dev_canvas: DevCanvas, kept: Path
) -> None:
    user = onboarded(server, dev_canvas)
    done = login(kept, dev_canvas, server, user.token)
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.removesuffix("\n")
    assert done.stdout == session_id + "\n" and session_id and "\n" not in session_id
    assert user.name in done.stderr  # messages go to standard error
    assert read(server, session_id).json()["userFullName"] == user.name

    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    saved = json.loads(kept.read_text())
    assert (saved["server"], saved["session_id"]) == (server.url, session_id)


def test_whoami_then_logout_ends_the_session_and_forgets_it(
    server: Server, dev_canvas: DevCanvas, kept: Path
) -> None:
    user = onboarded(server, dev_canvas)
    session_id = login(kept, dev_canvas, server, user.token).stdout.strip()

    who = cli(kept, "whoami")
    assert who.returncode == 0, who.stderr
    assert who.stdout.splitlines()[0] == f"{user.name} ({dev_canvas.config.account_name})"
    as_json = cli(kept, "whoami", "--json")
    assert json.loads(as_json.stdout)["sid"] == session_id

    out = cli(kept, "logout")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert not kept.exists()
    assert read(server, session_id).status_code == 401

    one_line_error(cli(kept, "whoami"), "not logged in")
    one_line_error(cli(kept, "logout"), "not logged in")


def test_login_reads_the_canvas_token_from_stdin_and_in_a_course(
    server: Server, dev_canvas: DevCanvas, kept: Path
) -> None:
    user = onboarded(server, dev_canvas)
    done = cli(
        kept,
        "login",
        "--canvas-url",
        dev_canvas.url,
        "--canvas-token",
        "-",
        "--server",
        server.url,
        "--course",
        "1",
        stdin=user.token + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert user.token not in done.stdout + done.stderr
    assert read(server, done.stdout.strip()).json()["canvasUserId"] == user.id


def test_whoami_on_a_session_ended_elsewhere_fails_and_logout_still_forgets_it(
    server: Server, dev_canvas: DevCanvas, kept: Path
) -> None:
    user = onboarded(server, dev_canvas)
    session_id = login(kept, dev_canvas, server, user.token).stdout.strip()
    assert (
        httpx.get(f"{server.url}/api/sessions/logout", headers={"x-session-id": session_id}).status_code
        == 204
    )

    one_line_error(cli(kept, "whoami"), "no longer valid", "invalid_session")
    assert kept.exists()
    out = cli(kept, "logout")
    assert out.returncode == 0
    assert "already ended" in out.stderr
    assert not kept.exists()


# -- errors: one line, non-zero, nothing on stdout, nothing kept ----------------------------------


def test_canvas_refusing_the_api_token_is_one_line(server: Server, dev_canvas: DevCanvas, kept: Path) -> None:
    one_line_error(login(kept, dev_canvas, server, "not-a-token"), "Canvas", "401", "Invalid access token.")
    assert not kept.exists()


def test_a_server_url_canvas_does_not_know_is_one_line_naming_the_launch_url(
    dev_canvas: DevCanvas, kept: Path
) -> None:
    other = f"http://127.0.0.1:{free_port()}"
    done = cli(
        kept,
        "login",
        "--canvas-url",
        dev_canvas.url,
        "--canvas-token",
        dev_canvas.teacher().token,
        "--server",
        other,
    )
    one_line_error(done, "404", f"{other}/api/lti")
    assert not kept.exists()


def test_the_server_refusing_the_jwt_is_one_line_with_its_code(
    server: Server, dev_canvas: DevCanvas, kept: Path
) -> None:
    never_launched = dev_canvas.fresh_user()
    one_line_error(login(kept, dev_canvas, server, never_launched.token), "403", "never_launched")
    assert not kept.exists()


def test_unreachable_canvas_and_server_are_one_line_each(
    server: Server, dev_canvas: DevCanvas, kept: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = cli(kept, "login", "--canvas-url", nowhere, "--canvas-token", "t", "--server", server.url)
    one_line_error(done, "cannot reach Canvas")

    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"server": nowhere, "session_id": "x" * 43}))
    one_line_error(cli(kept, "whoami"), "cannot reach the server")
    one_line_error(cli(kept, "logout"), "cannot reach the server")
    assert kept.exists()  # kept until the server has ended it


def test_a_kept_file_that_is_not_ours_is_one_line(kept: Path) -> None:
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text("[1, 2]")
    one_line_error(cli(kept, "whoami"), str(kept))
