"""Fetching an LTI 1.3 platform's JWKS over HTTP, for ``lti.v13.KeySets``.

Async (httpx), so a fetch never blocks the event loop; the whole fetch is bounded by
``store_timeout`` and the body by ``MAX_JWKS_BYTES``; redirects are not followed (the registered
URL is the one the operator vouched for). Every failure is ``JwksUnavailable`` (503): the
launch is not at fault, and the cached keys, if any, keep working (see ``KeySets``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import JwksUnavailable
from ..lti.v13 import JwksFetcher

__all__ = ["MAX_JWKS_BYTES", "make_jwks_fetcher"]

MAX_JWKS_BYTES = 262_144  # Canvas publishes a handful of keys: a few KB


def make_jwks_fetcher(timeout: float) -> JwksFetcher:
    async def fetch(url: str) -> Mapping[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                return await _fetch(url, timeout)
        except TimeoutError as exc:
            raise JwksUnavailable(f"Fetching the platform's JWKS took longer than {timeout} s.") from exc

    return fetch


async def _fetch(url: str, timeout: float) -> Mapping[str, Any]:
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url, headers={"accept": "application/json"}) as response,
        ):
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
    return document
