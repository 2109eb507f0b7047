"""Build the ASGI application. ``create_app`` is the factory the server imports in each worker."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..config import Settings
from ..domain.audit import AuditEvent, EventSink
from ..domain.service import InstitutionGuard, Policy, SessionService
from ..domain.terms import Terms
from ..errors import StoreError, StoreUnavailable
from ..logs import configure_logging, flush_access_lines, request_id
from ..metrics import flush as flush_metrics
from ..metrics import instrument, metrics
from ..stores.base import RecordStore, Stores
from ..stores.factory import make_counter
from .bodies import BodyDeadlineMiddleware
from .hosts import TrustedHostMiddleware
from .jwks import make_jwks_fetcher
from .middleware import RequestMiddleware
from .problems import exception_handlers
from .ratelimit import RateLimiter, RateLimitMiddleware
from .router import IndexedRouter
from .routes import routes

__all__ = ["audit_sink", "build_service", "create_app"]


def audit_sink(records: RecordStore) -> EventSink:
    """Count each event in the metrics, then append it to the audit table (the service stamps
    it with the id of the request that caused it). A failed write raises; the service logs it
    and carries on."""

    async def write(event: AuditEvent) -> None:
        metrics().count_event(event)
        try:
            await records.add_audit_event(event)
        except Exception:
            metrics().audit_failures.inc()
            raise

    return write


def build_service(
    settings: Settings, stores: Stores, guard: InstitutionGuard | None = None
) -> SessionService:
    policy = Policy(
        idle_timeout=settings.idle_timeout,
        absolute_timeout=settings.absolute_timeout,
        touch_interval=settings.touch_interval,
        jwt_max_age=settings.jwt_max_age,
        jwt_future_skew=settings.jwt_future_skew,
        jwt_replay_retention=settings.jwt_replay_retention,
        jwt_max_bytes=settings.jwt_max_bytes,
        oauth_timestamp_window=settings.oauth_timestamp_window,
        lti_state_ttl=settings.lti_state_ttl,
        jwks_cache_ttl=settings.jwks_cache_ttl,
        jwks_min_ttl=settings.jwks_min_ttl,
        jwks_max_ttl=settings.jwks_max_ttl,
        exchange_code_ttl=settings.exchange_code_ttl,
        claim_pending=3 * settings.store_timeout,
        store_timeout=settings.store_timeout,
    )
    terms = Terms(settings.terms_version, settings.current_terms_text())
    return SessionService(
        stores,
        policy,
        terms,
        events=audit_sink(stores.records),
        guard=guard,
        jwks_fetcher=make_jwks_fetcher(settings.store_timeout),
        request_id=request_id.get,
    )


async def _ensure_tool_key(service: SessionService) -> None:
    """The tool's first signing key, made at start if the database has none (two workers may
    each make one: both are published, the newest signs). Failing that, the first use makes it."""
    try:
        await service.tool_keys.ensure(time.time())
    except StoreError:
        logging.getLogger("commons_session").warning("could not make the tool's signing key at start")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    stores = instrument(settings.make_stores())
    counter = make_counter(settings.redis_url, timeout=settings.store_timeout)
    limiter = RateLimiter(
        counter,
        window=settings.rate_limit_window,
        address_failures=settings.rate_limit_address_failures,
        institution_requests=settings.rate_limit_institution_requests,
    )
    trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await stores.open()
        except StoreUnavailable:
            # Serve 503s until the store returns rather than dying: clients keep their sessions.
            logging.getLogger("commons_session").warning("store unavailable at start; will retry")
        else:
            await _ensure_tool_key(app.state.service)
        # What start-up made (modules, the app, the settings) lives as long as the worker. Frozen,
        # it is no longer walked by every full collection, each of which stalled the worker for
        # ~25 ms (Redis reads at 16 connections: p99 27 -> 3 ms; docs/performance.md).
        gc.collect()
        gc.freeze()
        yield
        # Granian runs this once the worker has stopped accepting and its in-flight requests
        # have been answered (docs/operations.md#graceful-shutdown).
        try:
            await counter.close()
        finally:
            await stores.close()
        flush_access_lines()
        flush_metrics()
        logging.getLogger("commons_session").info("shut down: stores closed")

    app = Starlette(
        middleware=[
            Middleware(RequestMiddleware),
            Middleware(TrustedHostMiddleware, allowed=settings.allowed_hosts, public_url=settings.public_url),
            Middleware(BodyDeadlineMiddleware, timeout=settings.body_read_timeout),
            Middleware(RateLimitMiddleware, limiter=limiter, trusted_proxies=trusted),
        ],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    # "/terms/" is a 404 problem, not a redirect.
    app.router = IndexedRouter(routes, lifespan=lifespan, redirect_slashes=False)
    app.state.settings = settings
    app.state.service = build_service(settings, stores, guard=limiter)
    return app
