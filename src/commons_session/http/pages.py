"""The two HTML pages a person sees after a launch: the terms of service and the home page.

Plain server-rendered HTML with no script: it works inside Canvas' iframe, needs no build step,
and every value is escaped.

Only when the browser drops our cookies (Canvas' cross-site iframe) do pages carry a script: a
static file from ``/static/`` (never inline), allowed by a CSP of ``script-src 'self'``. It trades
the launch's one-time ``code`` for the session id and then talks to the API with
``x-session-id`` (``session.js``), or carries an LTI 1.3 state through LTI Platform Storage
(``lti13.js``). See docs/lti13.md.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from html import escape
from typing import Any

from starlette.responses import HTMLResponse, Response

from ..domain.terms import Terms

__all__ = [
    "allow_framing",
    "deep_linking_post",
    "exchange_shell",
    "hidden",
    "home",
    "lti_storage_launch",
    "lti_storage_login",
    "signed_out",
    "state_cookie_missing",
    "terms",
    "unframed_page",
]

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'self'; base-uri 'none'"
)
# Until the route names the LMS origins (``http.framing``), only we may frame a page.
_FRAME_SELF = "frame-ancestors 'self'"
# Pages that need a script load it from /static/ (no inline script) and may call our own API.
_CSP_WITH_SCRIPT = _CSP + "; script-src 'self'; connect-src 'self'"

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
.terms { border:1px solid var(--line); border-radius:6px; padding:.25rem 1.25rem;
         max-height: 22rem; overflow:auto; background:#fbfcfd; }
.terms p, .terms li { margin: .75rem 0; max-width: 38rem; }
.terms ol, .terms ul { padding-left: 1.5rem; }
.terms.plain { white-space: pre-wrap; padding: 1rem; }
h1[tabindex="-1"]:focus { outline: none; }
dl { display:grid; grid-template-columns: max-content 1fr; gap:.35rem 1rem; margin:1rem 0; }
dt { color: var(--muted); } dd { margin:0; }
.who { display:flex; gap:1rem; align-items:center; }
.who img { width:56px; height:56px; border-radius:50%; border:1px solid var(--line); }
button { font: inherit; padding:.55rem 1.1rem; border-radius:6px; cursor:pointer;
         border:1px solid var(--accent); background: var(--accent); color:#fff; }
button.secondary { background:#fff; color: var(--accent); }
button:focus-visible, a:focus-visible { outline: 3px solid #f0b429; outline-offset: 2px; }
.note { color: var(--muted); font-size: .95rem; }
code { white-space: nowrap; }
.ok { color: #116149; font-weight: 600; }
.error { color: #9b1c1c; }
a.button { display:inline-block; text-decoration:none; font: inherit; padding:.55rem 1.1rem;
           border-radius:6px; border:1px solid var(--accent); background: var(--accent); color:#fff; }
[hidden] { display: none !important; }
@media (max-width: 32rem) {  /* a narrow Canvas iframe */
  header { padding: .6rem 1rem; } main { margin: 1rem auto; padding: 0 .5rem; }
  .card { padding: 1rem; } h1 { font-size: 1.25rem; } .terms { padding: .1rem .9rem; }
  dl { grid-template-columns: 1fr; gap: 0; } dd { margin-bottom: .5rem; }
  .who img { width: 44px; height: 44px; }
}
"""


def _page(title: str, body: str, status: int = 200, *, script: str | None = None) -> HTMLResponse:
    tag = f'<script src="/static/{escape(script)}" defer></script>' if script else ""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · Commons</title><style>{_STYLE}</style>{tag}</head>"
        f'<body><header><strong>Commons</strong></header><main><div class="card">{body}'
        "</div></main></body></html>"
    )
    policy = (_CSP_WITH_SCRIPT if script else _CSP) + "; " + _FRAME_SELF
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": policy})


def unframed_page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A page no one may frame (the operator console: it is not for the LMS' iframe)."""
    response = _page(title, body, status)
    policy = response.headers["content-security-policy"]
    response.headers["content-security-policy"] = policy.replace(_FRAME_SELF, "frame-ancestors 'none'")
    return response


def allow_framing(response: Response, origins: list[str]) -> Response:
    """The page's CSP with ``frame-ancestors 'self'`` plus ``origins`` (each already reduced to
    ``scheme://host[:port]``, so nothing can end the directive)."""
    policy = response.headers["content-security-policy"]
    allowed = " ".join([_FRAME_SELF, *origins])
    response.headers["content-security-policy"] = policy.replace(_FRAME_SELF, allowed)
    return response


def _data(**values: str) -> str:
    """``data-*`` attributes: how a page hands values to its script without inline code."""
    return "".join(f' data-{name.replace("_", "-")}="{escape(value)}"' for name, value in values.items())


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'


_LIST_ITEM = re.compile(r"(?:(\d+)[.)]|[-*\u2022])\s+")


def terms_html(text: str) -> str:
    """The operator's plain-text terms as HTML: blank lines separate paragraphs, hard-wrapped
    lines are joined, and lines starting ``1.``, ``-`` or ``*`` become list items (continued by
    the lines below them). Everything is escaped; the words are the operator's, unchanged."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        paragraph: list[str] = []
        items: list[tuple[str | None, list[str]]] = []
        for line in block.splitlines():
            marker = _LIST_ITEM.match(line)
            if marker:
                items.append((marker.group(1), [line[marker.end() :].strip()]))
            elif items:
                items[-1][1].append(line.strip())
            else:
                paragraph.append(line.strip())
        if paragraph:
            out.append(f"<p>{escape(' '.join(paragraph))}</p>")
        if items:
            numbered = items[0][0] is not None
            lis = "".join(
                (f'<li value="{n}">' if numbered and n else "<li>") + escape(" ".join(words)) + "</li>"
                for n, words in items
            )
            out.append(f"<ol>{lis}</ol>" if numbered else f"<ul>{lis}</ul>")
    return "".join(out)


def _when(iso: str) -> str:
    """An ISO 8601 instant as people read it, in UTC (the page cannot know their time zone)."""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return escape(iso)
    shown = f"{moment.day} {moment:%B %Y}, {moment:%H:%M} UTC"
    return f'<time datetime="{escape(iso)}">{shown}</time>'


def signed_out() -> HTMLResponse:
    return _page(
        "Not signed in",
        "<h1>You are not signed in</h1><p>Open Commons from your Canvas course or account "
        'navigation to sign in.</p><p class="note">Developers: scripts create a session from a '
        "Canvas JWT with <code>POST /api/sessions</code>.</p>",
    )


def terms(current: Terms, *, accepted: bool | None, csrf_token: str | None) -> HTMLResponse:
    body = (
        f'<h1>Terms of service</h1><p class="note">Version {escape(current.version)}</p>'
        f'<div class="terms" tabindex="0" aria-label="Terms of service text">{terms_html(current.text)}</div>'
    )
    if accepted:
        body += '<p class="ok">You have accepted these terms.</p><p><a href="/">Continue to Commons</a></p>'
    elif csrf_token is not None:
        body += (
            '<form method="post" action="/terms">'
            + hidden("version", current.version)
            + hidden("csrf_token", csrf_token)
            + '<p><button type="submit">I accept these terms</button></p></form>'
        )
    else:
        body += '<p class="note">Launch Commons from Canvas to accept these terms.</p>'
    if csrf_token is not None:
        # Every page of a signed-in person offers a way out (ASVS 7.4.4).
        body += (
            '<form method="post" action="/logout">'
            + hidden("csrf_token", csrf_token)
            + '<p><button class="secondary" type="submit">Log out</button></p></form>'
        )
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
    ]
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows)
    details += f"<dt>Session expires</dt><dd>{_when(str(contents.get('expires') or ''))}</dd>"
    terms_note = (
        ""
        if accepted
        else '<p><a href="/terms">Review and accept the terms of service</a> '
        "before creating sessions from Canvas JWTs.</p>"
    )
    body = (
        f'<div class="who">{picture}<div><h1>Signed in as {escape(name)}</h1></div></div>'
        f"<dl>{details}</dl>{terms_note}"
        + _deep_linking_picker(contents.get("deepLinking"), csrf_token)
        + '<form method="post" action="/logout">'
        + hidden("csrf_token", csrf_token)
        + '<button class="secondary" type="submit">Log out</button></form>'
    )
    return _page("Signed in", body)


# -- when the browser blocks our cookies (docs/lti13.md) ------------------------------------------


def exchange_shell(current: Terms, *, landing: str) -> HTMLResponse:
    """The terms or home page for a browser whose session cookie did not come back after a
    launch: its script trades the ``code`` in the address for the session id, then shows the
    terms (with an accept button) or who is signed in, talking to the API with ``x-session-id``."""
    body = (
        f'<div id="app"{_data(landing=landing)}>'
        '<section data-view="loading"><h1>Signing you in…</h1>'
        '<p class="note" role="status">One moment while Commons finishes signing you in.</p>'
        "<noscript><p>Your browser blocks cookies inside Canvas, so Commons needs JavaScript here. "
        "Enable JavaScript, or open Commons in a new window from Canvas.</p></noscript></section>"
        '<section data-view="terms" hidden><h1>Terms of service</h1>'
        f'<p class="note">Version <span data-slot="version">{escape(current.version)}</span></p>'
        '<div class="terms" tabindex="0" aria-label="Terms of service text" data-slot="text">'
        f"{terms_html(current.text)}</div>"
        '<p><button type="button" data-action="accept">I accept these terms</button></p></section>'
        '<section data-view="home" hidden><div class="who"><img data-slot="avatar" alt="" hidden>'
        '<div><h1>Signed in as <span data-slot="name"></span></h1></div></div><dl>'
        '<dt>Institution</dt><dd data-slot="account"></dd><dt>Roles</dt><dd data-slot="roles"></dd>'
        '<dt>Canvas user id</dt><dd data-slot="canvas-user"></dd>'
        '<dt>Session expires</dt><dd data-slot="expires"></dd></dl>'
        '<button class="secondary" type="button" data-action="logout">Log out</button></section>'
        '<section data-view="signed-out" hidden><h1>You are signed out</h1>'
        "<p>Open Commons from your Canvas course or account navigation to sign in again.</p></section>"
        '<section data-view="error" hidden><h1>Could not sign you in</h1>'
        '<p class="error" role="alert" data-slot="error"></p>'
        "<p>Open Commons again from Canvas; if this keeps happening, open it in a new window.</p>"
        "</section></div>"
    )
    return _page("Signing in", body, script="session.js")


def _relaunch_link(relaunch_url: str) -> str:
    return (
        f'<p><a class="button" href="{escape(relaunch_url)}" target="_blank" rel="noopener">'
        "Open Commons in a new window</a></p>"
    )


def lti_storage_login(
    *, redirect_url: str, origin: str, target: str, state: str, nonce: str, binding: str
) -> HTMLResponse:
    """LTI 1.3 login when the platform offers Platform Storage (``lti_storage_target``): the
    script stores the browser binding and the nonce with the platform (``lti.put_data``), then
    goes on to the platform's authorization endpoint. The state cookie is set as well, for
    browsers that keep it."""
    body = (
        f'<div id="lti"{_data(mode="login", origin=origin, target=target, state=state, nonce=nonce)}'
        f"{_data(binding=binding, redirect=redirect_url)}><h1>Opening Commons…</h1>"
        '<p class="note" role="status">Connecting to Canvas.</p>'
        f'<noscript><p><a href="{escape(redirect_url)}">Continue</a></p></noscript></div>'
    )
    return _page("Opening Commons", body, script="lti13.js")


def lti_storage_launch(
    *, id_token: str, state: str, nonce: str, origin: str, target: str, relaunch_url: str
) -> HTMLResponse:
    """LTI 1.3 launch without the state cookie, on a platform with Platform Storage: the script
    asks the platform for this browser's binding and the login's nonce (``lti.get_data``) and
    completes the launch at ``/api/lti/launch/confirm``; if the platform has none, it offers a
    new window."""
    body = (
        f'<div id="lti"{_data(mode="launch", origin=origin, target=target, state=state, nonce=nonce)}'
        f"{_data(id_token=id_token)}>"
        '<section data-view="loading"><h1>Signing you in…</h1>'
        '<p class="note" role="status">Checking this launch with Canvas.</p>'
        "<noscript><p>Your browser blocks cookies inside Canvas, so Commons needs JavaScript here, "
        "or a new window.</p>" + _relaunch_link(relaunch_url) + "</noscript></section>"
        '<section data-view="error" hidden><h1>Could not sign you in here</h1>'
        '<p class="error" role="alert" data-slot="error"></p>'
        + _relaunch_link(relaunch_url)
        + "</section></div>"
    )
    return _page("Signing in", body, script="lti13.js")


def launch_error(status: int, code: str, detail: str) -> HTMLResponse:
    """A refused launch, for the person in the LMS' frame (a program gets the problem+json)."""
    body = (
        "<h1>Commons could not open</h1>"
        f'<p class="error" role="alert">{escape(detail)}</p>'
        "<p>Try opening Commons from Canvas again. If it keeps happening, tell your Canvas "
        f"administrator this code: <code>{escape(code)}</code> (HTTP {status:d}).</p>"
    )
    return _page("Could not open", body, status=status)


def state_cookie_missing(detail: str, relaunch_url: str | None) -> HTMLResponse:
    """401 ``state_cookie_missing`` for a browser: the launch cannot be tied to this browser
    inside the iframe, but a top-level window can (first-party cookies)."""
    body = (
        "<h1>Open Commons in a new window</h1>"
        f'<p>{escape(detail)}</p><p class="note">Error code: <code>state_cookie_missing</code></p>'
        + (_relaunch_link(relaunch_url) if relaunch_url else "")
    )
    return _page("Open in a new window", body, status=401)


# -- LTI Deep Linking (docs/lti13.md#deep-linking) ------------------------------------------------


def _deep_linking_picker(context: Any, csrf_token: str) -> str:
    """On a Deep Linking session's home page: place Commons in the course, as the one content
    item the platform accepts (a resource link, else nothing to offer)."""
    if not isinstance(context, dict):
        return ""
    accepted = context.get("acceptTypes") or []
    if "ltiResourceLink" not in accepted:
        return (
            '<p class="note" data-deep-linking="none">The platform asked for content Commons does not offer '
            f"({escape(', '.join(map(str, accepted)))}).</p>"
        )
    item = json.dumps([{"type": "ltiResourceLink", "title": "Commons"}], separators=(",", ":"))
    return (
        '<form method="post" action="/api/lti/deep-linking/response" data-deep-linking="picker">'
        + hidden("csrf_token", csrf_token)
        + hidden("contentItems", item)
        + "<p>Canvas asked you to choose a resource to place.</p>"
        + '<p><button type="submit">Place Commons here</button></p></form>'
    )


def deep_linking_post(return_url: str, token: str) -> HTMLResponse:
    """The form that posts the signed Deep Linking response to the platform; the static
    script submits it on load, the button does without script."""
    body = (
        "<h1>Returning to Canvas…</h1>"
        f'<form id="deep-linking" method="post" action="{escape(return_url)}">'
        + hidden("JWT", token)
        + '<p class="note">If nothing happens, continue by hand.</p>'
        + '<p><button type="submit">Continue</button></p></form>'
    )
    response = _page("Returning to Canvas", body, script="deeplinking.js")
    return response


# -- LTI Dynamic Registration ---------------------------------------------------------------------


def registration_complete(*, issuer: str, client_id: str, deployment_ids: tuple[str, ...]) -> HTMLResponse:
    """Dynamic Registration done: ``register.js`` posts ``org.imsglobal.lti.close`` to the
    platform's window (opener or parent), which closes this page. The platform stays pending
    until it is bound to a school's LTI 1.1 key."""
    deployments = ", ".join(deployment_ids) or "made by Canvas when the key is installed"
    body = (
        '<div id="registration" data-subject="org.imsglobal.lti.close">'
        "<h1>Commons is registered</h1>"
        '<p class="ok" role="status">The platform accepted the registration.</p>'
        f"<dl><dt>Issuer</dt><dd><code>{escape(issuer)}</code></dd>"
        f"<dt>Client id</dt><dd><code>{escape(client_id)}</code></dd>"
        f"<dt>Deployment</dt><dd>{escape(deployments)}</dd></dl>"
        "<p>Launches start working once this platform is linked to your school's LTI 1.1 key: "
        "the first launch does that by itself if Canvas sends the LTI 1.1 migration claim, or the "
        "Commons operator runs <code>commons-session institutions bind-lti13</code>.</p>"
        '<p class="note">You can close this window.</p></div>'
    )
    return _page("Registered", body, script="register.js")


def registration_failed(code: str, detail: str, status: int) -> HTMLResponse:
    """Dynamic Registration refused or failed; nothing was stored."""
    body = (
        "<h1>Commons could not be registered</h1>"
        f'<p class="error" role="alert">{escape(detail)}</p>'
        "<p>Nothing was saved. Start the registration again from Canvas (Admin &gt; Developer Keys "
        "&gt; + LTI Registration); if it fails again, send the code below to the Commons operator.</p>"
        f'<p class="note">Error code: <code>{escape(code)}</code></p>'
    )
    return _page("Registration failed", body, status=status)


def registration_pending(detail: str) -> HTMLResponse:
    """403 ``registration_pending`` for a browser: the platform is registered, not yet bound."""
    body = (
        "<h1>Commons is not yet set up for this Canvas</h1>"
        f"<p>{escape(detail)}</p>"
        '<p class="note">Error code: <code>registration_pending</code></p>'
    )
    return _page("Not yet set up", body, status=403)
