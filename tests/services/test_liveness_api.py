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
