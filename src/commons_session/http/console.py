"""The operator console's pages (``http/admin.py`` serves them): server-rendered HTML, no script,
every value escaped, every form carrying the CSRF token."""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from .pages import hidden, unframed_page

__all__ = ["dashboard", "refused", "sign_in"]

_NONE = "-"


def sign_in(*, error: str | None = None, status: int = 200) -> HTMLResponse:
    body = (
        "<h1>Operator console</h1>"
        + (f'<p class="error" role="alert">{escape(error)}</p>' if error else "")
        + '<form method="post" action="/admin/login"><label>Operator token '
        '<input type="password" name="token" autocomplete="current-password" required></label>'
        '<button type="submit">Sign in</button></form>'
        '<p class="note">The token is COMMONS_SESSION_OPERATOR_TOKEN. A console session lasts an hour.</p>'
    )
    return unframed_page("Operator console", body, status)


def refused(message: str, code: str, status: int) -> HTMLResponse:
    """The console refused before any form could help (it is off, or the request cross-site)."""
    reason = f"{escape(message)} (<code>{escape(code)}</code>)"
    body = f'<h1>Operator console</h1><p class="error" role="alert">{reason}</p>'
    return unframed_page("Operator console", body, status)


def _form(action: str, csrf: str, fields: list[str], label: str, *, danger: bool = False) -> str:
    css = ' class="danger"' if danger else ""
    return (
        f'<form method="post" action="/admin/action">{hidden("action", action)}{hidden("csrf_token", csrf)}'
        f'{"".join(fields)}<button type="submit"{css}>{escape(label)}</button></form>'
    )


def _input(name: str, label: str, *, kind: str = "text") -> str:
    return f'<label>{escape(label)} <input type="{kind}" name="{name}"></label> '


def _cell(value: object) -> str:
    return f"<td>{escape(str(value)) if value not in (None, '') else _NONE}</td>"


def _institution_row(item: dict[str, Any], csrf: str) -> str:
    key = hidden("consumer_key", item["consumer_key"])
    platforms = ", ".join(f"{r['issuer']} ({r['client_id']})" for r in item["lti13"])
    if item["rotating"]:
        rotation = _form("finish_rotation", csrf, [key], "Finish rotation")
    else:
        rotation = _form(
            "rotate_secret", csrf, [key, _input("secret", "New secret", kind="password")], "Rotate"
        )
    remove = _form("remove_institution", csrf, [key], "Remove", danger=True)
    if item["disabled"]:
        remove = _form("enable_institution", csrf, [key], "Enable") + remove
    else:
        remove = _form("disable_institution", csrf, [key], "Disable", danger=True) + remove
    secrets = "rotating (two verify)" if item["rotating"] else "one"
    secrets += ", disabled" if item["disabled"] else ""
    cells = [f"<td><code>{escape(item['consumer_key'])}</code></td>", _cell(item["name"]), _cell(secrets)]
    return f"<tr>{''.join(cells)}{_cell(platforms)}<td>{rotation}{remove}</td></tr>"


def _pending_row(item: dict[str, Any], csrf: str) -> str:
    fields = [
        hidden("issuer", item["issuer"]),
        hidden("client_id", item["client_id"]),
        _input("consumer_key", "to institution (consumer key)"),
    ]
    bind = _form("bind_platform", csrf, fields, "Bind")
    deployments = ", ".join(item["deployment_ids"]) or "(any)"
    cells = [_cell(item["issuer"]), _cell(item["client_id"]), _cell(deployments)]
    return f"<tr>{''.join(cells)}<td>{bind}</td></tr>"


def _audit_row(event: dict[str, Any]) -> str:
    names = ("at", "event", "reason", "user_id", "institution", "session")
    return "<tr>" + "".join(_cell(event[name]) for name in names) + "</tr>"


def _table(headings: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    body = "".join(rows) or f'<tr><td colspan="{len(headings)}">None.</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def dashboard(
    *,
    institutions: list[dict[str, Any]],
    audit: list[dict[str, Any]],
    csrf: str,
    pending: list[dict[str, Any]] | None = None,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    sessions: str | None = None,
) -> HTMLResponse:
    user = _input("user_id", "User id")
    who = [user, _input("consumer_key", "or institution (consumer key)")]
    new = [
        _input("consumer_key", "Consumer key"),
        _input("name", "Name"),
        _input("secret", "Secret", kind="password"),
    ]
    rows = [_institution_row(i, csrf) for i in institutions]
    parts = [
        "<h1>Operator console</h1>",
        f'<p class="note" role="status">{escape(notice)}</p>' if notice else "",
        f'<p class="error" role="alert">{escape(error)}</p>' if error else "",
        "<h2>Institutions</h2>",
        _table(["Consumer key", "Name", "Secret", "LTI 1.3", ""], rows),
        _form("add_institution", csrf, new, "Add institution"),
        "<h2>LTI 1.3 platforms waiting to be bound</h2>",
        '<p class="note">They registered themselves (Dynamic Registration); launches from them are '
        "refused until bound to the institution whose LTI 1.1 key signs its Canvas JWTs.</p>",
        _table(["Issuer", "Client id", "Deployments", ""], [_pending_row(p, csrf) for p in pending or []]),
        "<h2>Users</h2>",
        _form("disable_user", csrf, [user], "Disable (ends their sessions)", danger=True),
        _form("enable_user", csrf, [user], "Enable"),
        "<h2>Sessions</h2>",
        f'<p class="note" role="status">{escape(sessions)}</p>' if sessions else "",
        _form("count_sessions", csrf, who, "Count live sessions"),
        _form("revoke_sessions", csrf, who, "Revoke them", danger=True),
        "<h2>Recent audit events</h2>",
        _table(["At", "Event", "Reason", "User", "Institution", "Session"], [_audit_row(e) for e in audit]),
        f'<form method="post" action="/admin/logout">{hidden("csrf_token", csrf)}'
        '<button type="submit">Sign out</button></form>',
    ]
    return unframed_page("Operator console", "".join(parts), status)
