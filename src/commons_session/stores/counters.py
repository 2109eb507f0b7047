"""Counters for rate limits: fixed windows, one counter per key.

The contract knows nothing about HTTP or sessions: ``hit`` adds to a counter and says how many
hits its current window holds and when that window ends. ``MemoryCounter`` keeps them in the
process (one server process, or one worker each); ``stores.redis.RedisCounter`` shares them
between every process that uses the same Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Count", "HitCounter", "MemoryCounter"]


@dataclass(frozen=True, slots=True)
class Count:
    #: Hits in the current window, this one included.
    hits: int
    #: Whole seconds until the window ends (at least 1): a ``Retry-After`` value.
    retry_after: int


class HitCounter:
    async def hit(self, key: str, window: float, amount: int = 1) -> Count:
        """Add ``amount`` (negative to give hits back) to ``key``'s counter. A counter starts
        at the first hit and lives ``window`` seconds, then starts again from zero. A negative
        amount never creates a counter. Raises ``StoreUnavailable`` if the counter cannot be
        reached."""
        raise NotImplementedError("subclasses of HitCounter must provide hit()")

    async def close(self) -> None:
        """Release connections. Safe to call twice."""


def _seconds(left: float) -> int:
    return max(1, math.ceil(left))


class MemoryCounter(HitCounter):
    """Counters in a dict, bounded: past ``max_keys`` the oldest windows are dropped first
    (a dropped counter starts again from zero, which errs on the side of letting requests in)."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        # key -> [hits, window end]; insertion order is window start order, so the first
        # entries are the first to expire.
        self._counts: dict[str, list[float]] = {}

    async def hit(self, key: str, window: float, amount: int = 1) -> Count:
        now = self.clock()
        entry = self._counts.get(key)
        if entry is None or entry[1] <= now:
            self._counts.pop(key, None)
            if amount <= 0:
                return Count(0, _seconds(window))
            entry = self._counts[key] = [0, now + window]
            self._evict(now)
        entry[0] += amount
        return Count(int(entry[0]), _seconds(entry[1] - now))

    def _evict(self, now: float) -> None:
        counts = self._counts
        while counts:
            oldest = next(iter(counts))
            if counts[oldest][1] > now and len(counts) <= self.max_keys:
                return
            del counts[oldest]
