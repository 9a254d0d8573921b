"""The browser harness itself: Debian Chromium starts, renders, runs JavaScript, reports errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page

from admin_browser import PageErrors, screenshot

pytestmark = pytest.mark.browser

PAGE = b"""<!doctype html><html><head><title>harness</title></head><body>
<button id="b" onclick="document.getElementById('out').textContent = 'clicked ' + (1 + 1)">go</button>
<p id="out"></p><button id="bad" onclick="null.boom()">fail</button></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tiny_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_chromium_renders_and_runs_javascript(page: Page, tiny_server: str) -> None:
    page.goto(tiny_server)
    page.click("#b")
    assert page.text_content("#out") == "clicked 2"
    shots = screenshot(page, "harness")
    assert all(p.stat().st_size > 1000 for p in shots)


def test_page_errors_are_caught(browser, tiny_server: str) -> None:  # type: ignore[no-untyped-def]
    # The `page` fixture fails a test on any console error; prove that the collector sees them.
    ctx = browser.new_context()
    p = ctx.new_page()
    errors = PageErrors()
    errors.attach(p)
    p.goto(tiny_server)
    p.click("#bad")
    p.wait_for_timeout(200)
    ctx.close()
    assert any("pageerror" in m for m in errors.messages), errors.messages
