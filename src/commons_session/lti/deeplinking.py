"""LTI Deep Linking 2.0: the platform asks the tool for content (an ``LtiDeepLinkingRequest``
launch carrying ``deep_linking_settings``), the tool answers with content items in a signed
``LtiDeepLinkingResponse`` JWT that the browser posts to the platform's return URL.

No web framework here. ``settings_context`` reads and checks the request's settings claim (it
runs inside ``v13.verify_id_token``, so a bad claim refuses the launch before any session
exists); the context it returns is kept in the session's contents as ``deepLinking``.
``check_items`` checks what the app chose against that context, and ``response_claims`` is the
JWT the tool's key (``lti.keys``) signs.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    ContentTypeNotAccepted,
    InvalidContentItems,
    InvalidDeepLinkingSettings,
    MultipleItemsNotAccepted,
    PresentationNotAccepted,
)

__all__ = [
    "DEEP_LINKING_REQUEST",
    "DEEP_LINKING_RESPONSE",
    "MAX_ITEMS",
    "RESPONSE_TTL",
    "SETTINGS",
    "check_items",
    "response_claims",
    "settings_context",
]

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/"
SETTINGS = DL_CLAIM + "deep_linking_settings"
CONTENT_ITEMS = DL_CLAIM + "content_items"
DATA = DL_CLAIM + "data"
MSG, LOG, ERRORMSG, ERRORLOG = (DL_CLAIM + n for n in ("msg", "log", "errormsg", "errorlog"))

DEEP_LINKING_REQUEST = "LtiDeepLinkingRequest"
DEEP_LINKING_RESPONSE = "LtiDeepLinkingResponse"

#: The response JWT lives this long: the browser posts it within seconds.
RESPONSE_TTL = 300
MAX_ITEMS = 50
MAX_URL = 2_048
MAX_TEXT = 4_096
MAX_HTML = 65_536
_LOOPBACK_NAMES = {"localhost"}

#: The content item types we can send, and the presentation each may ask for.
_TYPES = {"ltiResourceLink", "link", "html", "image", "file"}
_PRESENTATIONS = {"iframe": "iframe", "window": "window", "embed": "embed"}
_COMMON_FIELDS = {"type", "title", "text", "icon", "thumbnail"}
_FIELDS = {
    "ltiResourceLink": {"url", "custom", "lineItem", "available", "submission", "iframe", "window"},
    "link": {"url", "embed", "window", "iframe"},
    "html": {"html"},
    "image": {"url", "width", "height"},
    "file": {"url", "mediaType", "expiresAt"},
}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable absolute URL (https; http only on this machine), or None."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        return "must be a URL of at most 2048 characters"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an absolute https URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if parts.scheme == "http" and not _is_loopback(host):
        return "must use https (plain http only on localhost)"
    return None


def _strings(value: Any, name: str, *, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidDeepLinkingSettings(f"deep_linking_settings.{name} must be an array of strings.")
    if required and not value:
        raise InvalidDeepLinkingSettings(f"deep_linking_settings.{name} must name at least one type.")
    return list(dict.fromkeys(value))


def _flag(settings: Mapping[str, Any], name: str) -> bool:
    value = settings.get(name, False)
    if not isinstance(value, bool):
        raise InvalidDeepLinkingSettings(f"deep_linking_settings.{name} must be true or false.")
    return value


def _optional_text(settings: Mapping[str, Any], name: str) -> str | None:
    value = settings.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
        raise InvalidDeepLinkingSettings(f"deep_linking_settings.{name} must be a string.")
    return value


def settings_context(claims: Mapping[str, Any], *, issuer: str, client_id: str) -> dict[str, Any]:
    """The Deep Linking context of a verified ``LtiDeepLinkingRequest``: what the app may read
    (return URL, accepted types and targets, ``accept_multiple``, ``data``) and what the
    response JWT needs (the platform's issuer, our client id, the deployment id).
    ``InvalidDeepLinkingSettings`` if the settings claim is missing or unusable."""
    settings = claims.get(SETTINGS)
    if not isinstance(settings, dict):
        raise InvalidDeepLinkingSettings()
    url = settings.get("deep_link_return_url")
    problem = _url_problem(url)
    if problem is not None:
        raise InvalidDeepLinkingSettings(f"deep_linking_settings.deep_link_return_url {problem}.")
    context: dict[str, Any] = {
        "returnUrl": url,
        "acceptTypes": _strings(settings.get("accept_types"), "accept_types", required=True),
        "acceptPresentationDocumentTargets": _strings(
            settings.get("accept_presentation_document_targets"),
            "accept_presentation_document_targets",
            required=False,
        ),
        "acceptMediaTypes": _optional_text(settings, "accept_media_types"),
        "acceptMultiple": _flag(settings, "accept_multiple"),
        "acceptLineItem": _flag(settings, "accept_lineitem"),
        "autoCreate": _flag(settings, "auto_create"),
        "title": _optional_text(settings, "title"),
        "text": _optional_text(settings, "text"),
        "issuer": issuer,
        "clientId": client_id,
        "deploymentId": claims.get(CLAIM + "deployment_id"),
    }
    if "data" in settings:  # echoed exactly, whatever JSON it is; absent stays absent
        context["data"] = settings["data"]
    return context


# -- the app's content items ----------------------------------------------------------------------


def _bad(index: int, message: str) -> InvalidContentItems:
    return InvalidContentItems(f"contentItems[{index}]: {message}")


def _check_text(item: Mapping[str, Any], index: int, name: str, limit: int = MAX_TEXT) -> None:
    if name in item and (not isinstance(item[name], str) or len(item[name]) > limit):
        raise _bad(index, f"{name} must be a string of at most {limit} characters.")


def _check_image(item: Mapping[str, Any], index: int, name: str) -> None:
    if name not in item:
        return
    value = item[name]
    if not isinstance(value, dict) or _url_problem(value.get("url")) is not None:
        raise _bad(index, f"{name} must be an object with an https url.")
    for size in ("width", "height"):
        if size in value and (type(value[size]) is not int or not 0 < value[size] <= 100_000):
            raise _bad(index, f"{name}.{size} must be a positive whole number.")


def _check_item(item: Any, index: int, context: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _bad(index, "each content item must be a JSON object.")
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise ContentTypeNotAccepted(
            f"contentItems[{index}]: type must be one of {', '.join(sorted(_TYPES))}."
        )
    if kind not in context["acceptTypes"]:
        raise ContentTypeNotAccepted(
            f"contentItems[{index}]: the platform accepts only {', '.join(context['acceptTypes'])} here."
        )
    allowed = _COMMON_FIELDS | _FIELDS[kind]
    unknown = sorted(k for k in item if k not in allowed and "://" not in k)  # URIs: extensions
    if unknown:
        raise _bad(index, f"{kind} items have no property {unknown[0]!r}.")
    for name in ("title", "text"):
        _check_text(item, index, name)
    _check_image(item, index, "icon")
    _check_image(item, index, "thumbnail")
    if kind in ("link", "image", "file") or "url" in item:
        problem = _url_problem(item.get("url"))
        if problem is not None:
            raise _bad(index, f"url {problem}.")
    for size in ("width", "height"):
        if size in item and (type(item[size]) is not int or not 0 < item[size] <= 100_000):
            raise _bad(index, f"{size} must be a positive whole number.")
    if kind == "html" and (not isinstance(item.get("html"), str) or not item["html"]):
        raise _bad(index, "html items need the string property 'html'.")
    _check_text(item, index, "html", MAX_HTML)
    if "custom" in item:
        custom = item["custom"]
        if not isinstance(custom, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_TEXT for k, v in custom.items()
        ):
            raise _bad(index, "custom must be an object of string values.")
    for name in ("lineItem", "available", "submission", "embed"):
        if name in item and not isinstance(item[name], dict):
            raise _bad(index, f"{name} must be an object.")
    targets = context["acceptPresentationDocumentTargets"]
    for name, target in _PRESENTATIONS.items():
        if name in item:
            if not isinstance(item[name], dict):
                raise _bad(index, f"{name} must be an object.")
            if targets and target not in targets:
                raise PresentationNotAccepted(
                    f"contentItems[{index}]: the platform accepts only {', '.join(targets)} here."
                )
    if "lineItem" in item and not context["acceptLineItem"]:
        raise _bad(index, "the platform does not accept line items here.")
    return item


def check_items(items: Any, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The app's content items, each checked against the request's settings. An empty list is
    a valid answer (the person chose nothing; the platform closes its dialog)."""
    if not isinstance(items, list):
        raise InvalidContentItems()
    if len(items) > MAX_ITEMS:
        raise InvalidContentItems(f"Send at most {MAX_ITEMS} content items.")
    if len(items) > 1 and not context["acceptMultiple"]:
        raise MultipleItemsNotAccepted()
    return [_check_item(item, i, context) for i, item in enumerate(items)]


def response_claims(
    context: Mapping[str, Any],
    items: list[dict[str, Any]],
    *,
    now: float,
    messages: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``LtiDeepLinkingResponse`` JWT's claims (LTI DL 2.0 section 4.5): from us (our
    client id as ``iss`` and ``azp``) to the platform (its issuer as ``aud``), for the same
    deployment, with the request's ``data`` echoed and a short ``exp``. ``messages`` may carry
    ``msg``, ``log``, ``errormsg`` and ``errorlog``."""
    issued = int(now)
    claims: dict[str, Any] = {
        "iss": context["clientId"],
        "azp": context["clientId"],
        "aud": context["issuer"],
        "iat": issued,
        "exp": issued + RESPONSE_TTL,
        "nonce": secrets.token_urlsafe(32),
        CLAIM + "deployment_id": context["deploymentId"],
        CLAIM + "message_type": DEEP_LINKING_RESPONSE,
        CLAIM + "version": "1.3.0",
        CONTENT_ITEMS: items,
    }
    if "data" in context:
        claims[DATA] = context["data"]
    names = {"msg": MSG, "log": LOG, "errormsg": ERRORMSG, "errorlog": ERRORLOG}
    for name, value in (messages or {}).items():
        claims[names[name]] = value
    return claims


def check_messages(fields: Mapping[str, Any]) -> dict[str, str]:
    """The optional ``msg``/``log``/``errormsg``/``errorlog`` strings of the app's request."""
    found: dict[str, str] = {}
    for name in ("msg", "log", "errormsg", "errorlog"):
        value = fields.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise InvalidContentItems(f"{name} must be a string of at most {MAX_TEXT} characters.")
        found[name] = value
    return found
