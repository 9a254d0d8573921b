"""The dashboard's Face models tab in headless Chromium against the real service: start a
migration (dlib -> the default ArcFace) on real photos, read its job report, switch, switch back, drop."""

from __future__ import annotations

import csv
import time
import uuid

import httpx
import pytest
from playwright.sync_api import Page, expect

from admin_browser import LiveService, screenshot
from shared_data import SHARED_DIR

pytestmark = pytest.mark.browser

DEEPFACE = SHARED_DIR / "data" / "deepface"
SOURCE, TARGET = "dlib_resnet_v1", "arcface_w600k_mbf_int8"


def _enroll(api: httpx.Client, name: str, limit: int = 12) -> int:
    with (DEEPFACE / "LABELS.csv").open() as f:
        rows = [(r["path"], r["identity"]) for r in csv.DictReader(f)][:limit]
    enrolled = 0
    for who in sorted({w for _, w in rows}):
        r = api.post(f"/v1/collections/{name}/identities", json={"external_id": who})
        assert r.status_code == 201, r.text
        files = [
            ("files", (p, (DEEPFACE / p).read_bytes(), "image/jpeg")) for p, w in rows if w == who
        ]
        r = api.post(f"/v1/collections/{name}/identities/{who}/faces", files=files)
        assert r.status_code in (201, 207), r.text
        enrolled += len(r.json()["accepted"])
    return enrolled


def test_migrate_switch_and_drop_from_the_dashboard(page: Page, live_service: LiveService) -> None:
    url = live_service.url
    name = "fm-" + uuid.uuid4().hex[:8]
    with httpx.Client(
        base_url=url, headers={"X-API-Key": live_service.admin_key}, timeout=120
    ) as api:
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
        # as an upgrade from a dlib-default release leaves it (migration 0460 pins the model)
        r = api.post(f"/v1/collections/{name}/face-models/switch", json={"to": SOURCE})
        assert r.status_code == 200, r.text
        n = _enroll(api, name)
    assert n >= 8

    page.goto(f"{url}/admin/login")
    page.fill("#api_key", live_service.admin_key)
    page.click("#sign-in")
    page.goto(f"{url}/admin/collections/{name}/models")
    expect(page.locator("#active-model")).to_have_text(SOURCE)
    expect(page.locator(f"tr[data-model='{SOURCE}']")).to_contain_text(str(n))

    page.select_option("#migrate-model select", TARGET)
    page.click("#migrate-model button")
    expect(page.locator("#flash")).to_contain_text(f"Migration to {TARGET} started")
    deadline = time.time() + 180
    while time.time() < deadline:  # the job page refreshes itself while the job runs
        if page.text_content("#job-status") == "done":
            break
        time.sleep(1)
        page.reload()
    expect(page.locator("#job-status")).to_have_text("done")
    expect(page.locator("#job-migrated")).to_have_text(str(n))
    expect(page.locator("#job-failed")).to_have_text("0")
    screenshot(page, "migration-job")

    page.goto(f"{url}/admin/collections/{name}/models")
    row = page.locator(f"tr[data-model='{TARGET}']")
    expect(row).to_contain_text(str(n))
    row.locator("button.switch-model").click()
    expect(page.locator("#flash")).to_contain_text(f"Active model: {TARGET}")
    expect(page.locator("#active-model")).to_have_text(TARGET)

    page.locator(f"tr[data-model='{SOURCE}'] button.switch-model").click()
    expect(page.locator("#active-model")).to_have_text(SOURCE)
    page.locator(f"tr[data-model='{TARGET}'] button.drop-model").click()
    expect(page.locator("#flash")).to_contain_text(f"Dropped {n} templates of {TARGET}")
    expect(page.locator(f"tr[data-model='{TARGET}']")).to_have_count(0)
