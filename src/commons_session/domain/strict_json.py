"""Strict JSON for token parts: duplicate keys refused, an object required.

Two parsers that disagree on a repeated claim would see two different tokens (RFC 8725 §3.4
and RFC 7515 §5.2), so every JOSE header and payload we read goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["json_object"]


def json_object(raw: bytes, subject: str, error: Callable[[str], Exception]) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object. Raises ``error(message)`` naming ``subject`` (e.g.
    "The JWT payload") when it is not JSON, not an object, or repeats a key."""

    def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise error(f"{subject} repeats the key {key!r}.")
            result[key] = value
        return result

    try:
        value = json.loads(raw, object_pairs_hook=reject_duplicates)
    except (ValueError, RecursionError) as exc:
        raise error(f"{subject} is not JSON.") from exc
    if not isinstance(value, dict):
        raise error(f"{subject} is not a JSON object.")
    return value
