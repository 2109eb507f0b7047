"""Plain records passed between the domain and the stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AccountSettings",
    "Identity",
    "Institution",
    "Lti13Registration",
    "Profile",
    "SessionRecord",
    "ToolKey",
    "User",
]


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """Per-institution flags that Commons reports in every session. Defaults are documented
    in docs/sessions.md; operators change them with ``commons-session institutions settings``."""

    can_share_public: bool = True
    can_show_public: bool = True
    show_curated_resources_first: bool = False
    show_federal_standards: bool = True
    show_state_standards: bool = False
    state_standard: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "can_share_public": self.can_share_public,
            "can_show_public": self.can_show_public,
            "show_curated_resources_first": self.show_curated_resources_first,
            "show_federal_standards": self.show_federal_standards,
            "show_state_standards": self.show_state_standards,
            "state_standard": self.state_standard,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccountSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Institution:
    """A Canvas that registered this tool with a consumer key and shared secret."""

    id: int
    consumer_key: str
    name: str
    #: Secrets that verify, newest first. Two during a rotation, otherwise one.
    secrets: tuple[str, ...]
    settings: AccountSettings = field(default_factory=AccountSettings)
    created_at: float = 0.0
    #: When an operator disabled it (launches and new sessions refused), or None.
    disabled_at: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def __repr__(self) -> str:  # never print secrets
        return f"Institution(id={self.id!r}, consumer_key={self.consumer_key!r}, name={self.name!r})"


@dataclass(frozen=True, slots=True)
class Lti13Registration:
    """An LTI 1.3 platform registration attached to an institution, so that its 1.1 key and
    secret (which still sign Canvas' JWTs) and its 1.3 platform name the same people.
    Looked up by ``(issuer, client_id)``, which is unique. A platform that registered itself
    (LTI Dynamic Registration) is *pending* (no institution) until it is bound."""

    id: int
    #: None while pending.
    institution_id: int | None
    #: The institution's consumer key (joined in, for the launch to find the institution).
    consumer_key: str | None
    issuer: str
    client_id: str
    deployment_ids: tuple[str, ...]
    #: Where the platform publishes its signing keys, and its OIDC authorization endpoint.
    jwks_url: str
    auth_url: str
    created_at: float = 0.0
    #: The platform's OAuth 2 token endpoint, if known (Dynamic Registration tells it).
    token_url: str | None = None
    #: When the platform registered itself (Dynamic Registration); None if added by hand.
    registered_at: float | None = None

    @property
    def pending(self) -> bool:
        return self.institution_id is None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "issuer": self.issuer,
            "client_id": self.client_id,
            "deployment_ids": list(self.deployment_ids),
            "jwks_url": self.jwks_url,
            "auth_url": self.auth_url,
        }
        if self.token_url is not None:
            found["token_url"] = self.token_url
        if self.registered_at is not None:
            found["registered_at"] = self.registered_at
        if self.pending:
            found["pending"] = True
        return found


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a person is, as the institution's Canvas names them. Scoped to the institution whose
    key signed the launch, so one institution can never vouch for another's users."""

    institution_id: int
    tool_consumer_instance_guid: str
    lti_user_id: str


@dataclass(frozen=True, slots=True)
class Profile:
    """What a launch (or a Canvas JWT, which carries the same parameters) says about a person."""

    full_name: str | None = None
    email: str | None = None
    avatar_url: str | None = None
    roles: tuple[str, ...] = ()
    canvas_user_id: str | None = None
    canvas_api_domain: str | None = None
    locale: str | None = None
    account_id: str | None = None
    account_name: str | None = None
    is_admin: bool = False
    prefers_high_contrast: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "full_name": self.full_name,
            "email": self.email,
            "avatar_url": self.avatar_url,
            "roles": list(self.roles),
            "canvas_user_id": self.canvas_user_id,
            "canvas_api_domain": self.canvas_api_domain,
            "locale": self.locale,
            "account_id": self.account_id,
            "account_name": self.account_name,
            "is_admin": self.is_admin,
            "prefers_high_contrast": self.prefers_high_contrast,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["roles"] = tuple(known.get("roles") or ())
        return cls(**known)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    identity: Identity
    profile: Profile
    created_at: float
    last_launch_at: float
    #: Set by an operator (``commons-session users disable``); refuses launches and sessions.
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as stored. The id itself is never stored, only ``id_hash``.

    ``contents`` is the snapshot of Commons' session keys taken when the session was created
    (everything but ``sid`` and ``expires``), so a read costs one lookup.
    """

    id_hash: bytes
    user_id: str
    institution_id: int
    contents: dict[str, Any]
    created_at: float
    last_seen_at: float
    #: Absolute end of life; the idle end is ``last_seen_at + idle_timeout``.
    expires_at: float
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class ToolKey:
    """One of the tool's own RSA signing keys (LTI Deep Linking responses), as stored.

    The newest key without ``retired_at`` signs; every key not retired, or retired but still
    within ``published_until``, is in our JWKS. The private half never appears in a repr (so
    never in a log line or a traceback's locals)."""

    kid: str
    #: PKCS#8 PEM of the private key. Only ``lti.keys`` reads it, to sign.
    private_pem: str = field(repr=False)
    #: The public JWK (kty, n, e, kid, alg, use): what the JWKS publishes.
    public_jwk: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    #: When a newer key took over (``keys rotate``); None while this key may sign.
    retired_at: float | None = None
    #: A retired key stays in the JWKS until then (the rotation's overlap).
    published_until: float | None = None

    def published(self, now: float) -> bool:
        return self.retired_at is None or (self.published_until is not None and now < self.published_until)
