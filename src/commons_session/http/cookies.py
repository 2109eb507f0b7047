"""The ``session`` cookie. ``Secure; SameSite=None`` by default because Canvas shows the tool
in a cross-site iframe; ``cookie_secure=false`` is for plain-HTTP local use only."""

from __future__ import annotations

from starlette.responses import Response

from ..config import Settings
from ..domain.ids import is_well_formed
from .carriers import COOKIE_NAME

__all__ = ["STATE_COOKIE", "clear_session_cookie", "set_session_cookie", "set_state_cookie"]


def set_session_cookie(response: Response, session_id: str, settings: Settings) -> None:
    """The header ``Response.set_cookie`` would write, byte for byte, without the cost of
    ``http.cookies`` on every create (a session id is base64url: it never needs quoting)."""
    if not is_well_formed(session_id):  # never: ids are ours; but never write an unchecked one
        raise ValueError("not a session id")
    attributes = f"; HttpOnly; Max-Age={settings.absolute_timeout:d}; Path=/; SameSite=" + (
        "none; Secure" if settings.cookie_secure else "lax"
    )
    response.raw_headers.append((b"set-cookie", f"{COOKIE_NAME}={session_id}{attributes}".encode("ascii")))


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE_NAME,
        path="/",
        httponly=True,
        secure=settings.cookie_secure,
        samesite="none" if settings.cookie_secure else "lax",
    )


#: LTI 1.3: the browser binding of a login's state (see docs/lti13.md). Sent only to /api/lti*.
STATE_COOKIE = "lti1p3_state"
STATE_COOKIE_PATH = "/api/lti"


def set_state_cookie(response: Response, binding: str, settings: Settings) -> None:
    response.set_cookie(
        STATE_COOKIE,
        binding,
        max_age=settings.lti_state_ttl,
        path=STATE_COOKIE_PATH,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="none" if settings.cookie_secure else "lax",
    )
