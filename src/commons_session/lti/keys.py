"""The tool's own signing keys: RS256 RSA keys that sign what we send a platform (LTI Deep
Linking responses), published as our JWKS so the platform can verify them.

No web framework and no driver: the keys live in the ``RecordStore`` (the durable SQL
database, also when Redis holds the sessions), handed in by the caller.

- The first key is made when the database is migrated or the service starts and finds none
  (and, failing that, on first use). Two workers starting at once may each make one: both are
  published and the newest signs, which is harmless.
- ``rotate`` makes a new key sign from now on; the old ones stay in the JWKS for the overlap, so
  a response signed just before the rotation still verifies, then drop out.
- A private key is read only to sign. ``ToolKey``'s repr hides it, ``public_jwk`` and
  ``describe`` carry only public parts, so no log line, API answer or CLI output can hold it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from ..domain.models import ToolKey
from ..errors import CreateError
from ..stores.base import RecordStore

__all__ = [
    "DEFAULT_OVERLAP",
    "KEY_SIZE",
    "ToolKeys",
    "describe",
    "jwks_document",
    "new_key",
    "signing_key",
]

KEY_SIZE = 2048
#: How long a rotated-out key stays published: longer than any platform caches a JWKS, and far
#: longer than a Deep Linking response lives (minutes).
DEFAULT_OVERLAP = 86_400
_PUBLIC_MEMBERS = ("kty", "n", "e")


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a kid that names the key itself."""
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def new_key(now: float) -> ToolKey:
    """A fresh RSA key (65537, 2048 bits) with its public JWK and a thumbprint kid."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    public = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    members = {k: public[k] for k in _PUBLIC_MEMBERS}
    kid = _thumbprint(members)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    jwk = {**members, "kid": kid, "alg": "RS256", "use": "sig"}
    return ToolKey(kid=kid, private_pem=pem, public_jwk=jwk, created_at=now)


def signing_key(keys: list[ToolKey]) -> ToolKey | None:
    """The newest key that is not retired: the one that signs."""
    active = [k for k in keys if k.retired_at is None]
    return max(active, key=lambda k: (k.created_at, k.kid)) if active else None


def _public(key: ToolKey) -> dict[str, Any]:
    """Only the public members, whatever else the stored JWK might carry."""
    return {k: key.public_jwk[k] for k in (*_PUBLIC_MEMBERS, "kid", "alg", "use") if k in key.public_jwk}


def jwks_document(keys: list[ToolKey], now: float) -> dict[str, Any]:
    """Our JWKS: every key that may sign or was retired less than its overlap ago, newest first."""
    return {"keys": [_public(k) for k in keys if k.published(now)]}


def describe(key: ToolKey, now: float, signing: ToolKey | None) -> dict[str, Any]:
    """What ``keys list`` shows of a key: never its private half."""
    state = "signing" if signing is not None and key.kid == signing.kid else "active"
    if key.retired_at is not None:
        state = "published" if key.published(now) else "expired"
    return {
        "kid": key.kid,
        "state": state,
        "created_at": key.created_at,
        "retired_at": key.retired_at,
        "published_until": key.published_until,
    }


@dataclass(frozen=True, slots=True)
class SignedJwt:
    token: str
    kid: str


class ToolKeys:
    """The tool's keys over a ``RecordStore``."""

    def __init__(self, records: RecordStore) -> None:
        self.records = records

    async def ensure(self, now: float) -> ToolKey:
        """The key that signs, made (and stored) first if there is none."""
        found = signing_key(await self.records.list_tool_keys())
        if found is not None:
            return found
        made = new_key(now)
        with contextlib.suppress(CreateError):  # a 256-bit thumbprint does not collide
            await self.records.add_tool_key(made)
        found = signing_key(await self.records.list_tool_keys())
        assert found is not None
        return found

    async def jwks(self, now: float) -> dict[str, Any]:
        await self.ensure(now)
        return jwks_document(await self.records.list_tool_keys(), now)

    async def rotate(self, now: float, overlap: float = DEFAULT_OVERLAP) -> tuple[ToolKey, list[ToolKey]]:
        """A new key signs from ``now``; the ones it replaces stay published until
        ``now + overlap``. Keys whose overlap has ended are deleted. Returns the new key and the
        keys it retired."""
        made = new_key(now)
        retired = await self.records.rotate_tool_keys(made, now + max(0.0, overlap))
        await self.records.delete_tool_keys(now)
        return made, retired

    async def sign(self, claims: dict[str, Any], now: float) -> SignedJwt:
        """``claims`` as an RS256 JWS by the current key, its ``kid`` in the header."""
        key = await self.ensure(now)
        token = jwt.encode(claims, key.private_pem, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"})
        return SignedJwt(token, key.kid)
