"""``commons-session dev-canvas`` as a real process, for tests; and a reader for its forms.

Each stand-in gets its own consumer key and secret (registered on the server under test), so
tests isolate themselves as with ``canvas``; and many users, so that no two tests ask for a JWT
for the same person in the same second (Canvas would give them byte-identical tokens, and the
server refuses the second as a replay).
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import httpx

from commons_session.devcanvas.config import DevCanvasConfig, User, parse_config

from .conftest import Server, accept_terms, free_port, session_cookie

USERS = 24  # enough for every test of a module to have its own person


def config_text(consumer_key: str, secret: str, tool_url: str, *, admin: bool = False) -> str:
    """A configuration like the default one, with its own keys and ``USERS`` people: user 1
    teaches course 1, the others study in it, and the last is enrolled nowhere (and is the
    account admin if ``admin``)."""
    users = []
    for n in range(1, USERS + 1):
        users.append(
            f"""
[[users]]
id = "{n}"
name = "Person {n} Example"
given_name = "Person"
family_name = "{n} Example"
email = "person{n}@example.edu"
login_id = "person{n}"
lti_user_id = "{secrets.token_hex(20)}"
lti_id = "{secrets.token_hex(16)}"
token = "token-{n}-{secrets.token_hex(8)}"
"""
            + ("admin = true\n" if admin and n == USERS else "")
        )
    students = ", ".join(f'"{n}"' for n in range(2, USERS))
    return f"""
tool_url = "{tool_url}"

[account]
id = "1"
name = "Stand-in University"
guid = "{secrets.token_hex(20)}:canvas-lms"

[lti11]
consumer_key = "{consumer_key}"
shared_secret = "{secret}"

[lti13]
client_id = "{secrets.randbelow(10**13) + 10**13}"
deployment_id = "1:{secrets.token_hex(20)}"
{"".join(users)}
[[courses]]
id = "1"
name = "Biology 101"
course_code = "BIO101"
context_id = "{secrets.token_hex(20)}"
teachers = ["1"]
students = [{students}]
"""


@dataclass
class DevCanvas:
    """A running stand-in: its URL, the configuration it was given, and its output."""

    url: str
    config: DevCanvasConfig
    process: subprocess.Popen[bytes]
    log_path: Path
    _next: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    def output(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def teacher(self) -> User:
        return self.config.users[0]

    def outsider(self) -> User:
        """Enrolled in no course."""
        return self.config.users[-1]

    def fresh_user(self) -> User:
        """A student no other test of this stand-in has used."""
        n = next(self._next)
        assert n < USERS, "the stand-in has run out of unused people; raise USERS"
        return self.config.users[n - 1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_dev_canvas(
    tmp: Path, tool_url: str, *, text: str | None = None, public_host: str = "127.0.0.1"
) -> DevCanvas:
    """``public_host="localhost"`` puts the stand-in on another site than a tool on 127.0.0.1,
    so that the tool's iframe is cross-site, as under Canvas (it still listens on 127.0.0.1)."""
    port = free_port()
    url = f"http://{public_host}:{port}"
    key, secret = "dev-" + secrets.token_hex(6), secrets.token_urlsafe(12)
    text = text if text is not None else config_text(key, secret, tool_url)
    config_path = tmp / "dev-canvas.toml"
    config_path.write_text(text, "utf-8")
    config = parse_config(text, canvas_url=url, source=str(config_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    log_path = tmp / "dev-canvas.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commons_session",
                "dev-canvas",
                "--port",
                str(port),
                "--config",
                str(config_path),
                "--public-url",
                url,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    canvas = DevCanvas(url, config, process, log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return canvas
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            canvas.stop()
            raise RuntimeError(f"dev-canvas did not start:\n{log_path.read_text()}")
        time.sleep(0.05)


def register(server: Server, canvas: DevCanvas) -> None:
    """``institutions add`` for the stand-in's key and secret, on the server's database."""
    c = canvas.config
    server.run(
        server.stores.records.add_institution(c.consumer_key, c.account_name, c.shared_secret, time.time())
    )


# -- forms ----------------------------------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    target: str | None
    fields: list[tuple[str, str]]

    def value(self, name: str) -> str:
        found = [v for k, v in self.fields if k == name]
        assert len(found) == 1, f"{name!r} appears {len(found)} times in {self.fields}"
        return found[0]

    def names(self) -> set[str]:
        return {k for k, _ in self.fields}


class _FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.iframes: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(
                Form(a.get("action") or "", (a.get("method") or "get").lower(), a.get("target"), [])
            )
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].fields.append((a["name"] or "", a.get("value") or ""))
        elif tag == "iframe":
            self.iframes.append(a)


def read_page(html: str) -> tuple[list[Form], list[dict[str, str | None]]]:
    """The forms (with their inputs) and the iframes of a page, as a browser sees them."""
    reader = _FormReader()
    reader.feed(html)
    return reader.forms, reader.iframes


def only_form(html: str) -> Form:
    forms, _ = read_page(html)
    assert len(forms) == 1, html
    return forms[0]


def submit(form: Form, client: httpx.Client | None = None) -> httpx.Response:
    """Post the form as a browser does (form-encoded, no redirects followed)."""
    assert form.method == "post"
    if client is not None:
        return client.post(form.action, data=dict(form.fields))
    return httpx.post(form.action, data=dict(form.fields))


def course_launch_form(canvas: DevCanvas, user: User, lti: str = "1.1", course: str = "1") -> Form:
    page = httpx.get(f"{canvas.url}/courses/{course}", params={"as": user.id, "lti": lti})
    assert page.status_code == 200, page.text
    return only_form(page.text)


def onboard_via_course_page(server: Server, canvas: DevCanvas, user: User) -> str:
    """Launch from the course page (LTI 1.1) and accept the terms. Returns the launch session id."""
    response = submit(course_launch_form(canvas, user))
    assert response.status_code == 303, response.text
    session_id = session_cookie(response)
    accept_terms(server, session_id)
    return session_id


def jwt_token(canvas: DevCanvas, user: User, *, course: str | None = None, **params: str) -> httpx.Response:
    context = f"courses/{course}" if course else "accounts/self"
    params.setdefault("tool_launch_url", canvas.config.launch_url)
    return httpx.get(
        f"{canvas.url}/api/lti/{context}/jwt_token",
        params=params,
        headers={"Authorization": f"Bearer {user.token}"},
    )
