"""The stand-in's HTML: a course page that launches the tool in an iframe, auto-submitting
forms, and an index. Plain, escaped, no external assets."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from .config import Course, DevCanvasConfig, User

__all__ = [
    "STORAGE_FRAME",
    "STORAGE_STYLES",
    "autopost",
    "avatar_svg",
    "course_page",
    "deep_linking_result",
    "index",
    "message_page",
    "registration_commands",
    "storage_frame",
    "storage_target",
]

BANNER = "dev-canvas: a Canvas stand-in for development and tests. It is not Canvas."
#: Canvas' ``lti_storage_target``: the name (and path) of the hidden frame that keeps data for
#: tools (LTI Platform Storage), so that a tool whose cookies are blocked in the iframe can still
#: bind a launch to the browser.
STORAGE_FRAME = "post_message_forwarding"

#: The platform styles a course page can play (``?storage=``): ``canvas`` (Canvas today: bare
#: subjects, storage in the named forwarding frame), ``ims`` (the ``org.imsglobal.``-prefixed
#: subjects, answered by the parent window itself, as Brightspace and Moodle do), ``off`` (Canvas
#: with Platform Storage turned off: no ``lti_storage_target``, no storage offered) and ``silent``
#: (a platform that names ``_parent`` as the target but never answers a message).
STORAGE_STYLES = ("canvas", "ims", "off", "silent")

# The LTI Client Side postMessages a platform answers, configured per window (see _listener):
# lti.capabilities lists what is answered and where; lti.put_data/lti.get_data keep values per
# sender origin (Canvas keys them by the tool's origin: another origin reads nothing), in this
# window's memory, for as long as the course page is open. get_data of an unknown key answers
# ``value: null`` as Canvas does; an unknown subject, or a message without key or message_id,
# gets Canvas' ``error`` answer.
_PLATFORM_SCRIPT = """
(function (config) {
  "use strict";
  var PREFIX = "org.imsglobal.";
  var store = {};
  window.devCanvasStorage = store;
  window.addEventListener("message", function (event) {
    var m = event.data;
    if (!m || typeof m !== "object" || typeof m.subject !== "string" || !event.source) return;
    if (m.subject.slice(-9) === ".response") return;
    var prefixed = m.subject.indexOf(PREFIX) === 0;
    var bare = prefixed ? m.subject.slice(PREFIX.length) : m.subject;
    var reply = { subject: m.subject + ".response" };
    if (m.message_id) reply.message_id = m.message_id;
    function send(fields) {
      for (var k in fields) reply[k] = fields[k];
      event.source.postMessage(reply, event.origin);
    }
    function error(code, message) {
      send({ error: { code: code, message: message } });
    }
    if (config.ignore.indexOf(bare) >= 0) return;
    if (prefixed !== config.prefixed || config.answers.indexOf(bare) < 0) {
      return error("unsupported_subject", "Not answered here: " + m.subject);
    }
    if (bare === "lti.capabilities") return send({ supported_messages: config.supported });
    if (typeof m.key !== "string" || !m.key) return error("bad_request", "Missing required 'key' field");
    if (!m.message_id) return error("bad_request", "Missing required 'message_id' field");
    var slot = event.origin + "|" + m.key;
    if (bare === "lti.put_data") {
      if (m.value === null) delete store[slot];
      else if (typeof m.value !== "string") return error("bad_request", "'value' must be a string");
      else store[slot] = m.value;
      return send({ key: m.key, value: m.value });
    }
    send({ key: m.key, value: Object.prototype.hasOwnProperty.call(store, slot) ? store[slot] : null });
  });
})(%s);
"""


def _supported(style: str) -> list[dict[str, str]]:
    if style == "ims":
        return [
            {"subject": "org.imsglobal." + s} for s in ("lti.capabilities", "lti.put_data", "lti.get_data")
        ]
    if style == "off":
        return [{"subject": "lti.capabilities"}]
    return [
        {"subject": "lti.capabilities"},
        {"subject": "lti.get_data", "frame": STORAGE_FRAME},
        {"subject": "lti.put_data", "frame": STORAGE_FRAME},
    ]


def _listener(style: str, *, frame: bool = False) -> str:
    """The platform's message handler for the course page (``frame=False``) or the forwarding
    frame. Under ``canvas`` the course page answers only ``lti.capabilities`` and ignores storage
    messages: it stands for Canvas' main window on the course's own domain, which a message
    addressed to the OIDC origin never reaches; the frame (on that origin) keeps the data."""
    storage = ["lti.put_data", "lti.get_data"]
    if style == "silent":
        return ""
    if style == "canvas" and not frame:
        answers, ignore = ["lti.capabilities"], storage
    elif style == "off":
        answers, ignore = ["lti.capabilities"], []
    else:
        answers, ignore = ["lti.capabilities", *storage], []
    config = {
        "prefixed": style == "ims",
        "answers": answers,
        "ignore": ignore,
        "supported": _supported(style),
    }
    # json.dumps output is safe inside a script element once "<" is escaped.
    return "<script>" + _PLATFORM_SCRIPT % json.dumps(config).replace("<", "\\u003c") + "</script>"


def storage_target(style: str) -> str | None:
    """The ``lti_storage_target`` a login and launch carry under this style."""
    return {"canvas": STORAGE_FRAME, "ims": "_parent", "silent": "_parent"}.get(style)


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
    storage: str = "canvas",
) -> HTMLResponse:
    """The tool's form posts itself into the iframe once the platform's side of the messages is
    in place (the forwarding frame loaded, under ``canvas``), as a tool's first message may come
    at once."""
    base = f"/courses/{escape(course.id)}"

    def link(label: str, version: str, as_user: str) -> str:
        current = ' aria-current="page"' if version == lti and as_user == user.id else ""
        return f'<a href="{base}?lti={version}&amp;as={escape(as_user)}"{current}>{escape(label)}</a>'

    people = [config.user(i) for i in (*course.teachers, *course.students)]
    switch = "".join(link(f"{p.name} ({course.role_of(p.id)})", lti, p.id) for p in people if p is not None)
    forwarding = launch = ""
    submit = 'document.getElementById("tool_form").submit();'
    if lti == "1.3" and storage == "canvas":
        forwarding = (
            f'<iframe name="{STORAGE_FRAME}" id="{STORAGE_FRAME}" src="/{STORAGE_FRAME}" '
            'title="Platform storage" hidden></iframe>'
        )
        launch = (
            f'document.getElementById("{STORAGE_FRAME}")'
            f'.addEventListener("load", function () {{ {submit} }});'
        )
    else:
        launch = submit
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
    {forwarding}{_listener(storage) if lti == "1.3" else ""}
    <script>{launch}</script>
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
        f"<title>Platform storage</title></head><body>{_listener('canvas', frame=True)}</body></html>"
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
