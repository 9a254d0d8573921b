"""A claim names a person; the answer must be about that person: identities addressed by their
external_id, and a group photo compared face by face instead of by its largest face only."""

from __future__ import annotations

from fastapi.testclient import TestClient

from svc_helpers import PROBES, TRAIN, assert_problem


def _enroll(client: TestClient, cid: str, ref: str, admin: dict, *paths) -> None:
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    r = client.post(f"/v1/collections/{cid}/identities/{ref}/faces", files=files, headers=admin)
    assert r.status_code == 201, r.text


def _verify(client: TestClient, cid: str, admin: dict, claim: str, **form) -> dict:
    group = PROBES / "kit_with_rose.jpg"
    return client.post(
        f"/v1/collections/{cid}/verify",
        headers=admin,
        files={"file": (group.name, group.read_bytes(), "image/jpeg")},
        data={"identity_id": claim, **form},
    )


def test_external_id_addresses_an_identity_everywhere(
    client: TestClient, admin: dict, collection: str
) -> None:
    cid = collection
    r = client.post(
        f"/v1/collections/{cid}/identities",
        headers=admin,
        json={"external_id": "emp-0042", "display_name": "Kit"},
    )
    iid = r.json()["id"]
    _enroll(client, cid, "emp-0042", admin, TRAIN / "kit_harington/john1.jpeg")
    by_ext = client.get(f"/v1/collections/{cid}/identities/emp-0042", headers=admin).json()
    assert by_ext["id"] == iid and len(by_ext["faces"]) == 1
    assert client.get(f"/v1/collections/{cid}/identities/{iid}", headers=admin).json()["id"] == iid
    assert_problem(
        client.get(f"/v1/collections/{cid}/identities/nobody", headers=admin), 404, "not_found"
    )
    probe = TRAIN / "kit_harington/john2.jpeg"
    r = client.post(
        f"/v1/collections/{cid}/verify",
        headers=admin,
        data={"identity_id": "emp-0042"},
        files={"file": (probe.name, probe.read_bytes(), "image/jpeg")},
    )
    assert r.status_code == 200 and r.json()["match"] is True and r.json()["identity_id"] == iid
    r = client.delete(f"/v1/collections/{cid}/identities/emp-0042", headers=admin)
    assert r.status_code == 200 and r.json()["erased"] == iid


def test_group_photo_verifies_the_claimed_person_and_names_the_face(
    client: TestClient, admin: dict, collection: str
) -> None:
    cid = collection
    for ext in ("kit", "rose"):
        client.post(f"/v1/collections/{cid}/identities", headers=admin, json={"external_id": ext})
    _enroll(
        client,
        cid,
        "kit",
        admin,
        TRAIN / "kit_harington/john1.jpeg",
        TRAIN / "kit_harington/john2.jpeg",
    )
    _enroll(
        client, cid, "rose", admin, TRAIN / "rose_leslie/img1.jpg", TRAIN / "rose_leslie/img2.jpg"
    )

    answers = {}
    for claim in ("kit", "rose"):
        r = _verify(client, cid, admin, claim)
        assert r.status_code == 200, r.text
        answers[claim] = r.json()
        # both people are in the photo: whichever face is larger, each claim is a match
        assert answers[claim]["match"] is True and answers[claim]["faces_in_probe"] == 2
    assert answers["kit"]["probe_face_index"] != answers["rose"]["probe_face_index"]
    assert answers["kit"]["probe_face"]["bbox"] != answers["rose"]["probe_face"]["bbox"]

    refused = _verify(client, cid, admin, "rose", single_face="true")
    err = assert_problem(refused, 422, "multiple_faces")
    assert err["details"]["faces"] == 2
