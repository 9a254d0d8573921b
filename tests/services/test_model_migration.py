"""Changing a collection's face model without re-enrolment (docs/model-migration.md), on real
photos: migrate dlib_resnet_v1 -> arcface_w600k_mbf_int8 (the upgrade to the new default) while identify keeps answering,
switch, switch back, drop; kill -9 mid-way and resume; erase an identity mid-migration."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from identity.settings import Settings
from services.errors import Conflict, MigrationIncomplete
from services.gallery import GalleryStore, run_migration
from services.store import IdentityStore
from services.tables import Collection, FaceTemplate

from shared_data import SHARED_DIR

DEEPFACE = SHARED_DIR / "data" / "deepface"
SOURCE, TARGET = "dlib_resnet_v1", "arcface_w600k_mbf_int8"
REPO = Path(__file__).resolve().parents[2]


def _labelled(limit: int) -> list[tuple[str, str]]:
    with (DEEPFACE / "LABELS.csv").open() as f:
        rows = [(r["path"], r["identity"]) for r in csv.DictReader(f)]
    return rows[:limit]


def _enroll(store: IdentityStore, collection: str, limit: int = 40) -> dict[str, list[int]]:
    """Enroll the first ``limit`` labelled deepface photos; identity -> template ids."""
    out: dict[str, list[int]] = {}
    for path, who in _labelled(limit):
        with contextlib.suppress(Conflict):  # created by an earlier photo of the person
            store.create_identity(collection, who)
        r = store.enroll_images(collection, who, [(path, (DEEPFACE / path).read_bytes())])
        out.setdefault(who, []).extend(a["template_id"] for a in r["accepted"])
    return out


def _count(store: IdentityStore, collection: str, model: str) -> int:
    with store.read(collection) as (s, c):
        return int(
            s.execute(
                select(func.count()).where(
                    FaceTemplate.collection_id == c.id, FaceTemplate.model_name == model
                )
            ).scalar_one()
        )


def _crop_files(settings: Settings, store: IdentityStore, collection: str) -> set[str]:
    cid = store.collection_id(collection)
    folder = settings.thumbnails_dir / str(cid)
    return {p.name for p in folder.glob("*.crop.sealed")} if folder.exists() else set()


@pytest.fixture
def enrolled(store: IdentityStore) -> tuple[str, dict[str, list[int]]]:
    import uuid

    name = "mig-" + uuid.uuid4().hex[:8]
    store.create_collection(name)
    store.switch_model(name, SOURCE)  # as migration 0460 pins a collection of a dlib release
    return name, _enroll(store, name)


def test_enrolment_keeps_a_sealed_crop_per_template(
    store: IdentityStore, settings: Settings, enrolled: tuple[str, dict[str, list[int]]]
) -> None:
    name, by_identity = enrolled
    n = sum(len(v) for v in by_identity.values())
    assert n >= 30
    files = _crop_files(settings, store, name)
    assert len(files) == n
    raw = next(iter(files))
    blob = (settings.thumbnails_dir / str(store.collection_id(name)) / raw).read_bytes()
    assert not blob.startswith(b"\xff\xd8")  # sealed, not a readable JPEG
    status = store.face_models(name)
    assert status["active"] == SOURCE
    assert status["models"][0] == {
        "model": SOURCE,
        "active": True,
        "templates": n,
        "identities": len([v for v in by_identity.values() if v]),
        "with_crop": n,
        "uncovered": 0,
        "calibration_problem": None,
    }


def test_migrate_under_load_switch_back_and_drop(
    client: TestClient,
    admin: dict[str, str],
    store: IdentityStore,
    settings: Settings,
    enrolled: tuple[str, dict[str, list[int]]],
) -> None:
    name, by_identity = enrolled
    n = sum(len(v) for v in by_identity.values())
    probe_path, probe_who = "img2.jpg", "person_00"
    probe = (DEEPFACE / probe_path).read_bytes()

    def identify() -> dict[str, Any]:
        r = client.post(f"/v1/collections/{name}/identify", files={"file": probe}, headers=admin)
        assert r.status_code == 200, r.text
        return r.json()

    # identify keeps answering, with the active model, all through the migration
    answers: list[tuple[float, float, dict[str, Any]]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            t0 = time.time()
            body = identify()
            answers.append((t0, time.time(), body))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        while not answers and loader.is_alive():
            time.sleep(0.05)
        assert answers, "identify failed before the migration started"
        r = client.post(
            f"/v1/collections/{name}/face-models/migrate", json={"to": TARGET}, headers=admin
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["kind"] == "migrate" and job["status"] in ("queued", "running", "done")
        deadline = time.time() + 300
        while job["status"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.2)
            job = client.get(f"/v1/collections/{name}/jobs/{job['id']}", headers=admin).json()
    finally:
        stop.set()
        loader.join(60)
    assert job["status"] == "done", job
    started = datetime.fromisoformat(job["started_at"]).timestamp()
    finished = datetime.fromisoformat(job["finished_at"]).timestamp()
    during = [b for t0, t1, b in answers if t0 < finished and t1 > started]
    assert during, "no identify request overlapped the migration"
    for body in during:
        assert body["model"] == SOURCE
        assert body["faces"][0]["candidates"][0]["external_id"] == probe_who

    report = job["report"]
    assert report["migrated"] == n and report["failed"] == 0 and report["total"] == n
    assert report["checked"] == n and report["images_per_s"] > 0
    assert report["decisions_changed"] == len(report["changes"])
    assert job["counts"]["enrolled"] == n

    status = client.get(f"/v1/collections/{name}/face-models", headers=admin).json()
    target = next(m for m in status["models"] if m["model"] == TARGET)
    assert target["templates"] == n and target["uncovered"] == 0 and not target["active"]

    # switch: decisions now use the new model, and find the same person
    r = client.post(
        f"/v1/collections/{name}/face-models/switch", json={"to": TARGET}, headers=admin
    )
    assert r.status_code == 200, r.text
    body = identify()
    assert body["model"] == TARGET
    assert body["faces"][0]["candidates"][0]["external_id"] == probe_who
    verify = client.post(
        f"/v1/collections/{name}/verify",
        data={"identity_id": probe_who},
        files={"file": probe},
        headers=admin,
    )
    assert verify.status_code == 200 and verify.json()["model"] == TARGET
    assert verify.json()["match"] is True

    # the active model's templates cannot be dropped
    r = client.delete(f"/v1/collections/{name}/face-models/{TARGET}", headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "active_model"

    # switch back: the old templates were never touched
    r = client.post(
        f"/v1/collections/{name}/face-models/switch", json={"to": SOURCE}, headers=admin
    )
    assert r.status_code == 200 and r.json()["previous"] == TARGET
    assert identify()["model"] == SOURCE

    # drop the unused model: templates, crops and index entries go
    crops_before = _crop_files(settings, store, name)
    r = client.delete(f"/v1/collections/{name}/face-models/{TARGET}", headers=admin)
    assert r.status_code == 200 and r.json()["dropped"] == n
    assert _count(store, name, TARGET) == 0
    assert len(_crop_files(settings, store, name)) == len(crops_before) - n
    assert store.indexes.ids(store.collection_id(name), TARGET) == set()
    assert identify()["faces"][0]["candidates"][0]["external_id"] == probe_who


def test_switch_refusals(
    client: TestClient, admin: dict[str, str], enrolled: tuple[str, dict[str, list[int]]]
) -> None:
    name, _ = enrolled
    url = f"/v1/collections/{name}/face-models"
    r = client.post(url + "/switch", json={"to": TARGET}, headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "migration_incomplete"
    assert r.json()["error"]["details"]["uncovered"] > 0
    r = client.post(url + "/switch", json={"to": "no_such_model"}, headers=admin)
    assert r.status_code == 422 and TARGET in r.json()["error"]["details"]["known"]
    r = client.post(url + "/switch", json={"to": "retinaface_mnet025"}, headers=admin)
    assert r.status_code == 422  # a detector is not a face model
    r = client.post(url + "/migrate", json={"to": SOURCE}, headers=admin)
    assert r.status_code == 422  # already active
    r = client.post(url + "/migrate", json={}, headers=admin)
    assert r.status_code == 422
    r = client.post(url + "/switch", json={"to": TARGET, "force": True}, headers=admin)
    assert r.status_code == 200 and r.json()["uncovered"] > 0
    r = client.post(url + "/switch", json={"to": SOURCE}, headers=admin)
    assert r.status_code == 200


def _cli(settings: Settings, *args: str, batch: int = 1) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": str(settings.database_url),
        "IDENTITY_DATA_DIR": str(settings.data_dir),
        "IDENTITY_MODELS_DIR": str(settings.models_dir),
        "IDENTITY_KEK": settings.kek.get_secret_value() if settings.kek else "",
        "IDENTITY_MIGRATE_BATCH_SIZE": str(batch),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "templates", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    assert cond(), what


def test_kill_9_mid_migration_then_resume(
    store: IdentityStore,
    settings: Settings,
    engine: Any,
    enrolled: tuple[str, dict[str, list[int]]],
) -> None:
    import json

    name, by_identity = enrolled
    n = sum(len(v) for v in by_identity.values())
    proc = _cli(settings, "migrate", "-c", name, "--to", TARGET, "--no-progress", "--json")
    _wait_for(lambda: _count(store, name, TARGET) >= 3, proc, "no batch committed")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    done = _count(store, name, TARGET)
    assert 3 <= done < n
    gallery = GalleryStore(store, engine)
    (killed,) = gallery.list_jobs(name)
    assert killed["kind"] == "migrate" and killed["status"] == "running"
    gallery.mark_interrupted_jobs()
    assert gallery.get_job(name, killed["id"])["status"] == "interrupted"
    # the switch refuses a half-migrated collection
    with pytest.raises(MigrationIncomplete):
        store.switch_model(name, TARGET)

    proc = _cli(settings, "migrate", "-c", name, "--to", TARGET, "--json", batch=8)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    report = json.loads(out)
    assert report["total"] == n - done and report["migrated"] == n - done
    assert _count(store, name, TARGET) == n
    with store.read(name) as (s, c):
        twins = s.execute(
            select(FaceTemplate.migrated_from, func.count())
            .where(FaceTemplate.collection_id == c.id, FaceTemplate.model_name == TARGET)
            .group_by(FaceTemplate.migrated_from)
        ).all()
    assert len(twins) == n and all(k == 1 for _, k in twins)  # each old template once
    proc = _cli(settings, "switch", "-c", name, "--to", TARGET)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    with store.sessions() as s:
        active = s.execute(select(Collection.face_model).where(Collection.name == name))
        assert active.scalar_one() == TARGET
    proc = _cli(settings, "drop", "-c", name, "--model", TARGET)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and err.decode().startswith("error: ")
    assert "Traceback" not in err.decode()


def test_erase_mid_migration_leaves_nothing_in_either_model(
    store: IdentityStore, settings: Settings, enrolled: tuple[str, dict[str, list[int]]]
) -> None:
    name, by_identity = enrolled
    victim = max(by_identity, key=lambda k: len(by_identity[k]))
    proc = _cli(settings, "migrate", "-c", name, "--to", TARGET, "--no-progress", "--json")
    _wait_for(lambda: _count(store, name, TARGET) >= 1, proc, "no batch committed")
    store.erase_identity(name, victim)  # waits for the batch in flight (the collection lock)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    n_left = sum(len(v) for k, v in by_identity.items() if k != victim)
    assert _count(store, name, SOURCE) == n_left
    assert _count(store, name, TARGET) == n_left
    cid = store.collection_id(name)
    victim_ids = set(by_identity[victim])
    for model in (SOURCE, TARGET):
        assert store.indexes.ids(cid, model).isdisjoint(victim_ids)
        assert len(store.indexes.ids(cid, model)) == n_left
    with store.read(name) as (s, c):
        orphans = s.execute(
            select(func.count()).where(
                FaceTemplate.collection_id == c.id, FaceTemplate.migrated_from.in_(victim_ids)
            )
        ).scalar_one()
    assert orphans == 0
    assert len(_crop_files(settings, store, name)) == 2 * n_left  # no crop of the victim left


def test_without_kept_crops_migration_names_what_it_cannot_do(
    settings: Settings, engine: Any
) -> None:
    import uuid

    store = IdentityStore(settings.model_copy(update={"keep_face_crops": False}), engine)
    name = "nocrop-" + uuid.uuid4().hex[:8]
    store.create_collection(name)
    store.switch_model(name, SOURCE)
    by_identity = _enroll(store, name, limit=4)
    n = sum(len(v) for v in by_identity.values())
    assert n >= 3 and _crop_files(settings, store, name) == set()
    report = run_migration(GalleryStore(store, engine), name, TARGET)
    assert report.migrated == 0 and report.failed == n
    assert {f["code"] for f in report.failures} == {"no_crop"}
    with pytest.raises(MigrationIncomplete) as refused:
        store.switch_model(name, TARGET)
    assert refused.value.details["uncovered"] == n


def test_a_cancelled_migration_does_nothing(
    store: IdentityStore, engine: Any, enrolled: tuple[str, dict[str, list[int]]]
) -> None:
    from identity.errors import JobCancelled
    from services.gallery.migrate import create_migration_job

    name, _ = enrolled
    gallery = GalleryStore(store, engine)
    job_id = create_migration_job(gallery, name, TARGET)
    assert gallery.cancel_job(name, job_id)["status"] == "cancelled"
    with pytest.raises(JobCancelled):
        run_migration(gallery, name, TARGET, job_id=job_id)
    assert gallery.get_job(name, job_id)["status"] == "cancelled"
    assert _count(store, name, TARGET) == 0
