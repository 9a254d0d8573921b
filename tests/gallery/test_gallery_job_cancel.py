"""Cancelling gallery jobs (API and CLI), the single job thread moving on, and the start-up sweep
of dead jobs and their uploaded archives. Real Postgres, real photos, archives built here."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from identity.errors import JobCancelled
from services.gallery import GalleryStore, IngestOptions, JobLease, run_ingest

from gallery_helpers import TRAIN, write_bz2_tar

TB = 1024**4
# Bounds loose enough that the 10 GiB member below is decompressed (slowly), so that only a
# cancel stops the job: the same archive under the default bounds fails at once instead.
LOOSE = {
    "job_max_member_bytes": TB,
    "job_max_expansion": 1e12,
    "job_max_bytes": TB,
    "index_batch_size": 1,
}


@pytest.fixture(scope="module")
def slow_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo, then a 10 GiB non-image member of zeros (about 64 KB of bz2), then a photo."""
    return write_bz2_tar(
        tmp_path_factory.mktemp("slow") / "slow.tar.bz2",
        [
            ("obama/obama.jpg", (TRAIN / "obama" / "obama.jpg").read_bytes()),
            ("junk/blob.bin", 1280),
            ("biden/biden.jpg", (TRAIN / "biden" / "biden.jpg").read_bytes()),
        ],
    )


@pytest.fixture(scope="module")
def loose_settings(settings, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("cancel-data")
    return settings.model_copy(update={**LOOSE, "data_dir": data})


@pytest.fixture(scope="module")
def client(loose_settings, engine):  # type: ignore[no-untyped-def]
    from services.app import create_app

    app = create_app(loose_settings, engine=engine, warm_models=False)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def admin(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from services.auth import KeyStore

    key, _ = KeyStore(engine).create("admin", name="cancel-tests")
    return {"X-API-Key": key}


def _job(client: TestClient, cid: str, jid: str, headers: dict) -> dict:
    r = client.get(f"/v1/collections/{cid}/jobs/{jid}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_for(client: TestClient, cid: str, jid: str, headers: dict, done, timeout=240) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = _job(client, cid, jid, headers)
        if done(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {jid}: {job['status']} {job['counts']}")


def _upload(client: TestClient, cid: str, name: str, data: bytes, headers: dict) -> dict:
    r = client.post(
        f"/v1/collections/{cid}/jobs",
        files={"file": (name, data, "application/octet-stream")},
        data={"labels": "folders"},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    return r.json()


def test_cancel_over_the_api(  # type: ignore[no-untyped-def]
    client: TestClient, admin: dict, new_collection, slow_archive: Path, loose_settings, store
) -> None:
    cid = new_collection()
    slow = _upload(client, cid, "slow.tar.bz2", slow_archive.read_bytes(), admin)
    small = io.BytesIO()
    with zipfile.ZipFile(small, "w") as zf:
        zf.write(TRAIN / "kit_harington" / "john1.jpeg", "kit_harington/john1.jpeg")
    queued = _upload(client, cid, "next.zip", small.getvalue(), admin)
    dropped = _upload(client, cid, "dropped.zip", small.getvalue(), admin)
    uploads = loose_settings.data_dir / "uploads"
    assert len(list(uploads.iterdir())) == 3

    # a queued job ends at once; the thread will skip it
    r = client.post(f"/v1/collections/{cid}/jobs/{dropped['id']}/cancel", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text

    # the slow job committed its first photo and is now decompressing the 10 GiB member
    _wait_for(client, cid, slow["id"], admin, lambda j: j["counts"]["enrolled"] >= 1)
    r = client.post(f"/v1/collections/{cid}/jobs/{slow['id']}/cancel", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("cancelling", "cancelled")
    job = _wait_for(client, cid, slow["id"], admin, lambda j: j["status"] == "cancelled", 60)
    assert job["counts"]["enrolled"] == 1 and job["error"] is None  # the photo stays
    names = {i["external_id"] for i in store.list_identities(cid)["items"]}
    assert "obama" in names and "biden" not in names

    # the single job thread moved on to the next job; the cancelled one never ran
    after = _wait_for(client, cid, queued["id"], admin, lambda j: j["status"] == "done")
    assert after["counts"]["enrolled"] == 1
    assert _job(client, cid, dropped["id"], admin)["started_at"] is None
    assert list(uploads.iterdir()) == []  # every upload removed when its job ended

    # an ended job: 409; an unknown one: 404; a verify key: 403
    r = client.post(f"/v1/collections/{cid}/jobs/{slow['id']}/cancel", headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = client.post(f"/v1/collections/{cid}/jobs/{uuid.uuid4()}/cancel", headers=admin)
    assert r.status_code == 404
    from services.auth import KeyStore

    verify_key, _ = KeyStore(store.engine).create("verify", name="cancel-verify")
    r = client.post(
        f"/v1/collections/{cid}/jobs/{queued['id']}/cancel", headers={"X-API-Key": verify_key}
    )
    assert r.status_code == 403

    cancels = [
        e
        for e in store.audit_events(200)
        if e["action"] == "gallery.job.cancel" and e["collection"] == cid
    ]
    assert len(cancels) == 2


def test_bomb_upload_fails_with_a_reason_under_default_bounds(  # type: ignore[no-untyped-def]
    settings, engine, admin: dict, new_collection, tmp_path: Path
) -> None:
    """Under the default bounds the reported attack (a small .tar.bz2 declaring 2 TB) is a failed
    job with a message naming the setting, and a long top-level label is one rejected image."""
    from services.app import create_app

    bomb = write_bz2_tar(
        tmp_path / "bomb.tar.bz2",
        [("obama/obama.jpg", (TRAIN / "obama" / "obama.jpg").read_bytes()), ("junk/blob.bin", 16)],
        declared={"junk/blob.bin": 2 * TB},
    )
    labels = io.BytesIO()
    with zipfile.ZipFile(labels, "w") as zf:
        zf.write(TRAIN / "biden" / "biden.jpg", "b" * 300 + "/biden.jpg")
        zf.write(TRAIN / "obama" / "obama.jpg", "obama/obama.jpg")
    app = create_app(
        settings.model_copy(update={"data_dir": tmp_path / "data"}),
        engine=engine,
        warm_models=False,
    )
    cid = new_collection()
    with TestClient(app) as c:
        jid = _upload(c, cid, "bomb.tar.bz2", bomb.read_bytes(), admin)["id"]
        job = _wait_for(c, cid, jid, admin, lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "failed"
        assert "IDENTITY_JOB_MAX_MEMBER_BYTES" in job["error"]
        jid = _upload(c, cid, "labels.zip", labels.getvalue(), admin)["id"]
        job = _wait_for(c, cid, jid, admin, lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "done" and job["error"] is None
        assert [u["code"] for u in job["report"]["unreadable"]] == ["label_too_long"]
        assert "INSERT" not in str(job)


def test_cancel_from_the_cli_stops_a_running_job(  # type: ignore[no-untyped-def]
    store, new_collection, slow_archive: Path, pg_url: str, tmp_path: Path, monkeypatch
) -> None:
    from services.cli import app

    gallery = GalleryStore(store, store.engine)
    gallery.settings = store.settings.model_copy(update=LOOSE)
    cid = new_collection()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_ingest(gallery, cid, slow_archive, IngestOptions(labels="folders", batch_size=1))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 240
    while time.time() < deadline:
        jobs = gallery.list_jobs(cid)
        if jobs and jobs[0]["counts"]["enrolled"] >= 1:
            break
        time.sleep(0.2)
    jid = jobs[0]["id"]
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["jobs", "cancel", jid])
    assert result.exit_code == 0, result.output
    assert f"job {jid}: cancelling" in result.stdout
    thread.join(60)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], JobCancelled)
    job = gallery.get_job(cid, jid)
    assert job["status"] == "cancelled" and job["counts"]["enrolled"] == 1

    # ended: one error line, non-zero exit; the list shows it
    again = CliRunner().invoke(app, ["jobs", "cancel", jid, "--collection", cid])
    assert again.exit_code != 0 and "already ended" in again.stderr
    missing = CliRunner().invoke(app, ["jobs", "cancel", str(uuid.uuid4())])
    assert missing.exit_code != 0 and "not found" in missing.stderr
    listed = CliRunner().invoke(app, ["jobs", "list", "-c", cid])
    assert listed.exit_code == 0 and jid in listed.stdout and "cancelled" in listed.stdout


def test_start_sweeps_dead_jobs_and_their_uploads(  # type: ignore[no-untyped-def]
    settings, engine, store, new_collection, tmp_path: Path
) -> None:
    """After a kill -9: the dead job's row said running and its upload (original photos) stayed.
    The next service start ends the job and removes the file; a live job's upload stays."""
    from services.app import create_app

    local = settings.model_copy(update={"data_dir": tmp_path / "data"})
    uploads = local.data_dir / "uploads"
    uploads.mkdir(parents=True)
    gallery = GalleryStore(store, store.engine)
    cid = new_collection()
    options = IngestOptions(labels="folders")
    dead, live = JobLease(engine), JobLease(engine)
    try:
        dead_id = gallery.create_job(cid, "upload:dead.zip", options, lease=dead)
        gallery.start_job(dead_id, None)
        live_id = gallery.create_job(cid, "upload:live.zip", options, lease=live)
        photo = (TRAIN / "obama" / "obama.jpg").read_bytes()
        (uploads / f"{dead_id}.zip").write_bytes(photo)
        (uploads / f"{live_id}.zip").write_bytes(photo)
        legacy = uploads / "tmpab12cd.tar.gz"  # an older version's temporary name, a day old
        legacy.write_bytes(photo)
        os.utime(legacy, (time.time() - 86_400, time.time() - 86_400))
        fresh = uploads / "tmpzz99.zip"  # being written right now by another process
        fresh.write_bytes(photo)
        dead.release()  # what Postgres does when the owner's connection dies with it

        with TestClient(create_app(local, engine=engine, warm_models=False)):
            pass
        assert sorted(p.name for p in uploads.iterdir()) == sorted([f"{live_id}.zip", fresh.name])
        assert gallery.get_job(cid, dead_id)["status"] == "interrupted"
        assert gallery.get_job(cid, live_id)["status"] == "queued"
    finally:
        live.release()


def test_path_jobs_that_cannot_be_a_gallery_are_a_422_at_once(  # type: ignore[no-untyped-def]
    settings, engine, admin: dict, new_collection, tmp_path: Path
) -> None:
    """A server-side path is checked when the job is submitted: no job row is left queued."""
    from services.app import create_app

    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe.zip")
    (root / "photo.jpg").write_bytes((TRAIN / "obama" / "obama.jpg").read_bytes())
    (root / "empty.csv").write_bytes(b"")
    (root / "latin1.csv").write_bytes("path,identity\nx.jpg,Jos\xe9\n".encode("latin-1"))
    local = settings.model_copy(update={"data_dir": tmp_path / "data", "gallery_roots": [root]})
    cid = new_collection()
    with TestClient(create_app(local, engine=engine, warm_models=False)) as c:
        for name, needle in (
            ("pipe.zip", "FIFO"),
            ("photo.jpg", "single image"),
            ("empty.csv", "is empty"),
            ("latin1.csv", "not UTF-8"),
        ):
            r = c.post(f"/v1/collections/{cid}/jobs", json={"path": name}, headers=admin)
            assert r.status_code == 422, r.text
            assert needle in r.json()["error"]["message"]
        assert c.get(f"/v1/collections/{cid}/jobs", headers=admin).json() == []
