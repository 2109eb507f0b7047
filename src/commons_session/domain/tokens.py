"""Canvas JWTs: what ``/api/lti/accounts/self/jwt_token`` returns.

HS256 over the LTI 1.1 launch parameters (without ``oauth_*``) plus ``consumer_key`` and
``iat``, keyed with the institution's shared secret. No ``exp``, ``aud`` or ``jti``: the age
check on ``iat`` and single use (in the service) stand in for them.

Verification order matters: ``consumer_key`` is read from the unverified payload only to pick
the secret; no other claim is trusted until the signature verifies.

Every token is split by ``jws``: each segment canonical base64url (no padding, no whitespace,
no ``+``/``/``, no stray bits), so one token has exactly one spelling, refused before any
lookup otherwise; header and payload I-JSON objects (``strict_json``); every time claim a whole
number of seconds. The single-use marker is keyed on ``jws.CompactJws.replay_key``: derived
from the verified signing input and signature, never from the string as presented.

The signature is checked here with ``hmac`` rather than by PyJWT, because it is measurably
faster end to end: parse + verify 32 µs a token against 146 µs with ``PyJWS.decode_complete``
on the same split token (bench/jwt_verify.py), and in-process create on SQLite 272 µs of CPU
against 401 µs (bench/ab_create.py, 9 interleaved rounds, December 2026). The algorithm is
pinned, so only what PyJWT checked that matters for an HS256-only verifier is kept, and made
no weaker: exactly ``"alg": "HS256"``; ``kid`` a string if present; no ``crit`` (we understand
no extension) and no unencoded payload (``"b64": false``). tests/test_properties.py holds it to
PyJWT as the oracle on canonical tokens, and the same property tests pass on the library path.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidClaims, InvalidSignature, MalformedToken, TokenExpired, TokenTooLarge
from . import jws
from .models import Institution
from .strict_json import json_object, numeric_date

__all__ = ["UnverifiedToken", "parse", "read_consumer_key", "token_digest", "verify", "verify_token"]


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token split and decoded, nothing in it trusted yet: the signature is checked by
    ``verify``, which alone hands out the claims."""

    header: dict[str, Any]
    payload: dict[str, Any]
    jws: jws.CompactJws

    @property
    def consumer_key(self) -> str:
        """The unverified ``consumer_key``: use it only to choose which secret verifies the token."""
        key = self.payload.get("consumer_key")
        if not isinstance(key, str) or not key or not key.isprintable():
            raise InvalidClaims("The JWT has no usable consumer_key claim.")
        return key


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    return json_object(raw, f"The JWT {what}", MalformedToken)


def parse(token: str, max_bytes: int) -> UnverifiedToken:
    """Split and decode ``token`` (size, ASCII, three canonical base64url segments, I-JSON
    objects). Cheap, and before any lookup: a token spelled any other way is refused here."""
    if len(token) > max_bytes:
        raise TokenTooLarge(f"The JWT is longer than {max_bytes} bytes.")
    compact = jws.split(token, "The JWT", MalformedToken)
    return UnverifiedToken(
        _json_object(compact.header, "header"), _json_object(compact.payload, "payload"), compact
    )


def read_consumer_key(token: str, max_bytes: int) -> str:
    """The unverified ``consumer_key``: use it only to choose which secret verifies the token."""
    return parse(token, max_bytes).consumer_key


def token_digest(parsed: UnverifiedToken) -> str:
    """What the replay cache stores: never the token itself, and derived from what ``verify``
    checked (``CompactJws.replay_key``), not from how the token was spelled."""
    return parsed.jws.replay_key


def _check_header(header: dict[str, Any]) -> None:
    # In PyJWT's order: the header's own rules (malformed), then the algorithm (signature).
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedToken("The JWT could not be decoded.")
    if "crit" in header or header.get("b64", True) is False:
        raise MalformedToken("The JWT could not be decoded.")
    if header.get("alg") != "HS256":
        raise InvalidSignature("The JWT must be signed with HS256.")


def _verify_signature(parsed: UnverifiedToken, secrets: Sequence[str]) -> None:
    # PyJWT's order: the header's rules, then the algorithm (every segment is decoded already).
    _check_header(parsed.header)
    signing_input, signature = parsed.jws.signing_input, parsed.jws.signature
    for secret in secrets:  # during a rotation, the previous secret too
        expected = hmac.digest(secret.encode("utf-8"), signing_input, "sha256")
        if hmac.compare_digest(expected, signature):
            return
    raise InvalidSignature()


def _time(claims: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    return numeric_date(claims, name, "The JWT's", InvalidClaims, required=required)


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
    if "iat" not in payload:
        raise InvalidClaims("The JWT has no iat claim.")
    iat = _time(payload, "iat", required=True)
    assert iat is not None
    if iat > now + future_skew:
        raise InvalidClaims("The JWT's iat is in the future.")
    if max_age and now - iat > max_age:
        raise TokenExpired(f"The JWT was issued more than {max_age} seconds ago; ask Canvas for a new one.")
    # Canvas sends neither, but honour them if a token carries them.
    exp = _time(payload, "exp")
    if exp is not None and now >= exp + future_skew:
        raise TokenExpired("The JWT's exp has passed.")
    nbf = _time(payload, "nbf")
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
