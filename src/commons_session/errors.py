"""Every error the service raises on purpose, each with a stable ``code``.

The tree (the HTTP layer maps each class to a status in ``http/problems.py``):

- SessionServiceError
  - BadRequest                     400: the request itself is unusable
    - ConflictingSessionIds        two carriers name different sessions
    - TokenTooLarge                the JWT exceeds ``jwt_max_bytes``
    - InvalidLaunch                a verified launch lacks what we need (no ``user_id``)
  - AuthenticationError            401: the caller proved nothing we accept
    - SessionRequired              no session id was presented
    - InvalidSession               malformed, unknown, expired or ended
    - TokenError                   the Canvas JWT was refused
      - MalformedToken, InvalidSignature, UnknownKey, TokenExpired,
        InvalidClaims, TokenReplayed
    - LaunchError                  the LTI 1.1 launch was refused
      - InvalidOAuthRequest, UnknownConsumer, StaleTimestamp,
        InvalidLaunchSignature, ReplayedNonce
  - Forbidden                      403: authenticated, but not allowed this
    - NeverLaunched, TermsNotAccepted, NotYourSession, CrossOriginRequest, UserDisabled
  - NotFound                       404
    - SessionNotFound              no session of yours has that handle
  - TermsVersionMismatch           409
  - InstitutionError               operator mistakes, reported by the CLI
    - DuplicateInstitution, InstitutionNotFound, InvalidInstitution, UserNotFound
  - StoreError                     the store failed us
    - CreateError                  a key that must be new already exists
    - UpdateError                  the row to update has gone (never resurrect it)
    - SchemaTooNew                 the database was migrated by a newer release
    - StoreUnavailable             503: the store cannot be reached or is locked; retry
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadRequest",
    "ConflictingSessionIds",
    "CreateError",
    "CrossOriginRequest",
    "DuplicateInstitution",
    "Forbidden",
    "InstitutionError",
    "InstitutionNotFound",
    "InvalidClaims",
    "InvalidInstitution",
    "InvalidLaunch",
    "InvalidLaunchSignature",
    "InvalidOAuthRequest",
    "InvalidSession",
    "InvalidSignature",
    "LaunchError",
    "MalformedToken",
    "NeverLaunched",
    "NotFound",
    "NotYourSession",
    "ReplayedNonce",
    "SchemaTooNew",
    "SessionNotFound",
    "SessionRequired",
    "SessionServiceError",
    "StaleTimestamp",
    "StoreError",
    "StoreUnavailable",
    "TermsNotAccepted",
    "TermsVersionMismatch",
    "TokenError",
    "TokenExpired",
    "TokenReplayed",
    "TokenTooLarge",
    "UnknownConsumer",
    "UnknownKey",
    "UpdateError",
    "UserDisabled",
    "UserNotFound",
]


class SessionServiceError(Exception):
    """Base of every deliberate error; ``code`` is part of the public API."""

    #: Stable machine-readable identifier, sent as the problem's ``code``.
    code = "error"
    #: Human-readable default, safe to show to the caller.
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class BadRequest(SessionServiceError):
    code = "bad_request"
    default_message = "The request is malformed."


class ConflictingSessionIds(BadRequest):
    code = "conflicting_session_ids"
    default_message = "The request carries two different session ids; send only one."


class TokenTooLarge(BadRequest):
    code = "token_too_large"
    default_message = "The JWT is larger than this service accepts."


class InvalidLaunch(BadRequest):
    code = "invalid_launch"
    default_message = "The launch is signed correctly but lacks the parameters this tool needs."


class AuthenticationError(SessionServiceError):
    code = "unauthenticated"
    default_message = "Authentication is required."


class SessionRequired(AuthenticationError):
    code = "session_required"
    default_message = (
        "No session id was presented. Send it as cookie 'session', header 'x-session-id', "
        "query 'session-id', the first 'state' query value, or body property 'sessionId'."
    )


class InvalidSession(AuthenticationError):
    code = "invalid_session"
    default_message = "The session id is not valid: it is malformed, unknown, expired or ended."


class TokenError(AuthenticationError):
    code = "invalid_token"
    default_message = "The JWT was refused."


class MalformedToken(TokenError):
    code = "malformed_token"
    default_message = "The JWT is not a well-formed compact JWS with a JSON object payload."


class InvalidSignature(TokenError):
    code = "invalid_token_signature"
    default_message = "The JWT's signature does not verify with the institution's shared secret."


class UnknownKey(TokenError):
    code = "unknown_consumer_key"
    default_message = "The JWT names a consumer key that is not registered here."


class TokenExpired(TokenError):
    code = "token_expired"
    default_message = "The JWT is too old; ask Canvas for a new one."


class InvalidClaims(TokenError):
    code = "invalid_token_claims"
    default_message = "The JWT's claims are missing or invalid."


class TokenReplayed(TokenError):
    code = "token_already_used"
    default_message = "This JWT has already created a session; ask Canvas for a new one."


class LaunchError(AuthenticationError):
    code = "invalid_launch_request"
    default_message = "The LTI launch was refused."


class InvalidOAuthRequest(LaunchError):
    code = "invalid_oauth_request"
    default_message = "The launch is not a well-formed OAuth 1.0a HMAC-SHA1 signed request."


class UnknownConsumer(LaunchError):
    code = "unknown_consumer_key"
    default_message = "The launch is signed with a consumer key that is not registered here."


class StaleTimestamp(LaunchError):
    code = "stale_timestamp"
    default_message = "The launch's OAuth timestamp is too far from this server's clock."


class InvalidLaunchSignature(LaunchError):
    code = "invalid_signature"
    default_message = "The launch's OAuth signature does not verify."


class ReplayedNonce(LaunchError):
    code = "replayed_nonce"
    default_message = "The launch's OAuth nonce has been used before."


class Forbidden(SessionServiceError):
    code = "forbidden"
    default_message = "You may not do this."


class NeverLaunched(Forbidden):
    code = "never_launched"
    default_message = (
        "You have never launched into Commons from Canvas. Launch Commons from Canvas once, "
        "accept the terms of service, then ask Canvas for a new JWT."
    )


class TermsNotAccepted(Forbidden):
    code = "terms_not_accepted"
    default_message = (
        "You have not accepted the current terms of service. Launch Commons from Canvas and "
        "accept them, then try again."
    )


class NotYourSession(Forbidden):
    code = "not_your_session"
    default_message = "Session contents are only returned for the session you present."


class CrossOriginRequest(Forbidden):
    code = "cross_origin_request"
    default_message = "This request came from another site and was refused."


class UserDisabled(Forbidden):
    code = "user_disabled"
    default_message = "Your account has been disabled by the operator of this service."


class NotFound(SessionServiceError):
    code = "not_found"
    default_message = "Not found."


class SessionNotFound(NotFound):
    code = "session_not_found"
    default_message = "None of your sessions has that handle."


class TermsVersionMismatch(SessionServiceError):
    code = "terms_version_mismatch"
    default_message = "That is not the current version of the terms of service."


class InstitutionError(SessionServiceError):
    code = "institution_error"


class DuplicateInstitution(InstitutionError):
    code = "duplicate_institution"
    default_message = "An institution with that consumer key already exists."


class InstitutionNotFound(InstitutionError):
    code = "institution_not_found"
    default_message = "No institution has that consumer key."


class InvalidInstitution(InstitutionError):
    code = "invalid_institution"
    default_message = "Consumer key, secret and name must not be empty."


class UserNotFound(InstitutionError):
    code = "user_not_found"
    default_message = "No user has that id."


class StoreError(SessionServiceError):
    code = "store_error"
    default_message = "The store failed."


class CreateError(StoreError):
    code = "create_conflict"
    default_message = "A record that must be new already exists."


class UpdateError(StoreError):
    code = "update_conflict"
    default_message = "The record to update no longer exists."


class SchemaTooNew(StoreError):
    code = "schema_too_new"
    default_message = "The database schema is newer than this release understands; upgrade it."


class StoreUnavailable(StoreError):
    code = "store_unavailable"
    default_message = "The session store is unavailable; try again shortly."
