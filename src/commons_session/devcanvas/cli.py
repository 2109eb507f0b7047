"""``commons-session dev-canvas``: start the stand-in and print what to paste where."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ports import port_free
from .config import DEFAULT_CONFIG, ConfigError, DevCanvasConfig, load_config

if TYPE_CHECKING:
    from .app import Platform

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dev-canvas",
        help="run a local Canvas stand-in, for development, demos and tests only",
        description="A local stand-in for the parts of Canvas this service talks to (jwt_token, "
        "LTI 1.1 and LTI 1.3 launches). A test and demo tool: its keys and tokens are public.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--public-url", help="its URL as a browser reaches it (default: http://HOST:PORT)")
    parser.add_argument("--tool-url", help="the tool's URL (default: the configuration's tool_url)")
    parser.add_argument("--config", type=Path, help="a TOML file (default: the built-in configuration)")
    parser.add_argument(
        "--print-config", action="store_true", help="print the built-in configuration and exit"
    )


def banner(platform: Platform) -> str:
    from .pages import registration_commands

    c: DevCanvasConfig = platform.config
    course = c.courses[0]
    first = c.user((*course.teachers, *course.students, c.users[0].id)[0]) or c.users[0]
    others = [u for u in c.users if u.id != first.id]
    add11, add13 = registration_commands(c)
    tokens = "\n".join(f"   {u.name} (user {u.id}): {u.token}" for u in c.users)
    switch = f"\n   add &as={others[0].id} to launch as {others[0].name}" if others else ""
    return f"""\
commons-session dev-canvas: a Canvas STAND-IN for development, demos and tests. It is not
Canvas, and its keys and tokens are public: never register it with a server real people use.

   Canvas stand-in   {c.canvas_url}   (configuration: {c.source})
   Tool              {c.tool_url}

1. Register this Canvas with the tool (where the server runs, with its database settings):

   {add11}

   and for LTI 1.3 launches:

   {add13}

2. Launch the tool from the course page (as {first.name}), then accept the terms:

   LTI 1.1   {c.canvas_url}/courses/{course.id}?lti=1.1
   LTI 1.3   {c.canvas_url}/courses/{course.id}?lti=1.3{switch}

3. Canvas API access tokens, for jwt_token and `commons-session login`:

{tokens}

   commons-session login --canvas-url {c.canvas_url} --canvas-token {first.token} --server {c.tool_url}

LTI 1.3 platform: issuer {c.issuer}, client id {c.client_id}, deployment id {c.deployment_id},
signing key id {platform.key.kid} (new at every start; JWKS at {c.jwks_url}).
"""


def run(args: argparse.Namespace) -> int:
    if args.print_config:
        print(DEFAULT_CONFIG, end="")
        return 0
    host = "127.0.0.1" if args.host in {"0.0.0.0", "::", ""} else args.host  # noqa: S104
    public_url = args.public_url or f"http://{host}:{args.port}"
    try:
        config = load_config(args.config, canvas_url=public_url, tool_url=args.tool_url)
    except ConfigError as exc:
        print(f"commons-session dev-canvas: {exc}", file=sys.stderr)
        return 2
    if not port_free(args.host, args.port):
        # granian binds with SO_REUSEPORT: a second stand-in would silently share the port.
        print(f"commons-session dev-canvas: {args.host}:{args.port} is already in use", file=sys.stderr)
        return 1
    from granian.constants import Interfaces
    from granian.server import Server

    from .app import STATE_ENV, Platform  # the server's imports, only when serving

    platform = Platform.new(config)
    print(banner(platform), flush=True)
    os.environ[STATE_ENV] = platform.state()  # the worker process builds the same platform from it
    Server(
        "commons_session.devcanvas.app:create_app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,  # one process: pending LTI 1.3 launches live in its memory
        factory=True,
        log_access=True,
        log_level="info",  # type: ignore[arg-type]
        websockets=False,
    ).serve()
    return 0
