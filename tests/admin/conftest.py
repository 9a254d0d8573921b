"""Fixtures for the dashboard's browser tests: one headless Chromium per session, a page per test
that fails the test on any console error or uncaught exception, and the real service (real
Postgres, real models) under uvicorn on a loopback port."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from admin_browser import CHROMIUM_ARGS, LiveService, PageErrors, find_chromium
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from sqlalchemy import Engine

from identity.pipeline import FaceAnalyzer
from identity.settings import Settings
from services.app import create_app
from services.auth import KeyStore


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


# the real service ------------------------------------------------------------------------------
# Postgres, settings, engine and models come from the service tests' fixtures (one embedded
# Postgres per session, real weights from ../shared/models), loaded under a unique module name so
# the two conftest files never shadow each other.
def _service_fixtures() -> Any:
    path = Path(__file__).resolve().parents[1] / "services" / "conftest.py"
    # that conftest imports its sibling helper modules, as pytest's rootdir import allows there
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location("identity_service_test_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_svc = _service_fixtures()
pg_url = _svc.pg_url
settings = _svc.settings
engine = _svc.engine
analyzer = _svc.analyzer
keys = _svc.keys


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
