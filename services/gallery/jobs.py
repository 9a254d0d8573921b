"""Gallery job rows: create, read, list, start, cancel, finish; ending the jobs of dead owners."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from identity.errors import InvalidInput
from services.errors import Conflict, NotFound
from services.gallery.base import GalleryBase
from services.gallery.lease import JobLease, job_lock_key
from services.gallery.report import IngestOptions, IngestReport
from services.tables import Collection, GalleryJob

log = logging.getLogger(__name__)


# job statuses: a live job is one of LIVE_STATUSES; every job ends in one of the others
LIVE_STATUSES = ("queued", "running", "cancelling")


def _now() -> datetime:
    return datetime.now(UTC)


class GalleryJobs(GalleryBase):
    def create_job(
        self,
        collection: str,
        source: str,
        options: IngestOptions,
        actor: int | None = None,
        lease: JobLease | None = None,
    ) -> str:
        """A ``queued`` job row; with ``lease`` (taken before the row exists, so no other
        process can ever see the job unowned) it gets the lease's id."""
        if options.labels not in ("none", "folders", "csv"):
            raise InvalidInput("labels must be none, folders or csv", labels=options.labels)
        with self.store.write(collection, actor, lock=False) as w:
            job = GalleryJob(
                id=lease.job_id if lease is not None else uuid.uuid4(),
                collection_id=w.collection_id,
                source=source,
                label_mode=options.labels,
                params=options.to_dict(),
                status="queued",
            )
            w.session.add(job)
            w.session.flush()
            w.audit("gallery.job.create", "ok", job=str(job.id))
            return str(job.id)

    @staticmethod
    def _job_row(s: Session, c: Collection, job_id: str) -> GalleryJob:
        collection = c.name
        try:
            jid = uuid.UUID(str(job_id))
        except ValueError:
            raise NotFound(f"job '{job_id}' not found", job_id=str(job_id)) from None
        job = s.get(GalleryJob, jid)
        if job is None or job.collection_id != c.id:
            raise NotFound(f"job '{job_id}' not found in '{collection}'", job_id=str(job_id))
        return job

    @staticmethod
    def _job_dict(job: GalleryJob, collection: str) -> dict[str, Any]:
        done = job.seen
        progress = None
        if job.total:
            progress = round(min(1.0, done / job.total), 4)
        elif job.status == "done":
            progress = 1.0
        return {
            "id": str(job.id),
            "kind": job.kind,
            "collection": collection,
            "status": job.status,
            "source": job.source,
            "label_mode": job.label_mode,
            "params": job.params,
            "total": job.total,
            "progress": progress,
            "counts": {
                "seen": job.seen,
                "skipped_known": job.skipped_known,
                "enrolled": job.enrolled,
                "rejected": job.rejected,
                "unreadable": job.unreadable,
            },
            "report": job.report or None,
            "error": job.error,
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }

    def get_job(self, collection: str, job_id: str) -> dict[str, Any]:
        with self.store.read(collection) as (s, c):
            return self._job_dict(self._job_row(s, c, job_id), collection)

    def job_collection(self, job_id: str) -> str:
        """The name of the collection a job belongs to (the CLI takes a bare job id)."""
        try:
            jid = uuid.UUID(str(job_id))
        except ValueError:
            raise NotFound(f"job '{job_id}' not found", job_id=str(job_id)) from None
        with self.sessions() as s:
            name = s.execute(
                select(Collection.name)
                .join(GalleryJob, GalleryJob.collection_id == Collection.id)
                .where(GalleryJob.id == jid)
            ).scalar_one_or_none()
        if name is None:
            raise NotFound(f"job '{job_id}' not found", job_id=str(job_id))
        return str(name)

    def list_jobs(self, collection: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.store.read(collection) as (s, c):
            rows = s.execute(
                select(GalleryJob)
                .where(GalleryJob.collection_id == c.id)
                .order_by(GalleryJob.created_at.desc())
                .limit(limit)
            ).scalars()
            return [self._job_dict(j, collection) for j in rows]

    def start_job(self, job_id: str, total: int | None) -> bool:
        """``queued`` -> ``running``; False when the job is no longer queued (cancelled)."""
        with self.sessions.begin() as s:
            result = s.execute(
                update(GalleryJob)
                .where(GalleryJob.id == uuid.UUID(job_id), GalleryJob.status == "queued")
                .values(status="running", started_at=_now(), total=total)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked this job to stop (polled by the running job's ``JobGuard``)."""
        with self.sessions() as s:
            status = s.execute(
                select(GalleryJob.status).where(GalleryJob.id == uuid.UUID(job_id))
            ).scalar_one_or_none()
        return status in ("cancelling", "cancelled")

    def cancel_job(self, collection: str, job_id: str, actor: int | None = None) -> dict[str, Any]:
        """Ask a job to stop. A queued job ends ``cancelled`` at once (the runner skips it); a
        running one becomes ``cancelling`` and stops at its next check (between members and
        batches, and inside a long decompression), keeping the batches it committed. An ended
        job is a 409."""
        with self.store.write(collection, actor, lock=False) as w:
            job = self._job_row(w.session, w.collection, job_id)
            w.session.refresh(job, with_for_update=True)  # against the runner starting it now
            before = job.status
            if before == "queued":
                job.status, job.finished_at = "cancelled", _now()
            elif before == "running":
                job.status = "cancelling"
            elif before != "cancelling":
                raise Conflict(
                    f"job '{job_id}' already ended ({before}); nothing to cancel",
                    job_id=str(job_id),
                    status=before,
                )
            w.audit("gallery.job.cancel", "ok", job=str(job.id), was=before)
            w.session.flush()
            return self._job_dict(job, collection)

    def finish_job(
        self, job_id: str, status: str, report: IngestReport | None, error: str | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": _now(), "error": error}
        if report is not None:
            values.update(
                report=report.to_dict(),
                seen=report.images_seen,
                skipped_known=report.skipped_known,
                enrolled=report.enrolled,
                rejected=report.rejected,
                unreadable=report.unreadable_count,
            )
        with self.sessions.begin() as s:
            s.execute(update(GalleryJob).where(GalleryJob.id == uuid.UUID(job_id)).values(**values))

    def mark_interrupted_jobs(self) -> int:
        """Mark 'interrupted' the 'running' or 'queued' jobs whose owning process is gone (their
        ``JobLease`` lock is free), and 'cancelled' the 'cancelling' ones; jobs alive in another
        process are left alone."""
        with self.store.engine.connect() as conn:
            candidates = (
                conn.execute(select(GalleryJob.id).where(GalleryJob.status.in_(LIVE_STATUSES)))
                .scalars()
                .all()
            )
            orphans = []
            for jid in candidates:
                key = job_lock_key(jid)
                if conn.execute(text("SELECT pg_try_advisory_lock(:space, :key)"), key).scalar():
                    orphans.append(jid)
                    conn.execute(text("SELECT pg_advisory_unlock(:space, :key)"), key)
            conn.commit()
        if not orphans:
            return 0
        with self.sessions.begin() as s:
            result = s.execute(
                update(GalleryJob)
                .where(GalleryJob.id.in_(orphans), GalleryJob.status.in_(("running", "queued")))
                .values(status="interrupted", finished_at=_now())
            )
            stopped = s.execute(
                update(GalleryJob)
                .where(GalleryJob.id.in_(orphans), GalleryJob.status == "cancelling")
                .values(status="cancelled", finished_at=_now())
            )
            return int(result.rowcount or 0) + int(stopped.rowcount or 0)  # type: ignore[attr-defined]


def sweep_job_leftovers(gallery: GalleryJobs) -> dict[str, int]:
    """At service start: end the jobs of dead owners (``interrupted``, or ``cancelled`` when a
    cancel was pending) and delete uploaded archives (original photos) no live job owns.

    An upload is named after its job, whose ``JobLease`` is held from before the file exists
    until after it is removed, so a free lease means nobody will read the file again. Files
    with other names (older versions, a crash mid-save) go once they are an hour old.
    """
    ended = gallery.mark_interrupted_jobs()
    removed = 0
    uploads = gallery.settings.data_dir / "uploads"
    if uploads.is_dir():
        engine = gallery.store.engine
        with engine.connect() as conn:
            for f in sorted(uploads.iterdir()):
                try:
                    jid: uuid.UUID | None = uuid.UUID(f.name[:36])
                except ValueError:
                    jid = None
                if jid is None:
                    try:
                        stale = time.time() - f.lstat().st_mtime > 3600
                    except OSError:
                        continue
                    if not stale:
                        continue
                else:
                    key = job_lock_key(jid)
                    if not conn.execute(
                        text("SELECT pg_try_advisory_lock(:space, :key)"), key
                    ).scalar():
                        continue  # a live job (here or in another process) still reads it
                    conn.execute(text("SELECT pg_advisory_unlock(:space, :key)"), key)
                if f.is_file() or f.is_symlink():
                    f.unlink(missing_ok=True)
                    removed += 1
            conn.commit()
    if ended or removed:
        log.info("gallery jobs at start: %d dead jobs ended, %d uploads removed", ended, removed)
    return {"jobs_ended": ended, "uploads_removed": removed}
