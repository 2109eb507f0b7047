"""Every error the service raises on purpose, each with a stable ``code``.

The tree (the HTTP layer maps each class to a status in ``http/problems.py``):

- SessionServiceError
  - BadRequest                     400: the request itself is unusable
    - ConflictingSessionIds        two carriers name different sessions
    - TokenTooLarge                the JWT exceeds ``jwt_max_bytes``
    - InvalidLaunch                a verified launch lacks what we need (no ``user_id``)
    - Lti13LoginError              an LTI 1.3 login initiation we cannot start
  - AuthenticationError            401: the caller proved nothing we accept
    - SessionRequired              no session id was presented
    - InvalidSession               malformed, unknown, expired or ended
    - TokenError                   the Canvas JWT was refused
      - MalformedToken, InvalidSignature, UnknownKey, TokenExpired,
        InvalidClaims, TokenReplayed
    - LaunchError                  the LTI 1.1 launch was refused
      - InvalidOAuthRequest, UnknownConsumer, StaleTimestamp,
        InvalidLaunchSignature, ReplayedNonce
      - Lti13Error                 the LTI 1.3 launch was refused (one class per check; see
                                   docs/lti13.md for the codes)
    - InvalidExchangeCode          the one-time hand-off code is unknown, used or expired
  - Forbidden                      403: authenticated, but not allowed this
    - NeverLaunched, TermsNotAccepted, NotYourSession, CrossOriginRequest, UserDisabled
  - NotFound                       404
    - SessionNotFound              no session of yours has that handle
  - TermsVersionMismatch           409
  - RateLimited                    429: too many attempts; retry after ``retry_after`` seconds
  - InstitutionError               operator mistakes, reported by the CLI
    - DuplicateInstitution, InstitutionNotFound, InvalidInstitution, UserNotFound,
      DuplicateRegistration, RegistrationNotFound
  - StoreError                     the store failed us
    - CreateError                  a key that must be new already exists
    - UpdateError                  the row to update has gone (never resurrect it)
    - SchemaTooNew                 the database was migrated by a newer release
    - StoreUnavailable             503: the store cannot be reached or is locked; retry
  - JwksUnavailable                503: the platform's JWKS could not be fetched; retry
  - DynamicRegistrationError       502: the platform's side of a Dynamic Registration failed
  - TooManyPendingRegistrations    503: Dynamic Registration is closed until some are bound
  (RegistrationPending is a Forbidden, InvalidRegistrationRequest a BadRequest)
"""

from __future__ import annotations

__all__ = [
    "AnonymousLaunch",
    "AuthenticationError",
    "BadRequest",
    "ConflictingSessionIds",
    "ContentTypeNotAccepted",
    "CreateError",
    "CrossOriginRequest",
    "DeepLinkingError",
    "DeepLinkingUsed",
    "DuplicateInstitution",
    "DuplicateRegistration",
    "DynamicRegistrationError",
    "Forbidden",
    "IdTokenExpired",
    "IdTokenFromFuture",
    "InstitutionDisabled",
    "InstitutionError",
    "InstitutionNotFound",
    "InvalidClaims",
    "InvalidContentItems",
    "InvalidDeepLinkingSettings",
    "InvalidExchangeCode",
    "InvalidIdTokenSignature",
    "InvalidInstitution",
    "InvalidLaunch",
    "InvalidLaunchSignature",
    "InvalidOAuthRequest",
    "InvalidOpenIdConfiguration",
    "InvalidRegistrationRequest",
    "InvalidRegistrationResponse",
    "InvalidSession",
    "InvalidSignature",
    "IssuerMismatch",
    "JwksUnavailable",
    "LaunchError",
    "Lti13Error",
    "Lti13LoginError",
    "MalformedIdToken",
    "MalformedToken",
    "MetricsTokenRequired",
    "MissingResourceLink",
    "MissingRoles",
    "MultipleItemsNotAccepted",
    "NeverLaunched",
    "NonceMismatch",
    "NonceReplayed",
    "NotDeepLinking",
    "NotFound",
    "NotYourSession",
    "OpenIdConfigurationUnavailable",
    "OperatorConsoleDisabled",
    "OperatorTokenRequired",
    "PresentationNotAccepted",
    "RateLimited",
    "RegistrationNotFound",
    "RegistrationPending",
    "RegistrationRefused",
    "RepeatedLaunchParameter",
    "ReplayedNonce",
    "SchemaTooNew",
    "SessionNotFound",
    "SessionRequired",
    "SessionServiceError",
    "StaleTimestamp",
    "StateCookieMissing",
    "StateExpired",
    "StateMismatch",
    "StoreError",
    "StoreUnavailable",
    "TargetLinkUriMismatch",
    "TermsNotAccepted",
    "TermsVersionMismatch",
    "TokenError",
    "TokenExpired",
    "TokenReplayed",
    "TokenTooLarge",
    "TooManyPendingRegistrations",
    "UnknownAudience",
    "UnknownClientId",
    "UnknownConsumer",
    "UnknownDeployment",
    "UnknownIssuer",
    "UnknownKey",
    "UnknownKid",
    "UnknownRegistration",
    "UpdateError",
    "UserDisabled",
    "UserNotFound",
    "WrongAlgorithm",
    "WrongAudience",
    "WrongAzp",
    "WrongIssuer",
    "WrongMessageType",
    "WrongTargetLinkUri",
    "WrongVersion",
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


class RepeatedLaunchParameter(BadRequest):
    code = "repeated_launch_parameter"
    default_message = "The launch gives a parameter more than once (in the body, the query or both)."


class UnknownAudience(BadRequest):
    code = "unknown_audience"
    default_message = "That is not a configured downstream service."


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


class MetricsTokenRequired(AuthenticationError):
    code = "metrics_token_required"
    default_message = "/metrics needs Authorization: Bearer <COMMONS_SESSION_METRICS_TOKEN>."


class OperatorTokenRequired(AuthenticationError):
    code = "operator_token_required"
    default_message = "This needs the operator token (COMMONS_SESSION_OPERATOR_TOKEN)."


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


class OperatorConsoleDisabled(Forbidden):
    code = "operator_console_disabled"
    default_message = "The operator API and console are off: set COMMONS_SESSION_OPERATOR_TOKEN to use them."


class NotYourSession(Forbidden):
    code = "not_your_session"
    default_message = "Session contents are only returned for the session you present."


class CrossOriginRequest(Forbidden):
    code = "cross_origin_request"
    default_message = "This request came from another site and was refused."


class InstitutionDisabled(Forbidden):
    code = "institution_disabled"
    default_message = (
        "Your institution's access to Commons has been disabled by the operator of this service."
    )


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


class RateLimited(SessionServiceError):
    code = "rate_limited"
    default_message = "Too many attempts; retry after the number of seconds in Retry-After."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        #: Whole seconds until the limit's window ends.
        self.retry_after = retry_after


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


class DatabaseMissing(StoreError):
    """A database this path once held is gone: never silently replaced by an empty one."""

    code = "database_missing"
    default_message = "The database file is missing; restore it, or remove its marker to start afresh."


class StoreUnavailable(StoreError):
    code = "store_unavailable"
    default_message = "The session store is unavailable; try again shortly."


class ClaimPending(StoreUnavailable):
    """Another request's provisional claim on this token or nonce stands: it is being used right
    now, or a store fault left the claim behind and it lapses shortly. A 503, so the client
    retries, never a "replayed" that would make it throw a good token away."""

    default_message = "This token is being used by another request; try again shortly."


class VolatileStore(StoreError):
    """The store could forget single-use markers (Redis without AOF, or with eviction): refused
    at start, and ``/readyz`` answers 503 while it is so, unless explicitly allowed."""

    code = "store_volatile"
    default_message = "The session store could forget used tokens; see the server log."


# -- LTI 1.3 (docs/lti13.md lists every code) ------------------------------------------------


class Lti13LoginError(BadRequest):
    code = "invalid_lti13_login"
    default_message = "The LTI 1.3 login initiation cannot be started."


class UnknownIssuer(Lti13LoginError):
    code = "unknown_issuer"
    default_message = "The login names an issuer (iss) that has no LTI 1.3 registration here."


class UnknownClientId(Lti13LoginError):
    code = "unknown_client_id"
    default_message = "The login's client_id is not registered for this issuer."


class WrongTargetLinkUri(Lti13LoginError):
    code = "wrong_target_link_uri"
    default_message = "The login's target_link_uri is not this tool's LTI 1.3 launch URL."


class Lti13Error(LaunchError):
    code = "invalid_lti13_launch"
    default_message = "The LTI 1.3 launch was refused."


class StateMismatch(Lti13Error):
    code = "state_mismatch"
    default_message = "The launch's state is not one this browser was given; launch again from Canvas."


class StateExpired(Lti13Error):
    code = "state_expired"
    default_message = "The launch took too long after its login; launch again from Canvas."


class StateCookieMissing(Lti13Error):
    code = "state_cookie_missing"
    default_message = (
        "Your browser did not send back the cookie this launch needs, probably because it blocks "
        "cookies inside Canvas' frame. Open Commons in a new window to sign in."
    )

    def __init__(self, message: str | None = None, relaunch_query: str | None = None) -> None:
        super().__init__(message)
        #: Query string for ``/api/lti/login`` that restarts this login in a top-level window.
        self.relaunch_query = relaunch_query


class UnknownRegistration(Lti13Error):
    code = "unknown_registration"
    default_message = "The LTI 1.3 registration this launch started with no longer exists."


class MalformedIdToken(Lti13Error):
    code = "malformed_id_token"
    default_message = "The id_token is not a well-formed JWT with the claims an LTI 1.3 launch needs."


class WrongAlgorithm(Lti13Error):
    code = "wrong_algorithm"
    default_message = "The id_token must be signed with RS256."


class UnknownKid(Lti13Error):
    code = "unknown_kid"
    default_message = "The id_token's kid names no key in the platform's JWKS."


class InvalidIdTokenSignature(Lti13Error):
    code = "invalid_id_token_signature"
    default_message = "The id_token's signature does not verify with the platform's key."


class WrongIssuer(Lti13Error):
    code = "wrong_issuer"
    default_message = "The id_token's iss is not the issuer this login started with."


class WrongAudience(Lti13Error):
    code = "wrong_audience"
    default_message = "The id_token's aud does not contain this tool's client_id."


class WrongAzp(Lti13Error):
    code = "wrong_azp"
    default_message = "The id_token's azp is not this tool's client_id."


class IdTokenExpired(Lti13Error):
    code = "id_token_expired"
    default_message = "The id_token has expired; launch again from Canvas."


class IdTokenFromFuture(Lti13Error):
    code = "id_token_from_future"
    default_message = "The id_token was issued in the future (iat); check the platform's clock."


class NonceMismatch(Lti13Error):
    code = "nonce_mismatch"
    default_message = "The id_token's nonce is not the one this login sent."


class NonceReplayed(Lti13Error):
    code = "nonce_replayed"
    default_message = "This launch has already been used; launch again from Canvas."


class UnknownDeployment(Lti13Error):
    code = "unknown_deployment"
    default_message = "The id_token's deployment_id is not registered for this client."


class WrongMessageType(Lti13Error):
    code = "wrong_message_type"
    default_message = "Only LtiResourceLinkRequest and LtiDeepLinkingRequest launches are supported."


class WrongVersion(Lti13Error):
    code = "wrong_version"
    default_message = "The id_token's LTI version must be 1.3.0."


class AnonymousLaunch(Lti13Error):
    code = "anonymous_launch"
    default_message = "The id_token names no user (no sub); launch as a signed-in Canvas user."


class TargetLinkUriMismatch(Lti13Error):
    code = "target_link_uri_mismatch"
    default_message = "The id_token's target_link_uri is not the one its login asked for."


class MissingRoles(Lti13Error):
    code = "missing_roles"
    default_message = "The id_token carries no roles claim (an array of role URIs, possibly empty)."


class MissingResourceLink(Lti13Error):
    code = "missing_resource_link"
    default_message = "The resource link launch carries no resource_link claim with an id."


class InvalidExchangeCode(AuthenticationError):
    code = "invalid_exchange_code"
    default_message = "The sign-in code is unknown, already used or expired; launch again from Canvas."


class JwksUnavailable(SessionServiceError):
    code = "jwks_unavailable"
    default_message = "The platform's signing keys (JWKS) could not be fetched; try again shortly."


class DuplicateRegistration(InstitutionError):
    code = "duplicate_lti13_registration"
    default_message = "That issuer and client_id are registered to another institution."


class RegistrationNotFound(InstitutionError):
    code = "lti13_registration_not_found"
    default_message = "No LTI 1.3 registration has that issuer and client_id."


# -- LTI Deep Linking 2.0 (issue 12) ----------------------------------------------------------


class InvalidDeepLinkingSettings(Lti13Error):
    code = "invalid_deep_linking_settings"
    default_message = "The LtiDeepLinkingRequest's deep_linking_settings claim is missing or invalid."


class DeepLinkingError(BadRequest):
    """The content items an app sent for a Deep Linking response are unusable (400)."""

    code = "invalid_deep_linking_response"
    default_message = "The Deep Linking response could not be made."


class InvalidContentItems(DeepLinkingError):
    code = "invalid_content_items"
    default_message = "Send the content items as the JSON array property 'contentItems'."


class ContentTypeNotAccepted(DeepLinkingError):
    code = "content_type_not_accepted"
    default_message = "The platform does not accept content items of this type here."


class MultipleItemsNotAccepted(DeepLinkingError):
    code = "multiple_items_not_accepted"
    default_message = "The platform accepts only one content item here."


class PresentationNotAccepted(DeepLinkingError):
    code = "presentation_not_accepted"
    default_message = "The platform does not accept this presentation document target here."


class NotDeepLinking(Forbidden):
    code = "not_deep_linking"
    default_message = (
        "This session was not started by a Deep Linking launch; launch it from the platform's picker."
    )


class DeepLinkingUsed(Forbidden):
    code = "deep_linking_used"
    default_message = "This Deep Linking launch has already been answered; launch the picker again."


# -- LTI Dynamic Registration (docs/lti13.md, "Dynamic Registration") --------------------------


class RegistrationPending(Forbidden):
    code = "registration_pending"
    default_message = (
        "This Canvas registered Commons by itself (LTI Dynamic Registration) and is not yet linked "
        "to a school's LTI 1.1 key. Ask the Commons operator to bind it "
        "(commons-session institutions bind-lti13), or enable the LTI 1.1 key in Canvas so the "
        "launch can prove it."
    )

    def __init__(self, message: str | None = None, platform_origin: str | None = None) -> None:
        super().__init__(message)
        #: The pending platform's origin: the refusal page is shown in its frame.
        self.platform_origin = platform_origin


class InvalidRegistrationRequest(BadRequest):
    code = "invalid_registration_request"
    default_message = (
        "A registration must be started by the platform with openid_configuration and "
        "registration_token in the address."
    )


class TooManyPendingRegistrations(SessionServiceError):
    code = "too_many_pending_registrations"
    default_message = (
        "Too many platforms registered themselves and wait to be bound; the operator must bind or "
        "remove some (commons-session institutions list) before another can register."
    )


class DynamicRegistrationError(SessionServiceError):
    """The platform's side of a registration failed (502: the platform is at fault, not the
    browser that carried the request). Nothing is stored."""

    code = "dynamic_registration_failed"
    default_message = "The platform's registration could not be completed."


class OpenIdConfigurationUnavailable(DynamicRegistrationError):
    code = "openid_configuration_unavailable"
    default_message = "The platform's OpenID configuration could not be fetched."


class InvalidOpenIdConfiguration(DynamicRegistrationError):
    code = "invalid_openid_configuration"
    default_message = "The platform's OpenID configuration is not one an LTI platform publishes."


class IssuerMismatch(DynamicRegistrationError):
    code = "issuer_mismatch"
    default_message = (
        "The platform's OpenID configuration names an issuer on another origin than the address "
        "it was fetched from."
    )


class RegistrationRefused(DynamicRegistrationError):
    code = "registration_refused"
    default_message = "The platform refused the registration."


class InvalidRegistrationResponse(DynamicRegistrationError):
    code = "invalid_registration_response"
    default_message = "The platform's answer to the registration is not a client registration."
