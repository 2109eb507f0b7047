"""``commons-session institutions ...`` and ``migrate``, run as a real process against a real SQLite file."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from commons_session.stores.sqlite import latest_version

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, free_port, launch, onboard

# -- helpers ----------------------------------------------------------------------------------


def run(
    database: Path, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``commons-session --database-url sqlite:///<database> ARGS`` with no other settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    return subprocess.run(
        [sys.executable, "-m", "commons_session", "--database-url", f"sqlite:///{database}", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=database.parent,
    )


def add(database: Path, key: str, secret: str, name: str) -> subprocess.CompletedProcess[str]:
    return run(database, "institutions", "add", "--consumer-key", key, "--secret", secret, "--name", name)


def refused(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def key() -> str:
    return "key-" + secrets.token_hex(6)


def jwt_status(server: Server, canvas: FakeCanvas, user: CanvasUser, *, secret: str) -> httpx.Response:
    # A claim that differs each time keeps two tokens minted in one second from being identical.
    token = canvas.jwt_token(user, secret=secret, context_label=secrets.token_hex(4))
    return httpx.post(server.url + "/api/sessions", json={"jwt_token": token})


def read_session(server: Server, session_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "x.db"


# -- add and list -----------------------------------------------------------------------------


def test_added_institution_is_listed_without_its_secret(database: Path) -> None:
    secret = "s3cret-" + secrets.token_hex(8)
    done = add(database, "canvas-a", secret, "Example University")
    assert done.returncode == 0, done.stderr
    assert "canvas-a" in done.stdout
    assert secret not in done.stdout + done.stderr

    listed = run(database, "institutions", "list")
    assert listed.returncode == 0, listed.stderr
    assert "canvas-a" in listed.stdout
    assert "Example University" in listed.stdout
    assert secret not in listed.stdout + listed.stderr

    as_json = run(database, "institutions", "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert secret not in as_json.stdout
    [entry] = json.loads(as_json.stdout)
    assert entry["consumer_key"] == "canvas-a"
    assert entry["name"] == "Example University"
    assert entry["rotating"] is False


def test_list_of_an_empty_database_is_empty(database: Path) -> None:
    done = run(database, "institutions", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_duplicate_consumer_key_is_refused_with_a_clear_message(database: Path) -> None:
    assert add(database, "canvas-a", "first", "First").returncode == 0
    refused(add(database, "canvas-a", "second", "Second"), "already exists", "canvas-a")
    listed = json.loads(run(database, "institutions", "list", "--json").stdout)
    assert [(i["consumer_key"], i["name"]) for i in listed] == [("canvas-a", "First")]


@pytest.mark.parametrize(
    ("consumer_key", "secret", "name", "flag"),
    [
        ("", "secret", "Name", "--consumer-key"),
        ("canvas-a", "", "Name", "--secret"),
        ("canvas-a", "secret", "", "--name"),
        ("canvas-a", "   ", "Name", "--secret"),
    ],
    ids=["empty-key", "empty-secret", "empty-name", "blank-secret"],
)
def test_empty_key_secret_or_name_is_refused(
    database: Path, consumer_key: str, secret: str, name: str, flag: str
) -> None:
    refused(add(database, consumer_key, secret, name), "must not be empty", flag)
    assert json.loads(run(database, "institutions", "list", "--json").stdout) == []


def test_empty_secret_on_stdin_is_refused(database: Path) -> None:
    done = run(
        database, "institutions", "add", "--consumer-key", "k", "--secret", "-", "--name", "N", stdin="\n"
    )
    refused(done, "must not be empty", "--secret")


def test_secret_dash_reads_the_secret_from_stdin(server: Server, user: CanvasUser) -> None:
    consumer_key, secret = key(), "from-stdin-" + secrets.token_hex(8)
    done = server.cli(
        "institutions",
        "add",
        "--consumer-key",
        consumer_key,
        "--secret",
        "-",
        "--name",
        "Stdin U",
        stdin=secret + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    assert launch(server, FakeCanvas(consumer_key, secret), user).status_code == 303
    # "-" itself is not the secret.
    body, headers = FakeCanvas(consumer_key, "-").signed_launch(server.url + "/api/lti", user)
    forged = httpx.post(server.url + "/api/lti", content=body, headers=headers)
    assert forged.status_code == 401
    assert forged.json()["code"] == "invalid_signature"


# -- remove -----------------------------------------------------------------------------------


def test_remove_deletes_the_institution_and_ends_its_sessions(
    server: Server, canvas: FakeCanvas, user: CanvasUser, session_id: str
) -> None:
    other = server.add_institution()
    other_session = onboard(server, other, user)
    assert read_session(server, session_id).status_code == 200

    done = server.cli("institutions", "remove", "--consumer-key", canvas.consumer_key)
    assert done.returncode == 0, done.stderr
    assert canvas.consumer_key in done.stdout

    gone = read_session(server, session_id)
    assert gone.status_code == 401
    assert gone.json()["code"] == "invalid_session"
    assert server.run(server.stores.records.get_institution(canvas.consumer_key)) is None
    relaunch = launch(server, canvas, user)
    assert relaunch.status_code == 401
    assert relaunch.json()["code"] == "unknown_consumer_key"
    listed = json.loads(server.cli("institutions", "list", "--json").stdout)
    assert canvas.consumer_key not in {i["consumer_key"] for i in listed}
    # Another institution's sessions are untouched.
    assert read_session(server, other_session).status_code == 200


def test_removing_an_unknown_key_fails(database: Path) -> None:
    refused(run(database, "institutions", "remove", "--consumer-key", "nobody"), "nobody")


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_accepts_both_secrets_until_finished(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    onboard(server, canvas, user)
    old, new = canvas.secret, "new-" + secrets.token_hex(8)
    done = server.cli("institutions", "rotate-secret", "--consumer-key", canvas.consumer_key, "--secret", new)
    assert done.returncode == 0, done.stderr
    assert new not in done.stdout + done.stderr
    listed = json.loads(server.cli("institutions", "list", "--json").stdout)
    assert {i["consumer_key"]: i["rotating"] for i in listed}[canvas.consumer_key] is True

    assert jwt_status(server, canvas, user, secret=new).status_code == 201
    assert jwt_status(server, canvas, user, secret=old).status_code == 201

    done = server.cli("institutions", "finish-rotation", "--consumer-key", canvas.consumer_key)
    assert done.returncode == 0, done.stderr
    assert jwt_status(server, canvas, user, secret=new).status_code == 201
    stale = jwt_status(server, canvas, user, secret=old)
    assert stale.status_code == 401
    assert stale.json()["code"] == "invalid_token_signature"
    listed = json.loads(server.cli("institutions", "list", "--json").stdout)
    assert {i["consumer_key"]: i["rotating"] for i in listed}[canvas.consumer_key] is False


def test_rotate_secret_reads_stdin_and_refuses_empty_or_unknown(database: Path) -> None:
    assert add(database, "canvas-a", "old", "A").returncode == 0
    refused(run(database, "institutions", "rotate-secret", "--consumer-key", "canvas-a", "--secret", ""))
    refused(
        run(database, "institutions", "rotate-secret", "--consumer-key", "nobody", "--secret", "x"), "nobody"
    )
    refused(run(database, "institutions", "finish-rotation", "--consumer-key", "nobody"), "nobody")
    done = run(
        database,
        "institutions",
        "rotate-secret",
        "--consumer-key",
        "canvas-a",
        "--secret",
        "-",
        stdin="new\n",
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as conn:
        row = conn.execute(
            "SELECT secret, previous_secret FROM institutions WHERE consumer_key = 'canvas-a'"
        ).fetchone()
    assert row == ("new", "old")


# -- settings ---------------------------------------------------------------------------------


def test_settings_flags_change_what_new_sessions_report(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    onboard(server, canvas, user)
    before = read_session(server, create_session(server, canvas, user, context_label="before")).json()
    assert before["canSharePublic"] is True
    assert before["showStateStandards"] is False
    assert before["stateStandard"] is None

    done = server.cli(
        "institutions",
        "settings",
        "--consumer-key",
        canvas.consumer_key,
        "--can-share-public",
        "false",
        "--show-state-standards",
        "true",
        "--state-standard",
        "Texas",
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["can_share_public"] is False
    assert shown["state_standard"] == "Texas"

    after = read_session(server, create_session(server, canvas, user, context_label="after")).json()
    assert after["canSharePublic"] is False
    assert after["showStateStandards"] is True
    assert after["stateStandard"] == "Texas"
    # Flags not named keep their values.
    assert after["canShowPublic"] == before["canShowPublic"]
    assert after["showFederalStandards"] == before["showFederalStandards"]


def test_settings_refuses_a_non_boolean_and_an_unknown_key(database: Path) -> None:
    assert add(database, "canvas-a", "s", "A").returncode == 0
    done = run(
        database, "institutions", "settings", "--consumer-key", "canvas-a", "--can-share-public", "maybe"
    )
    refused(done, "expected true or false")
    refused(
        run(database, "institutions", "settings", "--consumer-key", "nobody", "--can-share-public", "false"),
        "nobody",
    )


# -- migrate ----------------------------------------------------------------------------------


def test_migrate_creates_the_schema_on_a_fresh_file(database: Path) -> None:
    assert not database.exists()
    done = run(database, "migrate")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"institutions", "users", "launches", "terms_acceptances", "sessions", "once_claims"} <= tables
    again = run(database, "migrate")
    assert again.returncode == 0, again.stderr


def _from_the_future(database: Path) -> int:
    assert run(database, "migrate").returncode == 0
    future = latest_version() + 1
    with sqlite3.connect(database) as conn:
        conn.execute(f"PRAGMA user_version = {future:d}")
    return future


@pytest.mark.parametrize(
    "args", [("migrate",), ("institutions", "list")], ids=["migrate", "institutions-list"]
)
def test_database_from_a_newer_release_is_refused(database: Path, args: tuple[str, ...]) -> None:
    future = _from_the_future(database)
    refused(run(database, *args), "newer", "upgrade")
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == future


def test_serve_refuses_a_database_from_a_newer_release_before_listening(database: Path) -> None:
    _from_the_future(database)
    done = run(database, "serve", "--port", str(free_port()), timeout=30)
    refused(done, "newer", "upgrade")


@pytest.mark.parametrize("bad_key", ["has space", "ключ", "tab\there", "k" * 256])
def test_consumer_key_a_launch_could_never_match_is_refused(database: Path, bad_key: str) -> None:
    refused(add(database, bad_key, "secret", "Example U"), "--consumer-key", "printable ASCII")
    assert json.loads(run(database, "institutions", "list", "--json").stdout) == []
