"""Canvas JWTs: what ``/api/lti/accounts/self/jwt_token`` returns.

HS256 over the LTI 1.1 launch parameters (without ``oauth_*``) plus ``consumer_key`` and
``iat``, keyed with the institution's shared secret. No ``exp``, ``aud`` or ``jti``: the age
check on ``iat`` and single use (in the service) stand in for them.

Verification order matters: ``consumer_key`` is read from the unverified payload only to pick
the secret; no other claim is trusted until the signature verifies.

The signature is checked here with ``hmac`` rather than by PyJWT, which cost ~150 µs a token
(it tests each base64 character in a Python generator). The algorithm is pinned, so only what
PyJWT checked that matters for an HS256-only verifier is kept, and made no weaker: exactly
``"alg": "HS256"``; ``kid`` a string if present; no ``crit`` (we understand no extension) and
no unencoded payload (``"b64": false``); every segment canonical base64url (the URL-safe
alphabet only, optional ``=`` padding only where it belongs, no stray bits, so one token has
one spelling); header and payload strict JSON objects (``strict_json``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidClaims, InvalidSignature, MalformedToken, TokenExpired, TokenTooLarge
from .models import Institution
from .strict_json import json_object

__all__ = ["UnverifiedToken", "parse", "read_consumer_key", "token_digest", "verify", "verify_token"]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# base64url to standard base64 for binascii; "+" and "/" (not base64url) become "!", which the
# strict decoder refuses like any other character outside the alphabet.
_TO_STANDARD = bytes.maketrans(b"-_+/", b"+/!!")
# What each base64url character stands for, to check the bits past the last whole byte.
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token split and decoded, nothing in it trusted yet: the signature is checked by
    ``verify``, which alone hands out the claims."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature_segment: bytes
    #: Whether the header and payload were canonical base64url. A token that is not is refused
    #: by ``verify``, not by ``parse``: as with PyJWT's verifier, an unknown or missing
    #: consumer key is the reason given first.
    canonical: bool = True

    @property
    def consumer_key(self) -> str:
        """The unverified ``consumer_key``: use it only to choose which secret verifies the token."""
        key = self.payload.get("consumer_key")
        if not isinstance(key, str) or not key or not key.isprintable():
            raise InvalidClaims("The JWT has no usable consumer_key claim.")
        return key


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    return json_object(raw, f"The JWT {what}", MalformedToken)


def _b64(segment: bytes, what: str) -> bytes:
    """Strict base64url, as PyJWT 2.15 checked it: refused unless canonical."""
    body = segment.rstrip(b"=")
    padding = len(segment) - len(body)
    if padding and (padding > 2 or len(segment) % 4):
        raise MalformedToken(f"The JWT {what} is not base64url.")
    rest = len(body) % 4
    try:
        raw = binascii.a2b_base64(body.translate(_TO_STANDARD) + b"=" * (-rest % 4), strict_mode=True)
    except binascii.Error as exc:
        raise MalformedToken(f"The JWT {what} is not base64url.") from exc
    # The last character of a partial quantum carries 4 (2 left) or 2 (3 left) unused bits.
    if rest and _VALUE[body[-1]] & (0xF if rest == 2 else 0x3):
        raise MalformedToken(f"The JWT {what} is not base64url.")
    return raw


def _b64_lenient(segment: bytes, what: str) -> tuple[bytes, bool]:
    """The bytes, and whether they were canonical; what the consumer key is read from."""
    try:
        return _b64(segment, what), True
    except MalformedToken:
        try:
            return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)), False
        except (binascii.Error, ValueError) as exc:
            raise MalformedToken(f"The JWT {what} is not base64url.") from exc


def parse(token: str, max_bytes: int) -> UnverifiedToken:
    """Split and decode ``token`` (size, ASCII, three segments, base64url, JSON objects)."""
    if len(token) > max_bytes:
        raise TokenTooLarge(f"The JWT is longer than {max_bytes} bytes.")
    if not token.isascii():
        raise MalformedToken("The JWT must be ASCII.")
    parts = token.encode("ascii").split(b".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise MalformedToken("The JWT must be three base64url segments separated by dots.")
    raw_header, header_canonical = _b64_lenient(parts[0], "header")
    header = _json_object(raw_header, "header")
    raw_payload, payload_canonical = _b64_lenient(parts[1], "payload")
    payload = _json_object(raw_payload, "payload")
    return UnverifiedToken(
        header, payload, b"%s.%s" % (parts[0], parts[1]), parts[2], header_canonical and payload_canonical
    )


def read_consumer_key(token: str, max_bytes: int) -> str:
    """The unverified ``consumer_key``: use it only to choose which secret verifies the token."""
    return parse(token, max_bytes).consumer_key


def token_digest(token: str) -> str:
    """What the replay cache stores: never the token itself."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _check_header(header: dict[str, Any]) -> None:
    # In PyJWT's order: the header's own rules (malformed), then the algorithm (signature).
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedToken("The JWT could not be decoded.")
    if "crit" in header or header.get("b64", True) is False:
        raise MalformedToken("The JWT could not be decoded.")
    if header.get("alg") != "HS256":
        raise InvalidSignature("The JWT must be signed with HS256.")


def _verify_signature(parsed: UnverifiedToken, secrets: Sequence[str]) -> None:
    # PyJWT's order: decode every segment, then the header's rules, then the algorithm.
    if not parsed.canonical:
        raise MalformedToken("The JWT could not be decoded.")
    signature = _b64(parsed.signature_segment, "signature")
    _check_header(parsed.header)
    for secret in secrets:  # during a rotation, the previous secret too
        expected = hmac.digest(secret.encode("utf-8"), parsed.signing_input, "sha256")
        if hmac.compare_digest(expected, signature):
            return
    raise InvalidSignature()


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClaims(f"The JWT's {name} claim must be a number.")
    return float(value)


def verify(
    parsed: UnverifiedToken,
    institution: Institution,
    *,
    now: float,
    max_age: int,
    future_skew: int,
) -> dict[str, Any]:
    """Verify a parsed token's signature, then its time claims. Returns the claims. ``max_age``
    0 skips the age check (unsafe; see docs/security.md)."""
    _verify_signature(parsed, institution.secrets)
    payload = parsed.payload
    if payload.get("consumer_key") != institution.consumer_key:
        raise InvalidClaims("The JWT's consumer_key does not match the key that verified it.")
    iat = _number(payload, "iat")
    if iat is None:
        raise InvalidClaims("The JWT has no iat claim.")
    if iat > now + future_skew:
        raise InvalidClaims("The JWT's iat is in the future.")
    if max_age and now - iat > max_age:
        raise TokenExpired(f"The JWT was issued more than {max_age} seconds ago; ask Canvas for a new one.")
    # Canvas sends neither, but honour them if a token carries them.
    exp = _number(payload, "exp")
    if exp is not None and now >= exp + future_skew:
        raise TokenExpired("The JWT's exp has passed.")
    nbf = _number(payload, "nbf")
    if nbf is not None and nbf > now + future_skew:
        raise InvalidClaims("The JWT's nbf is in the future.")
    return payload


def verify_token(
    token: str,
    institution: Institution,
    *,
    now: float,
    max_age: int,
    future_skew: int,
    max_bytes: int,
) -> dict[str, Any]:
    """``parse`` then ``verify``: the claims of a token that verifies with the institution's secret."""
    return verify(parse(token, max_bytes), institution, now=now, max_age=max_age, future_skew=future_skew)
