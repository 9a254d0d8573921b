"""Hostile and careless job sources: decompression bombs, special files, sources that are not a
gallery, over-long labels, undecodable names. Every job ends done, failed (with a message a
person can act on, never SQL) or cancelled, and what it committed before stopping stays."""

from __future__ import annotations

import os
import threading
import time
import zipfile
from pathlib import Path

import pytest

from identity.errors import InvalidInput, JobCancelled, JobLimitExceeded
from identity.gallery.limits import JobGuard, JobLimits
from identity.gallery.sources import open_source
from services.gallery import GalleryJobRunner, GalleryStore, IngestOptions, _job_end, run_ingest

from gallery_helpers import TRAIN, write_bz2_tar

TB = 1024**4
OBAMA = TRAIN / "obama" / "obama.jpg"
BIDEN = TRAIN / "biden" / "biden.jpg"


def _strict(store, **limits) -> GalleryStore:  # type: ignore[no-untyped-def]
    gallery = GalleryStore(store, store.engine)
    gallery.settings = store.settings.model_copy(update=limits)
    return gallery


def _wait(gallery: GalleryStore, cid: str, jid: str, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = gallery.get_job(cid, jid)
        if job["status"] not in ("queued", "running", "cancelling"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {jid} still {job['status']}")


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real photos, then a non-image member whose header declares 2 TB over 10 GiB of real
    zeros (about 64 KB of bz2), then a photo no reader should reach."""
    return write_bz2_tar(
        tmp_path_factory.mktemp("bomb") / "gallery.tar.bz2",
        [
            ("obama/obama.jpg", OBAMA.read_bytes()),
            ("biden/biden.jpg", BIDEN.read_bytes()),
            ("junk/blob.bin", 1280),
            ("rose_leslie/img1.jpg", (TRAIN / "rose_leslie" / "img1.jpg").read_bytes()),
        ],
        declared={"junk/blob.bin": 2 * TB},
    )


def test_bz2_tar_declaring_2tb_fails_the_job_and_keeps_what_came_before(
    store, new_collection, bomb: Path
) -> None:
    assert bomb.stat().st_size < 2_000_000  # the size of the reported one
    gallery = GalleryStore(store, store.engine)
    cid = new_collection()
    with pytest.raises(JobLimitExceeded):
        run_ingest(gallery, cid, bomb, IngestOptions(labels="folders", batch_size=1))
    job = gallery.list_jobs(cid)[0]
    assert job["status"] == "failed"
    assert "IDENTITY_JOB_MAX_MEMBER_BYTES" in job["error"] and "junk/blob.bin" in job["error"]
    assert job["counts"]["enrolled"] == 2  # both photos before the bomb were committed
    assert {i["external_id"] for i in store.list_identities(cid)["items"]} == {"obama", "biden"}


def test_expansion_bound_stops_many_members_each_under_the_member_bound(tmp_path: Path) -> None:
    archive = write_bz2_tar(tmp_path / "g.tar.bz2", [(f"pad/{i}.bin", 1) for i in range(4)])
    source = open_source(archive, guard=JobGuard(JobLimits()))
    with pytest.raises(JobLimitExceeded, match="IDENTITY_JOB_MAX_EXPANSION"):
        list(source)


def test_member_time_bound_inside_a_long_decompression(tmp_path: Path) -> None:
    archive = write_bz2_tar(
        tmp_path / "g.tar.bz2", [("junk/blob.bin", 1280), ("obama/obama.jpg", OBAMA.read_bytes())]
    )
    loose = JobLimits(max_member_bytes=TB, max_expansion=1e12, max_bytes=TB, max_member_seconds=0.5)
    with pytest.raises(JobLimitExceeded, match="IDENTITY_JOB_MAX_MEMBER_SECONDS"):
        list(open_source(archive, guard=JobGuard(loose)))


def test_member_clock_stops_while_the_consumer_works(tmp_path: Path) -> None:
    """Detecting and storing a batch takes time between two members: that time is not spent
    reading the archive, so it never counts against a member's bound."""
    archive = write_bz2_tar(
        tmp_path / "g.tar.bz2",
        [("obama/obama.jpg", OBAMA.read_bytes()), ("biden/biden.jpg", BIDEN.read_bytes())],
    )
    guard = JobGuard(JobLimits(max_member_seconds=1.0))
    seen = []
    for item in open_source(archive, "folders", guard=guard):
        time.sleep(1.5)  # a slow batch downstream
        guard.check()  # what the job does after each committed batch
        seen.append(item.label)
    assert seen == ["obama", "biden"]


def test_cancel_reaches_inside_a_long_decompression(tmp_path: Path) -> None:
    archive = write_bz2_tar(
        tmp_path / "g.tar.bz2", [("junk/blob.bin", 1280), ("obama/obama.jpg", OBAMA.read_bytes())]
    )
    loose = JobLimits(max_member_bytes=TB, max_expansion=1e12, max_bytes=TB)
    asked = threading.Event()
    threading.Timer(0.5, asked.set).start()
    with pytest.raises(JobCancelled):
        list(open_source(archive, guard=JobGuard(loose, cancelled=asked.is_set)))


def test_job_byte_bound_on_a_folder(store, new_collection, tmp_path: Path) -> None:
    folder = tmp_path / "g"
    (folder / "obama").mkdir(parents=True)
    for p in sorted((TRAIN / "obama").iterdir()):
        (folder / "obama" / p.name).write_bytes(p.read_bytes())
    gallery = _strict(store, job_max_bytes=OBAMA.stat().st_size + 10)
    cid = new_collection()
    with pytest.raises(JobLimitExceeded):
        run_ingest(gallery, cid, folder, IngestOptions(labels="folders", batch_size=1))
    job = gallery.list_jobs(cid)[0]
    assert job["status"] == "failed" and "IDENTITY_JOB_MAX_BYTES" in job["error"]


def test_zip_non_image_members_are_skipped_unread(tmp_path: Path) -> None:
    """A zip's central directory names every member: a non-image is never decompressed, so one
    declaring terabytes (or holding garbage) costs nothing."""
    archive = tmp_path / "g.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(OBAMA, "obama/obama.jpg")
        zf.writestr("junk/blob.bin", b"\0" * 1_000_000)
    raw = bytearray(archive.read_bytes())
    # corrupt the non-image's compressed data: reading it would raise, skipping it does not
    start = raw.index(b"junk/blob.bin") + len(b"junk/blob.bin")
    raw[start : start + 200] = os.urandom(200)
    archive.write_bytes(bytes(raw))
    source = open_source(archive, "folders", guard=JobGuard())
    items = list(source)
    assert [i.rel_path for i in items] == ["obama/obama.jpg"]
    assert source.skipped_non_images == 1 and source.problems == []


def test_over_long_label_rejects_that_image_only(store, new_collection, tmp_path: Path) -> None:
    long_name = "a" * 300
    archive = tmp_path / "labels.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(OBAMA, f"{long_name}/obama.jpg")
        zf.write(BIDEN, "biden/biden.jpg")
        zf.write(TRAIN / "kit_harington" / "john1.jpeg", "kit_harington/john1.jpeg")
    gallery = GalleryStore(store, store.engine)
    cid = new_collection()
    report = run_ingest(gallery, cid, archive, IngestOptions(labels="folders", batch_size=8))
    assert report.enrolled == 2
    codes = {u["code"] for u in report.unreadable}
    assert codes == {"label_too_long"}
    job = gallery.get_job(cid, report.job_id)
    assert job["status"] == "done" and job["error"] is None


def test_undecodable_and_control_character_names(store, new_collection, tmp_path: Path) -> None:
    folder = tmp_path / "g"
    (folder / "biden").mkdir(parents=True)
    (folder / "biden" / "biden.jpg").write_bytes(BIDEN.read_bytes())
    bad = os.fsencode(folder / "biden") + b"/\xff\xfe.jpg"
    with open(bad, "wb") as fh:
        fh.write(OBAMA.read_bytes())
    (folder / "biden" / "tab\there.jpg").write_bytes(OBAMA.read_bytes())
    gallery = GalleryStore(store, store.engine)
    cid = new_collection()
    report = run_ingest(gallery, cid, folder, IngestOptions(labels="folders", batch_size=8))
    assert report.enrolled == 1
    assert sorted(u["code"] for u in report.unreadable) == ["bad_name", "bad_name"]
    assert gallery.get_job(cid, report.job_id)["status"] == "done"


def test_special_files_never_block(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    (folder / "obama").mkdir(parents=True)
    (folder / "obama" / "obama.jpg").write_bytes(OBAMA.read_bytes())
    os.mkfifo(folder / "obama" / "pipe.jpg")
    os.mkfifo(folder / "pipe.txt")
    source = open_source(folder, "folders", guard=JobGuard())
    assert [i.rel_path for i in source] == ["obama/obama.jpg"]
    assert [(p.rel_path, p.code) for p in source.problems] == [("obama/pipe.jpg", "special_file")]
    with pytest.raises(InvalidInput, match="FIFO"):
        open_source(folder / "pipe.txt")
    with pytest.raises(InvalidInput, match="FIFO"):
        open_source(folder, "csv", labels_csv=folder / "pipe.txt")


def test_bad_sources_end_failed_with_a_reason_and_the_next_job_runs(
    store, new_collection, tmp_path: Path
) -> None:
    """Through the service's job runner (one thread): none of these may stay queued or block."""
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe.zip")
    (root / "photo.jpg").write_bytes(OBAMA.read_bytes())
    (root / "empty.csv").write_bytes(b"")
    (root / "latin1.csv").write_bytes("path,identity\nobama.jpg,Jos\xe9\n".encode("latin-1"))
    good = root / "good"
    (good / "biden").mkdir(parents=True)
    (good / "biden" / "biden.jpg").write_bytes(BIDEN.read_bytes())
    expected = {
        "pipe.zip": "FIFO",
        "photo.jpg": "single image",
        "empty.csv": "is empty",
        "latin1.csv": "not UTF-8",
    }
    gallery = GalleryStore(store, store.engine)
    runner = GalleryJobRunner(gallery)
    cid = new_collection()
    try:
        jobs = {
            name: runner.submit(cid, root / name, IngestOptions(labels="folders"))["id"]
            for name in [*expected, "good"]
        }
        for name, needle in expected.items():
            job = _wait(gallery, cid, jobs[name])
            assert job["status"] == "failed", job
            assert needle in job["error"] and "invalid_input" in job["error"], job["error"]
        assert _wait(gallery, cid, jobs["good"])["status"] == "done"
    finally:
        runner.stop()


def test_client_never_sees_sql(store, new_collection, caplog: pytest.LogCaptureFixture) -> None:
    """A real database error (a 300-character label into a 256-character column) ends a job with
    a short message; the statement and its parameters go to the server log only."""
    from sqlalchemy import insert
    from sqlalchemy.exc import DBAPIError

    from services.tables import GalleryImage

    cid = store.collection_id(new_collection())
    with pytest.raises(DBAPIError) as info, store.sessions.begin() as s:
        s.execute(
            insert(GalleryImage).values(
                collection_id=cid,
                model_name="m",
                sha256="0" * 64,
                rel_path="x.jpg",
                label="a" * 300,
                faces_found=0,
                faces_enrolled=0,
            )
        )
    assert "INSERT" in str(info.value)
    with caplog.at_level("ERROR", logger="services.gallery"):
        status, error = _job_end("job-1", info.value)
    assert status == "failed"
    assert error is not None and "INSERT" not in error and "aaaa" not in error and len(error) < 200
    assert "INSERT" in caplog.text  # the details are in the server log
