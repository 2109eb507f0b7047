"""Build the ASGI application. ``create_app`` is the factory the server imports in each worker."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..config import Settings
from ..domain.service import Policy, SessionService
from ..domain.terms import Terms
from ..errors import StoreUnavailable
from ..stores.base import Stores
from .middleware import AccessLogMiddleware, SecurityHeadersMiddleware
from .problems import exception_handlers
from .routes import routes

__all__ = ["build_service", "create_app"]


def build_service(settings: Settings, stores: Stores) -> SessionService:
    policy = Policy(
        idle_timeout=settings.idle_timeout,
        absolute_timeout=settings.absolute_timeout,
        touch_interval=settings.touch_interval,
        jwt_max_age=settings.jwt_max_age,
        jwt_future_skew=settings.jwt_future_skew,
        jwt_replay_retention=settings.jwt_replay_retention,
        jwt_max_bytes=settings.jwt_max_bytes,
        oauth_timestamp_window=settings.oauth_timestamp_window,
    )
    terms = Terms(settings.terms_version, settings.current_terms_text())
    return SessionService(stores, policy, terms)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("commons_session")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    stores = settings.make_stores()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await stores.open()
        except StoreUnavailable:
            # Serve 503s until the store returns rather than dying: clients keep their sessions.
            logging.getLogger("commons_session").warning("store unavailable at start; will retry")
        yield
        await stores.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(AccessLogMiddleware), Middleware(SecurityHeadersMiddleware)],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # "/terms/" is a 404 problem, not a redirect
    app.state.settings = settings
    app.state.service = build_service(settings, stores)
    return app
