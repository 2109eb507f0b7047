"""Backup and restore of the embedded SQLite database (``commons-session backup`` / ``restore``).

A backup is SQLite's online backup API copying the whole file in one step: one read transaction,
so the copy is the database as of one instant (every transaction committed before it began, none
half) while the server keeps writing beside it in WAL mode. A restore checks the file first
(``PRAGMA integrity_check``, our schema, not newer than this release) and refuses while a server
holds the database: ``serve`` keeps a shared ``flock`` on ``<database>.lock`` for its lifetime,
and a restore needs it exclusively. PostgreSQL and Redis have their own tools
(docs/operations.md#backup-and-restore).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import SessionServiceError
from .stores.sqlite import MARKER_SUFFIX, connect, latest_version, schema_version

__all__ = ["BackupError", "backup", "restore", "serving_lock"]

LOCK_SUFFIX = ".lock"
#: Tables every release's schema has; a file without them is not one of our databases.
_OUR_TABLES = frozenset({"institutions", "users", "sessions", "once_claims"})


class BackupError(SessionServiceError):
    code = "backup_error"


@contextlib.contextmanager
def serving_lock(database: str) -> Iterator[None]:
    """Held (shared) by ``serve`` while it runs, so ``restore`` can tell."""
    with open(database + LOCK_SUFFIX, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check(path: str) -> None:
    """Refuse anything but an intact database of ours that this release can serve."""
    if not os.path.isfile(path):
        raise BackupError(f"{path} does not exist or is not a file.")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = schema_version(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not an SQLite database ({exc}).") from exc
    if result != ["ok"]:
        raise BackupError(f"{path} is damaged: {'; '.join(result[:3])}.")
    if not tables >= _OUR_TABLES:
        raise BackupError(f"{path} is an SQLite database, but not a commons-session one.")
    if version > latest_version():
        raise BackupError(
            f"{path} has schema version {version}, newer than this release ({latest_version()})."
        )


def _copy(
    source: sqlite3.Connection, target: sqlite3.Connection, total: int, out: IO[str], what: str
) -> None:
    """The whole copy in one step (one snapshot), with a progress line every half second
    from the size the target has reached."""
    done = threading.Event()
    target_file = target.execute("PRAGMA database_list").fetchone()[2]

    def report() -> None:
        while not done.wait(0.5):
            # In WAL mode the pages land in the -wal file first.
            size = sum(os.path.getsize(f) for f in (target_file, target_file + "-wal") if os.path.exists(f))
            print(
                f"{what}: {min(size, total) * 100 // max(total, 1)}% of {total:,} bytes", file=out, flush=True
            )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        source.backup(target, pages=-1)
    finally:
        done.set()
        reporter.join()
    print(f"{what}: 100% of {total:,} bytes", file=out, flush=True)


def _size(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def backup(database: str, destination: str, out: IO[str] = sys.stderr) -> int:
    """Copy the live database to ``destination`` (which must not exist). Returns its size."""
    if not os.path.isfile(database):
        raise BackupError(f"The database {database} does not exist.")
    if os.path.exists(destination):
        raise BackupError(f"{destination} already exists; name a new file.")
    if not os.path.isdir(os.path.dirname(os.path.abspath(destination))):
        raise BackupError(f"The directory of {destination} does not exist.")
    partial = destination + ".partial"
    source = connect(database)
    try:
        target = sqlite3.connect(partial)
        try:
            _copy(source, target, _size(source), out, "backup")
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal
        finally:
            target.close()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    finally:
        source.close()
    _check(partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, destination)  # a backup that exists is a whole one
    return os.path.getsize(destination)


def restore(source: str, database: str, out: IO[str] = sys.stderr) -> int:
    """Replace the database's contents with the backup's. Refused while a server holds it."""
    _check(source)
    Path(database + LOCK_SUFFIX).touch()
    with open(database + LOCK_SUFFIX, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"A server is serving {database}; stop it (SIGTERM waits for its requests) and restore again."
            ) from None
        try:
            backup_conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            try:
                target = connect(database)
                try:
                    _copy(backup_conn, target, _size(backup_conn), out, "restore")
                    version = schema_version(target)
                finally:
                    target.close()
            finally:
                backup_conn.close()
            marker = Path(database + MARKER_SUFFIX)
            if not marker.exists():  # a restore into a lost disk's place: the database exists again
                marker.write_text(f"restored from {source}\n")
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return version
