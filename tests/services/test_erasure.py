"""Erasure leaves nothing: an identity made by naming a gallery cluster, plus a face enrolled
directly, erased through the API; then no file of the data directory or of the Postgres cluster
holds any of its embeddings or face crops (plaintext or sealed), its thumbnails answer 404, and a
recluster cannot bring the person back. Real Postgres, real models, real photos."""

from __future__ import annotations

import io
import time
import zipfile

from data_search import files_under, find_bytes, pg_data_dir, windows
from fastapi.testclient import TestClient
from sqlalchemy import text

from identity.index import FaceIndex
from services.sealed import EMBEDDING, SNAPSHOT, THUMBNAIL

from svc_helpers import PROBES, TRAIN


def _job(client: TestClient, cid: str, admin: dict) -> dict:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(TRAIN.glob("*/*")):
            zf.write(p, f"{p.parent.name}/{p.name}")
    r = client.post(
        f"/v1/collections/{cid}/jobs",
        files={"file": ("g.zip", buf.getvalue(), "application/zip")},
        data={"labels": "none"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    deadline = time.time() + 240
    while time.time() < deadline:
        job = client.get(f"/v1/collections/{cid}/jobs/{r.json()['id']}", headers=admin).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job still {job['status']}")


def _checkpoint(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("CHECKPOINT"))


def test_erased_identity_leaves_no_bytes_anywhere(
    client: TestClient, admin: dict, collection: str, settings, engine
) -> None:
    cid = collection
    store = client.app.state.store
    job = _job(client, cid, admin)
    assert job["status"] == "done" and job["report"]["clusters"] >= 3, job
    clusters = client.get(f"/v1/collections/{cid}/clusters", headers=admin).json()["items"]
    obama = [c for c in clusters if {f["path"].split("/")[0] for f in c["faces"]} == {"obama"}]
    assert len(obama) == 1, clusters
    r = client.post(
        f"/v1/collections/{cid}/clusters/{obama[0]['id']}/name",
        json={"external_id": "obama"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    iid = r.json()["identity_id"]
    probe = PROBES / "obama1.jpg"
    r = client.post(
        f"/v1/collections/{cid}/identities/{iid}/faces",
        files=[("files", (probe.name, probe.read_bytes(), "image/jpeg"))],
        headers=admin,
    )
    assert r.status_code == 201 and len(r.json()["accepted"]) == 1, r.text
    face_ids = [f["face_id"] for f in obama[0]["faces"]]
    thumb_urls = [f"/v1/collections/{cid}/gallery-faces/{i}/thumbnail" for i in face_ids]
    assert all(client.get(u, headers=admin).status_code == 200 for u in thumb_urls)

    # everything of the person as stored (sealed) and as it is in the clear
    coll_id = store.collection_id(cid)
    needles: dict[str, bytes] = {}
    with engine.connect() as conn:
        templates = conn.execute(
            text(
                "SELECT id, embedding, key_id, thumbnail FROM face_templates WHERE identity_id = :i"
            ),
            {"i": iid},
        ).all()
        gallery = conn.execute(
            text(
                "SELECT id, embedding, thumbnail_jpeg, key_id FROM gallery_faces WHERE id = ANY(:f)"
            ),
            {"f": face_ids},
        ).all()
    assert len(templates) == 3 and len(gallery) == 2
    for tid, blob, key_id, thumb in templates:
        needles[f"template {tid} sealed"] = bytes(blob)
        needles[f"template {tid} embedding"] = store.sealer.open_row(blob, key_id, EMBEDDING)
        path = settings.thumbnails_dir / str(coll_id) / thumb
        needles[f"template {tid} thumbnail file"] = path.read_bytes()
        needles[f"template {tid} jpeg"] = store.thumbnail_jpeg(cid, tid)
    for fid, blob, jpeg, key_id in gallery:
        needles[f"gallery face {fid} sealed"] = bytes(blob)
        needles[f"gallery face {fid} embedding"] = store.sealer.open_row(blob, key_id, EMBEDDING)
        needles[f"gallery face {fid} sealed crop"] = bytes(jpeg)
        needles[f"gallery face {fid} jpeg"] = store.sealer.open_row(jpeg, key_id, THUMBNAIL)
    store.indexes.snapshot_all()  # the snapshot on disk holds the person now
    _checkpoint(engine)  # and so do the table files: the search below is not fooled by buffers
    snapshot = settings.index_dir / str(coll_id) / f"{store.model_name}.faiss"
    assert snapshot.is_file()

    r = client.delete(f"/v1/collections/{cid}/identities/{iid}", headers=admin)
    assert r.status_code == 200 and r.json()["templates"] == 3, r.text

    assert all(client.get(u, headers=admin).status_code == 404 for u in thumb_urls)
    with engine.connect() as conn:
        left = conn.execute(
            text(
                "SELECT count(*) FROM gallery_faces WHERE collection_id = :c AND rel_path LIKE 'obama/%'"
            ),
            {"c": coll_id},
        ).scalar_one()
        named = conn.execute(
            text("SELECT count(*) FROM gallery_clusters WHERE id = :c"), {"c": obama[0]["id"]}
        ).scalar_one()
    assert left == 0 and named == 0
    assert not snapshot.exists(), "the snapshot holding the erased vectors was not removed"
    # recluster, name every proposal: the person does not come back
    r = client.post(f"/v1/collections/{cid}/clusters/recluster", json={}, headers=admin)
    assert r.status_code == 200, r.text
    for c in client.get(f"/v1/collections/{cid}/clusters", headers=admin).json()["items"]:
        assert all(not f["path"].startswith("obama/") for f in c["faces"]), c
        r = client.post(
            f"/v1/collections/{cid}/clusters/{c['id']}/name",
            json={"external_id": f"c{c['id']}"},
            headers=admin,
        )
        assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/collections/{cid}/identify",
        files={"file": (probe.name, probe.read_bytes(), "image/jpeg")},
        headers=admin,
    )
    assert r.status_code == 200 and not any(c["match"] for c in r.json()["faces"][0]["candidates"])

    # a fresh snapshot does not hold the erased templates
    store.indexes.snapshot_all()
    index = FaceIndex.load(snapshot, unseal=store.sealer.opener(SNAPSHOT))
    assert not {int(t[0]) for t in templates} & {int(i) for i in index.ids()}

    # no file of the data directory, nor of the Postgres cluster, holds any of it; WAL segments
    # keep the sealed rows until recycled (docs/security.md), never the plaintext
    _checkpoint(engine)
    pieces = {
        f"{name} [{i}]": w for name, blob in needles.items() for i, w in enumerate(windows(blob))
    }
    assert find_bytes(files_under(settings.data_dir), pieces) == []
    pg = pg_data_dir(engine)
    assert find_bytes(files_under(pg, skip=["pg_wal"]), pieces) == []
    clear = {k: v for k, v in pieces.items() if "sealed" not in k and "file" not in k}
    assert find_bytes(files_under(pg / "pg_wal"), clear) == []
