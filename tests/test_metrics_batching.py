"""The hot metric series count in plain Python and reach prometheus_client's values in batches
(commons_session.metrics): what a batch adds must be exactly what observing each value would
have added, every pending count must arrive by the timer, before /metrics answers, and at
shutdown, and nothing is lost between batches."""

from __future__ import annotations

import asyncio
import math
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from commons_session import metrics as metrics_module
from commons_session.config import Settings
from commons_session.http.app import create_app
from commons_session.metrics import PendingCounter, PendingHistogram, flush, metrics

_BUCKETS = (0.0001, 0.001, 0.01, 0.1, 1.0, 2.5)


def _exposition(registry: CollectorRegistry) -> list[str]:
    # The _created samples are the wall-clock time each series was made: not what is compared.
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def _pair() -> tuple[CollectorRegistry, Histogram, Counter, CollectorRegistry, Histogram, Counter]:
    made = []
    for _ in range(2):
        registry = CollectorRegistry()
        made += [
            registry,
            Histogram("t_seconds", "t", ("op",), buckets=_BUCKETS, registry=registry),
            Counter("t_events", "t", ("op",), registry=registry),
        ]
    return tuple(made)  # type: ignore[return-value]


values = st.lists(
    st.one_of(
        st.sampled_from([0.0, *_BUCKETS, math.inf, -1.0, math.nan]),  # every bound exactly
        st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    max_size=50,
)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(min_value=1, max_value=5))
def test_a_batch_adds_exactly_what_observing_each_value_adds(observed: list[float], batches: int) -> None:
    direct, seconds, events, batched, b_seconds, b_events = _pair()
    pending_seconds = PendingHistogram(b_seconds.labels("get"))
    pending_events = PendingCounter(b_events.labels("get"))
    seconds.labels("get"), events.labels("get")  # the same series exist on both sides
    for i, value in enumerate(observed):
        seconds.labels("get").observe(value)
        events.labels("get").inc()
        pending_seconds.observe(value)
        pending_events.inc()
        if i % batches == 0:
            pending_seconds.flush()
            pending_events.flush()
    pending_seconds.flush()
    pending_events.flush()
    assert _exposition(batched) == _exposition(direct)


def _count(child: Any) -> float:
    return float(sum(bucket.get() for bucket in child._buckets))


def test_pending_counts_arrive_by_the_timer_and_before_metrics_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = CollectorRegistry()
    child = Histogram("u_seconds", "u", ("op",), registry=registry).labels("get")
    pending = PendingHistogram(child)
    monkeypatch.setattr(metrics_module, "FLUSH_SECONDS", 0.2)

    async def run() -> None:
        for _ in range(3):
            pending.observe(0.001)
        assert _count(child) == 0  # batched: not yet in the value
        await asyncio.sleep(0.4)  # no further observation: the timer alone brings them
        assert _count(child) == 3
        pending.observe(0.002)
        flush()  # what exposition() does before it renders
        assert _count(child) == 4
        await asyncio.sleep(0.4)  # the cancelled timer adds nothing twice
        assert _count(child) == 4

    asyncio.run(run())


def test_without_an_event_loop_an_observation_is_added_at_once() -> None:
    registry = CollectorRegistry()
    child = Counter("v_events", "v", ("op",), registry=registry).labels("x")
    PendingCounter(child).inc(2)
    assert child._value.get() == 2


def test_the_counts_of_a_worker_shutting_down_are_added_before_it_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long batch interval, so only the shutdown can have added the requests."""
    monkeypatch.setattr(metrics_module, "FLUSH_SECONDS", 3600)
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}", log_level="warning"))
    requests = metrics().requests.labels("GET", "/healthz", "200")

    async def run() -> tuple[float, float]:
        startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sent: list[MutableMapping[str, Any]] = []

        async def lifespan_send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await startup.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, lifespan_send)
        )
        while not any(m["type"] == "lifespan.startup.complete" for m in sent):
            await asyncio.sleep(0.01)
        before = requests._value.get()
        answered: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            answered.append(message)

        for _ in range(5):
            answered.clear()

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/healthz",
                "raw_path": b"/healthz",
                "query_string": b"",
                "headers": [(b"host", b"127.0.0.1")],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 8000),
                "state": {},
            }
            await app(scope, receive, send)
            assert answered[0]["status"] == 200
        pending = requests._value.get()
        await startup.put({"type": "lifespan.shutdown"})
        await lifespan
        return pending - before, requests._value.get() - before

    pending, after = asyncio.run(run())
    assert (pending, after) == (0, 5)
