"""The dashboard's liveness views in headless Chromium against the real service: the policy is
set on the collection page, and the verify page shows the score, or the refusal of a printed
photo (NUAA subject 0007, held out from the shipped liveness calibration)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.sync_api import Page, expect

from admin_browser import LiveService, PageErrors, screenshot
from shared_data import SHARED_DIR

pytestmark = pytest.mark.browser

NUAA = SHARED_DIR / "data" / "nuaa"
LIVE = [NUAA / "live/0007/0007_01_00_01_336.jpg", NUAA / "live/0007/0007_00_00_01_188.jpg"]
SPOOF = NUAA / "spoof/0007/0007_01_00_01_33.jpg"
SPOOF_2 = NUAA / "spoof/0007/0007_01_00_01_139.jpg"


def test_policy_form_and_verify_shows_liveness(
    page: Page, page_errors: PageErrors, live_service: LiveService
) -> None:
    url = live_service.url
    name = "live-" + uuid.uuid4().hex[:8]
    with httpx.Client(
        base_url=url, headers={"X-API-Key": live_service.admin_key}, timeout=60
    ) as api:
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
        iid = api.post(f"/v1/collections/{name}/identities", json={"external_id": "s0007"}).json()[
            "id"
        ]
        r = api.post(
            f"/v1/collections/{name}/identities/{iid}/faces",
            files=[("files", (LIVE[0].name, LIVE[0].read_bytes(), "image/jpeg"))],
        )
        assert r.status_code == 201, r.text

    page.goto(f"{url}/admin/login")
    page.fill("#api_key", live_service.admin_key)
    page.click("#sign-in")

    # off: the verify page offers the opt-in; the live photo is scored and shown
    page.goto(f"{url}/admin/collections/{name}/verify?identity={iid}")
    page.set_input_files("#verify-probe", str(LIVE[1]))
    page.check("#verify-liveness")
    page.click("#verify-form button[type=submit]")
    expect(page.locator("#decision")).to_have_text("Match")
    expect(page.locator("#liveness")).to_contain_text("live (threshold")
    assert float(page.text_content("#liveness-score") or "nan") > 0.5

    # require, set on the collection page: the print is refused and its score shown
    page.goto(f"{url}/admin/collections/{name}")
    page.select_option("#liveness-policy select", "require")
    page.click("#liveness-policy button")
    expect(page.locator("#flash")).to_contain_text("Liveness policy set to 'require'")
    expect(page.locator("#liveness-policy select")).to_have_value("require")
    page_errors.expect_status(422, f"/admin/collections/{name}/verify")
    page.goto(f"{url}/admin/collections/{name}/verify?identity={iid}")
    page.set_input_files("#verify-probe", str(SPOOF))
    page.click("#verify-form button[type=submit]")
    expect(page.locator("#liveness-refused")).to_contain_text("Presentation attack")
    assert float(page.text_content("#liveness-score") or "nan") < 0.05
    screenshot(page, "verify-liveness-refused")
    page.goto(f"{url}/admin/collections")
    expect(page.locator(f"tr[data-collection='{name}']")).to_contain_text("require")


def test_identity_page_shows_the_enrollment_liveness_of_each_face(
    page: Page, page_errors: PageErrors, live_service: LiveService
) -> None:
    """Policy off with the page's opt-in: a live photo and a print are enrolled, each face card
    says which was judged live; under require the next print is rejected with its score."""
    url = live_service.url
    name = "live-" + uuid.uuid4().hex[:8]
    with httpx.Client(
        base_url=url, headers={"X-API-Key": live_service.admin_key}, timeout=60
    ) as api:
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
        iid = api.post(f"/v1/collections/{name}/identities", json={"external_id": "s0007"}).json()[
            "id"
        ]

    page.goto(f"{url}/admin/login")
    page.fill("#api_key", live_service.admin_key)
    page.click("#sign-in")
    page.goto(f"{url}/admin/collections/{name}/identities/{iid}")
    page.check("#enroll-liveness")
    page.set_input_files("#files", [str(LIVE[0]), str(SPOOF)])
    page.click("#upload-faces button[type=submit]")
    accepted = page.locator("#upload-results li.accepted")
    expect(accepted).to_have_count(2)
    expect(accepted.filter(has_text=LIVE[0].name)).to_contain_text("live (threshold")
    expect(accepted.filter(has_text=SPOOF.name)).to_contain_text("attack (threshold")

    # the face cards keep it after a reload: the score was stored with each template
    page.goto(f"{url}/admin/collections/{name}/identities/{iid}")
    marks = page.locator("#faces .face-card [data-liveness]")
    expect(marks).to_have_count(2)
    texts = sorted(marks.all_text_contents())
    assert [t.split(" ")[1] for t in texts] == ["attack", "live"], texts
    scores = sorted(float(t.split(" ")[0]) for t in texts)
    assert scores[0] < 0.05 < 0.5 < scores[1], texts

    # require: the next print is rejected and its score and threshold shown
    with httpx.Client(
        base_url=url, headers={"X-API-Key": live_service.admin_key}, timeout=60
    ) as api:
        r = api.patch(f"/v1/collections/{name}", json={"liveness_policy": "require"})
        assert r.status_code == 200, r.text
    page.goto(f"{url}/admin/collections/{name}/identities/{iid}")
    expect(page.locator("#enroll-liveness-policy")).to_contain_text("require")
    page.set_input_files("#files", [str(SPOOF_2)])
    page.click("#upload-faces button[type=submit]")
    rejected = page.locator("#upload-results li.rejected")
    expect(rejected).to_contain_text("presentation attack")
    expect(rejected).to_contain_text("liveness score")
    expect(page.locator("#faces .face-card")).to_have_count(2)
    screenshot(page, "identity-liveness")
