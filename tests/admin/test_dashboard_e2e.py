"""The admin dashboard end to end: headless Debian Chromium against the real service (uvicorn on
loopback, real Postgres, real detector and embedder) with the real shared photos.

Each page is screenshotted at 1280 px and 800 px into test-artifacts/screenshots/ for a person
to look at; the ``page`` fixture fails a test on any console error or uncaught page exception.
"""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from identity.settings import Settings

from admin_browser import (
    LiveService,
    PageErrors,
    assert_images_loaded,
    screenshot,
    shoot,
    sign_in,
)
from shared_data import SHARED_DIR

pytestmark = pytest.mark.browser

KNN = SHARED_DIR / "data" / "face_recognition" / "knn_examples"
OBAMA_TRAIN = sorted((KNN / "train" / "obama").glob("*.jpg"))
BIDEN_TRAIN = sorted((KNN / "train" / "biden").glob("*.jpg"))
OBAMA_PROBE = KNN / "test" / "obama1.jpg"
TWO_PEOPLE = KNN / "test" / "obama_and_biden.jpg"
DEFAULT_EMBEDDER = Settings.model_fields["embedder"].default


def drop_files(page: Page, selector: str, paths: list[Path]) -> None:
    """A real drag-and-drop of files onto a dropzone: a DataTransfer built in the page."""
    files = [{"name": p.name, "b64": base64.b64encode(p.read_bytes()).decode()} for p in paths]
    page.evaluate(
        """([selector, files]) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: "image/jpeg" }));
            }
            const zone = document.querySelector(selector);
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        [selector, files],
    )


def test_unauthorized_access_redirects_to_sign_in(
    page: Page, page_errors: PageErrors, live_service: LiveService
) -> None:
    for target in ("/admin", "/admin/collections", "/admin/jobs", "/admin/audit", "/admin/system"):
        page.goto(live_service.url + target)
        assert re.search(r"/admin/login\?next=", page.url), page.url
        expect(page.locator("#sign-in")).to_be_visible()
    screenshot(page, "login")

    # a wrong key and a key without the admin scope are both refused, with a reason
    page_errors.expect_status(401, "/admin/login")
    sign_in(page, live_service, "idk_" + "x" * 43)
    expect(page.locator("#flash")).to_contain_text("not valid")
    sign_in(page, live_service, live_service.enroll_key)
    expect(page.locator("#flash")).to_contain_text("needs an admin key")
    assert "/admin/login" in page.url


def test_forms_need_the_csrf_token(
    context: BrowserContext, page: Page, live_service: LiveService
) -> None:
    sign_in(page, live_service)
    expect(page.locator("h1")).to_have_text("Collections")
    name = "csrf-" + uuid.uuid4().hex[:8]
    # The session cookie alone (what a cross-site form would carry) is not enough.
    r = context.request.post(
        f"{live_service.url}/admin/collections", form={"name": name}, max_redirects=0
    )
    assert r.status == 403, r.text()
    page.goto(f"{live_service.url}/admin/collections")
    expect(page.locator(f"tr[data-collection='{name}']")).to_have_count(0)
    cookie = next(c for c in context.cookies() if c["name"] == "identity_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["secure"]
    assert live_service.admin_key not in cookie["value"]


def test_enroll_search_verify_erase_audit(
    page: Page, page_errors: PageErrors, live_service: LiveService
) -> None:
    url = live_service.url
    name = "e2e-" + uuid.uuid4().hex[:8]

    sign_in(page, live_service)
    expect(page.locator("h1")).to_have_text("Collections")

    # create a collection
    page.fill("#create-collection input[name=name]", name)
    page.fill("#create-collection input[name=description]", "dashboard end-to-end test")
    page.click("#create-collection button")
    expect(page.locator("#flash")).to_contain_text(f"Collection '{name}' created")
    row = page.locator(f"tr[data-collection='{name}']")
    expect(row).to_be_visible()
    shoot(page, "collections")

    # a second person first, so that search has someone who must NOT match
    row.locator("a").first.click()
    page.fill("#create-identity input[name=external_id]", "biden")
    page.fill("#create-identity input[name=display_name]", "Joe Biden")
    page.click("#create-identity button")
    expect(page.locator("h1")).to_have_text("Joe Biden")
    page.set_input_files("#files", [str(p) for p in BIDEN_TRAIN])
    page.click("#upload-faces button[type=submit]")
    expect(page.locator("#upload-results li.accepted")).to_have_count(len(BIDEN_TRAIN))

    # enroll Obama by drag and drop: two good photos and one with two faces (rejected, reason)
    page.goto(f"{url}/admin/collections/{name}")
    page.fill("#create-identity input[name=external_id]", "obama")
    page.fill("#create-identity input[name=display_name]", "Barack Obama")
    page.click("#create-identity button")
    expect(page.locator("h1")).to_have_text("Barack Obama")
    obama_url = page.url
    with page.expect_navigation():
        drop_files(page, "#upload-faces [data-dropzone]", [*OBAMA_TRAIN, TWO_PEOPLE])
    expect(page.locator("#upload-results li.accepted")).to_have_count(len(OBAMA_TRAIN))
    rejected = page.locator("#upload-results li.rejected")
    expect(rejected).to_have_count(1)
    expect(rejected).to_contain_text(TWO_PEOPLE.name)
    expect(rejected).to_contain_text("faces found")
    cards = page.locator("#faces .face-card")
    expect(cards).to_have_count(len(OBAMA_TRAIN))
    expect(cards.first).to_contain_text(DEFAULT_EMBEDDER)
    assert_images_loaded(page, "#faces img")
    shoot(page, "identity")

    # the identities list: searchable, one thumbnail each
    page.goto(f"{url}/admin/collections/{name}?q=obam")
    expect(page.locator("#identities tbody tr")).to_have_count(1)
    expect(page.locator("tr[data-identity='obama']")).to_be_visible()
    assert_images_loaded(page, "#identities img.thumb")
    page.goto(f"{url}/admin/collections/{name}")
    expect(page.locator("#identities tbody tr")).to_have_count(2)
    shoot(page, "identities")

    # search by photo finds Obama, with the probe's face boxed on the picture
    _search(page, url, name)
    top = page.locator("table.candidates tbody tr").first
    expect(top).to_have_attribute("data-candidate", "obama")
    expect(top.locator(".badge")).to_have_text("match")
    expect(page.locator("tr[data-candidate='biden'] .badge")).to_have_text("no match")
    expect(page.locator("#probe-image rect.face-box")).to_have_count(1)
    _assert_box_on_face(page)
    shoot(page, "search")

    # verify: the probe against Obama matches; against a photo of Biden it does not
    page.goto(f"{obama_url.split('/identities/')[0]}/verify?identity={obama_url.rsplit('/', 1)[1]}")
    page.set_input_files("#verify-probe", str(OBAMA_PROBE))
    page.click("#verify-form button[type=submit]")
    expect(page.locator("#decision")).to_have_text("Match")
    similarity = float(page.text_content("#similarity") or "nan")
    threshold = float(page.text_content("#threshold") or "nan")
    assert similarity >= threshold
    shoot(page, "verify")
    page.check("input[name=mode][value=pair]")
    page.set_input_files("#verify-probe", str(OBAMA_PROBE))
    page.set_input_files("#verify-other", str(BIDEN_TRAIN[0]))
    page.click("#verify-form button[type=submit]")
    expect(page.locator("#decision")).to_have_text("No match")
    assert float(page.text_content("#similarity") or "nan") < float(
        page.text_content("#threshold") or "nan"
    )

    # remove one face, then erase the identity
    page.goto(obama_url)
    page.locator("#faces .face-card").first.locator("button").click()
    expect(page.locator("#flash")).to_contain_text("removed")
    expect(page.locator("#faces .face-card")).to_have_count(len(OBAMA_TRAIN) - 1)
    page.check("#confirm-erase")
    page.click("#erase-identity button")
    expect(page.locator("#flash")).to_contain_text("Identity 'obama' erased")
    expect(page.locator("tr[data-identity='obama']")).to_have_count(0)
    page_errors.expect_status(404, urlparse(obama_url).path)
    page.goto(obama_url)
    expect(page.locator("h1")).to_contain_text("not found")

    # gone from search: Obama's own photo now finds nobody who matches
    _search(page, url, name)
    expect(page.locator("tr[data-candidate='obama']")).to_have_count(0)
    expect(page.locator("table.candidates .badge.ok")).to_have_count(0)

    # and the audit log kept that the erasure happened
    page.goto(f"{url}/admin/audit")
    page.select_option("#audit-action", "identity.erase")
    page.select_option("#audit-collection", name)
    page.click("#audit-filter button[type=submit]")
    erase_rows = page.locator("#audit tbody tr[data-action='identity.erase']")
    expect(erase_rows).to_have_count(1)
    expect(erase_rows).to_contain_text(name)
    expect(erase_rows).to_contain_text("templates=")
    expect(page.locator("#audit tbody tr")).to_have_count(1)
    # the time filter: nothing happened in the future, and a bad date is explained, not a 500
    page.goto(f"{url}/admin/audit?collection={name}&since=2999-01-01T00:00")
    expect(page.locator("#audit tbody tr")).to_have_count(0)
    page.goto(f"{url}/admin/audit?since=yesterday-ish")
    expect(page.locator("#flash")).to_contain_text("not a date and time")
    page.goto(f"{url}/admin/audit?collection={name}")
    expect(page.locator("#audit tbody tr[data-action='face.enroll']")).to_have_count(5)
    page.click("#check-chain")  # the hash chain over every audit row holds
    expect(page.locator("#chain-status")).to_contain_text("Chain intact")
    shoot(page, "audit")

    # system: models with licence and checksum state, the index of this collection, counters
    page.goto(f"{url}/admin/system")
    embedder = page.locator(f"#models tr[data-model='{DEFAULT_EMBEDDER}']")
    expect(embedder).to_contain_text("loaded")
    expect(embedder).to_contain_text("ok")
    expect(page.locator("#indexes")).to_contain_text(name)
    row = page.locator("#indexes tbody tr", has_text=name)
    expect(row).to_contain_text("Flat")  # the index's real type, not just the setting
    expect(page.locator("#thresholds tbody tr").first).to_be_visible()
    # which calibration the decisions use, with its evidence
    expect(page.locator("#calibration-evidence")).to_contain_text("celeba500")
    expect(page.locator("#calibration-evidence")).to_contain_text("impostor pairs")
    expect(page.locator("#thresholds thead")).to_contain_text("FAR 95% upper bound")
    expect(page.locator("#requests")).to_contain_text("/admin/collections/{cid}/search")
    shoot(page, "system")

    # delete the collection, with its confirmation
    page.goto(f"{url}/admin/collections/{name}/delete")
    page_errors.expect_status(400, f"/admin/collections/{name}/delete")
    page.fill("#delete-collection input[name=confirm]", "not-the-name")
    page.click("#delete-collection button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("to confirm")
    shoot(page, "collection-delete")
    page.fill("#delete-collection input[name=confirm]", name)
    page.click("#delete-collection button[type=submit]")
    expect(page.locator("#flash")).to_contain_text(f"Collection '{name}' deleted")
    expect(page.locator(f"tr[data-collection='{name}']")).to_have_count(0)

    # sign out: the dashboard is closed again, even to a copy of the old cookie
    old_cookie = next(c for c in page.context.cookies() if c["name"] == "identity_admin")
    page.click("#logout")
    assert "/admin/login" in page.url
    page.goto(f"{url}/admin/collections")
    assert "/admin/login" in page.url
    page.context.add_cookies([old_cookie])
    page.goto(f"{url}/admin/collections")
    assert "/admin/login" in page.url


def _search(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/admin/collections/{name}/search")
    page.set_input_files("#probe", str(OBAMA_PROBE))
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-result")).to_be_visible()


def _assert_box_on_face(page: Page) -> None:
    """The drawn box sits inside the picture and covers a plausible share of it (one head)."""
    svg = page.locator("#probe-image")
    w, h = (float(v) for v in (svg.get_attribute("viewBox") or "").split()[2:])
    rect = page.locator("#probe-image rect.face-box").first
    x, y, bw, bh = (float(rect.get_attribute(a) or "nan") for a in ("x", "y", "width", "height"))
    assert x >= 0 and y >= 0 and x + bw <= w + 1 and y + bh <= h + 1
    assert 0.005 < (bw * bh) / (w * h) < 0.6


def test_bad_uploads_are_explained_not_500(
    page: Page, page_errors: PageErrors, live_service: LiveService
) -> None:
    url = live_service.url
    name = "bad-" + uuid.uuid4().hex[:8]
    not_an_image = {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a picture"}
    sign_in(page, live_service)
    page.fill("#create-collection input[name=name]", name)
    page.click("#create-collection button")
    expect(page.locator(f"tr[data-collection='{name}']")).to_be_visible()

    # a probe that is not an image: the search page says so (422), no candidates
    page_errors.expect_status(422, f"/admin/collections/{name}/search")
    page.goto(f"{url}/admin/collections/{name}/search")
    page.set_input_files("#probe", [not_an_image])
    page.click("#search-form button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("image")
    expect(page.locator("#search-result")).to_have_count(0)

    # enrolling it: that one photo is rejected with its reason, the page itself is fine
    page.goto(f"{url}/admin/collections/{name}")
    page.fill("#create-identity input[name=external_id]", "someone")
    page.click("#create-identity button")
    page.set_input_files("#files", [not_an_image])
    page.click("#upload-faces button[type=submit]")
    expect(page.locator("#upload-results li.rejected")).to_contain_text("notes.jpg")
    expect(page.locator("#faces .face-card")).to_have_count(0)

    # a collection that does not exist is a page that says so
    page_errors.expect_status(404, "/admin/collections/no-such-collection")
    page.goto(f"{url}/admin/collections/no-such-collection")
    expect(page.locator("h1")).to_contain_text("not found")


def test_identities_are_paged_and_searchable(page: Page, live_service: LiveService) -> None:
    # Made through the public API: the dashboard shows what any client wrote.
    url = live_service.url
    name = "paged-" + uuid.uuid4().hex[:8]
    headers = {"X-API-Key": live_service.admin_key}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
        for n in range(30):
            r = api.post(
                f"/v1/collections/{name}/identities",
                json={"external_id": f"person-{n:02d}", "display_name": f"Person {n:02d}"},
            )
            assert r.status_code == 201, r.text
    sign_in(page, live_service)
    page.goto(f"{url}/admin/collections/{name}")
    expect(page.locator("#identities tbody tr")).to_have_count(24)
    expect(page.locator(".pager")).to_contain_text("Page 1 of 2")
    page.click("text=Next ›")
    expect(page.locator("#identities tbody tr")).to_have_count(6)
    expect(page.locator("tr[data-identity='person-29']")).to_be_visible()
    page.fill("#identity-search input[name=q]", "Person 1")
    page.click("#identity-search button")
    expect(page.locator("#identities tbody tr")).to_have_count(10)  # Person 10-19
    expect(page.locator(".thumb.placeholder").first).to_have_text("no face")
