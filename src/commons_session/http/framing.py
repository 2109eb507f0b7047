"""Who may frame our pages: CSP ``frame-ancestors``.

The tool lives in the LMS' iframe, so a blanket ``DENY`` would break it; anyone framing it
would allow clickjacking the terms and logout buttons. The list, per page:

- ``'self'``;
- ``COMMONS_SESSION_FRAME_ANCESTORS``: origins the operator names (a Canvas reached under a
  vanity domain, or any LTI 1.1 Canvas before its first launch);
- every registered LTI 1.3 platform: the origins of its issuer and of its authorization URL;
- for a page shown to a session, the Canvas the person launched from: the launch's signed
  ``custom_canvas_api_domain`` (``https://`` that host; ``http://`` too for a loopback host,
  the local stand-in). The exchange page finds that session through its code, without using it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ..config import Settings
from ..domain.models import SessionRecord
from ..domain.service import SessionService
from ..errors import StoreError
from . import pages

__all__ = ["framed", "origin_of"]

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::[0-9]{1,5})?")
_LOOPBACK = ("localhost", "127.0.0.1")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None: only what is safe in a CSP."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not _HOST.fullmatch(parts.netloc):
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _canvas_origins(record: SessionRecord | None) -> list[str]:
    domain = record.contents.get("canvasApiDomain") if record is not None else None
    if not isinstance(domain, str) or not _HOST.fullmatch(domain):
        return []
    host = domain.lower()
    found = [f"https://{host}"]
    if host.split(":", 1)[0] in _LOOPBACK:
        found.append(f"http://{host}")
    return found


async def framed(request: Request, response: Response, record: SessionRecord | None = None) -> Response:
    """``response`` (one of ``pages``) with ``frame-ancestors`` naming who may frame it.
    ``record`` is the session the page shows; an exchange page's is found through its code."""
    settings: Settings = request.app.state.settings
    service: SessionService = request.app.state.service
    origins: list[str] = [o for o in (origin_of(u) for u in settings.frame_ancestors) if o]
    try:
        if record is None and request.query_params.get("code"):
            record = await service.exchange_code_session(request.query_params["code"])
        for registration in await service.stores.records.list_lti13_registrations():
            if registration.pending:  # anyone can register a platform: it frames us once bound
                continue
            origins += [o for o in (origin_of(registration.issuer), origin_of(registration.auth_url)) if o]
    except StoreError:  # a page that needs no store still answers; it is just framed by fewer
        pass
    origins += _canvas_origins(record)
    return pages.allow_framing(response, list(dict.fromkeys(origins)))
