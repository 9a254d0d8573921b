"""Per-collection liveness policy through the HTTP API, with the real PAD models on NUAA photos
of subjects held out from the shipped calibration (0007-0009)."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
from fastapi.testclient import TestClient

from svc_helpers import DATA, assert_problem

NUAA = DATA / "nuaa"
LIVE = [NUAA / "live/0007/0007_01_00_01_336.jpg", NUAA / "live/0007/0007_00_00_01_188.jpg"]
SPOOF = NUAA / "spoof/0007/0007_01_00_01_33.jpg"


def upload(path: Path, field: str = "file") -> dict:
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def verify(client: TestClient, cid: str, headers: dict, path: Path, iid: str, **form):  # type: ignore[no-untyped-def]
    return client.post(
        f"/v1/collections/{cid}/verify",
        files=upload(path),
        data={"identity_id": iid, **form},
        headers=headers,
    )


def test_require_refuses_a_printed_photo_and_passes_a_live_one(
    client: TestClient, admin: dict
) -> None:
    cid = "live-req-" + uuid.uuid4().hex[:8]
    r = client.post(
        "/v1/collections", json={"name": cid, "liveness_policy": "require"}, headers=admin
    )
    assert r.status_code == 201 and r.json()["liveness_policy"] == "require", r.text
    iid = client.post(
        f"/v1/collections/{cid}/identities", json={"external_id": "s0007"}, headers=admin
    ).json()["id"]

    # enrollment: the live photo is accepted with its verdict, the print is rejected
    r = client.post(
        f"/v1/collections/{cid}/identities/{iid}/faces",
        files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in (LIVE[0], SPOOF)],
        headers=admin,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["accepted"]) == 1 and body["accepted"][0]["liveness"]["live"] is True
    assert [x["code"] for x in body["rejected"]] == ["presentation_attack"]

    # verify: a print of the enrolled person is refused with the evidence, a live photo matches
    err = assert_problem(verify(client, cid, admin, SPOOF, iid), 422, "presentation_attack")
    details = err["details"]
    assert details["score"] < details["threshold"] and details["operating_point"] == "bpcer_1e-02"
    assert "BPCER" in details["meaning"]
    ok = verify(client, cid, admin, LIVE[1], iid)
    assert ok.status_code == 200, ok.text
    live = ok.json()["liveness"]
    assert (
        live["live"] is True and live["score"] >= live["threshold"] and live["policy"] == "require"
    )
    assert live["evidence"]["subjects"] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert live["evidence"]["n_live"] > 0 and "bpcer_upper_95" in live["evidence"]
    assert ok.json()["match"] is True

    # identify refuses the print too
    r = client.post(f"/v1/collections/{cid}/identify", files=upload(SPOOF), headers=admin)
    assert_problem(r, 422, "presentation_attack")

    # a face too small to judge is not called an attack: the client is asked to retake it
    image = cv2.imread(str(LIVE[1]))
    small = cv2.resize(
        image, (image.shape[1] // 4, image.shape[0] // 4), interpolation=cv2.INTER_AREA
    )
    jpeg = cv2.imencode(".jpg", small)[1].tobytes()
    r = client.post(
        f"/v1/collections/{cid}/verify",
        files={"file": ("small.jpg", jpeg, "image/jpeg")},
        data={"identity_id": iid},
        headers=admin,
    )
    assert assert_problem(r, 422, "liveness_undetermined")["details"]["reason"] == "face_too_small"

    # the audit records every refusal with its score, and the accepted decision with its verdict
    events = client.app.state.store.audit_events(50)
    mine = [e for e in events if e["collection"] == cid]
    refused = {e["action"] for e in mine if e["outcome"] == "presentation_attack"}
    assert refused == {"face.enroll", "verify", "identify"}
    assert any(e["outcome"] == "liveness_undetermined" for e in mine)
    attack = next(
        e for e in mine if e["action"] == "verify" and e["outcome"] == "presentation_attack"
    )
    assert attack["details"]["liveness"]["live"] is False
    assert attack["details"]["liveness"]["score"] == details["score"]
    matched = next(e for e in mine if e["action"] == "verify" and e["outcome"] == "match")
    assert matched["details"]["liveness"]["live"] is True


def test_report_returns_the_score_and_off_runs_only_when_asked(
    client: TestClient, admin: dict, collection: str
) -> None:
    cid = collection
    assert client.get(f"/v1/collections/{cid}", headers=admin).json()["liveness_policy"] == "off"
    iid = client.post(
        f"/v1/collections/{cid}/identities", json={"external_id": "s0007"}, headers=admin
    ).json()["id"]
    r = client.post(
        f"/v1/collections/{cid}/identities/{iid}/faces",
        files=[("files", (LIVE[0].name, LIVE[0].read_bytes(), "image/jpeg"))],
        headers=admin,
    )
    assert r.status_code == 201 and r.json()["accepted"][0].get("liveness") is None, r.text

    # off: no check unless the request opts in
    assert verify(client, cid, admin, SPOOF, iid).json()["liveness"] is None
    asked = verify(client, cid, admin, SPOOF, iid, liveness="true").json()["liveness"]
    assert asked["live"] is False and asked["policy"] == "off"

    # report: the print is scored and reported, never refused
    r = client.patch(f"/v1/collections/{cid}", json={"liveness_policy": "report"}, headers=admin)
    assert r.status_code == 200 and r.json()["liveness_policy"] == "report", r.text
    res = verify(client, cid, admin, SPOOF, iid)
    assert res.status_code == 200 and res.json()["liveness"]["live"] is False
    ident = client.post(
        f"/v1/collections/{cid}/identify", files=upload(LIVE[1]), headers=admin
    ).json()
    assert ident["faces"][0]["liveness"]["live"] is True

    # a policy that does not exist is a 422 problem, at update and at creation
    assert_problem(
        client.patch(f"/v1/collections/{cid}", json={"liveness_policy": "strict"}, headers=admin),
        422,
    )
    assert_problem(
        client.post(
            "/v1/collections", json={"name": "bad-pol", "liveness_policy": "x"}, headers=admin
        ),
        422,
    )


def test_enrollment_liveness_is_kept_with_each_template(
    client: TestClient, admin: dict, collection: str
) -> None:
    """Report policy: a live photo and a print of the same person are both enrolled, and the
    identity's faces say which was judged live, with the score and threshold of that moment."""
    cid = collection
    ids = {
        ext: client.post(
            f"/v1/collections/{cid}/identities", json={"external_id": ext}, headers=admin
        ).json()["id"]
        for ext in ("s0007", "s0007-optin", "s0007-unchecked")
    }
    faces_url = f"/v1/collections/{cid}/identities/{{}}/faces"
    r = client.patch(f"/v1/collections/{cid}", json={"liveness_policy": "report"}, headers=admin)
    assert r.status_code == 200, r.text
    r = client.post(
        faces_url.format(ids["s0007"]),
        files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in (LIVE[0], SPOOF)],
        headers=admin,
    )
    assert r.status_code == 201 and len(r.json()["accepted"]) == 2, r.text
    enrolled = {a["filename"]: a for a in r.json()["accepted"]}

    faces = client.get(f"/v1/collections/{cid}/identities/{ids['s0007']}", headers=admin).json()[
        "faces"
    ]
    by_template = {f["id"]: f["liveness"] for f in faces}
    live = by_template[enrolled[LIVE[0].name]["template_id"]]
    spoof = by_template[enrolled[SPOOF.name]["template_id"]]
    assert live["live"] is True and live["score"] >= live["threshold"]
    assert spoof["live"] is False and spoof["score"] < spoof["threshold"]
    for stored in (live, spoof):
        assert stored["policy"] == "report" and stored["operating_point"] == "bpcer_1e-02"
        assert stored["models"] and stored["reason"] is None
    # the stored score is the one the enrollment response gave
    assert live["score"] == enrolled[LIVE[0].name]["liveness"]["score"]
    assert spoof["score"] == enrolled[SPOOF.name]["liveness"]["score"]

    # off: kept when the request opted in, null (not checked) when it did not
    r = client.patch(f"/v1/collections/{cid}", json={"liveness_policy": "off"}, headers=admin)
    assert r.status_code == 200, r.text
    for ext, form in (("s0007-optin", {"liveness": "true"}), ("s0007-unchecked", {})):
        r = client.post(
            faces_url.format(ids[ext]), files=upload(SPOOF, "files"), data=form, headers=admin
        )
        assert r.status_code == 201 and r.json()["accepted"], r.text
    optin = client.get(f"/v1/collections/{cid}/identities/{ids['s0007-optin']}", headers=admin)
    (stored,) = [f["liveness"] for f in optin.json()["faces"]]
    assert stored["policy"] == "off" and stored["live"] is False
    unchecked = client.get(
        f"/v1/collections/{cid}/identities/{ids['s0007-unchecked']}", headers=admin
    )
    assert [f["liveness"] for f in unchecked.json()["faces"]] == [None]

    # the audit of the accepted enrollment keeps the verdict too
    events = [e for e in client.app.state.store.audit_events(50) if e["collection"] == cid]
    accepted = [e for e in events if e["action"] == "face.enroll" and e["outcome"] == "accepted"]
    assert any([v["live"] for v in e["details"].get("liveness", [])] == [False] for e in accepted)


def test_re_embedded_templates_keep_their_enrollment_liveness(client: TestClient) -> None:
    """Changing the collection's face model re-embeds the stored crops; the liveness was judged
    on the photo, so the new model's templates carry the same verdict."""
    from sqlalchemy import select

    from services.gallery import GalleryStore
    from services.gallery.migrate import run_migration
    from services.tables import FaceTemplate

    store = client.app.state.store
    cid = "live-mig-" + uuid.uuid4().hex[:8]
    store.create_collection(cid, liveness_policy="report")
    store.create_identity(cid, "s0007")
    r = store.enroll_images(cid, "s0007", [(p.name, p.read_bytes()) for p in (LIVE[0], SPOOF)])
    assert len(r["accepted"]) == 2, r
    source = store.face_models(cid)["active"]
    target = next(m for m in ("arcface_mobilefacenet_128", "dlib_resnet_v1") if m != source)
    report = run_migration(GalleryStore(store, store.engine), cid, target)
    assert report.migrated == 2
    with store.read(cid) as (s, c):
        rows = (
            s.execute(select(FaceTemplate).where(FaceTemplate.collection_id == c.id))
            .scalars()
            .all()
        )
        by_id = {t.id: t for t in rows}
        migrated = [t for t in rows if t.model_name == target]
        assert len(migrated) == 2
        for t in migrated:
            old = by_id[t.migrated_from]
            assert t.liveness == old.liveness and t.liveness_verdict == old.liveness_verdict
        assert sorted(t.liveness_verdict["live"] for t in migrated) == [False, True]
