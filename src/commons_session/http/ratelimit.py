"""Rate limits: per client address on failures, per institution on verified requests.

- Per address: refused creates and launches (a 4xx answer on ``POST /api/sessions``,
  ``POST /api/sessions/exchange`` or any ``/api/lti*`` route) and failed session lookups (an id
  that turned out invalid) count against ``rate_limit_address_failures`` per window. Past it,
  the address gets 429 for every create, exchange and launch and for every lookup of an id
  that is not a live session, until the window ends; requests with a live session are still
  served. A create or launch holds one unit while it runs and gives it back if it succeeds, so
  a burst of bad tokens cannot slip past the limit before their answers are known.
- Per institution: creates and launches that passed every other check, their single-use claim
  included, count against ``rate_limit_institution_requests`` (``admit_institution``, called
  by the service, which gives the claim back if it refuses). Forged, expired and replayed
  credentials never count there, so nobody can lock a school out by naming its consumer key
  or replaying one of its tokens.

Counters live in Redis when it is configured (shared by every instance) and in process memory
otherwise. If the counters cannot be reached the limiter lets requests in and logs it: a rate
limit is never a reason to fail a request that would otherwise succeed.

The client address is the socket peer, unless the peer is a configured trusted proxy; then it
is the first address in ``X-Forwarded-For``, read from the right, that is not a trusted proxy.
IPv6 clients are counted per /64, the block one subscriber usually gets.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RateLimited
from ..metrics import metrics
from ..stores.counters import Count, HitCounter
from .middleware import CLIENT_ADDRESS
from .problems import problem

__all__ = ["CLIENT_ADDRESS", "FAILED_LOOKUP", "RateLimitMiddleware", "RateLimiter", "client_address"]

log = logging.getLogger("commons_session.ratelimit")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Scope key a route sets when the session id a request presented turned out invalid.
FAILED_LOOKUP = "commons_session.failed_lookup"

#: Never limited: probes, metrics and the API description carry no credentials.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
MAX_BLOCKED = 10_000  # addresses remembered as blocked in this process
WARN_EVERY = 10.0  # seconds between two "counter store unavailable" warnings


ATTEMPTS = frozenset({"/api/sessions", "/api/sessions/exchange"})  # on POST


def _is_attempt(scope: Scope) -> bool:
    """A create, an exchange or a launch: the requests that present a credential to get a
    session, rather than a session."""
    path: str = scope["path"]
    return (path in ATTEMPTS and scope["method"] == "POST") or path.startswith("/api/lti")


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    address = _parse(peer)
    if address is not None and any(address in net for net in trusted):
        hops = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for").decode("latin-1")
        for hop in reversed([h.strip() for h in hops.split(",") if h.strip()]):
            parsed = _parse(hop)
            if parsed is None:
                break  # garbage: believe nothing further to the left
            address = parsed
            if not any(parsed in net for net in trusted):
                break
    if address is None:
        return peer
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# Cached: every request parses its peer's address, and ipaddress takes microseconds to do it.
@functools.lru_cache(maxsize=4_096)
def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class RateLimiter:
    def __init__(
        self,
        counter: HitCounter,
        *,
        window: float,
        address_failures: int,
        institution_requests: int,
    ) -> None:
        self.counter = counter
        self.window = window
        self.address_failures = address_failures
        self.institution_requests = institution_requests
        # address -> monotonic time its block ends: what this process already knows, so a
        # blocked address's attempts cost no counter round trip.
        self._blocked: dict[str, float] = {}
        self._last_warning = -math.inf

    async def _hit(self, key: str, amount: int = 1) -> Count | None:
        try:
            return await self.counter.hit(key, self.window, amount)
        except Exception:
            metrics().limiter_failures.inc()
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY:
                self._last_warning = now
                log.warning("rate-limit counters unavailable; letting requests in", exc_info=True)
            return None

    def blocked(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, if this process knows it is blocked."""
        until = self._blocked.get(address)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[address]
            return None
        return max(1, math.ceil(left))

    def _block(self, address: str, count: Count) -> None:
        self._blocked.pop(address, None)
        self._blocked[address] = time.monotonic() + count.retry_after
        while len(self._blocked) > MAX_BLOCKED:
            del self._blocked[next(iter(self._blocked))]

    async def charge(self, address: str) -> int | None:
        """Hold one unit for an attempt. Returns seconds to wait if the address is over its limit."""
        count = await self._hit("fail:" + address)
        if count is not None and count.hits > self.address_failures:
            self._block(address, count)
            return count.retry_after
        return None

    async def refund(self, address: str) -> None:
        """The attempt succeeded (or failed on our side): give its unit back."""
        await self._hit("fail:" + address, -1)

    async def failed(self, address: str) -> int | None:
        """A failed session lookup: count it, and block the address once it reaches the limit.
        Returns seconds to wait if this lookup is past the limit (it is to be refused)."""
        already = self.blocked(address)
        count = await self._hit("fail:" + address)
        if count is not None and count.hits >= self.address_failures:
            self._block(address, count)
            if count.hits > self.address_failures:
                return count.retry_after
        return already

    async def admit_institution(self, consumer_key: str) -> None:
        if not self.institution_requests:
            return
        count = await self._hit("inst:" + consumer_key)
        if count is not None and count.hits > self.institution_requests:
            metrics().rate_limited.labels("institution").inc()
            raise RateLimited(
                count.retry_after,
                "Too many sessions and launches for this institution; retry after Retry-After seconds.",
            )


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: RateLimiter, trusted_proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.limiter = limiter
        self.trusted = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        address = scope[CLIENT_ADDRESS] = client_address(scope, self.trusted)
        limiter = self.limiter
        if not limiter.address_failures:
            await self.app(scope, receive, send)
            return
        attempt = _is_attempt(scope)
        retry_after = limiter.blocked(address)
        if retry_after is None and attempt:
            retry_after = await limiter.charge(address)
        if retry_after is not None and attempt:
            await _refuse(retry_after, scope, receive, send)
            return

        # Anything else, from a blocked address too, runs: a valid session is served (a school
        # behind one NAT address keeps reading its sessions while one of its clients is
        # blocked). A lookup that failed is counted before its answer starts, and answered
        # 429 instead once the address is past its limit: the same work, in the same order,
        # as for any address, so a blocked address learns nothing from timing or status that
        # an unblocked one does not (200 for a valid id is what serving it means).
        status = 500
        counted = False
        refused = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, counted, refused
            if refused:
                return  # the app's answer to a refused lookup: replaced by the 429
            if message["type"] == "http.response.start":
                status = message["status"]
                if not attempt and scope.get(FAILED_LOOKUP):
                    counted = True
                    wait = await limiter.failed(address)
                    if wait is not None:
                        refused = True
                        await _refuse(wait, scope, receive, send)
                        return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if attempt:
                if not (400 <= status < 500 and status != 429):
                    await limiter.refund(address)
            elif scope.get(FAILED_LOOKUP) and not counted:
                await limiter.failed(address)


async def _refuse(retry_after: int, scope: Scope, receive: Receive, send: Send) -> None:
    metrics().rate_limited.labels("address").inc()
    response = problem(
        429,
        "rate_limited",
        "Too many failed attempts from your address; retry after Retry-After seconds.",
        headers={"Retry-After": str(retry_after)},
    )
    await response(scope, receive, send)
