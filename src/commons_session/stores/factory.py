"""Choose the stores the settings name. The only place that picks a driver; each driver is
imported only when its URL is configured."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .base import CombinedStores, Stores
from .counters import HitCounter, MemoryCounter

__all__ = ["make_counter", "make_stores", "sqlite_path"]


def sqlite_path(database_url: str) -> str:
    """``sqlite:///relative.db`` is relative to the working directory, ``sqlite:////abs.db``
    absolute, as in SQLAlchemy."""
    path = unquote(urlsplit(database_url).path)
    if not path or path == "/":
        raise ValueError("an sqlite URL needs a file path, e.g. sqlite:///commons-session.db")
    return path[1:] if path.startswith("/") else path


def _database(database_url: str, timeout: float) -> Stores:
    scheme = urlsplit(database_url).scheme
    if scheme == "sqlite":
        from .sqlite import SqliteStores

        return SqliteStores(sqlite_path(database_url))
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStores

        return PostgresStores(database_url, timeout=timeout)
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path.db or postgresql://...")


def make_stores(
    database_url: str,
    redis_url: str | None = None,
    *,
    idle_timeout: float,
    timeout: float,
    redis_allow_volatile: bool = False,
) -> Stores:
    """The stores for these URLs, not yet opened (call ``await stores.open()``)."""
    durable = _database(database_url, timeout)
    if not redis_url:
        return durable
    if urlsplit(redis_url).scheme not in ("redis", "rediss", "redis+cluster"):
        raise ValueError(f"unsupported Redis URL {redis_url!r}: use redis:// or redis+cluster://")
    from .redis import RedisStores

    return CombinedStores(
        durable,
        RedisStores(
            redis_url, idle_timeout=idle_timeout, timeout=timeout, allow_volatile=redis_allow_volatile
        ),
    )


def make_counter(redis_url: str | None, *, timeout: float) -> HitCounter:
    """Rate-limit counters: in Redis when one is configured (shared by every instance), else in
    this process's memory."""
    if not redis_url:
        return MemoryCounter()
    from .redis import RedisCounter

    return RedisCounter(redis_url, timeout)
