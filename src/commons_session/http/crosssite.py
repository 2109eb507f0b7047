"""Is this request another site's doing? For the steps after a launch (creating a session from a
JWT, the terms and logout forms), which only our own pages or non-browser clients make.

The LTI launches themselves are cross-site posts from the LMS by design and are not checked
here. Browsers say where a request comes from: ``Sec-Fetch-Site`` (all current browsers), else
``Origin``. A request with neither comes from a non-browser client (or a very old browser) and
is left to the other checks (the CSRF token, the id itself).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from ..errors import CrossOriginRequest

__all__ = ["refuse_cross_site"]

_OURS = frozenset({"same-origin", "none"})  # "none": the person typed or bookmarked it


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def refuse_cross_site(request: Request, public_url: str | None) -> None:
    """``CrossOriginRequest`` (403) if a browser says another site (or a sibling subdomain, or a
    page hiding its origin as ``null``) made this request."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site.strip().lower() not in _OURS:
            raise CrossOriginRequest()
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    ours = _netloc(public_url) if public_url else request.headers.get("host", "").lower()
    if origin.strip() == "null" or not ours or _netloc(origin.strip()) != ours:
        raise CrossOriginRequest()
