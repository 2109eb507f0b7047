"""Prometheus metrics, served at ``/metrics`` (docs/operations.md lists them).

Routes are labelled by their template (``/api/sessions/{session_id}``), never by the raw path,
which would put session ids in the metrics and make every request a new series.

Under ``commons-session serve`` the workers share ``PROMETHEUS_MULTIPROC_DIR`` (a temporary
directory the command creates), so ``/metrics`` from any worker reports the totals of all.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import inspect
import os
import time
from typing import Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from .domain.audit import AuditEvent
from .errors import SessionServiceError, StoreUnavailable
from .stores.base import OnceStore, RecordStore, SessionStore, Stores

__all__ = [
    "FLUSH_SECONDS",
    "Metrics",
    "PendingCounter",
    "PendingHistogram",
    "exposition",
    "flush",
    "instrument",
    "metrics",
]

_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(f"commons_session_{name}", text, labels, registry=registry)

        self.requests = counter("http_requests", "HTTP requests answered.", "method", "route", "status")
        self.request_seconds = Histogram(
            "commons_session_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.sessions_created = counter("sessions_created", "Sessions created.", "via")
        self.sessions_ended = counter("sessions_ended", "Sessions ended or revoked.", "reason")
        self.launches = counter("launches", "LTI launches accepted.")
        self.verification_failures = counter(
            "verification_failures", "Refused session creations and launches.", "code"
        )
        self.rate_limited = counter("rate_limited", "Requests refused with 429.", "limit")
        self.store_errors = counter("store_errors", "Store calls that failed.", "role", "operation")
        self.store_seconds = Histogram(
            "commons_session_store_duration_seconds",
            "Time of one store call.",
            ("role", "operation"),
            buckets=_STORE_BUCKETS,
            registry=registry,
        )
        self.audit_failures = counter("audit_write_failures", "Audit events that could not be written.")
        self.slow_bodies = counter(
            "slow_request_bodies", "Requests answered 408: their body did not arrive in time."
        )
        self.limiter_failures = counter(
            "rate_limit_store_errors",
            "Rate-limit counter calls that failed (the limiter let the request in).",
        )

    def count_event(self, event: AuditEvent) -> None:
        if event.event == "session_created":
            self.sessions_created.labels(event.reason or "").inc()
        elif event.event in ("session_ended", "session_revoked"):
            self.sessions_ended.labels(event.reason or "").inc(int(event.detail.get("sessions", 1)))
        elif event.event == "launch":
            self.launches.inc()
        elif event.event == "verification_failed":
            self.verification_failures.labels(event.reason or "").inc()


# -- observations kept in this process, added to prometheus_client's values in batches ------
#
# Under ``serve`` every value is a multiprocess one: each ``inc`` is a locked write into a
# mapped file (~2 us), each histogram observation two of them (~6 us), and a request made one
# per store call plus two of its own (~8% of a read's CPU). The hot series instead count in
# plain Python and are added at most FLUSH_SECONDS later, before every /metrics answer of this
# process, and at shutdown; another worker's /metrics may be up to FLUSH_SECONDS behind, and a
# worker killed with SIGKILL loses at most that much of its counts (docs/operations.md#metrics).

FLUSH_SECONDS = 1.0

_dirty: list[PendingCounter | PendingHistogram] = []


_timer: asyncio.TimerHandle | None = None


def _mark(pending: PendingCounter | PendingHistogram) -> None:
    global _timer
    _dirty.append(pending)
    if _timer is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a command, a test): nothing to batch with
            flush()
            return
        _timer = loop.call_later(FLUSH_SECONDS, flush)


def flush() -> None:
    """Add every pending count to prometheus_client's values."""
    global _timer
    if _timer is not None:
        _timer.cancel()
        _timer = None
    dirty = _dirty[:]
    _dirty.clear()
    for pending in dirty:
        pending.flush()


class PendingCounter:
    """A labelled counter's ``inc``, added to it by ``flush``."""

    __slots__ = ("_child", "_dirty", "_n")

    def __init__(self, child: Counter) -> None:
        self._child, self._n, self._dirty = child, 0.0, False

    def inc(self, amount: float = 1) -> None:
        self._n += amount
        if not self._dirty:
            self._dirty = True
            _mark(self)

    def flush(self) -> None:
        n, self._n, self._dirty = self._n, 0.0, False
        if n:
            self._child.inc(n)


class PendingHistogram:
    """A labelled histogram's ``observe``, its bucket counts and sum added by ``flush`` (the
    same buckets ``Histogram.observe`` picks: the first upper bound not below the value)."""

    __slots__ = ("_bounds", "_child", "_counts", "_dirty", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts, self._sum, self._dirty = [0] * len(self._bounds), 0.0, False

    def observe(self, amount: float) -> None:
        self._sum += amount
        if amount == amount:  # NaN lands in no bucket, as in Histogram.observe
            self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        if not self._dirty:
            self._dirty = True
            _mark(self)

    def flush(self) -> None:
        counts, total = self._counts, self._sum
        self._counts, self._sum, self._dirty = [0] * len(self._bounds), 0.0, False
        child = self._child
        child._sum.inc(total)
        for bucket, n in zip(child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)


@functools.cache
def metrics() -> Metrics:
    """This process's metrics, created on first use."""
    # prometheus_client decides between in-memory and multiprocess values when it is imported,
    # which may have happened in the serve command before it set PROMETHEUS_MULTIPROC_DIR and
    # forked the workers: decide again here, before the first metric exists.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return Metrics(REGISTRY)


def exposition() -> tuple[bytes, str]:
    """The text exposition and its content type: every worker's totals in multiprocess mode."""
    metrics()
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class _Timed:
    """One store role with every coroutine method timed, and its failures to answer counted
    (a contract error such as ``CreateError`` is an answer, not a failure)."""

    def __init__(self, inner: object, role: str) -> None:
        self._inner = inner
        self._role = role

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(method):
            return method
        seconds = PendingHistogram(metrics().store_seconds.labels(self._role, name))
        errors = metrics().store_errors.labels(self._role, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            except StoreUnavailable:
                errors.inc()
                raise
            except SessionServiceError:
                raise
            except Exception:
                errors.inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - start)

        setattr(self, name, timed)  # found directly next time, without __getattr__
        return timed


class _InstrumentedStores(Stores):
    def __init__(self, inner: Stores) -> None:
        super().__init__(
            cast(RecordStore, _Timed(inner.records, "records")),
            cast(SessionStore, _Timed(inner.sessions, "sessions")),
            cast(OnceStore, _Timed(inner.once, "once")),
        )
        self.inner = inner
        self.claims_in_transaction = inner.claims_in_transaction

    async def open(self) -> None:
        await self.inner.open()

    async def ping(self) -> None:
        await self.inner.ping()

    def warnings(self) -> list[str]:
        return self.inner.warnings()

    async def close(self) -> None:
        await self.inner.close()


def instrument(stores: Stores) -> Stores:
    """The same stores, with each call's latency and failures in the metrics."""
    return _InstrumentedStores(stores)
