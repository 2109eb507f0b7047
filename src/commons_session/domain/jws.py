"""Compact JWS (RFC 7515 §7.1) read strictly: one token, one spelling.

Every JWT we accept (the Canvas HS256 token, the LTI 1.3 id_token, anything later) is split
here. Each segment must be canonical base64url (RFC 7515 §2: RFC 4648 §5 with no padding): the
URL-safe alphabet only, no ``=``, no whitespace, no length of 4n+1, and no bit set past the last
whole byte. Lenient decoders (PyJWT's, Python's ``base64``) accept many spellings of one token,
and a single-use marker keyed on the presented string let a used token make a second session
when re-spelled (issue 11); a segment here is the one spelling of its bytes or the token is
refused. ``replay_key`` is derived from what a verifier checks (the signing input and the
decoded signature), so even a decoder loosened later could not give one token two keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CompactJws", "b64url_decode", "split"]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# base64url to standard base64 for binascii's strict decoder. "+", "/" and "=" (not base64url
# in a JWS) become "!", which it refuses like whitespace and any other byte outside the alphabet.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
# What each base64url character stands for, to check the bits past the last whole byte.
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


def b64url_decode(segment: bytes) -> bytes | None:
    """The bytes ``segment`` is the canonical unpadded base64url of, else None."""
    rest = len(segment) % 4
    if rest == 1:
        return None
    try:
        raw = binascii.a2b_base64(segment.translate(_TO_STANDARD) + b"=" * (-rest % 4), strict_mode=True)
    except binascii.Error:
        return None
    # The last character of a partial quantum carries 4 (2 left) or 2 (3 left) unused bits.
    if rest and _VALUE[segment[-1]] & (0xF if rest == 2 else 0x3):
        return None
    return raw


def _b64url_encode(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A token's three segments decoded; nothing in them verified yet."""

    header: bytes
    payload: bytes
    signature: bytes
    #: ``header "." payload`` as presented (canonical, so also as re-encoded): what was signed.
    signing_input: bytes

    @property
    def replay_key(self) -> str:
        """What a single-use marker is kept under: SHA-256 of the signing input and the decoded
        signature re-encoded. For a canonical token this equals SHA-256 of the token, so markers
        written before this key was derived stay valid."""
        return hashlib.sha256(self.signing_input + b"." + _b64url_encode(self.signature)).hexdigest()


def split(token: str, subject: str, error: Callable[[str], Exception]) -> CompactJws:
    """Split ``token`` into three canonical base64url segments, the first two non-empty.
    Raises ``error(message)`` naming ``subject`` (e.g. "The JWT") otherwise."""
    if not token.isascii():
        raise error(f"{subject} must be ASCII.")
    parts = token.encode("ascii").split(b".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise error(f"{subject} must be three base64url segments separated by dots.")
    decoded = []
    for part, what in zip(parts, ("header", "payload", "signature"), strict=True):
        raw = b64url_decode(part)
        if raw is None:
            raise error(f"{subject} {what} is not canonical base64url (no padding, no whitespace).")
        decoded.append(raw)
    header, payload, signature = decoded
    return CompactJws(header, payload, signature, b"%s.%s" % (parts[0], parts[1]))
