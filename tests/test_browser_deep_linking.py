"""Deep Linking in a real browser (headless Chromium, as tests/test_browser.py): the teacher
clicks "place a resource" on the stand-in's course page, accepts the terms in the tool's iframe,
clicks "Place Commons here", and the tool's page posts the signed answer back to the stand-in
by itself (its static script under CSP ``script-src 'self'``, its form allowed to the return
URL's origin by ``form-action``), which verifies it against the tool's JWKS and lists it."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Playwright, expect

from . import test_browser as browser
from .conftest import Server
from .devcanvas_fixture import DevCanvas

pytestmark = browser.pytestmark
# The browser suite's fixtures (the stand-in on localhost, the tool on 127.0.0.1).
dev_canvas = browser.dev_canvas
playwright = browser.playwright
shots = browser.shots


def test_place_a_resource_from_the_course_page_comes_back_verified(
    server: Server, dev_canvas: DevCanvas, playwright: Playwright, shots: Path
) -> None:
    user = dev_canvas.teacher()
    with browser._visit(playwright, shots.parent, "deep-linking", third_party_cookies=True) as visit:
        visit.page.goto(f"{dev_canvas.url}/courses/1?lti=1.3&placement=link_selection&as={user.id}")
        tool = visit.page.frame_locator("iframe[name=tool_content]")
        accept = tool.get_by_role("button", name="I accept these terms")
        place = tool.get_by_role("button", name="Place Commons here")
        expect(accept.or_(place)).to_be_visible()
        if accept.is_visible():
            accept.click()
        place.click()
        expect(tool.get_by_role("heading", name="Placed in")).to_be_visible()
        verified = tool.locator('[data-deep-linking="verified"]')
        expect(verified).to_contain_text("Commons")
        visit.screenshot("placed")
        posted = [r for r in visit.requests if r.url.endswith("/deep_linking_response")]
        assert [r.method for r in posted] == ["POST"], visit.urls
        assert f"{server.url}/static/deeplinking.js" in visit.urls
