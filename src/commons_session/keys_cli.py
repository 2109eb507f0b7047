"""``commons-session keys``: the tool's own signing keys (LTI Deep Linking responses).

``list`` shows each key's kid and state, never a private part (not with ``--json`` either);
``rotate`` makes a new key sign from now on and keeps the old ones in the JWKS for the overlap.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .domain.service import iso8601
from .lti import keys
from .stores.base import Stores

__all__ = ["add_parser", "run"]


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from exc
    if not 0 <= number <= 366 * 86_400:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"expected 0 to 31622400 seconds, got {value!r}")
    return number


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("keys", help="list or rotate the tool's signing keys (LTI Deep Linking)")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the keys, newest first (never their private parts)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    rotate = actions.add_parser("rotate", help="a new key signs from now; the old ones stay published")
    rotate.add_argument(
        "--overlap",
        type=_seconds,
        default=float(keys.DEFAULT_OVERLAP),
        metavar="SECONDS",
        help=f"how long the replaced keys stay in the JWKS (default {keys.DEFAULT_OVERLAP})",
    )
    rotate.add_argument("--json", action="store_true")


def _row(key: dict[str, Any]) -> dict[str, Any]:
    return {
        **key,
        "created_at": iso8601(key["created_at"]),
        "retired_at": iso8601(key["retired_at"]) if key["retired_at"] is not None else None,
        "published_until": iso8601(key["published_until"]) if key["published_until"] is not None else None,
    }


def _print(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row))
    else:
        print("\t".join("-" if v is None else str(v) for v in row.values()))


async def run(args: argparse.Namespace, stores: Stores) -> int:
    tool_keys, now = keys.ToolKeys(stores.records), time.time()
    if args.action == "rotate":
        made, retired = await tool_keys.rotate(now, args.overlap)
        if args.json:
            print(json.dumps({"signing": made.kid, "retired": [k.kid for k in retired]}))
        else:
            until = iso8601(now + args.overlap)
            print(f"signing with {made.kid}")
            for key in retired:
                print(f"retired {key.kid}; in the JWKS until {until}")
        return 0
    await tool_keys.ensure(now)
    listed = await stores.records.list_tool_keys()
    signing = keys.signing_key(listed)
    for key in listed:
        _print(_row(keys.describe(key, now, signing)), args.json)
    return 0
