"""Fixtures for the dashboard's browser tests: one headless Chromium per session, a page per test
that fails the test on any console error or uncaught exception."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from admin_browser import CHROMIUM_ARGS, PageErrors, find_chromium
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("Debian chromium not found: run scripts/install-test-deps.sh")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, page_errors: PageErrors) -> Iterator[Page]:
    p = context.new_page()
    page_errors.attach(p)
    yield p
    assert page_errors.messages == [], "\n".join(page_errors.messages)
