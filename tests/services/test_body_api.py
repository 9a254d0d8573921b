"""Body templates through the real service: real Postgres, OSNet on real MOT17 pedestrians,
face + body fusion on real photos, erasure and index rebuild from the store."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.body_store import fuse, margin
from services.indexes import IndexRegistry

from svc_helpers import DATA, TRAIN, assert_problem

SEQ = DATA / "mot" / "MOT17-09-FRCNN"


def _gt(frame: int) -> dict[int, list[float]]:
    """Visible pedestrians of one frame: track id -> x1,y1,x2,y2."""
    gt = np.loadtxt(SEQ / "gt" / "gt.txt", delimiter=",")
    gt = gt[(gt[:, 0] == frame) & (gt[:, 6] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= 0.7)]
    return {int(r[1]): [r[2], r[3], r[2] + r[4], r[3] + r[5]] for r in gt}


def _bbox(box: list[float]) -> str:
    return ",".join(f"{v:.1f}" for v in box)


def _frame(i: int) -> bytes:
    return (SEQ / "img1" / f"{i:06d}.jpg").read_bytes()


def _blank_png() -> bytes:
    ok, data = cv2.imencode(".png", np.full((480, 640, 3), 127, np.uint8))
    assert ok
    return data.tobytes()


def _identity(client: TestClient, admin: dict[str, str], collection: str, ext: str) -> str:
    r = client.post(
        f"/v1/collections/{collection}/identities", json={"external_id": ext}, headers=admin
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_fusion_rule_known_answers() -> None:
    assert margin(0.8, 0.6) == pytest.approx(0.5)
    assert margin(0.6, 0.6) == 0.0
    # Face 0.5 above its threshold, body 0.25 below its own: (2 * 0.5 + 1 * -0.25) / 3.
    assert fuse((0.8, 0.6), (0.7, 0.76)) == pytest.approx((2 * 0.5 - 0.25) / 3)
    # One modality alone is that modality's own calibrated decision.
    assert fuse(None, (0.7, 0.76)) == pytest.approx(-0.25)
    assert fuse(None, None) is None


def test_enroll_and_identify_pedestrians_across_frames(
    client: TestClient, admin: dict[str, str], collection: str
) -> None:
    first, later = _gt(1), _gt(4)
    tracks = sorted(set(first) & set(later))[:3]
    assert len(tracks) == 3
    ids = {}
    for t in tracks:
        iid = _identity(client, admin, collection, f"track-{t}")
        r = client.post(
            f"/v1/collections/{collection}/identities/{iid}/bodies",
            files=[("files", ("f1.jpg", _frame(1), "image/jpeg"))],
            data={"bbox": _bbox(first[t])},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        assert len(r.json()["accepted"]) == 1
        ids[t] = iid
    for t in tracks:
        r = client.post(
            f"/v1/collections/{collection}/identify-body",
            files={"file": ("f4.jpg", _frame(4), "image/jpeg")},
            data={"bbox": _bbox(later[t]), "far": "0.001"},
            headers=admin,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["body_model"] == "reid_intel_0287"  # the default (Settings.body_embedder)
        top = body["candidates"][0]
        assert top["identity_id"] == ids[t] and top["match"] is True
        assert top["body_similarity"] > body["body_threshold"]
        # The others are ranked below and are not matches.
        assert all(not c["match"] for c in body["candidates"][1:])

    # The same person of the same image again is a duplicate (rejected, 422 as none accepted).
    t = tracks[0]
    r = client.post(
        f"/v1/collections/{collection}/identities/{ids[t]}/bodies",
        files=[("files", ("f1.jpg", _frame(1), "image/jpeg"))],
        data={"bbox": _bbox(first[t])},
        headers=admin,
    )
    err = assert_problem(r, 422, "enrollment_rejected")
    assert err["details"]["rejected"][0]["code"] == "duplicate_image"

    # Erasing an identity removes its body templates; the index follows the store.
    assert (
        client.delete(
            f"/v1/collections/{collection}/identities/{ids[t]}", headers=admin
        ).status_code
        == 200
    )
    r = client.post(
        f"/v1/collections/{collection}/identify-body",
        files={"file": ("f4.jpg", _frame(4), "image/jpeg")},
        data={"bbox": _bbox(later[t])},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert ids[t] not in {c["identity_id"] for c in r.json()["candidates"]}


def test_index_rebuilds_from_postgres(
    client: TestClient, admin: dict[str, str], collection: str
) -> None:
    first = _gt(1)
    t = min(first)
    iid = _identity(client, admin, collection, "one")
    r = client.post(
        f"/v1/collections/{collection}/identities/{iid}/bodies",
        files=[("files", ("f1.jpg", _frame(1), "image/jpeg"))],
        data={"bbox": _bbox(first[t])},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    store = client.app.state.body_store  # type: ignore[attr-defined]
    cid = store.store.collection_id(collection)
    # a new process: nothing in memory, the body index built from body_templates
    fresh = IndexRegistry(store.settings, store.store.engine, kind="body")
    assert fresh.rebuild(cid, store.model_name) == 1
    assert fresh.ids(cid, store.model_name) == {r.json()["accepted"][0]["template_id"]}


def test_body_index_follows_the_change_log_and_erasure_purges_its_snapshot(
    client: TestClient, admin: dict[str, str], collection: str
) -> None:
    """Bodies use the faces' freshness path: a second process catches up by change-log seq, a
    snapshot records its seq, and erasing the identity deletes the snapshot holding its vectors."""
    first = _gt(1)
    a, b = sorted(first)[:2]
    ids, tids = {}, {}
    for t in (a, b):
        ids[t] = _identity(client, admin, collection, f"walker-{t}")
        r = client.post(
            f"/v1/collections/{collection}/identities/{ids[t]}/bodies",
            files=[("files", ("f1.jpg", _frame(1), "image/jpeg"))],
            data={"bbox": _bbox(first[t])},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        tids[t] = r.json()["accepted"][0]["template_id"]
    body_store = client.app.state.body_store  # type: ignore[attr-defined]
    store = body_store.store
    cid, model = store.collection_id(collection), body_store.model_name
    other = IndexRegistry(store.settings, store.engine, kind="body")  # another worker
    assert other.ids(cid, model) == {tids[a], tids[b]}
    store.snapshot_indexes()
    snapshot = store.settings.index_dir / str(cid) / f"body.{model}.faiss"
    assert snapshot.is_file()
    restarted = IndexRegistry(store.settings, store.engine, kind="body")
    assert restarted.ids(cid, model) == {tids[a], tids[b]}  # loaded from the snapshot
    seq = next(d["seq"] for d in restarted.describe() if d["model"] == model)
    assert seq > 0

    r = client.delete(f"/v1/collections/{collection}/identities/{ids[a]}", headers=admin)
    assert r.status_code == 200, r.text
    assert not snapshot.exists(), "the body snapshot holding the erased vectors was not removed"
    assert store.body_indexes.ids(cid, model) == {tids[b]}
    other.catch_up(cid, model)  # replays the 'remove' by seq: no rebuild
    assert other.ids(cid, model) == {tids[b]}
    store.snapshot_indexes()
    assert IndexRegistry(store.settings, store.engine, kind="body").ids(cid, model) == {tids[b]}


def test_face_and_body_fused_on_real_photos(
    client: TestClient, admin: dict[str, str], collection: str
) -> None:
    people = {"obama": TRAIN / "obama" / "obama.jpg", "biden": TRAIN / "biden" / "biden.jpg"}
    ids = {}
    for name, path in people.items():
        iid = _identity(client, admin, collection, name)
        files = [("files", (path.name, path.read_bytes(), "image/jpeg"))]
        assert (
            client.post(
                f"/v1/collections/{collection}/identities/{iid}/faces", files=files, headers=admin
            ).status_code
            == 201
        )
        # Portraits: the person is the whole photo (HOG needs a full standing figure).
        r = client.post(
            f"/v1/collections/{collection}/identities/{iid}/bodies",
            files=files,
            data={"bbox": "0,0,100000,100000"},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        ids[name] = iid
    probe = (TRAIN / "obama" / "obama2.jpg").read_bytes()
    r = client.post(
        f"/v1/collections/{collection}/identify-body",
        files={"file": ("obama2.jpg", probe, "image/jpeg")},
        data={"bbox": "0,0,100000,100000"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["face"] is not None and body["face_model"] is not None
    top = body["candidates"][0]
    assert top["identity_id"] == ids["obama"] and top["match"] is True
    assert top["face_similarity"] is not None and top["body_similarity"] is not None
    expected = fuse(
        (top["face_similarity"], body["face_threshold"]),
        (top["body_similarity"], body["body_threshold"]),
    )
    assert top["fused_score"] == pytest.approx(expected, abs=1e-5)
    # Without the face, the body alone decides (and the face fields stay empty).
    r = client.post(
        f"/v1/collections/{collection}/identify-body",
        files={"file": ("obama2.jpg", probe, "image/jpeg")},
        data={"bbox": "0,0,100000,100000", "use_face": "false"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["face"] is None
    assert all(c["face_similarity"] is None for c in r.json()["candidates"])


def test_bad_inputs_are_typed_4xx(
    client: TestClient, admin: dict[str, str], collection: str
) -> None:
    iid = _identity(client, admin, collection, "x")
    url = f"/v1/collections/{collection}/identities/{iid}/bodies"
    assert_problem(
        client.post(
            url,
            files=[("files", ("f.jpg", _frame(1), "image/jpeg"))],
            data={"bbox": "1,2,3"},
            headers=admin,
        ),
        422,
        "invalid_input",
    )
    # A box outside the image, an empty file, a photo with no standing person (HOG finds none).
    err = assert_problem(
        client.post(
            url,
            files=[("files", ("f.jpg", _frame(1), "image/jpeg"))],
            data={"bbox": "5000,5000,5100,5200"},
            headers=admin,
        ),
        422,
        "enrollment_rejected",
    )
    assert err["details"]["rejected"][0]["code"] == "invalid_input"
    err = assert_problem(
        client.post(url, files=[("files", ("e.jpg", b"", "image/jpeg"))], headers=admin),
        422,
        "enrollment_rejected",
    )
    assert err["details"]["rejected"][0]["code"] == "bad_image"
    assert_problem(
        client.post(
            f"/v1/collections/{collection}/identify-body",
            files={"file": ("p.png", _blank_png(), "image/png")},
            headers=admin,
        ),
        422,
        "no_person_found",
    )
    assert_problem(
        client.post(
            f"/v1/collections/{collection}/identities/00000000-0000-0000-0000-000000000000/bodies",
            files=[("files", ("f.jpg", _frame(1), "image/jpeg"))],
            headers=admin,
        ),
        404,
        "not_found",
    )
    assert_problem(
        client.post(
            "/v1/collections/no-such/identify-body",
            files={"file": ("f.jpg", _frame(1), "image/jpeg")},
            headers=admin,
        ),
        404,
    )
    assert_problem(
        client.post(
            f"/v1/collections/{collection}/identify-body",
            files={"file": ("f.jpg", _frame(1), "image/jpeg")},
        ),
        401,
    )


def _png(w: int, h: int) -> bytes:
    ok, data = cv2.imencode(".png", np.full((h, w, 3), 127, np.uint8))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("wh", [(1, 1), (64, 64), (3, 5000), (60, 30)])
def test_images_that_crashed_the_person_detector_are_4xx(
    client: TestClient, admin: dict[str, str], collection: str, wh: tuple[int, int]
) -> None:
    # OpenCV's HOG segfaulted the whole process on 1x1, 64x64 and 3x5000 (issue 10), and 60x30
    # was a 500. Now each is a typed 4xx problem, and the service (this process) still answers.
    iid = _identity(client, admin, collection, f"tiny-{wh[0]}x{wh[1]}")
    r = client.post(
        f"/v1/collections/{collection}/identify-body",
        files={"file": ("t.png", _png(*wh), "image/png")},
        headers=admin,
    )
    code = "no_person_found" if wh == (64, 64) else "unsuitable_person_image"
    assert_problem(r, 422, code)
    err = assert_problem(
        client.post(
            f"/v1/collections/{collection}/identities/{iid}/bodies",
            files=[("files", ("t.png", _png(*wh), "image/png"))],
            headers=admin,
        ),
        422,
        "enrollment_rejected",
    )
    assert err["details"]["rejected"][0]["code"] == code
    assert (
        client.get(f"/v1/collections/{collection}/identities/{iid}", headers=admin).status_code
        == 200
    )


def test_reranking_orders_a_one_model_gallery(
    client: TestClient, admin: dict[str, str], collection: str
) -> None:
    first, later = _gt(1), _gt(4)
    tracks = sorted(set(first) & set(later))[:4]
    ids = {}
    for t in tracks:
        ids[t] = _identity(client, admin, collection, f"rr-{t}")
        for frame, boxes in ((1, first), (4, later)):
            r = client.post(
                f"/v1/collections/{collection}/identities/{ids[t]}/bodies",
                files=[("files", ("f.jpg", _frame(frame), "image/jpeg"))],
                data={"bbox": _bbox(boxes[t])},
                headers=admin,
            )
            assert r.status_code == 201, r.text
    probe_frame = 2
    probe = _gt(probe_frame)
    for t in tracks:
        if t not in probe:
            continue
        r = client.post(
            f"/v1/collections/{collection}/identify-body",
            files={"file": ("f.jpg", _frame(probe_frame), "image/jpeg")},
            data={"bbox": _bbox(probe[t]), "rerank": "true", "use_face": "false"},
            headers=admin,
        )
        assert r.status_code == 200, r.text
        assert r.json()["reranked"] is True
        assert r.json()["candidates"][0]["identity_id"] == ids[t]


def test_templates_of_an_older_body_model_stay_searchable(
    client: TestClient, admin: dict[str, str], collection: str
) -> None:
    """Body templates enrolled with OSNet before the default became Intel 0287 are still matched
    (with OSNet's own embedding of the probe and OSNet's threshold); new ones use 0287."""
    from identity.body import BodyAnalyzer
    from services.body_store import BodyStore

    first, later = _gt(1), _gt(4)
    old, new = sorted(set(first) & set(later))[:2]
    store = client.app.state.store  # type: ignore[attr-defined]
    legacy = BodyStore(store, BodyAnalyzer(store.settings, embedder="osnet_x0_25_msmt17"))
    ids = {t: _identity(client, admin, collection, f"gen-{t}") for t in (old, new)}
    legacy.enroll_images(collection, ids[old], [("f1.jpg", _frame(1))], first[old])
    r = client.post(
        f"/v1/collections/{collection}/identities/{ids[new]}/bodies",
        files=[("files", ("f1.jpg", _frame(1), "image/jpeg"))],
        data={"bbox": _bbox(first[new])},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    for t, model in ((old, "osnet_x0_25_msmt17"), (new, "reid_intel_0287")):
        for rerank in ("false", "true"):
            r = client.post(
                f"/v1/collections/{collection}/identify-body",
                files={"file": ("f4.jpg", _frame(4), "image/jpeg")},
                data={"bbox": _bbox(later[t]), "rerank": rerank, "use_face": "false"},
                headers=admin,
            )
            assert r.status_code == 200, r.text
            top = r.json()["candidates"][0]
            assert top["identity_id"] == ids[t] and top["match"] is True, (rerank, r.json())
            assert top["body_model"] == model
            # re-ranking needs one embedding space; with OSNet templates present it stands aside
            assert r.json()["reranked"] is False
