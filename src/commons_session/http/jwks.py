"""Fetching an LTI 1.3 platform's JWKS over HTTP, for ``lti.v13.KeySets``.

Async (httpx), so a fetch never blocks the event loop; the whole fetch is bounded by
``store_timeout`` and the body by ``MAX_JWKS_BYTES``; redirects are not followed (the registered
URL is the one the operator vouched for). Every failure is ``JwksUnavailable`` (503): the
launch is not at fault, and the cached keys, if any, keep working (see ``KeySets``).

The response's caching headers go back with the document (``KeySets`` reads them with
``lti.http_cache``), and ``KeySets``' validators go out as ``If-None-Match`` /
``If-Modified-Since``: a 304 answer means the cached keys are still the platform's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import httpx

from ..errors import JwksUnavailable
from ..lti.v13 import JwksFetcher, JwksResponse

__all__ = ["MAX_JWKS_BYTES", "make_jwks_fetcher"]

MAX_JWKS_BYTES = 262_144  # Canvas publishes a handful of keys: a few KB
#: The response headers that say how long the document may be reused, or revalidate it.
CACHE_HEADERS = ("cache-control", "expires", "date", "age", "etag", "last-modified")
#: The only request headers a caller may add (conditional GET).
CONDITIONS = frozenset({"if-none-match", "if-modified-since"})


def make_jwks_fetcher(timeout: float) -> JwksFetcher:
    async def fetch(url: str, conditions: Mapping[str, str]) -> JwksResponse:
        try:
            async with asyncio.timeout(timeout):
                return await _fetch(url, timeout, conditions)
        except TimeoutError as exc:
            raise JwksUnavailable(f"Fetching the platform's JWKS took longer than {timeout} s.") from exc

    return fetch


def _cache_headers(response: httpx.Response) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in CACHE_HEADERS:
        values = response.headers.get_list(name)
        if values:
            # Repeated Cache-Control lines are one list; of the others the first counts.
            found[name] = ", ".join(values) if name == "cache-control" else values[0]
    return found


async def _fetch(url: str, timeout: float, conditions: Mapping[str, str]) -> JwksResponse:
    headers = {"accept": "application/json"}
    headers.update({k: v for k, v in conditions.items() if k in CONDITIONS})
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            cache = _cache_headers(response)
            if response.status_code == 304 and len(headers) > 1:
                return JwksResponse(None, cache)
            if response.status_code != 200:
                raise JwksUnavailable(f"The platform's JWKS answered HTTP {response.status_code}.")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise JwksUnavailable("The platform's JWKS is too large.")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise JwksUnavailable() from exc
    try:
        document = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise JwksUnavailable("The platform's JWKS is not JSON.") from exc
    if not isinstance(document, dict):
        raise JwksUnavailable("The platform's JWKS is not a JSON object.")
    return JwksResponse(document, cache)
