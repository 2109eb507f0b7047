"""Strict JSON for token parts: I-JSON (RFC 7493), duplicate keys refused, an object required.

Two parsers that disagree on a repeated claim would see two different tokens (RFC 8725 §3.4
and RFC 7515 §5.2), so every JOSE header and payload we read goes through here. Python's
``json`` also reads what is not JSON or cannot travel further: ``NaN`` and ``Infinity``
(a 1.3 ``exp: NaN`` compared false with everything, so it never expired), ``1e400`` (read as
infinity), ``10**400`` written out (no float can hold it: an ``OverflowError`` later), lone
surrogates from ``\\ud800`` (no store can encode them: a 500 when saved), and UTF-16/32 or a BOM
instead of UTF-8. All of these are refused here, so every value a claim can hold is finite and
every string encodes as UTF-8.

``numeric_date`` is the one rule for every claim that is a time.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_NUMERIC_DATE", "json_object", "numeric_date"]

#: The latest time a claim may name: 9999-12-31T23:59:59Z, the last second ``datetime`` can
#: represent; as milliseconds (Redis) it is still an exact double.
MAX_NUMERIC_DATE = 253_402_300_799

# A lone surrogate can only come from a \u escape (the bytes are decoded as strict UTF-8 first),
# so only a text with an escape of the surrogate range needs the walk over every string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("the number is too large")
    return value


def _int(text: str) -> int:
    value = int(text)
    if abs(value) > sys.float_info.max:  # I-JSON: no number a double cannot hold
        raise _Refused("the number is too large")
    return value


def _encodable(value: Any) -> bool:
    """Whether every string in ``value`` (keys too) is valid Unicode: no lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return result


# One decoder for every call: ``json.loads`` with hooks builds a new one each time.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates, parse_constant=_constant, parse_float=_float, parse_int=_int
)


def json_object(raw: bytes, subject: str, error: Callable[[str], Exception]) -> dict[str, Any]:
    """Parse ``raw`` as one UTF-8 I-JSON object. Raises ``error(message)`` naming ``subject``
    (e.g. "The JWT payload") when it is not, or repeats a key."""
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # what json.loads refuses and JSONDecoder.decode does not check
            raise ValueError("a byte order mark")
        value = _DECODER.decode(text)
    except _Duplicate as exc:
        raise error(f"{subject} repeats the key {exc.key!r}.") from exc
    except _Refused as exc:
        raise error(f"{subject} is not I-JSON: {exc}.") from exc
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise error(f"{subject} is not JSON.") from exc
    if not isinstance(value, dict):
        raise error(f"{subject} is not a JSON object.")
    if _SURROGATE_ESCAPE.search(text) and not _encodable(value):
        raise error(f"{subject} is not I-JSON: it holds a lone surrogate.")
    return value


def numeric_date(
    claims: Mapping[str, Any], name: str, subject: str, error: Callable[[str], Exception], *, required: bool
) -> int | None:
    """The time claim ``name`` as whole POSIX seconds, None if absent and not ``required``;
    else ``error(message)`` naming ``subject`` (e.g. "The JWT's").
    Only an integer from 0 to ``MAX_NUMERIC_DATE`` is a time here: no bool, no float (no
    NaN, no fraction a store would round), no string, nothing a datetime cannot hold."""
    value = claims.get(name)
    if name not in claims and not required:
        return None
    if type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE:
        raise error(f"{subject} {name} claim must be a whole number of seconds since 1970 (a NumericDate).")
    return value
