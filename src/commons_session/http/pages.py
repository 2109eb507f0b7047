"""The two HTML pages a person sees after a launch: the terms of service and the home page.

Plain server-rendered HTML with no script: it works inside Canvas' iframe, needs no build step,
and every value is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from ..domain.terms import Terms

__all__ = ["home", "signed_out", "terms"]

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'self'; base-uri 'none'"
)

_STYLE = """
:root { color-scheme: light; --ink:#1f2933; --muted:#52606d; --line:#d9e2ec; --accent:#0b5cad; }
* { box-sizing: border-box; }
body { margin:0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f5f7fa; }
header { background: #fff; border-bottom: 1px solid var(--line); padding: .75rem 1.5rem; }
header strong { color: var(--accent); letter-spacing: .02em; }
main { max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:1.5rem 1.75rem; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; }
.terms { white-space: pre-wrap; border:1px solid var(--line); border-radius:6px; padding:1rem;
         max-height: 22rem; overflow:auto; background:#fbfcfd; }
dl { display:grid; grid-template-columns: max-content 1fr; gap:.35rem 1rem; margin:1rem 0; }
dt { color: var(--muted); } dd { margin:0; }
.who { display:flex; gap:1rem; align-items:center; }
.who img { width:56px; height:56px; border-radius:50%; border:1px solid var(--line); }
button { font: inherit; padding:.55rem 1.1rem; border-radius:6px; cursor:pointer;
         border:1px solid var(--accent); background: var(--accent); color:#fff; }
button.secondary { background:#fff; color: var(--accent); }
button:focus-visible, a:focus-visible { outline: 3px solid #f0b429; outline-offset: 2px; }
.note { color: var(--muted); font-size: .95rem; }
.ok { color: #116149; font-weight: 600; }
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · Commons</title><style>{_STYLE}</style></head>"
        f'<body><header><strong>Commons</strong></header><main><div class="card">{body}'
        "</div></main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": _CSP})


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'


def signed_out() -> HTMLResponse:
    return _page(
        "Not signed in",
        "<h1>You are not signed in</h1><p>Open Commons from your Canvas course or account "
        "navigation to sign in. Scripts can create a session with a Canvas JWT at "
        "<code>POST /api/sessions</code>.</p>",
    )


def terms(current: Terms, *, accepted: bool | None, csrf_token: str | None) -> HTMLResponse:
    body = (
        f'<h1>Terms of service</h1><p class="note">Version {escape(current.version)}</p>'
        f'<div class="terms" tabindex="0" aria-label="Terms of service text">{escape(current.text)}</div>'
    )
    if accepted:
        body += '<p class="ok">You have accepted these terms.</p><p><a href="/">Continue to Commons</a></p>'
    elif csrf_token is not None:
        body += (
            '<form method="post" action="/terms">'
            + _hidden("version", current.version)
            + _hidden("csrf_token", csrf_token)
            + '<p><button type="submit">I accept these terms</button></p></form>'
        )
    else:
        body += '<p class="note">Launch Commons from Canvas to accept these terms.</p>'
    return _page("Terms of service", body)


def home(contents: dict[str, Any], *, accepted: bool, csrf_token: str) -> HTMLResponse:
    name = contents.get("userFullName") or "Canvas user"
    avatar = contents.get("userAvatarUrl")
    picture = f'<img src="{escape(avatar)}" alt="">' if avatar else ""
    roles = ", ".join(contents.get("roles") or []) or "none"
    rows = [
        ("Institution", contents.get("accountName") or ""),
        ("Roles", roles),
        ("Canvas user id", contents.get("canvasUserId") or "unknown"),
        ("Session expires", contents.get("expires") or ""),
    ]
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows)
    terms_note = (
        ""
        if accepted
        else '<p><a href="/terms">Review and accept the terms of service</a> '
        "before creating sessions from Canvas JWTs.</p>"
    )
    body = (
        f'<div class="who">{picture}<div><h1>Signed in as {escape(name)}</h1></div></div>'
        f"<dl>{details}</dl>{terms_note}"
        '<form method="post" action="/logout">'
        + _hidden("csrf_token", csrf_token)
        + '<button class="secondary" type="submit">Log out</button></form>'
    )
    return _page("Signed in", body)
