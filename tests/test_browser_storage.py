"""LTI Platform Storage in a real browser: headless Chromium with third-party cookies blocked, the
tool on ``127.0.0.1`` inside dev-canvas' course page on ``localhost`` (another site, so the tool's
frame is third-party and keeps no cookie). dev-canvas plays the platform's side of the messages
in each style it knows (``?storage=``): Canvas (bare subjects, a named forwarding frame), the
``org.imsglobal.``-prefixed subjects answered by the parent (Brightspace, Moodle), no storage,
and a platform that never answers.

What is pinned: a launch reaches the session with no cookie of ours at all, in both subject
styles; the values sit in the platform's storage under the tool's origin and another origin
reads nothing; a replayed launch, a state from another browser's login, and a forged state are
refused without a session; without storage the person gets the new-window page.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from playwright.sync_api import Frame, Page, Playwright, Request, expect

from .conftest import ROOT, Server
from .devcanvas_fixture import DevCanvas, course_launch_form, only_form
from .test_browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, WAIT_MS, Sent, Visit, dev_canvas, playwright

__all__ = ["dev_canvas", "playwright"]  # the fixtures, shared with tests/test_browser.py

SCREENSHOTS = ROOT / "docs" / "screenshots"
DOCS_SCREENSHOTS = {"storage-off-new-window.png": "lti13-open-in-new-window.png"}
FRAME = "post_message_forwarding"

pytestmark = [
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"no Chromium at {CHROMIUM} (`make browser-deps` installs Debian's chromium)",
    ),
    pytest.mark.timeout(60),
    pytest.mark.flaky(reruns=2),  # see tests/test_browser.py: a stuck headless renderer
]

# Ask a platform window for a key as the page this runs in (so from that page's origin), the way
# a tool does: to the parent itself or to a named frame of the parent, and wait for the answer.
PROBE = """([target, subject, key]) => new Promise((resolve, reject) => {
  const parent = window.parent;
  const to = target === "_parent" ? parent : parent.frames[target];
  const id = "probe-" + Math.random().toString(16).slice(2);
  const timer = setTimeout(() => reject(new Error("no answer")), 5000);
  window.addEventListener("message", function listen(event) {
    // (a page asking itself also hears its own question)
    if (!event.data || event.data.message_id !== id || event.data.subject !== subject + ".response") return;
    clearTimeout(timer);
    window.removeEventListener("message", listen);
    resolve({origin: event.origin, reply: event.data});
  });
  to.postMessage({subject: subject, key: key, message_id: id}, "*");
})"""

# What a platform page does to launch a tool: post a form into the tool's frame.
POST_INTO_TOOL = """([action, fields]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  form.target = "tool_content";
  for (const [name, value] of fields) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
}"""

STYLES = {
    # style: (where the data lives, the subject prefix the platform answers)
    "canvas": (FRAME, ""),
    "ims": ("_parent", "org.imsglobal."),
}


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    yield directory
    if os.environ.get("COMMONS_SESSION_UPDATE_SCREENSHOTS"):
        for png in directory.glob("*.png"):
            if png.name in DOCS_SCREENSHOTS:
                shutil.copyfile(png, SCREENSHOTS / DOCS_SCREENSHOTS[png.name])


@contextmanager
def _visit(playwright: Playwright, tmp_path: Path, prefix: str) -> Iterator[Visit]:
    """As tests/test_browser.py's, with third-party cookies blocked (``cookie_controls_mode`` 1)
    and the tool's cross-site frame rendered in the page's own process: with a frame in a
    process of its own (site isolation), headless Chromium on this small machine now and then
    stopped answering Playwright while that frame navigated. Which process draws a frame
    changes neither cookies (blocked by site either way) nor postMessage."""
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    preferences = {"profile": {"cookie_controls_mode": 1}}
    (profile / "Default" / "Preferences").write_text(json.dumps(preferences), "utf-8")
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        args=[
            *CHROMIUM_ARGS,
            "--disable-site-isolation-trials",
            "--disable-features=IsolateOrigins,site-per-process",
        ],
        viewport=VIEWPORT,
        timeout=30_000,
    )
    context.set_default_timeout(WAIT_MS)
    page = context.pages[0] if context.pages else context.new_page()
    visit = Visit(context, page, tmp_path / "screenshots", prefix)
    context.on("request", lambda r: visit.requests.append(Sent(r.url, r.method, r.resource_type, r.headers)))
    try:
        yield visit
    finally:
        context.close()


def _course(canvas: DevCanvas, user_id: str, storage: str) -> str:
    return f"{canvas.url}/courses/1?lti=1.3&as={user_id}&storage={storage}"


def _tool(page: Page) -> Frame:
    frame = page.frame(name="tool_content")
    assert frame is not None
    return frame


def _store(page: Page, where: str) -> dict[str, str]:
    frame = page.main_frame if where == "_parent" else page.frame(name=where)
    assert frame is not None
    found: dict[str, str] = frame.evaluate("() => Object.assign({}, window.devCanvasStorage)")
    return found


def _probe(frame: Frame, where: str, subject: str, key: str) -> dict[str, Any]:
    answer: dict[str, Any] = frame.evaluate(PROBE, [where, subject, key])
    return answer


def _form_fields(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(request.post_data or "", keep_blank_values=True)


def _is_launch(server: Server, request: Request) -> bool:
    return request.url == f"{server.url}/api/lti/launch" and request.method == "POST"


def _launch_in_storage(server: Server, canvas: DevCanvas, page: Page, user_id: str, style: str) -> Launched:
    """Open the course page and wait until the tool's page has traded its code and shows the
    terms: the launch the platform posted, what the script confirmed, and the session."""
    confirm, exchange = f"{server.url}/api/lti/launch/confirm", f"{server.url}/api/sessions/exchange"
    with (
        page.expect_request(lambda r: _is_launch(server, r)) as launch,
        page.expect_response(lambda r: r.url == confirm) as confirmed,
        page.expect_response(lambda r: r.url == exchange) as traded,
    ):
        page.goto(_course(canvas, user_id, style))
    assert confirmed.value.status == 200, confirmed.value.text()
    assert traded.value.status == 200, traded.value.text()
    tool = page.frame_locator("iframe[name=tool_content]")
    expect(tool.get_by_role("heading", name="Terms of service")).to_be_visible()
    sent = confirmed.value.request.post_data_json
    assert isinstance(sent, dict)
    return Launched(launch.value, sent, traded.value.json()["sessionId"])


@dataclass(frozen=True)
class Launched:
    launch: Request
    confirmed: dict[str, str]
    session_id: str


def _no_cookies_of_ours(visit: Any, server: Server) -> None:
    assert visit.context.cookies(server.url) == [], visit.context.cookies()


@pytest.mark.parametrize("style", sorted(STYLES))
def test_launch_with_cookies_blocked_goes_through_platform_storage_in_either_subject_style(
    server: Server, dev_canvas: DevCanvas, playwright: Playwright, shots: Path, style: str
) -> None:
    user = dev_canvas.fresh_user()
    where, prefix = STYLES[style]
    with _visit(playwright, shots.parent, f"storage-{style}") as visit:
        page = visit.page
        launched = _launch_in_storage(server, dev_canvas, page, user.id, style)
        session_id = launched.session_id
        read = httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})
        assert read.status_code == 200 and read.json()["userFullName"] == user.name
        visit.screenshot("terms")

        # Not one cookie of the tool's was kept: the storage alone bound the launch.
        _no_cookies_of_ours(visit, server)
        sent = launched.confirmed
        assert set(sent) == {"id_token", "state", "binding", "nonce"}

        # The platform keeps both values under the tool's origin, where the capability said.
        stored = _store(page, where)
        assert stored == {
            f"{server.url}|state_{sent['state']}": sent["binding"],
            f"{server.url}|nonce_{sent['nonce']}": sent["nonce"],
        }
        if style == "canvas":  # the frame, not Canvas' main window, holds them
            assert _store(page, "_parent") == {}

        # The tool's origin reads its binding back; another origin (the platform's page) reads
        # nothing under the same key.
        subject, key = prefix + "lti.get_data", f"state_{sent['state']}"
        mine = _probe(_tool(page), where, subject, key)
        assert mine["reply"]["value"] == sent["binding"] and mine["origin"] == dev_canvas.url
        theirs = _probe(page.main_frame, where, subject, key)
        assert theirs["reply"]["key"] == key and theirs["reply"]["value"] is None

        # The other style's subjects are refused by this platform, with an error answer.
        other = ("" if prefix else "org.imsglobal.") + "lti.get_data"
        refused = _probe(_tool(page), where, other, key)
        assert refused["reply"]["error"]["code"] == "unsupported_subject"


def test_a_replayed_launch_is_refused_in_the_browser(
    server: Server, dev_canvas: DevCanvas, playwright: Playwright, shots: Path
) -> None:
    user = dev_canvas.fresh_user()
    with _visit(playwright, shots.parent, "storage-replay") as visit:
        page = visit.page
        launch = _launch_in_storage(server, dev_canvas, page, user.id, "canvas").launch
        fields = _form_fields(launch)
        assert {k for k, _ in fields} == {"id_token", "state", "lti_storage_target"}

        # The same id_token and state posted again into the frame: the storage still has the
        # binding, so it is the server's single-use nonce that refuses.
        confirm = f"{server.url}/api/lti/launch/confirm"
        with page.expect_response(lambda r: r.url == confirm) as refused:
            page.evaluate(POST_INTO_TOOL, [launch.url, fields])
        assert refused.value.status == 401
        assert refused.value.json()["code"] == "nonce_replayed"
        tool = page.frame_locator("iframe[name=tool_content]")
        expect(tool.get_by_role("heading", name="Could not sign you in here")).to_be_visible()
        expect(tool.get_by_role("alert")).to_contain_text("already been used")
        expect(tool.get_by_role("link", name="Open Commons in a new window")).to_be_visible()
        visit.screenshot("refused")
        _no_cookies_of_ours(visit, server)


def _foreign_launch(server: Server, canvas: DevCanvas) -> list[tuple[str, str]]:
    """A complete, valid launch of someone else's browser (an attacker's), run with httpx up to
    the platform's form post: its state is real, but this browser's storage never saw it."""
    attacker = canvas.fresh_user()
    initiation = course_launch_form(canvas, attacker, lti="1.3")
    login = httpx.post(initiation.action, data=dict(initiation.fields))
    assert login.status_code == 200, login.text
    redirect = login.text.split('data-redirect="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    post = only_form(httpx.get(redirect).text)
    assert post.action == f"{server.url}/api/lti/launch"
    return post.fields


def test_another_browsers_state_and_a_forged_state_are_refused_in_the_browser(
    server: Server, dev_canvas: DevCanvas, playwright: Playwright, shots: Path
) -> None:
    user = dev_canvas.fresh_user()
    with _visit(playwright, shots.parent, "storage-forged") as visit:
        page = visit.page
        launch = _launch_in_storage(server, dev_canvas, page, user.id, "canvas").launch
        tool = page.frame_locator("iframe[name=tool_content]")

        # Login CSRF: a valid launch begun in another browser, posted into this one's frame.
        # The platform's storage holds no binding for that state here, so nothing is confirmed.
        foreign = _foreign_launch(server, dev_canvas)
        confirmations: list[str] = []
        page.on("request", lambda r: confirmations.append(r.url) if r.url.endswith("/confirm") else None)
        with page.expect_response(lambda r: _is_launch(server, r.request)) as shown:
            page.evaluate(POST_INTO_TOOL, [launch.url, foreign])
        assert shown.value.status == 200
        expect(tool.get_by_role("alert")).to_contain_text("Canvas has no record of this launch.")
        expect(tool.get_by_role("link", name="Open Commons in a new window")).to_be_visible()
        assert confirmations == []

        # A made-up state with this browser's own id_token: refused before any page.
        forged = [(k, secrets.token_urlsafe(32) if k == "state" else v) for k, v in _form_fields(launch)]
        with page.expect_response(lambda r: _is_launch(server, r.request)) as refused:
            page.evaluate(POST_INTO_TOOL, [launch.url, forged])
        assert refused.value.status == 401
        assert "state_mismatch" in refused.value.text()  # the problem, or the page naming it
        assert confirmations == []
        _no_cookies_of_ours(visit, server)


@pytest.mark.parametrize("style", ["off", "silent"])
def test_without_platform_storage_the_launch_offers_a_new_window(
    server: Server, dev_canvas: DevCanvas, playwright: Playwright, shots: Path, style: str
) -> None:
    """``off``: no lti_storage_target, so the launch arrives with neither cookie nor storage and
    the server answers the new-window page. ``silent``: a target is named but nothing answers
    ``lti.capabilities``, so the page's script gives up after its timeout and offers the same."""
    user = dev_canvas.fresh_user()
    with _visit(playwright, shots.parent, f"storage-{style}") as visit:
        page = visit.page
        with page.expect_response(lambda r: _is_launch(server, r.request)) as launched:
            page.goto(_course(dev_canvas, user.id, style))
        tool = page.frame_locator("iframe[name=tool_content]")
        link = tool.get_by_role("link", name="Open Commons in a new window")
        expect(link).to_be_visible()
        href = link.get_attribute("href") or ""
        assert href.startswith("/api/lti/login?") and link.get_attribute("target") == "_blank"
        if style == "off":
            assert launched.value.status == 401
            expect(tool.get_by_role("heading", name="Open Commons in a new window")).to_be_visible()
            visit.screenshot("new-window")
        else:
            assert launched.value.status == 200
            expect(tool.get_by_role("alert")).to_contain_text("Canvas offers no storage for this launch.")
        assert not [u for u in visit.urls if u.endswith("/api/lti/launch/confirm")]
        assert not [u for u in visit.urls if u.endswith("/api/sessions/exchange")]
        _no_cookies_of_ours(visit, server)
