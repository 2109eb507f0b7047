"""The Canvas JWT check, hand-written (``domain/tokens.py``: ``hmac``) against the library path
(PyJWT's ``PyJWS.decode_complete`` verifying the same canonical token), CPU per token.

Both sides split the token the same way (``domain.jws``: canonical base64url, strict JSON) and
check the same time claims; only the signature step differs. Rounds are interleaved so drift on
a shared machine hits both alike. For the figure end to end, in-process create on SQLite, run
bench/ab_create.py against a copy of the tree whose ``tokens._verify_signature`` is
``library_verify_signature`` below.

Usage: .venv/bin/python bench/jwt_verify.py [--tokens 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jwt
from jwt.algorithms import HMACAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.canvas import CanvasUser, FakeCanvas

from commons_session.domain import tokens
from commons_session.domain.models import Institution
from commons_session.errors import InvalidSignature, MalformedToken


class _HS256(HMACAlgorithm):
    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def check_key_length(self, key: bytes) -> str | None:
        return None  # Canvas secrets are short


_PYJWS = jwt.PyJWS(algorithms=["HS256"])
_PYJWS.unregister_algorithm("HS256")
_PYJWS.register_algorithm("HS256", _HS256())


def library_verify_signature(parsed: tokens.UnverifiedToken, secrets: Sequence[str]) -> None:
    """``tokens._verify_signature`` on PyJWT: its header rules, the algorithm and the MAC."""
    if "crit" in parsed.header:
        raise MalformedToken("The JWT could not be decoded.")
    token = parsed.jws.signing_input + b"." + base64.urlsafe_b64encode(parsed.jws.signature).rstrip(b"=")
    for secret in secrets:
        try:
            _PYJWS.decode_complete(token, secret, algorithms=["HS256"])
            return
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidAlgorithmError as exc:
            raise InvalidSignature() from exc
        except jwt.PyJWTError as exc:
            raise MalformedToken("The JWT could not be decoded.") from exc
    raise InvalidSignature()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    canvas = FakeCanvas("key-bench", "a-shared-secret-of-canvas")
    institution = Institution(1, canvas.consumer_key, "Bench U", (canvas.secret,))
    token = canvas.jwt_token(CanvasUser())
    now = time.time()
    hand_written = tokens._verify_signature
    sides: dict[str, Callable[..., None]] = {"hmac": hand_written, "pyjwt": library_verify_signature}
    results: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, check in sides.items():
            tokens._verify_signature = check  # type: ignore[assignment]
            started = time.process_time()
            for _ in range(args.tokens):
                parsed = tokens.parse(token, 16_384)
                tokens.verify(parsed, institution, now=now, max_age=300, future_skew=60)
            results[name].append((time.process_time() - started) / args.tokens * 1e6)
    tokens._verify_signature = hand_written  # type: ignore[assignment]
    print(f"CPU µs per token (parse + verify), {args.rounds} interleaved rounds of {args.tokens}")
    for name, runs in results.items():
        print(f"{name:6} {statistics.median(runs):7.1f}   " + " ".join(f"{r:.1f}" for r in runs))


if __name__ == "__main__":
    main()
