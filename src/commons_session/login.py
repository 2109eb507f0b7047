"""``commons-session login``, ``whoami`` and ``logout``: a session for the person at the terminal.

``login`` asks Canvas for a JWT with the person's Canvas API token, exchanges it for a session,
prints the session id alone on standard output (everything else goes to standard error) and
keeps it, with the server's URL, in a file only its owner can read:
``$COMMONS_SESSION_LOGIN_FILE``, else ``$XDG_STATE_HOME/commons-session/session.json`` (by
default ``~/.local/state/commons-session/session.json``). ``whoami`` and ``logout`` use it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .client import CanvasError, Client, CommonsError, Session

__all__ = ["LOGIN_FILE_ENV", "add_parsers", "login_file", "run"]

LOGIN_FILE_ENV = "COMMONS_SESSION_LOGIN_FILE"
COMMANDS = ("login", "whoami", "logout")


def add_parsers(commands: Any) -> None:
    login = commands.add_parser(
        "login",
        help="start a session with a Canvas API token; prints the session id",
        description="Ask Canvas for a JWT (GET {canvas}/api/lti/accounts/self/jwt_token), exchange it for "
        "a session, print the session id alone on standard output, and keep it for whoami and logout.",
    )
    login.add_argument("--canvas-url", required=True, help="e.g. https://canvas.example.edu")
    login.add_argument("--canvas-token", required=True, help="a Canvas API access token, or - to read stdin")
    login.add_argument("--server", required=True, help="this service's URL, e.g. https://commons.example.edu")
    login.add_argument("--course", help="ask in this course's context instead of the account's")
    login.add_argument(
        "--tool-launch-url", help="the tool's launch URL as configured in Canvas (default: SERVER/api/lti)"
    )
    whoami = commands.add_parser("whoami", help="show whose session login kept")
    whoami.add_argument("--json", action="store_true", help="print the session contents as JSON")
    commands.add_parser("logout", help="end the session login kept, and forget it")


def login_file() -> Path:
    override = os.environ.get(LOGIN_FILE_ENV)
    if override:
        return Path(override)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "commons-session" / "session.json"


class _Failure(Exception):
    """One line for standard error, then a non-zero exit."""


def _write_kept(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file left over
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def _read_kept(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise _Failure("not logged in; run 'commons-session login' first") from None
    except (OSError, ValueError) as exc:
        raise _Failure(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("server", "session_id")):
        raise _Failure(f"{path} is not a session kept by 'commons-session login'; delete it and log in again")
    return data


def _canvas_failure(exc: CanvasError, launch_url: str) -> _Failure:
    if exc.status is None:
        return _Failure(exc.detail)
    hint = ""
    if exc.code == "canvas_not_found":
        hint = f" (is {launch_url} the tool's launch URL in that Canvas?)"
    elif exc.code == "canvas_unauthorized":
        hint = " (check the Canvas API token)"
    return _Failure(f"Canvas refused to issue a JWT ({exc.status}): {exc.detail}{hint}")


def _server_failure(exc: CommonsError, action: str) -> _Failure:
    if exc.status is None:
        return _Failure(exc.detail)
    return _Failure(f"the server refused to {action} ({exc.status} {exc.code}): {exc.detail}")


def _login(args: argparse.Namespace) -> int:
    from_stdin = args.canvas_token == "-"  # noqa: S105 - "-" means: read it from stdin
    token = (sys.stdin.readline() if from_stdin else args.canvas_token).strip()
    if not token:
        raise _Failure("--canvas-token is empty")
    server = args.server.rstrip("/")
    launch_url = args.tool_launch_url or f"{server}/api/lti"
    with Client(server) as client:
        try:
            jwt = client.canvas_jwt(args.canvas_url, token, course_id=args.course, tool_launch_url=launch_url)
        except CanvasError as exc:
            raise _canvas_failure(exc, launch_url) from exc
        try:
            session = client.create(jwt)
        except CommonsError as exc:
            raise _server_failure(exc, "start a session") from exc
    path = login_file()
    try:
        _write_kept(
            path,
            {
                "server": server,
                "session_id": session.id,
                "canvas_url": args.canvas_url.rstrip("/"),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    except OSError as exc:
        raise _Failure(f"session started but cannot be kept in {path}: {exc.strerror}") from exc
    print(f"commons-session: logged in as {_who(session)}; session kept in {path}", file=sys.stderr)
    print(session.id)
    return 0


def _who(session: Session) -> str:
    name = session.user_full_name or f"user {session.user_id}"
    return f"{name} ({session.account_name})" if session.account_name else name


def _whoami(args: argparse.Namespace) -> int:
    kept = _read_kept(login_file())
    with Client(kept["server"]) as client:
        try:
            session = client.read(kept["session_id"])
        except CommonsError as exc:
            if exc.status == 401:
                raise _Failure(
                    f"the kept session is no longer valid ({exc.code}); run 'commons-session login' again"
                ) from exc
            raise _server_failure(exc, "read the session") from exc
    if args.json:
        print(json.dumps(dict(session.data), indent=2))
    else:
        print(_who(session))
        print(f"userId {session.user_id} on {kept['server']}; session expires {session.expires}")
    return 0


def _logout(args: argparse.Namespace) -> int:
    path = login_file()
    kept = _read_kept(path)
    with Client(kept["server"]) as client:
        try:
            client.logout(kept["session_id"])
            message = "logged out"
        except CommonsError as exc:
            if exc.status != 401:
                raise _server_failure(exc, "log out") from exc
            message = f"the kept session had already ended ({exc.code})"
    path.unlink(missing_ok=True)
    print(f"commons-session: {message}; removed {path}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {"login": _login, "whoami": _whoami, "logout": _logout}
    try:
        return handlers[args.command](args)
    except _Failure as exc:
        line = " ".join(str(exc).split())  # one line, whatever Canvas or the server said
        print(f"commons-session {args.command}: {line}", file=sys.stderr)
        return 1
