"""Headless Debian Chromium driven by Playwright, without Playwright's own browser download.

Playwright's ``launch`` makes a fresh, empty user-data-dir per browser; the flags below keep
Chromium from calling Google (background networking, component updates, sync): on a closed
network those connections fail noisily and slow every start.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root in a container, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "test-artifacts" / "screenshots"


@dataclass
class LiveService:
    """The running service a browser test talks to, and keys made for it."""

    url: str
    admin_key: str
    enroll_key: str


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageErrors:
    """Console errors and uncaught page exceptions seen by one page; the tests want none.

    Chromium logs "Failed to load resource: ... status of 4xx" for a page answered with an error
    status; a test that provokes one on purpose (a wrong key, an erased identity) declares it
    with ``expect_status(code, path)`` and only that exact message is tolerated.
    """

    messages: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        def on_console(msg: Any) -> None:
            if msg.type == "error":
                self.messages.append(f"console.{msg.type}: {msg.text} @ {page.url}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.messages.append(f"pageerror: {exc} @ {page.url}"))

    def expect_status(self, status: int, path: str) -> None:
        self.expected.append(f"the server responded with a status of {status} ")
        self.expected[-1] += f"|{path}"

    def unexpected(self) -> list[str]:
        def allowed(message: str) -> bool:
            for entry in self.expected:
                text, path = entry.split("|", 1)
                if text in message and message.split(" @ ", 1)[-1].split("?")[0].endswith(path):
                    return True
            return False

        return [m for m in self.messages if not allowed(m)]


def screenshot(page: Page, name: str, widths: tuple[int, ...] = (1280, 800)) -> list[Path]:
    """Full-page PNGs at laptop and tablet widths into test-artifacts/screenshots/ (git-ignored)."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size or {"width": 1280, "height": 900}
    out = []
    for width in widths:
        page.set_viewport_size({"width": width, "height": original["height"]})
        path = SCREENSHOT_DIR / f"{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True)
        out.append(path)
    page.set_viewport_size(original)
    return out


def sign_in(page: Page, service: LiveService, key: str | None = None) -> None:
    page.goto(f"{service.url}/admin/login")
    page.fill("#api_key", key or service.admin_key)
    page.click("#sign-in")


def assert_fits_width(page: Page) -> None:
    """No horizontal scrolling of the whole page at the current width (tables scroll inside)."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"page is {overflow}px wider than the viewport at {page.url}"


def shoot(page: Page, name: str) -> None:
    for width in (1280, 800):
        page.set_viewport_size({"width": width, "height": 900})
        assert_fits_width(page)
    screenshot(page, name)


def assert_images_loaded(page: Page, selector: str) -> None:
    images = page.locator(selector)
    assert images.count() > 0
    for i in range(images.count()):
        img = images.nth(i)
        img.scroll_into_view_if_needed()
        page.wait_for_function("(el) => el.complete", arg=img.element_handle())
        assert img.evaluate("(el) => el.naturalWidth") > 0, f"{selector} #{i} did not load"
