"""Session ids: 256 CSPRNG bits on the wire, only their SHA-256 in any store.

A plain SHA-256 is enough: the input has 256 bits of entropy, so there is nothing to
brute-force, and a fast hash keeps the lookup on the hot path cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = ["ID_BYTES", "handle_for", "hash_id", "is_well_formed", "new_session_id", "same_id"]

ID_BYTES = 32  # 256 bits
# base64url of 32 bytes without padding is 43 characters; the last one carries only
# 4 significant bits, so it is one of the 16 characters whose low 2 bits are zero.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def new_session_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def is_well_formed(session_id: str) -> bool:
    """Checked before any store lookup, so garbage never costs a query."""
    return len(session_id) == 43 and _ID_PATTERN.fullmatch(session_id) is not None


def hash_id(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("ascii")).digest()


def same_id(a: str, b: str) -> bool:
    """Constant-time comparison, so timing never reveals how much of an id matched."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def handle_for(id_hash: bytes) -> str:
    """A name for a session that its owner may see in a list and use to end it, but that can
    never be used as a session id or turned back into one."""
    return hashlib.sha256(b"commons-session handle:" + id_hash).hexdigest()[:32]
