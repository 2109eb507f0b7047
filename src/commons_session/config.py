"""Settings, read from ``COMMONS_SESSION_*`` environment variables (the CLI's flags set the same).

Every duration is in seconds. docs/configuration.md lists each setting with its default.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .stores.base import Stores
from .stores.factory import make_stores, sqlite_path

__all__ = ["DEFAULT_TERMS_TEXT", "Settings", "setting_errors", "unknown_variables"]

PREFIX = "COMMONS_SESSION_"
#: ``COMMONS_SESSION_*`` names that are not settings of the service but are read elsewhere.
OTHER_VARIABLES = frozenset(
    PREFIX + name
    for name in (
        "LOGIN_FILE",
        "DEVCANVAS_STATE",
        "TEST_NO_SKIP",
        "TEST_POSTGRES_URL",
        "CHROMIUM",
        "UPDATE_SCREENSHOTS",
    )
)

DEFAULT_TERMS_TEXT = """\
Commons lets you find, share and import learning resources from your Canvas courses.

1. You use Commons through your institution's Canvas account, and your institution's
   policies apply to what you share.
2. Share only resources that you have the right to share. Resources you share publicly
   can be seen and imported by people at other institutions.
3. We store your name, Canvas user id, roles and avatar as Canvas sends them at launch, so
   that Commons can show who shared what. Sessions record when they were created and last
   used, and end when you log out or after a period of inactivity.
4. These terms may change. When they do, you will be asked to accept the new version before
   you can create new sessions.
"""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMMONS_SESSION_", extra="ignore")

    #: ``sqlite:///relative/path.db`` (default: a file in the working directory).
    database_url: str = "sqlite:///commons-session.db"

    #: ``redis://host:6379/0`` or ``redis+cluster://node:7000``: sessions and single-use markers
    #: go to Redis; records stay in the database. Unset: everything in the database.
    redis_url: str | None = None
    #: Accept a Redis that can forget single-use markers (no AOF, or an eviction policy other
    #: than noeviction): used tokens and nonces then replay after a restart. UNSAFE; refused
    #: at start unless true, and then warned at start and in ``/readyz``.
    redis_allow_volatile: bool = False
    #: Every store call gives up after this long and the request answers 503.
    store_timeout: float = Field(default=2.0, gt=0)  # seconds

    #: Oldest ``iat`` a Canvas JWT may carry. 0 turns the age check off: UNSAFE, because a
    #: leaked token then works forever (until its single use).
    jwt_max_age: int = Field(default=300, ge=0)  # 5 minutes
    #: How far in the future an ``iat`` may be (clock skew between Canvas and us).
    jwt_future_skew: int = Field(default=60, ge=0)  # 1 minute
    #: Used tokens are remembered this long when ``jwt_max_age`` is 0.
    jwt_replay_retention: int = Field(default=86_400, ge=1)  # 1 day
    #: Largest JWT accepted, in bytes. Canvas' tokens are a few KB.
    jwt_max_bytes: int = Field(default=16_384, ge=256)

    #: A session ends after this long without a request.
    idle_timeout: int = Field(default=3_600, ge=1)  # 1 hour
    #: ... and this long after it was created, whatever happens.
    absolute_timeout: int = Field(default=43_200, ge=1)  # 12 hours
    #: On SIGTERM, in-flight requests get this long to finish before a worker is killed.
    shutdown_timeout: int = Field(default=30, ge=1)  # seconds
    #: A connection must send a request's whole head (request line and headers) within this long,
    #: and an idle keep-alive connection its next request: a slow or silent client cannot hold a
    #: connection longer (granian's ``http1_header_read_timeout``; at most 60).
    header_read_timeout: float = Field(default=10.0, ge=0.001, le=60)  # seconds
    #: ... and the request's body within this long after its head; past it, 408 and the
    #: connection is closed. A real body is at most ``max_body_bytes`` and arrives at once.
    body_read_timeout: float = Field(default=10.0, gt=0)  # seconds
    #: Open connections one ``serve`` holds at most, split evenly between its workers; further
    #: ones wait in the kernel's accept queue until a connection closes. Thousands of slow
    #: clients fit and still leave room (docs/security.md#slow-clients). The open-files limit
    #: is raised to fit at start.
    max_connections: int = Field(default=8_192, ge=16)
    #: Reads record activity at most this often, so a read does not write every time.
    touch_interval: int = Field(default=60, ge=0)  # 1 minute

    #: ``Secure`` + ``SameSite=None`` (needed inside Canvas' iframe). Set false only for
    #: plain-HTTP local use; the cookie is then ``SameSite=Lax`` without ``Secure``.
    cookie_secure: bool = True

    #: External base URL (``https://lor.example.edu``), used to rebuild the URL that Canvas
    #: signed when a proxy sits in front. Default: the request's own URL.
    public_url: str | None = None
    #: With ``public_url`` unset, the ``Host`` header decides the URL a launch signature is
    #: checked against and our LTI 1.3 links, so only these hosts are answered (others get 400
    #: ``untrusted_host``): names or ``name:port``, ``*.example.edu`` for subdomains, ``*`` for
    #: any (UNSAFE). Not checked when ``public_url`` is set: everything is built from it then.
    allowed_hosts: Annotated[list[str], NoDecode] = ["localhost", "127.0.0.1", "[::1]"]
    #: Turns on the operator API (``/api/admin``, ``Authorization: Bearer <this>``) and console
    #: (``/admin``). Unset: both answer 403 ``operator_console_disabled``.
    operator_token: SecretStr | None = None
    #: Services behind us that may be handed a short-lived signed token for a session
    #: (``POST /api/sessions/token``): each is that token's ``aud``, comma-separated.
    downstream_audiences: Annotated[list[str], NoDecode] = []
    #: How long such a token is valid (at most 5 minutes; never past the session's end).
    downstream_token_ttl: int = Field(default=300, ge=1, le=300)  # seconds
    #: If set, ``/metrics`` answers only requests with ``Authorization: Bearer <this>``.
    metrics_token: SecretStr | None = None
    #: Origins that may frame our pages besides the registered LTI 1.3 platforms and the
    #: Canvas a session launched from (CSP ``frame-ancestors``), comma-separated, e.g. a
    #: Canvas reached under a vanity domain: ``https://canvas.school.edu``.
    frame_ancestors: Annotated[list[str], NoDecode] = []

    #: OAuth 1.0a timestamps may be this far from our clock (Canvas allows 90 minutes).
    oauth_timestamp_window: int = Field(default=5_400, ge=1)

    #: LTI 1.3: how long a login initiation's state and nonce stay usable (the person is between
    #: our login redirect and Canvas' id_token post for a few seconds).
    lti_state_ttl: int = Field(default=600, ge=1)  # 10 minutes
    #: LTI 1.3: how long a platform's JWKS is cached (an unknown ``kid`` refetches sooner).
    jwks_cache_ttl: int = Field(default=300, ge=1)  # 5 minutes
    #: LTI 1.3: the shortest and longest a JWKS is cached whatever its HTTP headers say
    #: (``no-store`` or ``max-age=0`` get the floor; ``max-age=31536000`` the ceiling).
    jwks_min_ttl: int = Field(default=60, ge=1)  # 1 minute
    jwks_max_ttl: int = Field(default=86_400, ge=1)  # 1 day
    #: After a launch, the one-time code in the redirect that the page trades for the session id
    #: when the browser blocks the session cookie (inside Canvas' iframe) lives this long.
    exchange_code_ttl: int = Field(default=60, ge=1)  # 1 minute

    #: The current terms of service; publishing a new version makes everyone accept again.
    terms_version: str = "2026-11-01"
    terms_text: str = DEFAULT_TERMS_TEXT
    #: If set, the terms text is read from this file instead of ``terms_text``.
    terms_file: Path | None = None

    #: Largest request body, in bytes; larger ones get 413.
    max_body_bytes: int = Field(default=65_536, ge=1_024)

    log_level: str = "info"
    #: ``json`` (one object per line, for a log collector) or ``text`` (for a terminal).
    log_format: Literal["json", "text"] = "json"

    #: Rate limits count in fixed windows of this length (docs/operations.md#rate-limits).
    rate_limit_window: int = Field(default=60, ge=1)  # seconds
    #: Failures allowed from one client address per window: refused session creations and
    #: launches plus failed session lookups. Past it the address gets 429 until the window
    #: ends. 0 turns the limit off.
    rate_limit_address_failures: int = Field(default=60, ge=0)  # failures per window
    #: Verified session creations and launches allowed per institution per window (a school's
    #: peak is far below; this caps a runaway integration). 0 turns the limit off.
    rate_limit_institution_requests: int = Field(default=3_000, ge=0)  # requests per window
    #: Proxies whose ``X-Forwarded-For`` names the client: addresses or CIDR networks, comma-
    #: separated. Default none: the client is the socket peer, and the header is ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = []

    #: ``commons-session purge`` deletes audit events older than this. 0 keeps them forever.
    audit_retention: int = Field(default=7_776_000, ge=0)  # 90 days, in seconds

    @field_validator("public_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @field_validator("frame_ancestors", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list):
            for part in value:
                parts = urlsplit(str(part))
                if parts.scheme not in ("https", "http") or not parts.netloc or parts.path not in ("", "/"):
                    raise ValueError(f"{part!r} is not an origin like https://canvas.example.edu")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme in ("postgresql", "postgres"):
            return value
        if scheme != "sqlite":
            raise ValueError(
                "use sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://..."
            )
        if not value.startswith("sqlite:///"):
            raise ValueError(
                "an SQLite URL has three slashes before a relative path (sqlite:///commons-session.db)"
                " and four before an absolute one (sqlite:////var/lib/commons-session/sessions.db)"
            )
        path = sqlite_path(value)
        if path != ":memory:" and not path.startswith("file:"):
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise ValueError(f"the directory {directory} does not exist: create it, or name another file")
        return value

    @field_validator("downstream_audiences", mode="before")
    @classmethod
    def _split_audiences(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list):
            for part in value:
                if not str(part) or any(c in str(part) for c in "/\\@?# "):
                    raise ValueError(f"{part!r} is not a host like lor.example.edu or lor.example.edu:8443")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("metrics_token must be at least 16 characters")
        return value

    @field_validator("operator_token")
    @classmethod
    def _operator_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 32:
            raise ValueError("operator_token must be at least 32 characters (e.g. openssl rand -hex 32)")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list):
            for part in value:
                ipaddress.ip_network(part, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("terms_version")
    @classmethod
    def _nonempty_version(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("terms_version must not be empty")
        return value

    def make_stores(self) -> Stores:
        return make_stores(
            self.database_url,
            self.redis_url,
            idle_timeout=self.idle_timeout,
            timeout=self.store_timeout,
            redis_allow_volatile=self.redis_allow_volatile,
        )

    def current_terms_text(self) -> str:
        if self.terms_file is not None:
            return self.terms_file.read_text("utf-8")
        return self.terms_text


def _shown(name: str, value: str | None) -> str:
    """A value fit for an error message: secrets and URL passwords hidden."""
    if value is None:
        return "(unset)"
    if name in ("metrics_token", "operator_token"):
        return "'***'"
    parts = urlsplit(value) if "://" in value else None
    if parts is not None and parts.password:
        value = value.replace(f":{parts.password}@", ":***@", 1)
    return repr(value)


def setting_errors(exc: ValidationError, environ: Mapping[str, str] = os.environ) -> list[str]:
    """One line per invalid setting, naming the variable, the value given and what is wrong."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = PREFIX + field.upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{variable}={_shown(field, environ.get(variable))} is invalid: {message}")
    return lines


def unknown_variables(environ: Mapping[str, str] = os.environ) -> list[str]:
    """A warning for each ``COMMONS_SESSION_*`` variable that is no setting (a typo is otherwise
    silently ignored and the default used), with the nearest real name."""
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    warnings = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known and name not in OTHER_VARIABLES:
            near = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            hint = f"; did you mean {near[0]}?" if near else " (docs/configuration.md lists them)"
            warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings
