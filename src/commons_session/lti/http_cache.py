"""How long an HTTP response (a platform's JWKS) may be reused, read from its headers as a
private cache reads them (RFC 9111 section 4.2.1), and the validators to revalidate it with.

No web framework and no client: the fetcher hands over the response's headers and
``lti.v13.KeySets`` applies the result within its own floor and ceiling, because whoever
answers the JWKS URL must not be able to make us fetch on every launch or cache forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["Freshness", "freshness", "http_date"]

#: Longer validators are not worth keeping (an ETag is a short quoted string).
MAX_VALIDATOR_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Freshness:
    """What a response says about its own reuse."""

    #: Seconds it stays fresh from now; ``None`` when the headers say nothing (the caller's
    #: default applies); 0 for ``no-store``, ``no-cache``, ``max-age=0`` or a past or invalid
    #: ``Expires``.
    lifetime: float | None
    #: ``ETag``, sent back as ``If-None-Match`` to revalidate.
    etag: str | None = None
    #: ``Last-Modified``, sent back as ``If-Modified-Since`` when there is no ETag.
    last_modified: str | None = None


def http_date(value: str | None) -> float | None:
    """An HTTP-date as POSIX seconds, None if it is not one."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # an obsolete date form without a zone: GMT by definition
        return None
    try:
        stamp = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return stamp if math.isfinite(stamp) else None


def _directives(cache_control: str) -> dict[str, str | None]:
    """``Cache-Control`` as lower-cased directive names and their (unquoted) values; the first
    occurrence of a directive wins."""
    found: dict[str, str | None] = {}
    for part in cache_control.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        text = value.strip() if sep else None
        if text is not None and len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        found.setdefault(name, text)
    return found


def _seconds(value: str | None) -> int | None:
    """A delta-seconds value (digits only), None if malformed."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


def _validator(value: str | None) -> str | None:
    if not value or len(value) > MAX_VALIDATOR_LENGTH:
        return None
    if not all(" " <= c <= "~" for c in value):  # visible ASCII only: it goes back in a header
        return None
    return value


def freshness(headers: Mapping[str, str], now: float) -> Freshness:
    """``headers`` has lower-cased names (a repeated ``Cache-Control`` joined with commas).

    ``no-store`` and ``no-cache`` make the response stale at once (``no-cache`` keeps its
    validators, so the next use revalidates cheaply); ``max-age`` wins over ``Expires``; an
    invalid ``max-age`` or ``Expires`` means stale (RFC 9111 4.2.1); ``Age`` is subtracted."""
    etag = _validator(headers.get("etag"))
    last_modified = _validator(headers.get("last-modified"))
    if last_modified is not None and http_date(last_modified) is None:
        last_modified = None
    directives = _directives(headers.get("cache-control", ""))
    if "no-store" in directives:
        return Freshness(0.0)
    if "no-cache" in directives:
        return Freshness(0.0, etag, last_modified)
    lifetime: float | None = None
    if "max-age" in directives:
        max_age = _seconds(directives["max-age"])
        lifetime = float(max_age) if max_age is not None else 0.0
    elif "expires" in headers:
        expires = http_date(headers.get("expires"))
        date = http_date(headers.get("date"))
        lifetime = 0.0 if expires is None else max(0.0, expires - (date if date is not None else now))
    if lifetime is not None:
        age = _seconds(headers.get("age"))
        if age is not None:
            lifetime = max(0.0, lifetime - age)
    return Freshness(lifetime, etag, last_modified)
