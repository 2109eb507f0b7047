"""The stand-in's HTML: a course page that launches the tool in an iframe, auto-submitting
forms, and an index. Plain, escaped, no external assets."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from .config import Course, DevCanvasConfig, User

__all__ = [
    "STORAGE_FRAME",
    "autopost",
    "avatar_svg",
    "course_page",
    "deep_linking_result",
    "index",
    "message_page",
    "registration_commands",
    "storage_frame",
]

BANNER = "dev-canvas: a Canvas stand-in for development and tests. It is not Canvas."
#: Canvas' ``lti_storage_target``: the name (and path) of the hidden frame that keeps data for
#: tools (LTI Platform Storage), so that a tool whose cookies are blocked in the iframe can still
#: bind a launch to the browser.
STORAGE_FRAME = "post_message_forwarding"

# The LTI Client Side postMessages a platform answers: lti.capabilities, lti.put_data and
# lti.get_data (also with the "org.imsglobal." prefix). Values are kept per sender origin, in
# this frame's memory, which lives as long as the course page.
_STORAGE_SCRIPT = """
(function () {
  "use strict";
  var store = {};
  var supported = ["lti.capabilities", "lti.put_data", "lti.get_data"];
  window.addEventListener("message", function (event) {
    var m = event.data;
    if (!m || typeof m !== "object" || typeof m.subject !== "string" || !event.source) return;
    var subject = m.subject.replace(/^org\\.imsglobal\\./, "");
    var reply = { subject: m.subject + ".response", message_id: m.message_id };
    var slot = event.origin + " " + m.key;
    if (subject === "lti.capabilities") {
      reply.supported_messages = supported.map(function (s) { return { subject: s }; });
    } else if (subject === "lti.put_data" && typeof m.key === "string") {
      store[slot] = m.value;
      reply.key = m.key;
      reply.value = m.value;
    } else if (subject === "lti.get_data" && typeof m.key === "string") {
      reply.key = m.key;
      if (Object.prototype.hasOwnProperty.call(store, slot)) reply.value = store[slot];
      else reply.error = { code: "bad_request", message: "No value is stored under that key." };
    } else if (m.subject.slice(-9) === ".response") {
      return;
    } else {
      reply.error = { code: "unsupported_subject", message: "Not answered here: " + m.subject };
    }
    event.source.postMessage(reply, event.origin);
  });
})();
"""

_STYLE = """
:root { color-scheme: light; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
body { margin: 0; color: #2d3b45; background: #fff; }
.banner { background: #fff3cd; color: #5c4400; padding: .5rem 1rem; font-size: .9rem;
  border-bottom: 1px solid #e0c97a; }
.layout { display: flex; min-height: calc(100vh - 2.5rem); }
.global { background: #394b58; color: #fff; width: 5.5rem; padding: 1rem .5rem; font-size: .8rem;
  text-align: center; }
.course-nav { width: 13rem; padding: 1.25rem 1rem; border-right: 1px solid #c7cdd1; }
.course-nav h2 { font-size: 1rem; margin: 0 0 1rem; }
.course-nav a { display: block; padding: .35rem .5rem; color: #0374b5; text-decoration: none;
  border-left: 3px solid transparent; }
.course-nav a[aria-current="page"] { border-left-color: #2d3b45; color: #2d3b45; font-weight: 600; }
.course-nav p { font-size: .85rem; margin: 1.5rem 0 .25rem; color: #556572; }
main { flex: 1; padding: 1.25rem 1.5rem; display: flex; flex-direction: column; }
main h1 { font-size: 1.4rem; margin: 0 0 1rem; font-weight: 400; }
iframe { flex: 1; width: 100%; min-height: 36rem; border: 1px solid #c7cdd1; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .85rem; }
pre { background: #f5f5f5; padding: .75rem; overflow-x: auto; white-space: pre-wrap; }
.content { max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; }
"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body><div class="banner" role="note">{escape(BANNER)}</div>{body}</body></html>'
    )
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def _hidden(fields: Iterable[tuple[str, str]]) -> str:
    return "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">' for name, value in fields
    )


def autopost(action: str, fields: Iterable[tuple[str, str]], *, title: str) -> HTMLResponse:
    """A form that posts itself on load, as Canvas answers the authorization request."""
    body = (
        f'<form id="autopost" method="post" action="{escape(action)}">{_hidden(fields)}'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        '<script>document.getElementById("autopost").submit();</script>'
    )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title></head><body>{body}</body></html>"
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def course_page(
    config: DevCanvasConfig,
    course: Course,
    user: User,
    *,
    lti: str,
    action: str,
    fields: list[tuple[str, str]],
) -> HTMLResponse:
    base = f"/courses/{escape(course.id)}"

    def link(label: str, version: str, as_user: str) -> str:
        current = ' aria-current="page"' if version == lti and as_user == user.id else ""
        return f'<a href="{base}?lti={version}&amp;as={escape(as_user)}"{current}>{escape(label)}</a>'

    people = [config.user(i) for i in (*course.teachers, *course.students)]
    switch = "".join(link(f"{p.name} ({course.role_of(p.id)})", lti, p.id) for p in people if p is not None)
    body = f"""
<div class="layout">
  <nav class="global" aria-label="Global">{escape(config.account_name)}</nav>
  <nav class="course-nav" aria-label="Course">
    <h2>{escape(course.name)}</h2>
    {link("Commons (LTI 1.1)", "1.1", user.id)}
    {link("Commons (LTI 1.3)", "1.3", user.id)}
    <a href="{base}?lti=1.3&amp;placement=link_selection&amp;as={escape(user.id)}"
      data-placement="link_selection">Place a resource (Deep Linking)</a>
    <p>Viewing as {escape(user.name)}. Switch to:</p>
    {switch}
  </nav>
  <main>
    <h1>Commons <small>(LTI {escape(lti)} launch)</small></h1>
    <form id="tool_form" method="post" action="{escape(action)}" target="tool_content"
      data-lti-version="{escape(lti)}">{_hidden(fields)}
      <noscript><button type="submit">Launch Commons</button></noscript>
    </form>
    <iframe name="tool_content" id="tool_content" title="Commons" data-lti-launch="true"
      allow="clipboard-write"></iframe>
    <iframe name="{STORAGE_FRAME}" src="/{STORAGE_FRAME}" title="Platform storage" hidden></iframe>
    <script>document.getElementById("tool_form").submit();</script>
  </main>
</div>"""
    return _page(f"{course.name}: Commons", body)


def registration_commands(config: DevCanvasConfig) -> list[str]:
    """What to run where the server runs, so that it knows this Canvas."""
    q = shlex.quote
    return [
        f"commons-session institutions add --consumer-key {q(config.consumer_key)} "
        f"--name {q(config.account_name)} --secret={q(config.shared_secret)}",
        f"commons-session institutions add-lti13 --consumer-key {q(config.consumer_key)} "
        f"--issuer {q(config.issuer)} --client-id {q(config.client_id)} "
        f"--deployment-id {q(config.deployment_id)} --jwks-url {q(config.jwks_url)} "
        f"--auth-url {q(config.auth_url)}",
    ]


def index(config: DevCanvasConfig) -> HTMLResponse:
    courses = "".join(
        f'<li><a href="/courses/{escape(c.id)}">{escape(c.name)}</a> (LTI 1.1) · '
        f'<a href="/courses/{escape(c.id)}?lti=1.3">LTI 1.3</a></li>'
        for c in config.courses
    )
    tokens = "".join(
        f"<li>{escape(u.name)} (user {escape(u.id)}): <code>{escape(u.token)}</code></li>"
        for u in config.users
    )
    commands = escape("\n".join(registration_commands(config)))
    body = f"""
<div class="content">
  <h1>dev-canvas</h1>
  <p>A local stand-in for the parts of Canvas that commons-session talks to, for development,
  demos and tests. Its keys and tokens are public: never register it with a server that real
  people use.</p>
  <h2>Register it with the tool</h2>
  <pre>{commands}</pre>
  <h2>Courses</h2><ul>{courses}</ul>
  <h2>Admin</h2><p><a href="/accounts/{escape(config.account_id)}/developer_keys">Developer Keys</a>:
  <em>+ LTI Registration</em> registers the tool by LTI Dynamic Registration.</p>
  <h2>API access tokens</h2><ul>{tokens}</ul>
  <p>Tool: <code>{escape(config.tool_url)}</code>. LTI 1.1 launch URL:
  <code>{escape(config.launch_url)}</code>.</p>
</div>"""
    return _page("dev-canvas", body)


def storage_frame() -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>Platform storage</title></head><body><script>{_STORAGE_SCRIPT}</script></body></html>"
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def message_page(title: str, text: str, status_code: int) -> HTMLResponse:
    return _page(
        title, f'<div class="content"><h1>{escape(title)}</h1><p>{escape(text)}</p></div>', status_code
    )


def avatar_svg(user: User) -> str:
    initials = "".join(part[:1] for part in (user.given_name, user.family_name)).upper()
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96" '
        f'role="img" aria-label="{escape(user.name)}"><circle cx="48" cy="48" r="48" fill="#394b58"/>'
        '<text x="48" y="58" font-family="sans-serif" font-size="32" fill="#fff" text-anchor="middle">'
        f"{escape(initials)}</text></svg>"
    )


def deep_linking_result(course: Course, claims: dict[str, Any], kid: str) -> HTMLResponse:
    """What the tool placed, once its answer verified: Canvas adds it to the course."""
    dl = "https://purl.imsglobal.org/spec/lti-dl/claim/"
    items = claims.get(dl + "content_items") or []
    rows = "".join(
        f"<tr><td>{escape(str(i.get('type', '')))}</td><td>{escape(str(i.get('title', '')))}</td>"
        f"<td>{escape(str(i.get('url', '')))}</td></tr>"
        for i in items
    )
    message = claims.get(dl + "msg") or claims.get(dl + "errormsg")
    note = f'<p data-slot="msg">{escape(str(message))}</p>' if message else ""
    body = f"""
<div class="content" data-deep-linking="verified">
  <h1>Placed in {escape(course.name)}</h1>
  <p>The tool's answer verified against its JWKS (key <code>{escape(kid)}</code>).</p>
  {note}
  <table><thead><tr><th>Type</th><th>Title</th><th>URL</th></tr></thead>
  <tbody>{rows or '<tr><td colspan="3">Nothing was chosen.</td></tr>'}</tbody></table>
</div>"""
    return _page(f"{course.name}: placed", body)
