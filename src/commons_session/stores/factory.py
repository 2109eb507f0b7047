"""Choose and open the stores a database URL names. The only place that picks a driver."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .base import Stores

__all__ = ["open_stores", "sqlite_path"]


def sqlite_path(database_url: str) -> str:
    """``sqlite:///relative.db`` is relative to the working directory, ``sqlite:////abs.db``
    absolute, as in SQLAlchemy."""
    parts = urlsplit(database_url)
    if parts.scheme != "sqlite":
        raise ValueError(f"not an sqlite URL: {database_url!r}")
    path = unquote(parts.path)
    if not path or path == "/":
        raise ValueError("an sqlite URL needs a file path, e.g. sqlite:///commons-session.db")
    return path[1:] if path.startswith("/") else path


def open_stores(database_url: str) -> Stores:
    scheme = urlsplit(database_url).scheme
    if scheme == "sqlite":
        from .sqlite import SqliteStores

        return SqliteStores(sqlite_path(database_url))
    raise ValueError(f"unsupported database URL scheme {scheme!r} (supported: sqlite)")
