"""One-time hand-off codes: how a page gets its session when the browser drops the cookie.

After a launch the browser is redirected to ``/terms?code=...`` (or ``/?code=...``). If the
session cookie was blocked (Canvas shows the tool in a cross-site iframe), the page's script
trades the code once, within ``exchange_code_ttl`` seconds, at ``POST /api/sessions/exchange``
for the session id, and sends it as ``x-session-id`` from then on. The id itself never appears in
a URL.

Nothing stored can be turned into the session id: the store keeps, under a hash of the code,
only the id XORed with a pad derived from the code (the code has 256 random bits and is never
stored), so the row is useless without the URL and the URL is useless after one use or a minute.
Both derivations are domain-separated SHA-256, like ``ids.handle_for``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from .ids import ID_BYTES, is_well_formed

__all__ = ["is_well_formed_code", "lookup_key", "new_code", "seal", "unseal"]

_CODE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def new_code() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def is_well_formed_code(code: str) -> bool:
    return len(code) == 43 and _CODE.fullmatch(code) is not None


def lookup_key(code: str) -> str:
    """Where the sealed id is kept: a hash of the code, never the code."""
    return hashlib.sha256(b"commons-session exchange lookup:" + code.encode("ascii")).hexdigest()


def _pad(code: str) -> bytes:
    return hashlib.sha256(b"commons-session exchange pad:" + code.encode("ascii")).digest()


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def seal(code: str, session_id: str) -> str:
    """The session id, encrypted with a one-time pad only the code can rebuild (hex)."""
    raw = _b64decode(session_id)
    assert len(raw) == ID_BYTES
    return bytes(a ^ b for a, b in zip(raw, _pad(code), strict=True)).hex()


def unseal(code: str, sealed: str) -> str | None:
    """The session id sealed under this code, or None if the value is not one we sealed."""
    try:
        raw = bytes.fromhex(sealed)
    except ValueError:
        return None
    if len(raw) != ID_BYTES:
        return None
    opened = bytes(a ^ b for a, b in zip(raw, _pad(code), strict=True))
    session_id = base64.urlsafe_b64encode(opened).decode("ascii").rstrip("=")
    return session_id if is_well_formed(session_id) else None
