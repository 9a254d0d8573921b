"""Indexing jobs and clusters over HTTP: server-side path and uploaded archive, real Postgres."""

from __future__ import annotations

import io
import sys
import time
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gallery_helpers import TRAIN


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second allowed gallery root, for CSVs written by the tests."""
    return tmp_path_factory.mktemp("csv-root")


@pytest.fixture(scope="module")
def client(settings, engine, csv_root: Path):  # type: ignore[no-untyped-def]
    from services.app import create_app

    roots_settings = settings.model_copy(update={"gallery_roots": [TRAIN.parent, csv_root]})
    app = create_app(roots_settings, engine=engine, warm_models=False)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def admin(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from services.auth import KeyStore

    key, _ = KeyStore(engine).create("admin", name="gallery-tests")
    return {"X-API-Key": key}


def _wait(client: TestClient, cid: str, jid: str, headers: dict) -> dict:
    deadline = time.time() + 240
    while time.time() < deadline:
        job = client.get(f"/v1/collections/{cid}/jobs/{jid}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {jid} still {job['status']}")


def test_path_job_and_upload_job(client: TestClient, admin: dict, new_collection) -> None:  # type: ignore[no-untyped-def]
    cid = new_collection()
    r = client.post(
        f"/v1/collections/{cid}/jobs",
        json={"path": "train", "labels": "folders"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    job = _wait(client, cid, r.json()["id"], admin)
    assert job["status"] == "done", job
    assert job["counts"]["enrolled"] == 9 and job["progress"] == 1.0
    assert job["report"]["identities_created"] == 5

    # outside the allowed roots, and a missing path: typed 4xx, never a 500
    r = client.post(f"/v1/collections/{cid}/jobs", json={"path": "/etc"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = client.post(f"/v1/collections/{cid}/jobs", json={"path": "train/nobody"}, headers=admin)
    assert r.status_code == 404
    r = client.get(f"/v1/collections/{cid}/jobs/not-a-job", headers=admin)
    assert r.status_code == 404

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted((TRAIN / "biden").iterdir()):
            zf.write(p, f"biden/{p.name}")
        zf.writestr("../evil.jpg", b"x")
    r = client.post(
        f"/v1/collections/{cid}/jobs",
        files={"file": ("g.zip", buf.getvalue(), "application/zip")},
        data={"labels": "folders"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    job = _wait(client, cid, r.json()["id"], admin)
    # biden was enrolled by the first job: the same photos are skipped by SHA-256
    assert job["status"] == "done" and job["counts"]["skipped_known"] == 2, job
    assert job["counts"]["enrolled"] == 0
    assert {u["path"]: u["code"] for u in job["report"]["unreadable"]} == {
        "../evil.jpg": "path_traversal"
    }
    jobs = client.get(f"/v1/collections/{cid}/jobs", headers=admin).json()
    assert len(jobs) == 2
    r = client.post(
        f"/v1/collections/{cid}/jobs",
        files={"file": ("g.txt", b"hello", "text/plain")},
        headers=admin,
    )
    assert r.status_code == 422


def test_cluster_endpoints(client: TestClient, admin: dict, new_collection) -> None:  # type: ignore[no-untyped-def]
    cid = new_collection()
    r = client.post(
        f"/v1/collections/{cid}/jobs", json={"path": "train", "labels": "none"}, headers=admin
    )
    job = _wait(client, cid, r.json()["id"], admin)
    assert job["status"] == "done" and job["report"]["clusters"] >= 3, job
    clusters = client.get(f"/v1/collections/{cid}/clusters", headers=admin).json()["items"]
    first = clusters[0]
    # every proposal of the train set holds one person (folder name = truth)
    for c in clusters:
        assert len({Path(f["path"]).parent.name for f in c["faces"]}) == 1, c
    thumb = client.get(
        f"/v1/collections/{cid}/gallery-faces/{first['faces'][0]['face_id']}/thumbnail",
        headers=admin,
    )
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    r = client.post(
        f"/v1/collections/{cid}/clusters/{first['id']}/merge",
        json={"clusters": [clusters[1]["id"]]},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["size"] == first["size"] + clusters[1]["size"]
    r = client.post(
        f"/v1/collections/{cid}/clusters/{first['id']}/name",
        json={"external_id": "someone"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    iid = r.json()["identity_id"]
    ident = client.get(f"/v1/collections/{cid}/identities/{iid}", headers=admin).json()
    assert ident["templates"] == first["size"] + clusters[1]["size"]
    r = client.post(
        f"/v1/collections/{cid}/clusters/{first['id']}/name",
        json={"external_id": "again"},
        headers=admin,
    )
    assert r.status_code == 409
    r = client.post(
        f"/v1/collections/{cid}/clusters/999999/name", json={"external_id": "x"}, headers=admin
    )
    assert r.status_code == 404
    r = client.post(f"/v1/collections/{cid}/clusters/1/name", json={}, headers=admin)
    assert r.status_code == 422


def test_recluster_without_the_hdbscan_extra_is_a_422(  # type: ignore[no-untyped-def]
    client: TestClient, admin: dict, new_collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = new_collection()
    r = client.post(
        f"/v1/collections/{cid}/jobs", json={"path": "train", "labels": "none"}, headers=admin
    )
    assert _wait(client, cid, r.json()["id"], admin)["status"] == "done"
    # an install without the dev extra: neither scikit-learn nor hdbscan can be imported
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    monkeypatch.setitem(sys.modules, "hdbscan", None)
    r = client.post(
        f"/v1/collections/{cid}/clusters/recluster", json={"method": "hdbscan"}, headers=admin
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "feature_unavailable"
    assert "method='graph' needs neither" in r.json()["error"]["message"]
    r = client.post(
        f"/v1/collections/{cid}/clusters/recluster", json={"method": "graph"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["clusters"] >= 3, r.text


def test_csv_job_rows_outside_the_roots_are_refused(  # type: ignore[no-untyped-def]
    client: TestClient, admin: dict, new_collection, csv_root: Path, tmp_path: Path
) -> None:
    """The CSV itself is inside a root, but its rows may name any file: each row is confined
    too, so a real face photo elsewhere on the server is never read or enrolled."""
    import shutil

    outside = tmp_path / "elsewhere"  # a real photo, outside both roots
    outside.mkdir()
    shutil.copy(TRAIN / "rose_leslie" / "img1.jpg", outside / "secret.jpg")
    shutil.copy(TRAIN / "obama" / "obama.jpg", csv_root / "inside.jpg")
    csv_path = csv_root / "people.csv"
    csv_path.write_text(
        "path,identity\n"
        "inside.jpg,obama\n"
        f"{TRAIN / 'biden' / 'biden.jpg'},biden\n"  # absolute, inside the other root: fine
        f"{outside / 'secret.jpg'},mallory\n"
        f"../{'../' * len(csv_root.parts)}{str(outside / 'secret.jpg').lstrip('/')},mallory\n"
    )
    cid = new_collection()
    r = client.post(f"/v1/collections/{cid}/jobs", json={"path": str(csv_path)}, headers=admin)
    assert r.status_code == 202, r.text
    job = _wait(client, cid, r.json()["id"], admin)
    assert job["status"] == "done", job
    refused = {u["path"]: u["code"] for u in job["report"]["unreadable"]}
    assert set(refused.values()) == {"outside_roots"} and len(refused) == 2, refused
    assert job["counts"]["enrolled"] == 2 and job["report"]["identities_created"] == 2
    people = client.get(f"/v1/collections/{cid}/identities", headers=admin).json()
    assert {i["external_id"] for i in people["items"]} == {"obama", "biden"}


def test_openapi_documents_both_job_bodies(client: TestClient) -> None:
    """The job handler reads its body itself; the spec must still say what to send, or a
    generated client sends nothing."""
    body = client.get("/openapi.json").json()["paths"]["/v1/collections/{cid}/jobs"]["post"][
        "requestBody"
    ]
    assert body["required"] is True
    as_json = body["content"]["application/json"]["schema"]
    assert as_json["required"] == ["path"]
    assert as_json["properties"]["labels"]["enum"] == ["none", "folders", "csv"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and form["properties"]["file"]["format"] == "binary"
    assert form["properties"]["labels"]["enum"] == ["none", "folders"]
