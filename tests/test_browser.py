"""The browser flow in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) launches the tool from the Canvas stand-in's course page, in its iframe, with LTI 1.1
and LTI 1.3; the person accepts the terms, sees who they are, and logs out.

The stand-in is on ``localhost`` and the tool on ``127.0.0.1``: two sites, so the tool's iframe
is cross-site as under Canvas, and a browser that blocks third-party cookies drops the tool's
cookies there. Then the launch must still work (the one-time exchange code; for LTI 1.3 also LTI
Platform Storage), and no URL may ever carry the session id.

Every page is screenshotted into the test's temporary directory; with
``COMMONS_SESSION_UPDATE_SCREENSHOTS=1`` (``make screenshots``) the ones the README shows are
also copied to docs/screenshots/. Playwright never downloads a browser here: it runs /usr/bin/chromium (or
``COMMONS_SESSION_CHROMIUM``). Without one the tests skip, which CI turns into a failure.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    BrowserContext,
    Frame,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from .conftest import ROOT, Server
from .devcanvas_fixture import DevCanvas, register, start_dev_canvas

CHROMIUM = os.environ.get("COMMONS_SESSION_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1024, "height": 720}
WAIT_MS = 15_000
SCREENSHOTS = ROOT / "docs" / "screenshots"
#: The screenshots kept in docs/screenshots/ (the pages look the same for both LTI versions, and
#: with or without cookies; that is the point of the blocked-cookie one).
DOCS_SCREENSHOTS = {
    "lti13-terms.png": "terms.png",
    "lti13-home.png": "home.png",
    "lti13-signed-out.png": "signed-out.png",
    "blocked-lti13-home.png": "home-third-party-cookies-blocked.png",
}

pytestmark = [
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"no Chromium at {CHROMIUM} (`make browser-deps` installs Debian's chromium)",
    ),
    # Headless Chromium on this 2-core machine occasionally stops answering Playwright mid-test
    # (seen about once in five full CI runs, never in isolation): bound each try and retry it in
    # a fresh browser, so one stuck renderer cannot fail the run. A real regression fails all tries.
    pytest.mark.timeout(60),
    pytest.mark.flaky(reruns=2),
]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_canvas(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCanvas]:
    """The stand-in on another site than the tool, registered for LTI 1.1 and LTI 1.3."""
    canvas = start_dev_canvas(tmp_path_factory.mktemp("dev-canvas"), server.url, public_host="localhost")
    try:
        register(server, canvas)
        line = next(x for x in canvas.output().splitlines() if "institutions add-lti13 " in x)
        done = server.cli(*shlex.split(line)[1:])
        assert done.returncode == 0, done.stderr
        yield canvas
    finally:
        canvas.stop()


@pytest.fixture
def playwright(dev_canvas: DevCanvas) -> Iterator[Playwright]:
    # Started after every fixture that needs asyncio.run: the sync API runs its own loop.
    with sync_playwright() as p:
        yield p


@dataclass(frozen=True)
class Sent:
    """A request as the browser sent it, from any frame."""

    url: str
    method: str
    resource_type: str
    headers: dict[str, str]


@dataclass
class Visit:
    """A browser context on the course page, recording every request URL of every frame."""

    context: BrowserContext
    page: Page
    shots: Path
    prefix: str
    requests: list[Sent] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.requests]

    @property
    def tool(self) -> Frame:
        frame = self.page.frame(name="tool_content")
        assert frame is not None
        return frame

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=self.shots / f"{self.prefix}-{name}.png")

    def cookie(self, origin: str, name: str) -> str | None:
        found = [c["value"] for c in self.context.cookies(origin) if c["name"] == name]
        return found[0] if found else None


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    yield directory
    if os.environ.get("COMMONS_SESSION_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for png in directory.glob("*.png"):
            if png.name in DOCS_SCREENSHOTS:
                shutil.copyfile(png, SCREENSHOTS / DOCS_SCREENSHOTS[png.name])


@contextmanager
def _visit(
    playwright: Playwright, tmp_path: Path, prefix: str, *, third_party_cookies: bool
) -> Iterator[Visit]:
    """A fresh Chromium profile whose third-party cookie setting is stated, not left to the
    defaults (which differ between builds, and between normal and incognito profiles):
    ``profile.cookie_controls_mode`` 0 allows them, 1 blocks them (Chrome's settings page:
    "Block third-party cookies")."""
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    preferences = {"profile": {"cookie_controls_mode": 0 if third_party_cookies else 1}}
    (profile / "Default" / "Preferences").write_text(json.dumps(preferences), "utf-8")
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        viewport=VIEWPORT,
        timeout=30_000,
    )
    context.set_default_timeout(WAIT_MS)
    page = context.pages[0] if context.pages else context.new_page()
    visit = Visit(context, page, tmp_path / "screenshots", prefix)
    context.on(
        "request",
        lambda r: visit.requests.append(Sent(r.url, r.method, r.resource_type, r.headers)),
    )
    try:
        yield visit
    finally:
        context.close()


# -- helpers --------------------------------------------------------------------------------------


def _course_page(canvas: DevCanvas, lti: str, user_id: str) -> str:
    return f"{canvas.url}/courses/1?lti={lti}&as={user_id}"


def _read(server: Server, session_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id})


def _accepted(server: Server, session_id: str) -> bool:
    terms = httpx.get(f"{server.url}/api/terms", headers={"x-session-id": session_id})
    assert terms.status_code == 200, terms.text
    accepted = terms.json()["accepted"]
    assert isinstance(accepted, bool)
    return accepted


def _shown(frame: Frame, label: str) -> str:
    """The value a ``<dl>`` of the tool's page shows next to ``label``."""
    return frame.locator(f"dt:text-is('{label}') + dd").inner_text().strip()


def _assert_shows(frame: Frame, contents: dict[str, Any]) -> None:
    heading = frame.get_by_role("heading", name=f"Signed in as {contents['userFullName']}")
    expect(heading).to_be_visible()
    assert _shown(frame, "Institution") == contents["accountName"]
    assert _shown(frame, "Canvas user id") == contents["canvasUserId"]
    assert _shown(frame, "Roles") == ", ".join(contents["roles"])


def _assert_no_url_carries(visit: Visit, server: Server, session_id: str) -> None:
    """No navigation, redirect, script or other request carries the session id in its URL, and
    no Referer does. The one exception is the API's own read, ``GET /api/sessions/{id}``, whose
    path is the id by definition (the reference API; the access log redacts it): the page's
    script calls it with ``fetch``, the id in ``x-session-id``, never as an address."""
    assert visit.requests, "the browser made no requests"
    read = f"{server.url}/api/sessions/{session_id}"
    for sent in visit.requests:
        assert session_id not in sent.headers.get("referer", ""), sent
        if session_id in sent.url:
            assert (sent.url, sent.method, sent.resource_type) == (read, "GET", "fetch"), sent
            assert sent.headers.get("x-session-id") == session_id, sent
            assert "cookie" not in sent.headers, sent


# -- with cookies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lti", ["1.1", "1.3"])
def test_launch_in_canvas_iframe_accepts_terms_shows_the_person_and_logs_out(
    server: Server, dev_canvas: DevCanvas, playwright: Playwright, shots: Path, lti: str
) -> None:
    user = dev_canvas.fresh_user()
    prefix = f"lti{lti.replace('.', '')}"
    with _visit(playwright, shots.parent, prefix, third_party_cookies=True) as visit:
        visit.page.goto(_course_page(dev_canvas, lti, user.id))
        tool = visit.page.frame_locator("iframe[name=tool_content]")
        expect(tool.get_by_role("heading", name="Terms of service")).to_be_visible()
        visit.screenshot("terms")
        # The browser kept the tool's cookies inside the cross-site iframe, and the pages used
        # them (the control for the blocked case below).
        session_id = visit.cookie(server.url, "session")
        assert session_id is not None, visit.context.cookies()
        assert f"{server.url}/api/sessions/exchange" not in visit.urls
        if lti == "1.3":
            assert visit.cookie(server.url + "/api/lti", "lti1p3_state") is not None
            assert f"{server.url}/api/lti/launch/confirm" not in visit.urls
        assert not _accepted(server, session_id)

        tool.get_by_role("button", name="I accept these terms").click()
        expect(tool.get_by_role("heading", name=f"Signed in as {user.name}")).to_be_visible()
        assert _accepted(server, session_id)
        read = _read(server, session_id)
        assert read.status_code == 200, read.text
        assert read.json()["userFullName"] == user.name
        _assert_shows(visit.tool, read.json())
        visit.screenshot("home")

        tool.get_by_role("button", name="Log out").click()
        expect(tool.get_by_role("heading", name="You are not signed in")).to_be_visible()
        visit.screenshot("signed-out")
        assert _read(server, session_id).status_code == 401
        _assert_no_url_carries(visit, server, session_id)


# -- with third-party cookies blocked -------------------------------------------------------------


@pytest.mark.parametrize("lti", ["1.1", "1.3"])
def test_launch_with_third_party_cookies_blocked_signs_in_by_exchange_code_and_never_puts_the_id_in_a_url(
    server: Server, dev_canvas: DevCanvas, playwright: Playwright, shots: Path, lti: str
) -> None:
    user = dev_canvas.fresh_user()
    prefix = f"blocked-lti{lti.replace('.', '')}"
    with _visit(playwright, shots.parent, prefix, third_party_cookies=False) as visit:
        page = visit.page
        tool = page.frame_locator("iframe[name=tool_content]")
        with page.expect_response(lambda r: r.url == f"{server.url}/api/sessions/exchange") as traded:
            page.goto(_course_page(dev_canvas, lti, user.id))
        assert traded.value.status == 200, traded.value.text()
        session_id = traded.value.json()["sessionId"]
        expect(tool.get_by_role("heading", name="Terms of service")).to_be_visible()
        visit.screenshot("terms")
        # The cookies really were blocked: the tool set them, the browser did not keep them.
        assert visit.cookie(server.url, "session") is None, visit.context.cookies()
        if lti == "1.3":  # the state was bound to the browser through the platform's storage
            assert visit.cookie(server.url + "/api/lti", "lti1p3_state") is None, visit.context.cookies()
            assert f"{server.url}/api/lti/launch/confirm" in visit.urls
        # The code is gone from the address once traded.
        assert "code=" not in visit.tool.url
        assert not _accepted(server, session_id)

        with page.expect_response(
            lambda r: r.url == f"{server.url}/api/sessions/{session_id}" and r.request.method == "GET"
        ) as read:
            tool.get_by_role("button", name="I accept these terms").click()
        assert read.value.json()["userFullName"] == user.name
        _assert_shows(visit.tool, read.value.json())
        assert _accepted(server, session_id)
        visit.screenshot("home")

        tool.get_by_role("button", name="Log out").click()
        expect(tool.get_by_role("heading", name="You are signed out")).to_be_visible()
        visit.screenshot("signed-out")
        assert _read(server, session_id).status_code == 401
        _assert_no_url_carries(visit, server, session_id)
