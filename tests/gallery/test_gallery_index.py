"""Indexing galleries into a real Postgres with the real models: report, labels, bad input,
idempotence, and resuming after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from services.gallery import IngestOptions, JobLease, run_ingest
from services.tables import FaceTemplate, GalleryImage, IdentityRow

from gallery_helpers import DEEPFACE, REPO, TRAIN, deepface_labels

N_KILL = 13


def _snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def _duplicates(engine, collection_id: int) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT identity_id, source_sha256, bbox::text "
                    "FROM face_templates WHERE collection_id = :c "
                    "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
                ),
                {"c": collection_id},
            ).scalar_one()
        )


def test_labelled_folder_report_bad_files_and_rerun(
    gallery, store, engine, new_collection, labelled_folder: Path
) -> None:
    cid = new_collection()
    opts = IngestOptions(labels="folders", workers=1, batch_size=4)
    report = run_ingest(gallery, cid, labelled_folder, opts)

    # 9 real photos of 5 people, 3 nested deeper, 4 bad files in biden/; README.txt is no image
    assert report.images_seen == 16
    assert report.skipped_non_images == 1
    bad = {u["path"]: u["code"] for u in report.unreadable}
    assert bad == {
        "biden/corrupt.jpg": "bad_image",
        "biden/empty.jpg": "bad_image",
        "biden/huge.png": "image_too_large",
        "biden/text.jpg": "bad_image",
    }
    assert report.unreadable_count == 4
    assert report.analysed == 12
    # nested photos name the top-level folder's person (obama/2019/x.jpg is obama), so no
    # identity "2019", "old" or "deep" is made
    assert report.identities_created == 5
    # every train photo and obama-480p is a clear portrait: each gives one enrolled face; the
    # two blurred ones are refused by the gate
    assert report.enrolled == 10, report.to_text()
    assert report.rejected == 2 and report.faces_found == 12
    # counted by reason code, not per message ("low_quality: 0.04 < 0.4 (blurry)" and
    # "low_quality: 0.07 < 0.4 (blurry)" are one reason)
    assert report.rejected_reasons == {"low_quality": 2}, report.rejected_reasons
    assert report.to_dict()["rejected_reasons"] == {"low_quality": 2}
    text_report = report.to_text()
    assert "enrolled: 10" in text_report.splitlines()
    assert "  low_quality: 2" in text_report.splitlines()
    assert "biden/huge.png: image_too_large" in text_report
    assert report.images_per_s > 0

    collection_id = store.collection_id(cid)
    with store.sessions() as s:
        names = set(
            s.execute(
                select(IdentityRow.external_id).where(IdentityRow.collection_id == collection_id)
            ).scalars()
        )
        n_templates = s.execute(
            select(func.count()).where(FaceTemplate.collection_id == collection_id)
        ).scalar_one()
        labels = dict(
            s.execute(
                select(GalleryImage.rel_path, GalleryImage.label).where(
                    GalleryImage.collection_id == collection_id
                )
            ).all()
        )
    assert names == {"alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"}
    assert n_templates == 10
    assert labels["obama/2019/obama-480p.jpg"] == "obama"
    assert labels["kit_harington/old/deep/blurred.jpg"] == "kit_harington"
    # the enrolled faces are searchable right away (index caught up after each commit)
    hit = store.identify(cid, (labelled_folder / "obama" / "obama2.jpg").read_bytes())
    assert hit["faces"][0]["candidates"][0]["external_id"] == "obama"

    again = run_ingest(gallery, cid, labelled_folder, opts)
    assert again.enrolled == 0 and again.analysed == 0
    assert again.skipped_known == 12
    assert again.unreadable_count == 4  # bad files are reported again, never stored
    with store.sessions() as s:
        assert (
            s.execute(
                select(func.count()).where(FaceTemplate.collection_id == collection_id)
            ).scalar_one()
            == 10
        )
    assert _duplicates(engine, collection_id) == 0
    job = gallery.get_job(cid, again.job_id)
    assert job["status"] == "done" and job["counts"]["skipped_known"] == 12


def test_hostile_zip_is_reported_and_nothing_written(
    gallery, new_collection, hostile_zip: Path
) -> None:
    cid = new_collection()
    root = hostile_zip.parent.parent
    before = _snapshot(root)
    report = run_ingest(gallery, cid, hostile_zip, IngestOptions(labels="folders", batch_size=8))
    assert _snapshot(root) == before
    assert not (root / "x.jpg").exists() and not Path("/tmp/abs.jpg").exists()
    codes = {u["path"]: u["code"] for u in report.unreadable}
    assert codes == {
        "../x.jpg": "path_traversal",
        "/tmp/abs.jpg": "absolute_path",
        "obama/text.jpg": "bad_image",
    }
    assert report.enrolled == 4 and report.identities_created == 2


def test_tar_with_symlink(gallery, new_collection, symlink_tar: Path) -> None:
    cid = new_collection()
    report = run_ingest(gallery, cid, symlink_tar, IngestOptions(labels="folders"))
    codes = {u["path"]: u["code"] for u in report.unreadable}
    assert codes == {"rose_leslie/passwd.jpg": "link", "../../escape.jpg": "path_traversal"}
    assert report.enrolled == 2 and report.identities_created == 1


def test_csv_labels_and_same_bytes_twice(gallery, new_collection, tmp_path: Path) -> None:
    import shutil

    cid = new_collection()
    rows = deepface_labels()[:6]
    shutil.copy(DEEPFACE / rows[0][0], tmp_path / "copy.jpg")  # same bytes, another name
    csv_path = tmp_path / "labels.csv"
    lines = ["path,identity"] + [f"{DEEPFACE / p},{who}" for p, who in rows]
    lines += ["copy.jpg,someone_else", "missing.jpg,nobody"]
    csv_path.write_text("\n".join(lines) + "\n")
    report = run_ingest(gallery, cid, csv_path, IngestOptions(batch_size=4))
    assert report.label_mode == "csv"
    assert report.images_seen == 8
    assert report.duplicates == 1 and report.analysed == 6
    assert [(u["path"], u["code"]) for u in report.unreadable] == [("missing.jpg", "unreadable")]
    assert report.identities_created == len({who for _, who in rows})


@pytest.fixture
def kill_gallery(tmp_path: Path) -> Path:
    """A labelled CSV gallery of 13 small real photos (face_recognition's train set and its obama
    resolutions): batches of one image give the killer many commit points to land between."""
    rows = [(p, p.parent.name) for p in sorted(TRAIN.glob("*/*")) if p.is_file()]
    rows += [(p, "obama") for p in sorted((TRAIN.parents[1]).glob("obama-*.jpg"))]
    path = tmp_path / "kill.csv"
    path.write_text("path,identity\n" + "".join(f"{p},{w}\n" for p, w in rows))
    return path


def _run_cli(settings, csv_path: Path, collection: str) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "DATABASE_URL": str(settings.database_url),
        "IDENTITY_DATA_DIR": str(settings.data_dir),
        "IDENTITY_MODELS_DIR": str(settings.models_dir),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "ingest",
            str(csv_path),
            "--collection",
            collection,
            "--workers",
            "1",
            "--batch-size",
            "1",
            "--no-progress",
            "--json",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_sigkill_mid_run_then_resume(
    gallery, store, engine, settings, new_collection, kill_gallery: Path
) -> None:
    import json

    cid = new_collection()
    collection_id = store.collection_id(cid)
    proc = _run_cli(settings, kill_gallery, cid)
    deadline = time.time() + 120
    done_before_kill = 0
    while time.time() < deadline and proc.poll() is None:
        with store.sessions() as s:
            done_before_kill = s.execute(
                select(func.count()).where(GalleryImage.collection_id == collection_id)
            ).scalar_one()
        if done_before_kill >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    with store.sessions() as s:
        images_after_kill = s.execute(
            select(func.count()).where(GalleryImage.collection_id == collection_id)
        ).scalar_one()
        templates_after_kill = s.execute(
            select(func.count()).where(FaceTemplate.collection_id == collection_id)
        ).scalar_one()
        enrolled_rows = s.execute(
            select(func.coalesce(func.sum(GalleryImage.faces_enrolled), 0)).where(
                GalleryImage.collection_id == collection_id
            )
        ).scalar_one()
    # nothing half-written: each committed batch brought its image row and templates together
    assert 3 <= images_after_kill < N_KILL
    assert templates_after_kill == enrolled_rows
    # the killed run's job row still says running; its lease died with the process
    killed = gallery.list_jobs(cid)
    assert [j["status"] for j in killed] == ["running"]
    assert gallery.mark_interrupted_jobs() >= 1
    assert gallery.get_job(cid, killed[0]["id"])["status"] == "interrupted"

    proc = _run_cli(settings, kill_gallery, cid)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    report = json.loads(out)
    assert report["skipped_known"] == images_after_kill
    assert report["analysed"] == N_KILL - images_after_kill

    with store.sessions() as s:
        total = s.execute(
            select(func.count()).where(FaceTemplate.collection_id == collection_id)
        ).scalar_one()
        images = s.execute(
            select(func.count()).where(GalleryImage.collection_id == collection_id)
        ).scalar_one()
    # every image analysed exactly once across the two runs, every enrolled face stored once
    assert images == N_KILL
    assert total == templates_after_kill + report["enrolled"]
    assert report["enrolled"] + report["rejected"] == report["faces_found"]
    assert _duplicates(engine, collection_id) == 0


def test_jobs_owned_by_a_live_process_are_not_marked_interrupted(gallery, new_collection) -> None:
    cid = new_collection()
    options = IngestOptions(labels="folders")
    live = JobLease(gallery.store.engine)  # as a second service worker or CLI run holds it
    orphan = JobLease(gallery.store.engine)
    try:
        live_id = gallery.create_job(cid, "live", options, lease=live)
        orphan_id = gallery.create_job(cid, "orphan", options, lease=orphan)
        gallery.start_job(orphan_id, None)
        orphan.release()  # what Postgres does when the owner's connection dies with it
        gallery.mark_interrupted_jobs()
        assert gallery.get_job(cid, live_id)["status"] == "queued"
        assert gallery.get_job(cid, orphan_id)["status"] == "interrupted"
    finally:
        live.release()
    gallery.mark_interrupted_jobs()
    assert gallery.get_job(cid, live_id)["status"] == "interrupted"


def test_clustering_failure_after_commit_is_a_note_not_a_failed_job(
    store, new_collection, tmp_path: Path
) -> None:
    """The embedder has no threshold at a FAR this strict (a CalibrationError from clustering):
    the faces are already stored, so the job ends done with a note, and they can be clustered
    later with an explicit threshold."""
    import shutil

    from services.gallery import GalleryStore

    strict = GalleryStore(store, store.engine)
    strict.settings = store.settings.model_copy(update={"cluster_far": 1e-12})
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for p in (TRAIN / "obama" / "obama.jpg", TRAIN / "biden" / "biden.jpg"):
        shutil.copy(p, folder / p.name)
    cid = new_collection()
    report = run_ingest(strict, cid, folder, IngestOptions(batch_size=4))
    assert report.enrolled == 2 and report.clusters is None
    assert len(report.notes) == 1 and "clustering skipped" in report.notes[0]
    assert "calibration_error" in report.notes[0]
    job = strict.get_job(cid, report.job_id)
    assert job["status"] == "done" and job["error"] is None, job
    assert job["report"]["notes"] == report.notes
    assert "note: clustering skipped" in report.to_text()
    assert strict.recluster(cid, threshold=0.9)["clustered_faces"] == 0  # two different people
