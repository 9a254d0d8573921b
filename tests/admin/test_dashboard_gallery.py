"""The dashboard's gallery screens end to end in headless Chromium against the real service: an
uploaded archive becomes a job with its report, and its unlabelled faces become proposed
clusters to name (docs/batch.md)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.sync_api import Page, expect

from admin_browser import LiveService, assert_images_loaded, shoot, sign_in
from shared_data import SHARED_DIR

pytestmark = pytest.mark.browser

KNN = SHARED_DIR / "data" / "face_recognition" / "knn_examples"


def test_gallery_job_and_clusters(page: Page, live_service: LiveService) -> None:
    """An unlabelled archive of real photos indexed through the API shows up on the Jobs page
    with its counts and report; its proposed clusters are named and merged from the dashboard."""
    import io
    import time
    import zipfile

    url = live_service.url
    name = "jobs-" + uuid.uuid4().hex[:8]
    photos = sorted(p for p in (KNN / "train").glob("*/*") if p.is_file())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in photos:
            zf.write(p, f"{p.parent.name}-{p.name}")
        zf.writestr("notes.jpg", b"not a picture")
    headers = {"X-API-Key": live_service.admin_key}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
        r = api.post(f"/v1/collections/{name}/jobs", files={"file": ("party.zip", buf.getvalue())})
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        deadline = time.monotonic() + 300
        while (job := api.get(f"/v1/collections/{name}/jobs/{jid}").json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        clusters = api.get(f"/v1/collections/{name}/clusters").json()["items"]
    assert job["status"] == "done", job
    enrolled = job["counts"]["enrolled"]
    assert enrolled == len(photos) and job["counts"]["unreadable"] == 1
    assert len(clusters) >= 3

    # the Jobs page (top navigation): the finished job with its counts
    sign_in(page, live_service)
    page.click("header nav >> text=Jobs")
    row = page.locator(f"#jobs tr[data-job='{jid}']")
    expect(row).to_have_attribute("data-status", "done")
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("upload:party.zip")
    expect(row.locator("[data-count=seen]")).to_have_text(str(len(photos) + 1))
    expect(row.locator("[data-count=enrolled]")).to_have_text(str(enrolled))
    expect(row.locator("[data-count=unreadable]")).to_have_text("1")
    shoot(page, "jobs")

    # its report: counts, the refused file, and a way to the proposed clusters
    row.locator("text=Report").click()
    expect(page.locator("#job-status")).to_have_text("done")
    expect(page.locator("#job-enrolled")).to_have_text(str(enrolled))
    expect(page.locator("#unreadable")).to_contain_text("notes.jpg")
    expect(page.locator("#job-summary")).to_contain_text(f"{len(clusters)} covering")
    shoot(page, "job-report")

    # clusters: one card each, largest first, thumbnails that load
    page.click("#job-summary >> text=review them")
    cards = page.locator("#clusters .cluster-card")
    expect(cards).to_have_count(len(clusters))
    expect(cards.first).to_have_attribute("data-cluster", str(clusters[0]["id"]))
    assert_images_loaded(page, "#clusters img.thumb")
    shoot(page, "clusters")

    # name the largest cluster: a new identity whose faces are enrolled at once
    first = page.locator(f".cluster-card[data-cluster='{clusters[0]['id']}']")
    first.locator("input[name=external_id]").fill("person-a")
    first.locator("input[name=display_name]").fill("Person A")
    first.locator(".name-cluster button").click()
    expect(page.locator("#flash")).to_contain_text(
        f"Cluster {clusters[0]['id']} named 'person-a': {clusters[0]['size']} faces"
    )
    expect(cards).to_have_count(len(clusters) - 1)

    # merge the next two proposals into one
    target, other = clusters[1], clusters[2]
    card = page.locator(f".cluster-card[data-cluster='{target['id']}']")
    card.locator(".merge-cluster select").select_option(str(other["id"]))
    card.locator(".merge-cluster button").click()
    expect(page.locator("#flash")).to_contain_text(
        f"merged into cluster {target['id']}: {target['size'] + other['size']} faces"
    )
    expect(cards).to_have_count(len(clusters) - 2)
    expect(page.locator(f".cluster-card[data-cluster='{target['id']}']")).to_have_attribute(
        "data-size", str(target["size"] + other["size"])
    )

    # the named cluster is an identity with those faces
    page.goto(f"{url}/admin/collections/{name}?q=person-a")
    expect(page.locator("tr[data-identity='person-a'] td.num")).to_have_text(
        str(clusters[0]["size"])
    )
