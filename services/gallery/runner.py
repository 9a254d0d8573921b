"""The API's background jobs: one thread per service process runs queued indexing jobs."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from identity.errors import JobCancelled
from services.gallery.ingest import run_ingest
from services.gallery.lease import JobLease
from services.gallery.migrate import create_migration_job, run_migration
from services.gallery.report import IngestOptions
from services.gallery.store import GalleryStore

# A queued job: its id, the lease that owns it, a file to delete when it ends, and the work.
_Task = tuple[str, JobLease, Path | None, Callable[[], object]]

log = logging.getLogger(__name__)


class GalleryJobRunner:
    """One background thread per service process running queued jobs (gallery ingestion and
    model migrations, ``services.gallery.migrate``) in order.

    Jobs are rows first (``queued``), so ``GET .../jobs/{id}`` works at once; the thread picks
    them from an in-process queue. Every job is owned by a ``JobLease`` from its creation to its
    end. A job whose process died stays ``running`` in the table with its lease gone, so a new
    runner (made on a service process's first job request) marks it ``interrupted``; jobs alive
    in another process (a second service worker, an ``identity ingest`` run on the same database)
    hold their leases and are left alone.
    Rerunning the same source resumes an interrupted job: finished batches are skipped by SHA-256.
    """

    def __init__(self, gallery: GalleryStore) -> None:
        import queue
        import threading

        self.gallery = gallery
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="gallery-jobs", daemon=True)
        self.gallery.mark_interrupted_jobs()
        self._thread.start()

    def submit(
        self,
        collection: str,
        path: Path,
        options: IngestOptions,
        cleanup: Path | None = None,
        actor: int | None = None,
        source_label: str | None = None,
    ) -> dict[str, Any]:
        """Queue a job; ``cleanup`` is a temporary upload removed when the job ends."""
        lease = JobLease(self.gallery.store.engine)
        try:
            job_id = self.gallery.create_job(
                collection, source_label or str(path), options, actor, lease=lease
            )
        except BaseException:
            lease.release()
            raise
        self._put_ingest(job_id, lease, collection, path, options, cleanup, actor)
        return self.gallery.get_job(collection, job_id)

    def submit_migration(
        self, collection: str, target: str, actor: int | None = None
    ) -> dict[str, Any]:
        """Queue a migration of the collection's templates to the face model ``target``."""
        lease = JobLease(self.gallery.store.engine)
        try:
            job_id = create_migration_job(self.gallery, collection, target, actor, lease)
        except BaseException:
            lease.release()
            raise

        def work() -> object:
            return run_migration(self.gallery, collection, target, job_id=job_id, actor=actor)

        self._queue.put((job_id, lease, None, work))
        return self.gallery.get_job(collection, job_id)

    def _put_ingest(
        self,
        job_id: str,
        lease: JobLease,
        collection: str,
        path: Path,
        options: IngestOptions,
        cleanup: Path | None,
        actor: int | None,
    ) -> None:
        def work() -> object:
            return run_ingest(self.gallery, collection, path, options, job_id=job_id, actor=actor)

        self._queue.put((job_id, lease, cleanup, work))

    def submit_upload(
        self,
        collection: str,
        upload: BinaryIO,
        suffix: str,
        options: IngestOptions,
        actor: int | None = None,
        source_label: str | None = None,
    ) -> dict[str, Any]:
        """Save an uploaded archive as ``uploads/<job id><suffix>`` (0600) and queue its job.

        The job's lease is taken before the file exists, so the start-up sweep
        (``sweep_job_leftovers``) can tell a live job's upload (lease held) from a dead one's.
        """
        uploads = self.gallery.settings.data_dir / "uploads"
        uploads.mkdir(mode=0o700, parents=True, exist_ok=True)
        lease = JobLease(self.gallery.store.engine)
        path = uploads / f"{lease.job_id}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(upload, out)
            job_id = self.gallery.create_job(
                collection, source_label or path.name, options, actor, lease=lease
            )
        except BaseException:
            path.unlink(missing_ok=True)
            lease.release()
            raise
        self._put_ingest(job_id, lease, collection, path, options, path, actor)
        return self.gallery.get_job(collection, job_id)

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            job_id, lease, cleanup, work = task
            try:
                work()
            except JobCancelled:
                pass  # recorded on the job row; the next job runs
            except Exception:  # recorded on the job row by run_ingest; keep serving
                log.exception("gallery job %s failed", job_id)
            finally:
                lease.release()
                if cleanup is not None:
                    cleanup.unlink(missing_ok=True)

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
