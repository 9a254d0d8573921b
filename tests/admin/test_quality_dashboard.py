"""Quality on the dashboard in headless Chromium against the real service: each enrolled face
shows its quality, its reasons and whether today's gate would refuse it; the collection's Quality
tab re-runs the gate (at the default or a given threshold) and names who falls below."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from blurred_face import blurred_face
from playwright.sync_api import Page, expect

from identity.settings import Settings

from admin_browser import LiveService, PageErrors, shoot, sign_in
from shared_data import SHARED_DIR

pytestmark = pytest.mark.browser

TRAIN = SHARED_DIR / "data" / "face_recognition" / "knn_examples" / "train"
KIT1, KIT2 = TRAIN / "kit_harington/john1.jpeg", TRAIN / "kit_harington/john2.jpeg"
OBAMA = TRAIN / "obama/obama.jpg"
GATE = Settings.model_fields["enroll_min_quality"].default


def test_face_quality_and_the_quality_report(
    page: Page, page_errors: PageErrors, live_service: LiveService, store: Any, analyzer: Any
) -> None:
    url, name = live_service.url, "q-" + uuid.uuid4().hex[:8]
    with httpx.Client(
        base_url=url, headers={"X-API-Key": live_service.admin_key}, timeout=120
    ) as api:
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
        for ext in ("kit", "obama"):
            assert api.post(
                f"/v1/collections/{name}/identities", json={"external_id": ext}
            ).is_success
        r = api.post(
            f"/v1/collections/{name}/identities/kit/faces",
            files=[("files", (KIT1.name, KIT1.read_bytes(), "image/jpeg"))],
        )
        assert r.status_code == 201, r.text
        kit = api.get(f"/v1/collections/{name}/identities/kit").json()
    # faces below the gate, stored without it (as gallery naming does)
    face, digest = blurred_face(KIT2, analyzer)
    (blurred,) = store.enroll_faces(name, "kit", face, digest)
    face, digest = blurred_face(OBAMA, analyzer)
    (obama_face,) = store.enroll_faces(name, "obama", face, digest)
    good = kit["faces"][0]["id"]

    sign_in(page, live_service)
    page.goto(f"{url}/admin/collections/{name}/identities/{kit['id']}")
    card = page.locator(f".face-card[data-face='{blurred}']")
    # blur lowers the embedding's norm and the head's recognisability too: three reasons, and
    # quality under the gate
    expect(card.locator("[data-quality-reasons]")).to_have_text(
        "blurry, low_feature_norm, low_recognisability"
    )
    assert float(card.locator("[data-quality]").text_content() or "nan") < GATE
    expect(card.locator("[data-gate]")).to_contain_text("below today's gate")
    expect(card.locator("[data-gate]")).to_contain_text("low_quality")
    expect(page.locator(f".face-card[data-face='{good}'] [data-gate]")).to_have_text("passes")
    shoot(page, "identity-face-quality")

    page.click("#tab-quality")
    expect(page.locator("#gate-min-quality")).to_have_text(str(GATE))
    expect(page.locator("#no-template-passes")).to_have_text("1")
    row = page.locator(f"#quality-report tr[data-face='{blurred}']")
    expect(row).to_contain_text("1/2")
    expect(row).to_contain_text("low_quality")
    expect(page.locator(f"#quality-report tr[data-face='{obama_face}']")).to_contain_text(
        "no template passes"
    )
    expect(page.locator(f"#quality-report tr[data-face='{good}']")).to_have_count(0)
    shoot(page, "quality-report")

    # a gate of 0 refuses only on the other rules: these faces pass them all
    page.fill("#gate-form input[name=min_quality]", "0")
    page.click("#gate-form button")
    expect(page.locator("#gate-min-quality")).to_have_text("0.0")
    expect(page.locator("#all-pass")).to_be_visible()
    # the report deleted nothing
    page.goto(f"{url}/admin/collections/{name}/identities/{kit['id']}")
    expect(page.locator("#face-count")).to_have_text("2")
    assert page_errors.unexpected() == []
