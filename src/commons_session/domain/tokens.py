"""Canvas JWTs: what ``/api/lti/accounts/self/jwt_token`` returns.

HS256 over the LTI 1.1 launch parameters (without ``oauth_*``) plus ``consumer_key`` and
``iat``, keyed with the institution's shared secret. No ``exp``, ``aud`` or ``jti``: the age
check on ``iat`` and single use (in the service) stand in for them.

Verification order matters: ``consumer_key`` is read from the unverified payload only to pick
the secret; no other claim is trusted until the signature verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

from ..errors import InvalidClaims, InvalidSignature, MalformedToken, TokenExpired, TokenTooLarge
from .models import Institution
from .strict_json import json_object

__all__ = ["read_consumer_key", "token_digest", "verify_token"]


class _CanvasHS256(HMACAlgorithm):
    """HS256 without PyJWT's short-key warning: Canvas admins choose the shared secret (it can
    be three characters) and we must verify what Canvas signs with it."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def check_key_length(self, key: bytes) -> str | None:
        return None


# An HS256-only verifier: "none", RS256 (key confusion) and every other alg are not even known.
_jws = jwt.PyJWS(algorithms=["HS256"])
_jws.unregister_algorithm("HS256")
_jws.register_algorithm("HS256", _CanvasHS256())


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    return json_object(raw, f"The JWT {what}", MalformedToken)


def _b64(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken(f"The JWT {what} is not base64url.") from exc


def _segments(token: str, max_bytes: int) -> list[str]:
    if len(token) > max_bytes:
        raise TokenTooLarge(f"The JWT is longer than {max_bytes} bytes.")
    if not token.isascii():
        raise MalformedToken("The JWT must be ASCII.")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise MalformedToken("The JWT must be three base64url segments separated by dots.")
    return parts


def read_consumer_key(token: str, max_bytes: int) -> str:
    """The unverified ``consumer_key``: use it only to choose which secret verifies the token."""
    parts = _segments(token, max_bytes)
    _json_object(_b64(parts[0], "header"), "header")
    payload = _json_object(_b64(parts[1], "payload"), "payload")
    key = payload.get("consumer_key")
    if not isinstance(key, str) or not key or not key.isprintable():
        raise InvalidClaims("The JWT has no usable consumer_key claim.")
    return key


def token_digest(token: str) -> str:
    """What the replay cache stores: never the token itself."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _verify_signature(token: str, secrets: Sequence[str]) -> bytes:
    for secret in secrets:
        try:
            return bytes(_jws.decode_complete(token, secret, algorithms=["HS256"])["payload"])
        except jwt.InvalidSignatureError:
            continue  # try the previous secret during a rotation
        except jwt.InvalidAlgorithmError as exc:
            raise InvalidSignature("The JWT must be signed with HS256.") from exc
        except jwt.PyJWTError as exc:
            raise MalformedToken("The JWT could not be decoded.") from exc
    raise InvalidSignature()


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClaims(f"The JWT's {name} claim must be a number.")
    return float(value)


def verify_token(
    token: str,
    institution: Institution,
    *,
    now: float,
    max_age: int,
    future_skew: int,
    max_bytes: int,
) -> dict[str, Any]:
    """Verify signature, then time claims. Returns the claims. ``max_age`` 0 skips the age
    check (unsafe; see docs/security.md)."""
    _segments(token, max_bytes)
    payload = _json_object(_verify_signature(token, institution.secrets), "payload")
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
