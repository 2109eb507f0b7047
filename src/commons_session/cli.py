"""``commons-session``: serve, migrate, manage institutions, purge.

Flags override the matching ``COMMONS_SESSION_*`` variables, so the CLI and the server always
read the same settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pydantic import ValidationError

from . import backup, keys_cli
from . import login as login_cli
from .backup import BackupError
from .config import Settings, setting_errors, unknown_variables
from .devcanvas import cli as devcanvas_cli
from .domain.audit import EVENTS
from .domain.models import AccountSettings
from .domain.operations import (
    Operations,
    audit_row,
    check_consumer_key,
    check_platform_url,
    describe,
    require_nonempty,
)
from .domain.service import iso8601
from .errors import (
    InstitutionNotFound,
    InvalidInstitution,
    SessionServiceError,
    StoreUnavailable,
    UserNotFound,
)
from .http.app import build_service
from .logs import configure_logging, granian_log_config
from .lti.keys import ToolKeys
from .ports import port_free
from .stores.base import Stores
from .stores.factory import sqlite_path

__all__ = ["main"]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"true", "yes", "1", "on"}:
        return True
    if lowered in {"false", "no", "0", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _secret(value: str) -> str:
    """``-`` reads the secret from standard input, keeping it out of the process list."""
    return sys.stdin.readline().rstrip("\r\n") if value == "-" else value


async def _with_stores(settings: Settings, action: Callable[[Stores], Awaitable[int]]) -> int:
    stores = settings.make_stores()
    try:
        await stores.open()
        return await action(stores)
    finally:
        await stores.close()


async def _institutions(args: argparse.Namespace, settings: Settings, stores: Stores) -> int:
    records, now = stores.records, time.time()
    if args.action == "add":
        secret = _secret(args.secret)
        require_nonempty(consumer_key=args.consumer_key, secret=secret, name=args.name)
        check_consumer_key(args.consumer_key)
        institution = await records.add_institution(args.consumer_key, args.name, secret, now)
        print(f"added institution {institution.consumer_key!r} ({institution.name})")
    elif args.action == "list":
        registrations = await records.list_lti13_registrations()
        found = [
            {**describe(i), "lti13": [r.as_dict() for r in registrations if r.institution_id == i.id]}
            for i in await records.list_institutions()
        ]
        pending = [r.as_dict() for r in registrations if r.pending]
        if args.json:
            print(json.dumps(pending if args.pending else found, indent=2))
        for item in [] if args.json or args.pending else found:
            rotating = "  (rotating: two secrets verify)" if item["rotating"] else ""
            rotating += "  (disabled)" if item["disabled"] else ""
            print(f"{item['consumer_key']}\t{item['name']}{rotating}")
            for lti13 in item["lti13"]:
                print(
                    f"\tLTI 1.3: issuer {lti13['issuer']} client_id {lti13['client_id']}"
                    f" deployments {', '.join(lti13['deployment_ids'])}"
                )
        for lti13 in [] if args.json else pending:
            print(
                f"(pending)\tLTI 1.3: issuer {lti13['issuer']} client_id {lti13['client_id']}"
                f" deployments {', '.join(lti13['deployment_ids']) or '(any)'}"
                "  -- registered itself; bind it with institutions bind-lti13"
            )
    elif args.action in ("disable", "enable"):
        institution, ended = await Operations(build_service(settings, stores)).set_institution_disabled(
            args.consumer_key, args.action == "disable"
        )
        state = "disabled" if institution.disabled else "enabled"
        print(
            f"institution {institution.consumer_key!r} {state}"
            + (f"; ended {ended} session(s)" if ended else "")
        )
    elif args.action == "bind-lti13":
        registration = await Operations(build_service(settings, stores)).bind_platform(
            args.issuer, args.client_id, args.consumer_key, args.deployment_id
        )
        print(
            f"{args.consumer_key!r}: bound LTI 1.3 issuer {registration.issuer} client_id "
            f"{registration.client_id}, deployments {', '.join(registration.deployment_ids) or '(any)'}"
        )
    elif args.action == "add-lti13":
        require_nonempty(issuer=args.issuer, client_id=args.client_id)
        deployments = tuple(dict.fromkeys(d.strip() for d in args.deployment_id))
        if not all(deployments):
            raise InvalidInstitution("--deployment-id must not be empty.")
        for option, url in (("jwks-url", args.jwks_url), ("auth-url", args.auth_url)):
            check_platform_url(option, url)
        registration = await records.add_lti13_registration(
            args.consumer_key,
            issuer=args.issuer.strip(),
            client_id=args.client_id.strip(),
            deployment_ids=deployments,
            jwks_url=args.jwks_url,
            auth_url=args.auth_url,
            now=now,
        )
        print(
            f"{args.consumer_key!r}: LTI 1.3 issuer {registration.issuer} client_id "
            f"{registration.client_id}, deployments {', '.join(registration.deployment_ids)}"
        )
    elif args.action == "remove-lti13":
        registration = await records.remove_lti13_registration(args.issuer, args.client_id)
        print(f"removed LTI 1.3 issuer {registration.issuer} client_id {registration.client_id}")
    elif args.action == "remove":
        institution = await records.remove_institution(args.consumer_key)
        ended = await build_service(settings, stores).revoke_sessions(
            institution_id=institution.id, reason="institution_removed"
        )
        print(f"removed institution {institution.consumer_key!r}; ended {ended} session(s)")
    elif args.action == "rotate-secret":
        secret = _secret(args.secret)
        require_nonempty(secret=secret)
        await records.rotate_secret(args.consumer_key, secret)
        print(
            f"rotating {args.consumer_key!r}: the new and the previous secret both verify until "
            "'institutions finish-rotation'"
        )
    elif args.action == "finish-rotation":
        await records.finish_rotation(args.consumer_key)
        print(f"{args.consumer_key!r}: only the current secret verifies now")
    elif args.action == "settings":
        current = await records.get_institution(args.consumer_key)
        if current is None:
            raise InstitutionNotFound(f"No institution has consumer key {args.consumer_key!r}.")
        changes = {
            k: v for k, v in vars(args).items() if k in AccountSettings.__dataclass_fields__ and v is not None
        }
        if changes.get("state_standard") == "":
            changes["state_standard"] = None
        merged = AccountSettings.from_dict({**current.settings.as_dict(), **changes})
        updated = await records.update_settings(args.consumer_key, merged)
        print(json.dumps(updated.settings.as_dict(), indent=2))
    return 0


PURGE_BATCH = 500  # rows per short transaction
PURGE_PAUSE = 0.01  # seconds between batches, so requests get the write lock in between


async def _purge(settings: Settings, stores: Stores) -> int:
    now = time.time()
    sessions = claims = 0
    while (batch := await stores.sessions.purge_expired(now, settings.idle_timeout, PURGE_BATCH)) > 0:
        sessions += batch
        await asyncio.sleep(PURGE_PAUSE)
    while (batch := await stores.once.purge_expired(now, PURGE_BATCH)) > 0:
        claims += batch
        await asyncio.sleep(PURGE_PAUSE)
    print(f"purged {sessions} expired session(s) and {claims} expired single-use marker(s)")
    if settings.audit_retention:
        events = 0
        before = now - settings.audit_retention
        while (batch := await stores.records.purge_audit_events(before, PURGE_BATCH)) > 0:
            events += batch
            await asyncio.sleep(PURGE_PAUSE)
        print(f"purged {events} audit event(s) older than {iso8601(before)}")
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def _since(value: str) -> float:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-01T08:00Z, got {value!r}"
        ) from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


async def _audit(args: argparse.Namespace, stores: Stores) -> int:
    """The audit stream, newest first. Sessions appear only as a prefix of their id's SHA-256."""
    keys = {i.id: i.consumer_key for i in await stores.records.list_institutions()}
    institution_id = None
    if args.institution is not None:
        found = await stores.records.get_institution(args.institution)
        if found is None:
            raise InstitutionNotFound(f"No institution has consumer key {args.institution!r}.")
        institution_id = found.id
    events = await stores.records.list_audit_events(
        user_id=args.user, institution_id=institution_id, event=args.event, since=args.since, limit=args.limit
    )
    for event in events:
        row = audit_row(event, keys)
        if args.json:
            print(json.dumps(row))
        else:
            print(
                "\t".join(
                    "-" if v in (None, {}) else json.dumps(v) if isinstance(v, dict) else str(v)
                    for v in row.values()
                )
            )
    return 0


async def _sessions(args: argparse.Namespace, settings: Settings, stores: Stores) -> int:
    """Operators name sessions by user or institution, never by id: ids are not stored."""
    service = build_service(settings, stores)
    institution = None
    if args.institution:
        institution = await stores.records.get_institution(args.institution)
        if institution is None:
            raise InstitutionNotFound(f"No institution has consumer key {args.institution!r}.")
    elif await stores.records.get_user(args.user) is None:
        raise UserNotFound(f"No user has id {args.user!r}.")
    if args.action == "list":
        now = time.time()
        records = await (
            stores.sessions.list_for_institution(institution.id)
            if institution
            else stores.sessions.list_for_user(args.user)
        )
        for record in records:
            if now < service.expires_at(record):
                print(json.dumps(Operations(service).session_row(record)))
        return 0
    ended = await service.revoke_sessions(
        user_id=None if institution else args.user, institution_id=institution.id if institution else None
    )
    print(f"ended {ended} session(s)")
    return 0


async def _users(args: argparse.Namespace, settings: Settings, stores: Stores) -> int:
    service = build_service(settings, stores)
    user, ended = await service.set_user_disabled(args.user, args.action == "disable")
    state = "disabled" if user.disabled else "enabled"
    print(f"user {user.id} {state}" + (f"; ended {ended} session(s)" if ended else ""))
    return 0


def _backup_or_restore(args: argparse.Namespace, settings: Settings) -> int:
    if urlsplit(settings.database_url).scheme != "sqlite":
        raise BackupError(
            "backup and restore are for the embedded SQLite database; for PostgreSQL use pg_dump and"
            " pg_restore (docs/operations.md#backup-and-restore)."
        )
    database = sqlite_path(settings.database_url)
    if args.command == "backup":
        size = backup.backup(database, args.file)
        note = " (sessions and single-use markers are in Redis, not in it)" if settings.redis_url else ""
        print(f"backed up {database} to {args.file} ({size:,} bytes){note}")
        return 0
    version = backup.restore(args.file, database)
    print(f"restored {database} from {args.file} (schema version {version})")
    return 0


def _without_password(url: str) -> str:
    password = urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    if not port_free(args.host, args.port):
        print(
            f"commons-session: {args.host}:{args.port} is already in use (another server?);"
            " choose another with --port (make run PORT=...)",
            file=sys.stderr,
        )
        return 1
    configure_logging(settings.log_level, settings.log_format)  # this process's lines, as the workers'
    log = logging.getLogger("commons_session")
    # Open (and migrate) once here, so a bad URL or a too-new schema fails before binding. A store
    # that is only down right now does not stop the start: the workers answer 503 until it returns
    # (their lifespan tolerates it too), so the service recovers without a restart.
    try:
        asyncio.run(_with_stores(settings, lambda stores: _noop()))
    except StoreUnavailable:
        log.warning("store unavailable at start; answering 503 until it returns")
    log.info("serving on http://%s:%d (%s)", args.host, args.port, _without_password(settings.database_url))
    per_worker = _connection_budget(settings.max_connections, args.workers)
    sqlite = urlsplit(settings.database_url).scheme == "sqlite"
    held = backup.serving_lock(sqlite_path(settings.database_url)) if sqlite else contextlib.nullcontext()
    with held, _metrics_directory():  # the lock tells `restore` a server holds the database
        Server(
            "commons_session.http.app:create_app",
            address=args.host,
            port=args.port,
            interface=Interfaces.ASGI,
            workers=args.workers,
            factory=True,
            log_access=False,  # we log access ourselves, with ids redacted
            log_level=settings.log_level.lower(),  # type: ignore[arg-type]
            log_dictconfig=granian_log_config(settings.log_format),
            websockets=False,
            workers_kill_timeout=settings.shutdown_timeout,  # a stuck request cannot hold shutdown
            # A worker that dies (killed, out of memory) is replaced; the others keep serving.
            # Granian still exits if the same worker dies again within ~5 s (a crash loop).
            respawn_failed_workers=True,
            # Granian's backpressure is the number of connections a worker holds open at once
            # (a permit per accepted connection): the total connection budget, per worker.
            backpressure=per_worker,
            http1_settings=HTTP1Settings(header_read_timeout=round(settings.header_read_timeout * 1000)),
        ).serve()
    return 0


#: Descriptors a worker needs besides its connections: stores, logs, metrics files, the loop.
_RESERVED_FILES = 256


def _connection_budget(max_connections: int, workers: int) -> int:
    """Connections per worker: ``max_connections`` split between the workers, and no more than
    the open-files limit allows. The soft limit is raised to the hard one first (workers inherit
    it): past it, accept() would fail instead of the connection waiting its turn."""
    import resource

    per_worker = max(1, max_connections // workers)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and per_worker > soft - _RESERVED_FILES:
        fitted = max(16, soft - _RESERVED_FILES)
        print(
            f"commons-session: open-files limit {soft} holds {fitted} connections per worker, not "
            f"{per_worker}; raise it (ulimit -n) to hold COMMONS_SESSION_MAX_CONNECTIONS",
            file=sys.stderr,
        )
        per_worker = fitted
    return per_worker


@contextlib.contextmanager
def _metrics_directory() -> Iterator[None]:
    """Workers write their metrics to files in one directory, so ``/metrics`` from any of them
    reports the totals of all (prometheus_client's multiprocess mode). A fresh directory per
    run, removed afterwards, unless the operator chose one with PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="commons-session-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # the workers inherit it
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


async def _noop() -> int:
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commons-session", description=__doc__)
    parser.add_argument("--database-url", help="overrides COMMONS_SESSION_DATABASE_URL")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")

    commands.add_parser("migrate", help="create or upgrade the database schema")
    commands.add_parser("purge", help="delete expired sessions and single-use markers")
    taken = commands.add_parser("backup", help="copy the SQLite database, consistently, while it is served")
    taken.add_argument("file", help="the new file to write (must not exist)")
    put_back = commands.add_parser(
        "restore", help="put a backup back (refused while a server holds the database)"
    )
    put_back.add_argument("file", help="a file made by backup")
    login_cli.add_parsers(commands)  # login, whoami, logout: a session for the person at the terminal
    devcanvas_cli.add_parser(commands)  # dev-canvas: a local Canvas stand-in, for development and tests
    keys_cli.add_parser(commands)  # keys: the tool's own signing keys (LTI Deep Linking)

    sessions = commands.add_parser("sessions", help="list or end sessions of a user or an institution")
    session_actions = sessions.add_subparsers(dest="action", required=True)
    for name, text in (("list", "list live sessions (by handle)"), ("revoke", "end sessions")):
        action = session_actions.add_parser(name, help=text)
        whose = action.add_mutually_exclusive_group(required=True)
        whose.add_argument("--user", help="a user id (userId in session contents)")
        whose.add_argument("--institution", help="an institution's consumer key")

    audit = commands.add_parser("audit", help="show session and launch events, newest first")
    audit.add_argument("--user", help="only this user id")
    audit.add_argument("--institution", help="only this institution's consumer key")
    audit.add_argument("--event", choices=sorted(EVENTS), help="only this kind of event")
    audit.add_argument(
        "--since", type=_since, help="only events at or after this ISO 8601 time (UTC if no zone)"
    )
    audit.add_argument("--limit", type=_positive, default=100, help="at most this many events (default 100)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")

    users = commands.add_parser("users", help="disable or enable a user")
    user_actions = users.add_subparsers(dest="action", required=True)
    for name, text in (("disable", "refuse launches and sessions; end every session"), ("enable", "undo")):
        user_actions.add_parser(name, help=text).add_argument("--user", required=True, help="a user id")

    institutions = commands.add_parser("institutions", help="manage registered Canvases")
    actions = institutions.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="register a Canvas by consumer key and shared secret")
    add.add_argument("--consumer-key", required=True)
    add.add_argument("--secret", required=True, help="the shared secret, or - to read stdin")
    add.add_argument("--name", required=True)
    listing = actions.add_parser("list", help="list registered Canvases (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.add_argument(
        "--pending",
        action="store_true",
        help="only LTI 1.3 platforms that registered themselves, not yet bound",
    )
    remove = actions.add_parser("remove", help="remove a Canvas, its users and their sessions")
    remove.add_argument("--consumer-key", required=True)
    rotate = actions.add_parser("rotate-secret", help="start using a new secret; the old one still verifies")
    rotate.add_argument("--consumer-key", required=True)
    rotate.add_argument("--secret", required=True, help="the new secret, or - to read stdin")
    finish = actions.add_parser("finish-rotation", help="stop accepting the previous secret")
    finish.add_argument("--consumer-key", required=True)
    disable = actions.add_parser("disable", help="refuse a Canvas' launches and sessions; end its sessions")
    disable.add_argument("--consumer-key", required=True)
    enable = actions.add_parser("enable", help="undo disable")
    enable.add_argument("--consumer-key", required=True)
    lti13 = actions.add_parser(
        "add-lti13",
        help="attach an LTI 1.3 platform registration to a Canvas (again: add deployments, new URLs)",
    )
    lti13.add_argument("--consumer-key", required=True, help="the institution's LTI 1.1 consumer key")
    lti13.add_argument("--issuer", required=True, help="e.g. https://canvas.instructure.com")
    lti13.add_argument("--client-id", required=True, help="the developer key's client id")
    lti13.add_argument(
        "--deployment-id", required=True, action="append", help="repeat for several deployments"
    )
    lti13.add_argument(
        "--jwks-url", required=True, help="e.g. https://sso.canvaslms.com/api/lti/security/jwks"
    )
    lti13.add_argument(
        "--auth-url", required=True, help="e.g. https://sso.canvaslms.com/api/lti/authorize_redirect"
    )
    unlink = actions.add_parser("remove-lti13", help="remove an LTI 1.3 registration")
    unlink.add_argument("--issuer", required=True)
    unlink.add_argument("--client-id", required=True)
    bind = actions.add_parser(
        "bind-lti13",
        help="bind an LTI 1.3 platform that registered itself (Dynamic Registration) to a Canvas",
    )
    bind.add_argument("--issuer", required=True)
    bind.add_argument("--client-id", required=True)
    bind.add_argument("--consumer-key", required=True, help="the institution's LTI 1.1 consumer key")
    bind.add_argument("--deployment-id", help="record this deployment too (else any deployment is accepted)")
    flags = actions.add_parser("settings", help="show or change the account settings flags")
    flags.add_argument("--consumer-key", required=True)
    for name in AccountSettings.__dataclass_fields__:
        option = "--" + name.replace("_", "-")
        if name == "state_standard":
            flags.add_argument(option, dest=name, help="a state standard name, or '' for none")
        else:
            flags.add_argument(option, dest=name, type=_bool, metavar="true|false")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in login_cli.COMMANDS:  # clients of a server: no database settings
        return login_cli.run(args)
    if args.command == "dev-canvas":
        return devcanvas_cli.run(args)
    if args.database_url:
        os.environ["COMMONS_SESSION_DATABASE_URL"] = args.database_url  # workers read it too
    for warning in unknown_variables():
        print(f"commons-session: warning: {warning}", file=sys.stderr)
    try:
        settings = Settings()
        if args.command == "serve":
            return _serve(args, settings)
        if args.command == "migrate":
            return asyncio.run(_with_stores(settings, lambda stores: _migrated(settings, stores)))
        if args.command in ("backup", "restore"):
            return _backup_or_restore(args, settings)
        if args.command == "purge":
            return asyncio.run(_with_stores(settings, lambda stores: _purge(settings, stores)))
        if args.command == "sessions":
            return asyncio.run(_with_stores(settings, lambda stores: _sessions(args, settings, stores)))
        if args.command == "users":
            return asyncio.run(_with_stores(settings, lambda stores: _users(args, settings, stores)))
        if args.command == "keys":
            return asyncio.run(_with_stores(settings, lambda stores: keys_cli.run(args, stores)))
        if args.command == "audit":
            return asyncio.run(_with_stores(settings, lambda stores: _audit(args, stores)))
        return asyncio.run(_with_stores(settings, lambda stores: _institutions(args, settings, stores)))
    except ValidationError as exc:
        for line in setting_errors(exc):
            print(f"commons-session: {line}", file=sys.stderr)
        return 2
    except (SessionServiceError, ValueError) as exc:
        print(f"commons-session: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1


async def _migrated(settings: Settings, stores: Stores) -> int:
    print(f"schema is current ({settings.database_url})")
    await ToolKeys(stores.records).ensure(time.time())  # the first signing key
    return 0
