"""A stand-in for the parts of Canvas this service talks to, faithful down to the signatures.

LTI 1.1 launches are signed by oauthlib's *client* (not by our verifying code), the way Canvas
signs them: form-encoded, HMAC-SHA1, signature in the body, ``oauth_callback=about:blank``.
JWTs are minted by PyJWT the way Canvas' ``jwt_token`` endpoint mints them: the launch
parameters without ``oauth_*``, plus ``consumer_key`` and ``iat``, HS256 with the shared secret,
header ``{"typ":"JWT","alg":"HS256"}``, no ``exp``.

The signing lives in ``commons_session.devcanvas.signing``, shared with ``commons-session
dev-canvas``; ``FakeCanvas`` is its ``LtiConsumer`` (``launch_params``, ``signed_launch``,
``jwt_token``, and the lower-level ``sign`` and ``mint_jwt``).
"""

from __future__ import annotations

from commons_session.devcanvas.signing import GUID, CanvasUser
from commons_session.devcanvas.signing import LtiConsumer as FakeCanvas

__all__ = ["GUID", "CanvasUser", "FakeCanvas"]
