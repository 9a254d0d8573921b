"""Cancelling gallery jobs from the dashboard (a form with the session's CSRF token, like every
other form): a queued job ends at once, a running one stops and keeps what it committed."""

from __future__ import annotations

import io
import re
import time
import uuid
import zipfile

import httpx
import pytest
from playwright.sync_api import Page, expect
from test_dashboard_e2e import KNN, shoot, sign_in

from admin_browser import LiveService

pytestmark = pytest.mark.browser


def _zip(copies: int) -> bytes:
    """Real photos, each copy with its own trailing bytes (JPEG decoders ignore them) so that
    none is skipped as a duplicate: a job that takes minutes unless it is cancelled."""
    photos = sorted(p for p in (KNN / "train").glob("*/*") if p.is_file())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for k in range(copies):
            for p in photos:
                zf.writestr(f"{p.parent.name}/{k}-{p.name}", p.read_bytes() + k.to_bytes(4, "big"))
    return buf.getvalue()


def test_cancel_jobs_from_the_dashboard(page: Page, live_service: LiveService) -> None:
    url = live_service.url
    name = "cancel-" + uuid.uuid4().hex[:8]
    headers = {"X-API-Key": live_service.admin_key}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as api:
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
        jobs = []
        for upload, copies in (("long.zip", 20), ("next.zip", 1)):
            r = api.post(
                f"/v1/collections/{name}/jobs",
                files={"file": (upload, _zip(copies))},
                data={"labels": "folders"},
            )
            assert r.status_code == 202, r.text
            jobs.append(r.json()["id"])
        long_id, next_id = jobs
        deadline = time.monotonic() + 120
        while api.get(f"/v1/collections/{name}/jobs/{long_id}").json()["counts"]["enrolled"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.3)

    # the queued job, from its report page: cancelled before it started
    sign_in(page, live_service)
    page.goto(f"{url}/admin/collections/{name}/jobs/{next_id}")
    expect(page.locator("#job-status")).to_have_text("queued")
    page.click("#cancel-job")
    expect(page.locator("#flash")).to_contain_text("cancelled before it started")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#cancel-job")).to_have_count(0)

    # the running job, from the Jobs list: it stops, and the page follows it to "cancelled"
    page.click("header nav >> text=Jobs")
    row = page.locator(f"#jobs tr[data-job='{long_id}']")
    expect(row).to_have_attribute("data-status", "running")
    shoot(page, "jobs-running")
    row.locator(".cancel-job button").click()
    # its report page: "cancelling" until the job reaches its next check (the page reloads every
    # 5 s while the job is live, so the one-time flash may already be gone on a busy machine)
    expect(page.locator("#job-status")).to_have_text(re.compile("^(cancelling|cancelled)$"))
    # the batch being analysed finishes first (8 photos: tens of seconds on a busy machine)
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=180_000)
    shoot(page, "job-cancelled")

    with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
        job = api.get(f"/v1/collections/{name}/jobs/{long_id}").json()
        assert job["status"] == "cancelled" and 1 <= job["counts"]["enrolled"] < 180
        # what it committed stays: identities of the labelled folders it reached
        assert api.get(f"/v1/collections/{name}/identities").json()["total"] >= 1
