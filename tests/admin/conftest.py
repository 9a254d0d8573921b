"""Fixtures for the dashboard's browser tests: one headless Chromium per session, a page per test
that fails the test on any console error or uncaught exception, and the real service (real
Postgres, real models) under uvicorn on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from sqlalchemy import Engine

from identity.pipeline import FaceAnalyzer
from identity.settings import Settings
from services.app import create_app
from services.auth import KeyStore

from admin_browser import CHROMIUM_ARGS, LiveService, PageErrors, find_chromium


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
    unexpected = page_errors.unexpected()
    assert unexpected == [], "\n".join(unexpected)


# the real service: Postgres, settings, engine, models and keys come from tests/conftest.py
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_service(
    settings: Settings, engine: Engine, analyzer: FaceAnalyzer, keys: KeyStore
) -> Iterator[LiveService]:
    """The real app under uvicorn on a free loopback port, in a thread of this process."""
    app = create_app(settings, engine=engine, analyzer=analyzer)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-admin-e2e", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # first start loads and checksums the models
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    admin_key, _ = keys.create("admin", name="dashboard e2e")
    enroll_key, _ = keys.create("enroll", name="dashboard e2e (not admin)")
    yield LiveService(f"http://127.0.0.1:{port}", admin_key, enroll_key)
    server.should_exit = True
    thread.join(timeout=30)
