"""Signing as Canvas signs: LTI 1.1 launches and the JWTs of ``/api/lti/.../jwt_token``.

LTI 1.1 launches are signed by oauthlib's *client* (never by the code that verifies them), the
way Canvas signs them: form-encoded, HMAC-SHA1, signature in the body,
``oauth_callback=about:blank``. JWTs are minted by PyJWT the way Canvas' ``jwt_token`` endpoint
mints them: the launch parameters without ``oauth_*``, plus ``consumer_key`` and ``iat``, HS256
with the shared secret, header ``{"typ":"JWT","alg":"HS256"}``, no ``exp``.

The test suite's Canvas stand-in (``tests/canvas.py``) and ``commons-session dev-canvas`` both
sign with this module, so what the tests prove about these signatures holds for the stand-in.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_TYPE_BODY, Client

__all__ = ["GUID", "CanvasUser", "LtiConsumer", "form_fields"]

GUID = "7db438071375c02373713c12c73869ff2f470b68:canvas-lms"


@dataclass
class CanvasUser:
    lti_user_id: str = field(default_factory=lambda: secrets.token_hex(20))
    canvas_user_id: str = "42"
    name: str = "Ada Lovelace"
    given: str = "Ada"
    roles: str = "Instructor"
    ext_roles: str = (
        "urn:lti:instrole:ims/lis/Instructor,urn:lti:role:ims/lis/Instructor,urn:lti:sysrole:ims/lis/User"
    )
    image: str = "https://canvas.example.edu/images/thumbnails/42/avatar.png"


@dataclass
class LtiConsumer:
    """One Canvas as an LTI 1.1 tool consumer: the consumer key and shared secret its admin
    typed in, and what it says about itself in every launch."""

    consumer_key: str
    secret: str
    guid: str = GUID
    instance_name: str = "Example University"
    api_domain: str = "canvas.example.edu"

    def launch_params(self, user: CanvasUser, **overrides: Any) -> dict[str, Any]:
        """The LTI 1.1 parameters Canvas sends for a course navigation launch."""
        params: dict[str, Any] = {
            "context_id": "4dde05e8ca1973bcca9bffc13e1548820eee93a3",
            "context_label": "BIO101",
            "context_title": "Biology 101",
            "custom_canvas_api_domain": self.api_domain,
            "custom_canvas_course_id": "7",
            "custom_canvas_enrollment_state": "active",
            "custom_canvas_user_id": user.canvas_user_id,
            "custom_canvas_user_login_id": "$Canvas.user.loginId",
            "custom_canvas_workflow_state": "available",
            "ext_roles": user.ext_roles,
            "launch_presentation_document_target": "iframe",
            "launch_presentation_locale": "en",
            "launch_presentation_return_url": f"https://{self.api_domain}/courses/7/external_content/success/external_tool_redirect",
            "lis_person_contact_email_primary": None,
            "lis_person_name_family": None,
            "lis_person_name_full": user.name,
            "lis_person_name_given": user.given,
            "lti_message_type": "basic-lti-launch-request",
            "lti_version": "LTI-1p0",
            "resource_link_id": "6e06f2bb1d2ba6e6cf7e7e1d3bd7e8f6d5a8d1e9",
            "resource_link_title": "Commons",
            "roles": user.roles,
            "tool_consumer_info_product_family_code": "canvas",
            "tool_consumer_info_version": "cloud",
            "tool_consumer_instance_contact_email": "notifications@example.edu",
            "tool_consumer_instance_guid": self.guid,
            "tool_consumer_instance_name": self.instance_name,
            "user_id": user.lti_user_id,
            "user_image": user.image,
        }
        params.update(overrides)
        return params

    def sign(
        self,
        url: str,
        params: Mapping[str, Any],
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A launch form body and its headers, signed as Canvas signs it. A ``None`` value is
        left out of the form, as Canvas leaves out what the privacy level withholds."""
        form = {k: v for k, v in params.items() if v is not None}
        form["oauth_callback"] = "about:blank"
        client = Client(
            self.consumer_key,
            client_secret=self.secret if secret is None else secret,
            signature_method=SIGNATURE_HMAC_SHA1,
            signature_type=SIGNATURE_TYPE_BODY,
            timestamp=None if timestamp is None else str(timestamp),
            nonce=nonce or secrets.token_hex(20),  # Canvas nonces are ~40 characters
        )
        _, headers, body = client.sign(
            url,
            http_method="POST",
            body=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return body, headers

    def signed_launch(
        self,
        url: str,
        user: CanvasUser,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        nonce: str | None = None,
        **overrides: Any,
    ) -> tuple[str, dict[str, str]]:
        """:meth:`sign` over :meth:`launch_params`."""
        return self.sign(
            url, self.launch_params(user, **overrides), secret=secret, timestamp=timestamp, nonce=nonce
        )

    def mint_jwt(
        self, params: Mapping[str, Any], *, secret: str | None = None, iat: float | None = None
    ) -> str:
        """What ``jwt_token`` answers for a launch with these (non-``oauth_*``) parameters. A
        ``None`` value stays in as JSON null, as Canvas sends it."""
        payload = {k: v for k, v in params.items() if not k.startswith("oauth_")}
        payload["consumer_key"] = self.consumer_key
        payload["iat"] = int(time.time() if iat is None else iat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # Canvas secrets are short
            return jwt.encode(
                payload,
                self.secret if secret is None else secret,
                algorithm="HS256",
                headers={"typ": "JWT"},
                sort_headers=False,  # Canvas' header is {"typ":"JWT","alg":"HS256"}, in that order
            )

    def jwt_token(
        self,
        user: CanvasUser,
        *,
        secret: str | None = None,
        iat: float | None = None,
        **overrides: Any,
    ) -> str:
        """What ``GET /api/lti/accounts/self/jwt_token`` answers in ``jwt_token``."""
        return self.mint_jwt(self.launch_params(user, **overrides), secret=secret, iat=iat)


def form_fields(body: str) -> list[tuple[str, str]]:
    """A signed form body as the (name, value) pairs of an HTML form that re-posts it."""
    return parse_qsl(body, keep_blank_values=True)
