"""Batch gallery indexing on top of the identity store: jobs, batch writes, clusters.

``run_index(gallery, collection, path, options)`` is the whole job (the CLI and the API's
background worker both call it):

    source items -> read + SHA-256 -> skip images the store already has -> batches
      -> worker pool (decode, detect, embed, quality) -> write_batch (one transaction each)

Idempotent and resumable: every analysed image gets a ``gallery_images`` row in the same
transaction as its faces, keyed by (collection, model, sha256); a rerun skips those, and images
already enrolled through the API (``face_templates.source_sha256``) too. A kill loses at most the
batches in flight, never half a batch. Labelled faces become ``face_templates`` of identities
created as needed (``external_id`` = label); unlabelled faces go to ``gallery_faces`` and are
clustered into proposed identities (``gallery_clusters``) that an operator names or merges.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from identity.errors import CodedError, InvalidInput, JobCancelled
from identity.gallery.limits import JobGuard, JobLimits
from identity.gallery.sources import GalleryItem, GallerySource, LabelMode, open_source
from identity.gallery.worker import ImageResult, WorkItem, analyze_batches, sha256_hex
from services.errors import Conflict, NotFound
from services.indexes import embedding_to_bytes
from services.sealed import EMBEDDING, THUMBNAIL
from services.store import IdentityStore, NewTemplate
from services.tables import (
    Collection,
    FaceTemplate,
    GalleryCluster,
    GalleryFace,
    GalleryImage,
    GalleryJob,
    IdentityRow,
)

log = logging.getLogger(__name__)

# unreadable files listed in a report (the counts are always complete)
MAX_LISTED_ERRORS = 1000
# job statuses: a live job is one of LIVE_STATUSES; every job ends in one of the others
LIVE_STATUSES = ("queued", "running", "cancelling")
# what a client sees when a job fails for a reason that is not a typed CodedError: the
# exception itself (a database error quotes its SQL and parameters) goes to the server log only
INTERNAL_JOB_ERROR = "internal error while indexing; the server log has the details (job {job})"


# --- the report -------------------------------------------------------------------------------
@dataclass
class IndexOptions:
    labels: LabelMode = "none"
    labels_csv: Path | None = None
    workers: int = 1
    batch_size: int = 8
    engine: Literal["local", "ray"] = "local"
    cluster: bool = True  # unlabelled mode: propose identities after enrolling
    cluster_method: Literal["graph", "components", "hdbscan"] = "graph"
    cluster_threshold: float | None = None  # None = the embedder's threshold at cluster_far
    # files a CSV gallery may name (None = anywhere, the CLI); API jobs pass the gallery roots
    allowed_roots: list[Path] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "labels_csv": None if self.labels_csv is None else str(self.labels_csv),
            "workers": self.workers,
            "batch_size": self.batch_size,
            "engine": self.engine,
            "cluster": self.cluster,
            "cluster_method": self.cluster_method,
            "cluster_threshold": self.cluster_threshold,
            "allowed_roots": (
                None if self.allowed_roots is None else [str(r) for r in self.allowed_roots]
            ),
        }


@dataclass
class IndexReport:
    job_id: str
    collection: str
    source: str
    label_mode: str
    total: int | None = None
    images_seen: int = 0
    skipped_known: int = 0  # already in the store (an earlier run, or enrolled via the API)
    duplicates: int = 0  # the same bytes twice in this gallery
    analysed: int = 0
    faces_found: int = 0
    enrolled: int = 0
    rejected: int = 0
    rejected_reasons: Counter[str] = field(default_factory=Counter)  # faces per reason code
    images_without_faces: int = 0
    unreadable: list[dict[str, str]] = field(default_factory=list)
    unreadable_count: int = 0
    skipped_non_images: int = 0
    identities_created: int = 0
    clusters: int | None = None
    clustered_faces: int | None = None
    seconds: float = 0.0
    done: int = 0  # images fully handled so far (progress), including skipped and unreadable
    notes: list[str] = field(default_factory=list)  # what did not happen, though the job is done

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.seconds if self.seconds > 0 else 0.0

    def add_unreadable(self, path: str, code: str, message: str) -> None:
        self.unreadable_count += 1
        if len(self.unreadable) < MAX_LISTED_ERRORS:
            self.unreadable.append({"path": path, "code": code, "message": message})

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "collection": self.collection,
            "source": self.source,
            "label_mode": self.label_mode,
            "images_seen": self.images_seen,
            "skipped_known": self.skipped_known,
            "duplicates": self.duplicates,
            "analysed": self.analysed,
            "faces_found": self.faces_found,
            "enrolled": self.enrolled,
            "rejected": self.rejected,
            "rejected_reasons": dict(sorted(self.rejected_reasons.items())),
            "images_without_faces": self.images_without_faces,
            "unreadable_count": self.unreadable_count,
            "unreadable": self.unreadable,
            "skipped_non_images": self.skipped_non_images,
            "identities_created": self.identities_created,
            "clusters": self.clusters,
            "clustered_faces": self.clustered_faces,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 3),
            "notes": self.notes,
        }

    def to_text(self) -> str:
        lines = [
            f"collection: {self.collection}  job: {self.job_id}",
            f"images seen: {self.images_seen}",
            f"already indexed (skipped): {self.skipped_known}",
            f"duplicates in this gallery: {self.duplicates}",
            (
                f"analysed: {self.analysed}  faces found: {self.faces_found}"
                f"  images without a face: {self.images_without_faces}"
            ),
            f"enrolled: {self.enrolled}",
            f"rejected: {self.rejected}",
        ]
        for reason, n in sorted(self.rejected_reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {reason}: {n}")
        lines.append(f"unreadable: {self.unreadable_count}")
        for u in self.unreadable:
            lines.append(f"  {u['path']}: {u['code']}: {u['message']}")
        if self.identities_created:
            lines.append(f"identities created: {self.identities_created}")
        if self.clusters is not None:
            lines.append(
                f"proposed identities (clusters): {self.clusters}"
                f" covering {self.clustered_faces} faces"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"time: {self.seconds:.1f} s  ({self.images_per_s:.2f} images/s)")
        return "\n".join(lines)


# --- store-side operations --------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


# Session-level advisory locks on keys (_JOB_LOCK_SPACE, 31 bits of the job id) mark live jobs.
_JOB_LOCK_SPACE = 0x6A6F62  # "job"


def _job_lock_key(job_id: uuid.UUID | str) -> dict[str, int]:
    return {"space": _JOB_LOCK_SPACE, "key": uuid.UUID(str(job_id)).int & 0x7FFFFFFF}


class JobLease:
    """Proof that a live process owns a job, from its creation until it ends.

    A Postgres session-level advisory lock held on a connection of its own: Postgres drops it
    when that connection closes, which it does when the owning process dies (SIGKILL, a crash,
    a lost host), so another process can tell a dead owner's job (lock free) from one still
    running in a second service worker or an ``identity index`` run (lock held).
    """

    def __init__(self, engine: Engine, job_id: uuid.UUID | None = None) -> None:
        self.job_id = job_id or uuid.uuid4()
        self._conn: Connection | None = engine.connect()
        self._conn.execute(
            text("SELECT pg_advisory_lock(:space, :key)"), _job_lock_key(self.job_id)
        )
        self._conn.commit()  # the lock outlives the transaction; don't sit idle inside one

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.execute(
                text("SELECT pg_advisory_unlock(:space, :key)"), _job_lock_key(self.job_id)
            )
            conn.commit()
        finally:
            conn.close()


class GalleryStore:
    """Gallery writes and reads, sharing the ``IdentityStore``'s engine, model and indexes."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store
        self.settings = store.settings
        self.sessions = store.sessions

    @property
    def model_name(self) -> str:
        return self.store.model_name

    # jobs ---------------------------------------------------------------------------------
    def create_job(
        self,
        collection: str,
        source: str,
        options: IndexOptions,
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
                    job_id=str(job_id), status=before,
                )
            w.audit("gallery.job.cancel", "ok", job=str(job.id), was=before)
            w.session.flush()
            return self._job_dict(job, collection)

    def finish_job(
        self, job_id: str, status: str, report: IndexReport | None, error: str | None = None
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
            candidates = conn.execute(
                select(GalleryJob.id).where(GalleryJob.status.in_(LIVE_STATUSES))
            ).scalars().all()
            orphans = []
            for jid in candidates:
                key = _job_lock_key(jid)
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

    # dedupe -------------------------------------------------------------------------------
    def known_shas(self, collection_id: int, shas: Iterable[str]) -> set[str]:
        """Which of these image digests the collection already has for the current model."""
        wanted = list(set(shas))
        if not wanted:
            return set()
        with self.sessions() as s:
            done = s.execute(
                select(GalleryImage.sha256).where(
                    GalleryImage.collection_id == collection_id,
                    GalleryImage.model_name == self.model_name,
                    GalleryImage.sha256.in_(wanted),
                )
            ).scalars()
            enrolled = s.execute(
                select(FaceTemplate.source_sha256).where(
                    FaceTemplate.collection_id == collection_id,
                    FaceTemplate.model_name == self.model_name,
                    FaceTemplate.source_sha256.in_(wanted),
                )
            ).scalars()
            return set(done) | set(enrolled)

    # the batch write ------------------------------------------------------------------------
    def write_batch(
        self,
        collection: str,
        job_id: str | None,
        results: list[ImageResult],
        labelled: bool,
        report: IndexReport,
        actor: int | None = None,
    ) -> None:
        """Store one batch of analysed images in ONE transaction and update ``report``.

        Images the store already has (a concurrent run, a resumed run) are skipped inside the
        transaction, under the collection lock, so two runs can never enroll the same image twice.
        Labelled faces go through ``CollectionWrite.add_templates`` (thumbnails, index log).
        """
        store = self.store
        model, version = self.model_name, store.model_version
        ok = [r for r in results if r.ok and r.sha256]
        for r in results:
            if not r.ok:
                report.add_unreadable(r.rel_path, r.error_code or "error", r.error_message or "")
        delta: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        with store.write(collection, actor) as w:
            s, cid = w.session, w.collection_id
            shas = [r.sha256 for r in ok]
            already = set(
                s.execute(
                    select(GalleryImage.sha256).where(
                        GalleryImage.collection_id == cid,
                        GalleryImage.model_name == model,
                        GalleryImage.sha256.in_(shas),
                    )
                ).scalars()
            ) | set(
                s.execute(
                    select(FaceTemplate.source_sha256).where(
                        FaceTemplate.collection_id == cid,
                        FaceTemplate.model_name == model,
                        FaceTemplate.source_sha256.in_(shas),
                    )
                ).scalars()
            )
            labels = {r.label for r in ok if r.label and r.sha256 not in already}
            ids, created = w.ensure_identities(labels, {"source": "gallery"}) if labelled else ({}, 0)
            delta["identities_created"] += created
            templates: list[NewTemplate] = []
            written_shas: set[str] = set()
            for r in ok:
                if r.sha256 in already or r.sha256 in written_shas:
                    delta["skipped_known"] += 1
                    continue
                assert r.sha256 is not None
                written_shas.add(r.sha256)
                delta["analysed"] += 1
                delta["faces_found"] += len(r.faces)
                if not r.faces:
                    delta["images_without_faces"] += 1
                n_enrolled = 0
                for face in r.faces:
                    if not face.usable:
                        delta["rejected"] += 1
                        # by code: a face failing two checks counts once under each
                        reasons.update(face.rejection_codes)
                        continue
                    common: dict[str, Any] = {
                        "model_name": model,
                        "model_version": version,
                        "dim": int(face.embedding.shape[0]),
                        "embedding": embedding_to_bytes(face.embedding),
                        "quality": face.quality,
                        "quality_reasons": face.quality_reasons,
                        "det_score": face.det_score,
                        "bbox": face.bbox,
                        "landmarks": face.landmarks,
                        "source_sha256": r.sha256,
                    }
                    if labelled:
                        assert r.label is not None
                        templates.append(
                            NewTemplate(
                                identity_id=ids[r.label], thumbnail_jpeg=face.thumbnail_jpeg, **common
                            )
                        )
                    else:
                        key_id, sealed = store.sealer.seal(cid, common.pop("embedding"), EMBEDDING)
                        thumb = face.thumbnail_jpeg
                        s.add(
                            GalleryFace(
                                collection_id=cid,
                                rel_path=r.rel_path,
                                embedding=sealed,
                                thumbnail_jpeg=None if thumb is None
                                else store.sealer.seal(cid, thumb, THUMBNAIL)[1],
                                key_id=key_id,
                                job_id=None if job_id is None else uuid.UUID(job_id),
                                **common,
                            )
                        )
                    n_enrolled += 1
                delta["enrolled"] += n_enrolled
                s.add(
                    GalleryImage(
                        collection_id=cid,
                        model_name=model,
                        sha256=r.sha256,
                        rel_path=r.rel_path[:4000],
                        label=r.label,
                        faces_found=len(r.faces),
                        faces_enrolled=n_enrolled,
                        job_id=None if job_id is None else uuid.UUID(job_id),
                    )
                )
            w.add_templates(templates)  # flushes the whole batch
            if job_id is not None:
                # absolute values: one job is driven by exactly one process
                s.execute(
                    update(GalleryJob)
                    .where(GalleryJob.id == uuid.UUID(job_id))
                    .values(
                        seen=report.done + len(results),
                        skipped_known=report.skipped_known + delta["skipped_known"],
                        enrolled=report.enrolled + delta["enrolled"],
                        rejected=report.rejected + delta["rejected"],
                        unreadable=report.unreadable_count,
                    )
                )
            w.audit(
                "gallery.batch", "ok", job=job_id, images=len(results),
                enrolled=delta["enrolled"], rejected=delta["rejected"],
            )
        report.done += len(results)
        report.skipped_known += delta["skipped_known"]
        report.analysed += delta["analysed"]
        report.faces_found += delta["faces_found"]
        report.images_without_faces += delta["images_without_faces"]
        report.enrolled += delta["enrolled"]
        report.rejected += delta["rejected"]
        report.rejected_reasons.update(reasons)
        report.identities_created += delta["identities_created"]

    # clusters -----------------------------------------------------------------------------
    def cluster_threshold(self) -> float:
        from identity.calibration import threshold_for

        return float(threshold_for(self.model_name, self.settings.cluster_far, self.settings))

    def recluster(
        self,
        collection: str,
        method: Literal["graph", "components", "hdbscan"] = "graph",
        threshold: float | None = None,
        min_size: int = 2,
    ) -> dict[str, Any]:
        """Replace the proposed clusters of the collection's unassigned faces with a fresh
        clustering (named clusters are untouched: their faces are templates already)."""
        from identity.gallery.cluster import cluster_embeddings

        if method != "hdbscan" and threshold is None:
            threshold = self.cluster_threshold()
        model = self.model_name
        with self.store.write(collection) as w:
            s, c = w.session, w.collection
            rows = s.execute(
                select(GalleryFace.id, GalleryFace.dim, GalleryFace.embedding, GalleryFace.key_id)
                .where(
                    GalleryFace.collection_id == c.id,
                    GalleryFace.model_name == model,
                    GalleryFace.template_id.is_(None),
                )
                .order_by(GalleryFace.id)
            ).all()
            s.execute(
                update(GalleryFace)
                .where(GalleryFace.collection_id == c.id, GalleryFace.template_id.is_(None))
                .values(cluster_id=None)
            )
            s.execute(
                delete(GalleryCluster).where(
                    GalleryCluster.collection_id == c.id,
                    GalleryCluster.model_name == model,
                    GalleryCluster.status == "proposed",
                )
            )
            if not rows:
                return {"clusters": 0, "clustered_faces": 0, "unclustered_faces": 0}
            x = np.stack([self.store.sealer.embedding(r[2], r[3], r[1]) for r in rows])
            result = cluster_embeddings(x, method=method, threshold=threshold, min_size=min_size)
            face_ids = np.array([r[0] for r in rows], dtype=np.int64)
            for members in result.members():
                cl = GalleryCluster(collection_id=c.id, model_name=model, method=method)
                s.add(cl)
                s.flush()
                s.execute(
                    update(GalleryFace)
                    .where(GalleryFace.id.in_(face_ids[members].tolist()))
                    .values(cluster_id=cl.id)
                )
            clustered = int((result.labels >= 0).sum())
            return {
                "clusters": result.n_clusters,
                "clustered_faces": clustered,
                "unclustered_faces": len(rows) - clustered,
                "method": method,
                "threshold": threshold,
            }

    def list_clusters(
        self, collection: str, status: str | None = "proposed", limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise InvalidInput("limit must be 1-1000 and offset >= 0")
        with self.store.read(collection) as (s, c):
            where = [GalleryCluster.collection_id == c.id]
            if status:
                where.append(GalleryCluster.status == status)
            size = func.count(GalleryFace.id).label("size")
            rows = s.execute(
                select(GalleryCluster, size)
                .outerjoin(GalleryFace, GalleryFace.cluster_id == GalleryCluster.id)
                .where(*where)
                .group_by(GalleryCluster.id)
                .order_by(size.desc(), GalleryCluster.id)
                .limit(limit)
                .offset(offset)
            ).all()
            ids = [cl.id for cl, _ in rows]
            faces: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
            for f in s.execute(
                select(
                    GalleryFace.id, GalleryFace.cluster_id, GalleryFace.rel_path,
                    GalleryFace.quality, GalleryFace.bbox,
                )
                .where(GalleryFace.cluster_id.in_(ids))
                .order_by(GalleryFace.quality.desc().nulls_last(), GalleryFace.id)
            ).all():
                faces[f.cluster_id].append(
                    {"face_id": f.id, "path": f.rel_path, "quality": f.quality, "bbox": f.bbox}
                )
            unclustered = s.execute(
                select(func.count()).where(
                    GalleryFace.collection_id == c.id,
                    GalleryFace.cluster_id.is_(None),
                    GalleryFace.template_id.is_(None),
                )
            ).scalar_one()
        return {
            "items": [
                {
                    "id": cl.id,
                    "status": cl.status,
                    "size": n,
                    "identity_id": None if cl.identity_id is None else str(cl.identity_id),
                    "method": cl.method,
                    "faces": faces[cl.id][:20],
                }
                for cl, n in rows
            ],
            "unclustered_faces": unclustered,
        }

    def _cluster(self, s: Session, collection_id: int, cluster_id: int) -> GalleryCluster:
        cl = s.get(GalleryCluster, int(cluster_id))
        if cl is None or cl.collection_id != collection_id:
            raise NotFound(f"cluster {cluster_id} not found", cluster_id=cluster_id)
        return cl

    def merge_clusters(
        self, collection: str, target: int, sources: list[int], actor: int | None = None
    ) -> dict[str, Any]:
        """Move every face of ``sources`` into ``target`` (all proposed) and drop the sources."""
        sources = [int(x) for x in sources if int(x) != int(target)]
        if not sources:
            raise InvalidInput("give at least one cluster to merge into the target")
        with self.store.write(collection, actor) as w:
            s, c = w.session, w.collection
            tgt = self._cluster(s, c.id, target)
            for src_id in sources:
                src = self._cluster(s, c.id, src_id)
                if src.status != "proposed" or tgt.status != "proposed":
                    raise Conflict("only proposed clusters can be merged; name the result after")
            s.execute(
                update(GalleryFace)
                .where(GalleryFace.cluster_id.in_(sources))
                .values(cluster_id=tgt.id)
            )
            s.execute(delete(GalleryCluster).where(GalleryCluster.id.in_(sources)))
            size = s.execute(
                select(func.count()).where(GalleryFace.cluster_id == tgt.id)
            ).scalar_one()
            w.audit("gallery.cluster.merge", "ok", target=tgt.id, merged=sources)
        return {"id": int(target), "size": int(size), "merged": sources}

    def name_cluster(
        self,
        collection: str,
        cluster_id: int,
        external_id: str | None = None,
        display_name: str = "",
        identity_id: str | None = None,
        actor: int | None = None,
    ) -> dict[str, Any]:
        """Turn a proposed cluster into an identity: a new one (``external_id``) or an existing
        one (``identity_id``); its faces become templates, searchable from then on."""
        if (external_id is None) == (identity_id is None):
            raise InvalidInput("give exactly one of external_id (new identity) or identity_id")
        if external_id is not None and not 1 <= len(external_id) <= 256:
            raise InvalidInput("external_id must be 1-256 characters")
        with self.store.write(collection, actor) as w:
            s, c = w.session, w.collection
            cl = self._cluster(s, c.id, cluster_id)
            if cl.status != "proposed":
                raise Conflict(f"cluster {cluster_id} is already named", cluster_id=cluster_id)
            if identity_id is not None:
                ident = w.identity(identity_id)
            else:
                exists = s.execute(
                    select(IdentityRow.id).where(
                        IdentityRow.collection_id == c.id,
                        IdentityRow.external_id == external_id,
                    )
                ).first()
                if exists is not None:
                    raise Conflict(
                        f"external_id '{external_id}' already exists; pass its identity_id "
                        "to add this cluster to it",
                        identity_id=str(exists[0]),
                    )
                ident = IdentityRow(
                    collection_id=c.id,
                    external_id=external_id,
                    display_name=display_name or external_id or "",
                    metadata_={"source": "gallery_cluster"},
                )
                s.add(ident)
                s.flush()
            faces = s.execute(
                select(GalleryFace).where(GalleryFace.cluster_id == cl.id)
            ).scalars().all()
            opened = self.store.sealer.open_row
            templates = w.add_templates(
                [
                    NewTemplate(
                        identity_id=ident.id,
                        model_name=f.model_name,
                        model_version=f.model_version,
                        dim=f.dim,
                        embedding=opened(f.embedding, f.key_id, EMBEDDING),
                        quality=f.quality,
                        quality_reasons=f.quality_reasons,
                        det_score=f.det_score,
                        bbox=f.bbox,
                        landmarks=f.landmarks,
                        source_sha256=f.source_sha256,
                        thumbnail_jpeg=None if f.thumbnail_jpeg is None
                        else opened(f.thumbnail_jpeg, f.key_id, THUMBNAIL),
                    )
                    for f in faces
                ]
            )
            for f, t in zip(faces, templates, strict=True):
                f.template_id = t.id
            cl.status = "named"
            cl.identity_id = ident.id
            iid = ident.id
            w.audit(
                "gallery.cluster.name", "ok", identity_id=iid, cluster=cl.id,
                templates=len(templates),
            )
        return {"cluster_id": int(cluster_id), "identity_id": str(iid), "templates": len(templates)}

    def face_thumbnail(self, collection: str, face_id: int) -> bytes:
        with self.store.read(collection) as (s, c):
            f = s.get(GalleryFace, int(face_id))
            if f is None or f.collection_id != c.id or not f.thumbnail_jpeg:
                raise NotFound(f"no thumbnail for gallery face {face_id}")
            return self.store.sealer.open_row(f.thumbnail_jpeg, f.key_id, THUMBNAIL)


# --- the job ----------------------------------------------------------------------------------
ProgressHook = Callable[[int, IndexReport], None]


def _prepared_batches(
    gallery: GalleryStore,
    collection_id: int,
    items: Iterator[GalleryItem],
    report: IndexReport,
    labelled: bool,
    batch_size: int,
    read_bytes: bool = True,
    guard: JobGuard | None = None,
) -> Iterator[list[WorkItem]]:
    """Read, hash and dedupe source items; yield batches of work that is actually new.

    Items already in the store are counted and dropped here, so a resumed run spends no
    detector time on them. ``read_bytes=False`` (Ray) leaves reading and hashing to the workers.
    """
    max_bytes = gallery.settings.max_image_bytes
    seen_in_run: set[str] = set()
    chunk: list[WorkItem] = []

    def flush(chunk: list[WorkItem]) -> list[WorkItem]:
        if not read_bytes:
            return chunk
        known = gallery.known_shas(collection_id, [w.sha256 for w in chunk if w.sha256])
        fresh = []
        for w in chunk:
            if w.sha256 in known:
                report.skipped_known += 1
                report.done += 1
            else:
                fresh.append(w)
        return fresh

    for item in items:
        if guard is not None:
            guard.check()
        report.images_seen += 1
        if labelled and not item.label:
            report.add_unreadable(item.rel_path, "no_label", "no identity label for this image")
            report.done += 1
            continue
        if read_bytes:
            try:
                data = item.read(max_bytes)
            except (OSError, ValueError) as exc:
                code = "image_too_large" if isinstance(exc, ValueError) else "unreadable"
                report.add_unreadable(item.rel_path, code, str(exc))
                report.done += 1
                continue
            if guard is not None and item.path is not None:
                guard.add_bytes(len(data))  # archive members are counted by their source
            digest = sha256_hex(data)
            if digest in seen_in_run:
                report.duplicates += 1
                report.done += 1
                continue
            seen_in_run.add(digest)
            chunk.append(WorkItem(item.rel_path, item.label, data=data, sha256=digest))
        else:
            chunk.append(
                WorkItem(item.rel_path, item.label, path=None if item.path is None else str(item.path),
                         data=item.data)
            )
        if len(chunk) >= batch_size:
            fresh = flush(chunk)
            chunk = []
            if fresh:
                yield fresh
    if chunk:
        fresh = flush(chunk)
        if fresh:
            yield fresh


def run_index(
    gallery: GalleryStore,
    collection: str,
    path: Path,
    options: IndexOptions,
    job_id: str | None = None,
    on_progress: ProgressHook | None = None,
    actor: int | None = None,
) -> IndexReport:
    """Index a gallery into ``collection`` (see module docstring); returns the report.

    ``on_progress(n_images_done, report)`` is called after each committed batch. Without
    ``job_id`` (the CLI) a bad source raises before any job row exists; with one (a queued API
    job) every failure, a bad source included, ends the job ``failed`` with a message a person
    can act on. A cancelled job raises ``JobCancelled`` after recording ``cancelled``.
    """
    started = time.perf_counter()
    source = None
    if job_id is None:
        source = open_source(
            Path(path), options.labels, options.labels_csv, gallery.settings.max_image_bytes,
            allowed_roots=options.allowed_roots,
        )
    lease = None
    if job_id is None:
        lease = JobLease(gallery.store.engine)
        try:
            job_id = gallery.create_job(collection, str(path), options, actor=actor, lease=lease)
        except BaseException:
            lease.release()
            raise
    try:
        return _run_job(gallery, collection, path, options, job_id, source, on_progress, actor,
                        started)
    finally:
        if lease is not None:
            lease.release()


def _run_job(
    gallery: GalleryStore,
    collection: str,
    path: Path,
    options: IndexOptions,
    job_id: str,
    source: GallerySource | None,
    on_progress: ProgressHook | None,
    actor: int | None,
    started: float,
) -> IndexReport:
    report = IndexReport(job_id, collection, str(path), options.labels)
    problems_added = False
    guard = JobGuard(
        JobLimits.from_settings(gallery.settings),
        cancelled=lambda: gallery.cancel_requested(job_id),
    )
    try:
        if gallery.cancel_requested(job_id):
            raise JobCancelled("the job was cancelled before it started")
        if source is None:
            source = open_source(
                Path(path), options.labels, options.labels_csv, gallery.settings.max_image_bytes,
                allowed_roots=options.allowed_roots, guard=guard,
            )
        source.guard = guard
        labelled = source.label_mode != "none"
        report.label_mode = source.label_mode
        report.total = source.expected_count()
        if not gallery.start_job(job_id, report.total):
            raise JobCancelled("the job was cancelled before it started")
        cid = gallery.store.collection_id(collection)
        batches = _prepared_batches(
            gallery, cid, iter(source), report, labelled, options.batch_size,
            read_bytes=options.engine == "local", guard=guard,
        )
        if options.engine == "ray":
            from identity.gallery.ray_engine import analyze_batches_ray

            stream = analyze_batches_ray(batches, gallery.settings, labelled, options.workers)
        else:
            stream = analyze_batches(batches, gallery.settings, labelled, options.workers)
        for _batch, results in stream:
            gallery.write_batch(collection, job_id, results, labelled, report, actor=actor)
            if on_progress is not None:
                on_progress(report.done, report)
            guard.check()
        problems_added = True
        for problem in source.problems:
            report.images_seen += 1
            report.done += 1
            report.add_unreadable(problem.rel_path, problem.code, problem.message)
        report.skipped_non_images = source.skipped_non_images
        if not labelled and options.cluster:
            try:
                summary = gallery.recluster(
                    collection, options.cluster_method, options.cluster_threshold
                )
            except CodedError as exc:
                # Every batch is committed by now: the faces are stored and can be clustered
                # later (POST .../clusters/recluster with a threshold), so the job did its work.
                why = f"{exc.message} [{exc.code}]"
                log.warning("gallery job %s: clustering skipped: %s", job_id, why)
                report.notes.append(f"clustering skipped: {why}")
            else:
                report.clusters = summary["clusters"]
                report.clustered_faces = summary["clustered_faces"]
        report.seconds = time.perf_counter() - started
        gallery.finish_job(job_id, "done", report)
    except BaseException as exc:
        report.seconds = time.perf_counter() - started
        if source is not None and not problems_added:
            for problem in source.problems:  # what the source refused before it stopped
                report.add_unreadable(problem.rel_path, problem.code, problem.message)
            report.skipped_non_images = source.skipped_non_images
        status, error = _job_end(job_id, exc)
        try:
            gallery.finish_job(job_id, status, report, error=error)
        except Exception:  # the database may be what failed; keep the first error
            log.exception("could not record the end of gallery job %s", job_id)
        raise
    return report


def _job_end(job_id: str, exc: BaseException) -> tuple[str, str | None]:
    """(status, the error a client may see) for a job that raised ``exc``. Only typed errors,
    whose messages this code wrote, reach clients; anything else is logged with its details."""
    if isinstance(exc, JobCancelled):
        log.info("gallery job %s cancelled", job_id)
        return "cancelled", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted (Ctrl-C or SIGTERM); rerun the same source to resume"
    if isinstance(exc, CodedError):
        log.warning("gallery job %s failed: %s [%s]", job_id, exc.message, exc.code)
        return "failed", f"{exc.message} [{exc.code}]"
    log.error("gallery job %s failed", job_id, exc_info=exc)
    return "failed", INTERNAL_JOB_ERROR.format(job=job_id)


# --- background jobs for the API ----------------------------------------------------------------
class GalleryJobRunner:
    """One background thread per service process running queued indexing jobs in order.

    Jobs are rows first (``queued``), so ``GET .../jobs/{id}`` works at once; the thread picks
    them from an in-process queue. Every job is owned by a ``JobLease`` from its creation to its
    end. A job whose process died stays ``running`` in the table with its lease gone, so a new
    runner (made on a service process's first job request) marks it ``interrupted``; jobs alive
    in another process (a second service worker, an ``identity index`` run on the same database)
    hold their leases and are left alone.
    Rerunning the same source resumes an interrupted job: finished batches are skipped by SHA-256.
    """

    def __init__(self, gallery: GalleryStore) -> None:
        import queue
        import threading

        self.gallery = gallery
        self._queue: queue.Queue[
            tuple[str, str, Path, IndexOptions, Path | None, int | None, JobLease] | None
        ]
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="gallery-jobs", daemon=True)
        self.gallery.mark_interrupted_jobs()
        self._thread.start()

    def submit(
        self,
        collection: str,
        path: Path,
        options: IndexOptions,
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
        self._queue.put((job_id, collection, path, options, cleanup, actor, lease))
        return self.gallery.get_job(collection, job_id)

    def submit_upload(
        self,
        collection: str,
        upload: BinaryIO,
        suffix: str,
        options: IndexOptions,
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
        self._queue.put((job_id, collection, path, options, path, actor, lease))
        return self.gallery.get_job(collection, job_id)

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            job_id, collection, path, options, cleanup, actor, lease = task
            try:
                run_index(self.gallery, collection, path, options, job_id=job_id, actor=actor)
            except JobCancelled:
                pass  # recorded on the job row; the next job runs
            except Exception:  # recorded on the job row by run_index; keep serving
                log.exception("gallery job %s failed", job_id)
            finally:
                lease.release()
                if cleanup is not None:
                    cleanup.unlink(missing_ok=True)

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


def sweep_job_leftovers(gallery: GalleryStore) -> dict[str, int]:
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
                    key = _job_lock_key(jid)
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


def gallery_roots(settings: Any) -> list[Path]:
    """``IDENTITY_GALLERY_ROOTS`` resolved: the only folders an API job may read from."""
    return [Path(r).resolve() for r in settings.gallery_roots]


def resolve_server_path(settings: Any, raw: str) -> Path:
    """A server-side gallery path, allowed only inside ``settings.gallery_roots``.

    Only the path itself: the files a CSV names are confined by ``IndexOptions.allowed_roots``
    row by row while the job runs.
    """
    roots = gallery_roots(settings)
    if not roots:
        raise InvalidInput(
            "server-side paths are disabled: set IDENTITY_GALLERY_ROOTS, or upload an archive"
        )
    path = Path(raw)
    if not path.is_absolute():
        path = roots[0] / path
    resolved = path.resolve()
    if not any(resolved.is_relative_to(r) for r in roots):
        raise InvalidInput(
            "path is outside the allowed gallery roots", path=raw, roots=[str(r) for r in roots]
        )
    if not resolved.exists():
        raise NotFound(f"gallery path '{raw}' not found", path=raw)
    return resolved
