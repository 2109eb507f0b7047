"""LTI 1.3 as a platform does it: an RSA key published as a JWKS, and RS256 ``id_token`` s.

Canvas signs every LTI 1.3 message with a key from its JWKS and names it by ``kid`` in the JWT
header. The stand-in generates a fresh key at each start, so a tool that caches the JWKS sees an
unknown ``kid`` after a restart and must fetch the set again, as it must when Canvas rotates.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["CLAIM", "MESSAGE_TYPE", "VERSION", "PlatformKey"]

#: Prefix of the LTI claims (``CLAIM + "message_type"`` and so on).
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
MESSAGE_TYPE = "LtiResourceLinkRequest"
VERSION = "1.3.0"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class PlatformKey:
    """An RSA signing key and its public half as a JWK. ``kid`` is the RFC 7638 thumbprint."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private = private_key
        numbers = private_key.public_key().public_numbers()
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        canonical = json.dumps({"e": _b64(e), "kty": "RSA", "n": _b64(n)}, separators=(",", ":"))
        self.kid = _b64(hashlib.sha256(canonical.encode("ascii")).digest())

    @classmethod
    def generate(cls) -> PlatformKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def from_pem(cls, pem: str) -> PlatformKey:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the platform key must be an RSA private key")
        return cls(key)

    def private_pem(self) -> str:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self._private.public_key(), as_dict=True)
        return {"kty": "RSA", "e": jwk["e"], "n": jwk["n"], "kid": self.kid, "alg": "RS256", "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        """What the platform serves at its JWKS URL."""
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: dict[str, Any]) -> str:
        """An RS256 JWT with ``kid`` in its header, as Canvas signs an ``id_token``."""
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.kid})
