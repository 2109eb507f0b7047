"""LTI Dynamic Registration in a real browser: headless Chromium opens dev-canvas' Admin >
Developer Keys page (on ``localhost``, another site than the tool on ``127.0.0.1``, as under
Canvas), which frames our registration URL; our page's static script posts
``{subject: "org.imsglobal.lti.close"}`` to the parent, and the stand-in's listener, which
accepts it only from its registration frame, closes the frame."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

from .conftest import Server
from .devcanvas_fixture import DevCanvas, config_text, start_dev_canvas
from .test_browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, WAIT_MS, pytestmark  # noqa: F401
from .test_dynamic_registration import registrations


@pytest.fixture
def cross_site_canvas(tmp_path: Path, server: Server) -> Iterator[DevCanvas]:
    key, secret = "dev-" + secrets.token_hex(6), secrets.token_urlsafe(12)
    text = config_text(key, secret, server.url, admin=True)
    canvas = start_dev_canvas(tmp_path, server.url, text=text, public_host="localhost")
    yield canvas
    canvas.stop()


def test_the_registration_page_closes_canvas_frame_with_the_close_message(
    server: Server, cross_site_canvas: DevCanvas, tmp_path: Path
) -> None:
    canvas = cross_site_canvas
    admin = canvas.outsider()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{canvas.url}/accounts/1/developer_keys?as={admin.id}")
            page.fill("input[name=registration_url]", server.url + "/api/lti/register")
            page.click("button[type=submit]")
            done = page.locator("#registration_done")
            expect(done).to_be_visible(timeout=WAIT_MS)
            assert done.get_attribute("data-closed-by") == server.url  # from our frame, our origin
            expect(page.locator("#registration_frame")).to_have_count(0)
            page.screenshot(path=tmp_path / "registered.png")
            page.goto(f"{canvas.url}/accounts/1/developer_keys?as={admin.id}")  # no new registration
            listed = page.locator("#keys li").first.inner_text()
        finally:
            browser.close()
    assert not [e for e in errors if "Content Security Policy" in e or "frame-ancestors" in e], errors
    (registration,) = registrations(server, canvas.url)
    assert registration.pending and registration.client_id in listed
    assert urlsplit(registration.auth_url).hostname == "localhost"
