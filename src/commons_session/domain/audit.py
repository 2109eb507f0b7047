"""The audit stream: what happened to sessions and launches, and why, without ids.

The service emits one ``AuditEvent`` per thing that happened; the application writes it to the
audit table (``RecordStore.add_audit_event``) and counts it in the metrics. A session appears
only as ``session_hash``, a prefix of the SHA-256 of its id: enough to follow one session from
creation to end, useless for presenting it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EVENTS",
    "SESSION_HASH_HEX",
    "AuditEvent",
    "EventSink",
    "session_hash",
]

#: Every event name, with what its ``reason`` holds.
EVENTS = {
    "session_created": "how: jwt or launch",
    "session_ended": "why: logout, expired, launch_replaced, jwt_replaced, ended_by_user or logout_others",
    "session_revoked": "why: operator, user_disabled, institution_disabled or institution_removed",
    "launch": "none",
    "terms_accepted": "the accepted terms version",
    "verification_failed": "the refusal's error code (e.g. invalid_token_signature)",
    "deep_linking_response": "how many content items the signed response carries",
    "lti13_registered": "the platform's product_family_code (LTI Dynamic Registration)",
    "lti13_bound": "how: lti1p1 (a launch proved it) or operator",
    "institution_disabled": "none (an operator disabled it; its sessions ended)",
    "institution_enabled": "none",
}

SESSION_HASH_HEX = 16  # hex digits kept: 64 bits, plenty to tell sessions apart


def session_hash(id_hash: bytes) -> str:
    """How the audit names a session: the start of its SHA-256 (the stores' key), in hex."""
    return id_hash.hex()[:SESSION_HASH_HEX]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event: str
    at: float  # POSIX seconds
    reason: str | None = None
    user_id: str | None = None
    institution_id: int | None = None
    session_hash: str | None = None
    #: The request that caused it (the ``X-Request-ID`` of the access log), if any.
    request_id: str | None = None
    #: Small extras, e.g. ``{"sessions": 3}`` when one action ended several sessions.
    detail: dict[str, Any] = field(default_factory=dict)


#: Receives every event. It may fail: the service logs that and carries on, so an audit
#: outage never turns a successful request into a failed one.
EventSink = Callable[[AuditEvent], Awaitable[None]]
