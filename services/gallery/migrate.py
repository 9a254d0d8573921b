"""``run_migration``: re-embed a collection's templates with another face model, as a job.

    templates of the active model without a target twin (same identity, same photo)
      -> their sealed source crops (``identity.crops``) -> the target model's pipeline
      -> one transaction per batch: the new templates (``migrated_from`` = the old one), the
         change log (so the target's index is built as it goes) and the job's counters

Decisions keep using the active model all along; ``IdentityStore.switch_model`` changes it when
the target covers every template. Idempotent and resumable like ``run_ingest``: a template is
pending exactly while it has no target twin, so a rerun after a kill, a cancel or new
enrolments does only what is missing. A template erased while it is re-embedded is skipped:
the batch re-reads its rows under the collection lock that erasure takes too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from identity.crops import SourceCrop, decode_crop, embed_crops
from identity.errors import CodedError, InvalidInput, JobCancelled
from services.gallery.ingest import _job_end
from services.gallery.jobs import _now
from services.gallery.lease import JobLease
from services.gallery.migrate_check import decision_changes
from services.gallery.store import GalleryStore
from services.indexes import embedding_to_bytes
from services.store import NewTemplate
from services.store.face_models import check_face_model, uncovered, uncovered_count
from services.tables import FaceTemplate, GalleryJob

log = logging.getLogger(__name__)

MAX_LISTED = 1000  # failures and decision changes listed in a report (all are counted)


@dataclass
class MigrationReport:
    job_id: str
    collection: str
    source_model: str
    target_model: str
    total: int = 0  # templates of the source model without a twin when the job started
    migrated: int = 0
    failed: int = 0
    vanished: int = 0  # erased while the job ran
    failures: list[dict[str, Any]] = field(default_factory=list)
    checked: int = 0  # photos whose decision was compared between the two models
    changed: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.migrated + self.failed + self.vanished

    def fail(self, template_id: int, identity_id: Any, code: str, message: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_LISTED:
            self.failures.append(
                {
                    "template_id": template_id,
                    "identity_id": str(identity_id),
                    "code": code,
                    "message": message,
                }
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "migrate",
            "job_id": self.job_id,
            "collection": self.collection,
            "source_model": self.source_model,
            "target_model": self.target_model,
            "total": self.total,
            "migrated": self.migrated,
            "failed": self.failed,
            "vanished": self.vanished,
            "failures": self.failures,
            "checked": self.checked,
            "decisions_changed": self.changed,
            "changes": self.changes,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.done / self.seconds, 2) if self.seconds > 0 else None,
        }

    def to_text(self) -> str:
        d = self.to_dict()
        lines = [
            f"{self.collection}: {self.source_model} -> {self.target_model}",
            f"  migrated {self.migrated} of {self.total}, failed {self.failed}, "
            f"erased meanwhile {self.vanished}",
            f"  {self.seconds:.1f} s, {d['images_per_s']} images/s",
            f"  decisions on own photos: {self.checked} compared, {self.changed} changed",
        ]
        lines += [
            f"    template {c['template_id']} ({c['external_id']}): "
            f"{c['source']['external_id']} -> {c['target']['external_id']}"
            for c in self.changes[:20]
        ]
        lines += [f"  failed: template {f['template_id']}: {f['code']}" for f in self.failures[:20]]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def create_migration_job(
    gallery: GalleryStore,
    collection: str,
    target: str,
    actor: int | None = None,
    lease: JobLease | None = None,
) -> str:
    """A ``queued`` migrate job (checked first: known target, not already the active model)."""
    store = gallery.store
    target = check_face_model(target)
    source = store.model_of(collection)
    if target == source:
        raise InvalidInput(f"{target} is already the active model of '{collection}'", model=target)
    with store.write(collection, actor, lock=False) as w:
        job = GalleryJob(
            id=lease.job_id if lease is not None else uuid.uuid4(),
            collection_id=w.collection_id,
            kind="migrate",
            source=f"{source} -> {target}",
            label_mode="none",
            params={"source_model": source, "target_model": target},
            status="queued",
        )
        w.session.add(job)
        w.session.flush()
        w.audit("model.migrate.create", "ok", job=str(job.id), model=target, previous=source)
        return str(job.id)


def _load_crop(gallery: GalleryStore, t: FaceTemplate) -> tuple[bytes, SourceCrop]:
    """The template's source crop (JPEG, decoded); CodedError when it is missing or damaged."""
    from identity.errors import BadImage

    if not t.crop or not t.crop_geometry:
        raise BadImage(
            "no source crop kept (enrolled before crops were kept, or with keep_face_crops off): "
            "enrol the photo again, or ingest its gallery again after the switch",
            code="no_crop",
        )
    try:
        jpeg = gallery.store.crop_jpeg(t.collection_id, t.crop)
    except OSError:
        raise BadImage("the source crop file is missing", code="crop_missing") from None
    return jpeg, decode_crop(jpeg, t.crop_geometry)


def _batch(
    gallery: GalleryStore,
    collection: str,
    job_id: str,
    source: str,
    target: str,
    rows: list[FaceTemplate],
    report: MigrationReport,
    actor: int | None,
) -> None:
    """Re-embed one batch and store it in ONE transaction, with the job's counters."""
    store = gallery.store
    loaded: list[tuple[FaceTemplate, bytes, SourceCrop]] = []
    failed: dict[int, tuple[Any, str, str]] = {}
    for t in rows:
        try:
            jpeg, crop = _load_crop(gallery, t)
        except CodedError as exc:
            failed[t.id] = (t.identity_id, str(exc.details.get("code", exc.code)), exc.message)
        else:
            loaded.append((t, jpeg, crop))
    faces = embed_crops(
        store.analyzer_for(target),
        [c for _, _, c in loaded],
        [float(t.det_score or 1.0) for t, _, _ in loaded],
    )
    version = store.model_version_of(target)
    with store.write(collection, actor) as w:
        s = w.session
        ids = [t.id for t in rows]
        # under the collection lock: what was erased or migrated since the batch was read
        alive = set(s.execute(select(FaceTemplate.id).where(FaceTemplate.id.in_(ids))).scalars())
        todo = set(
            s.execute(
                uncovered(w.collection_id, source, target)
                .where(FaceTemplate.id.in_(ids))
                .with_only_columns(FaceTemplate.id)
            ).scalars()
        )
        new: list[NewTemplate] = []
        for i, (t, jpeg, _) in enumerate(loaded):
            if t.id not in todo:
                continue
            assert faces.embeddings is not None
            new.append(
                NewTemplate(
                    identity_id=t.identity_id,
                    model_name=target,
                    model_version=version,
                    dim=int(faces.embeddings.shape[1]),
                    embedding=embedding_to_bytes(faces.embeddings[i]),
                    quality=None if faces.quality is None else float(faces.quality[i]),
                    quality_reasons=list(faces.quality_reasons[i]) if faces.quality_reasons else [],
                    det_score=t.det_score,
                    bbox=t.bbox,
                    landmarks=t.landmarks,
                    source_sha256=t.source_sha256,
                    thumbnail_jpeg=store.thumbnail_of(faces, i),
                    crop_jpeg=jpeg,
                    crop_geometry=t.crop_geometry,
                    migrated_from=t.id,
                    # the liveness was judged on the photo, which re-embedding does not change
                    liveness=t.liveness,
                    liveness_verdict=t.liveness_verdict,
                )
            )
        w.add_templates(new)
        report.migrated += len(new)
        report.vanished += sum(1 for i in ids if i not in alive)
        for tid, (iid, code, message) in failed.items():
            if tid in alive:
                report.fail(tid, iid, code, message)
        s.execute(
            update(GalleryJob)
            .where(GalleryJob.id == uuid.UUID(job_id))
            .values(seen=report.done, enrolled=report.migrated, rejected=report.failed)
        )


def run_migration(
    gallery: GalleryStore,
    collection: str,
    target: str,
    job_id: str | None = None,
    actor: int | None = None,
    on_progress: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Re-embed every template of the collection's active model that ``target`` lacks (see the
    module docstring); returns the report, which the job row keeps too."""
    lease: JobLease | None = None
    if job_id is None:
        lease = JobLease(gallery.engine)
        try:
            job_id = create_migration_job(gallery, collection, target, actor, lease)
        except BaseException:
            lease.release()
            raise
    try:
        return _run(gallery, collection, job_id, actor, on_progress)
    finally:
        if lease is not None:
            lease.release()


def _run(
    gallery: GalleryStore,
    collection: str,
    job_id: str,
    actor: int | None,
    on_progress: Callable[[MigrationReport], None] | None,
) -> MigrationReport:
    store = gallery.store
    started = time.perf_counter()
    with store.read(collection) as (s, c):
        job = gallery._job_row(s, c, job_id)
        source, target = job.params["source_model"], job.params["target_model"]
        cid = c.id
    report = MigrationReport(job_id, collection, source, target)
    try:
        store.analyzer_for(target).embedder  # noqa: B018 - a missing model fails the job now
        with gallery.sessions() as s:
            report.total = uncovered_count(s, cid, source, target)
        if not gallery.start_job(job_id, report.total):
            raise JobCancelled("the job was cancelled before it started")
        last = 0
        size = gallery.settings.migrate_batch_size
        while True:
            with gallery.sessions() as s:
                rows = list(
                    s.execute(
                        uncovered(cid, source, target).where(FaceTemplate.id > last).limit(size)
                    ).scalars()
                )
                s.expunge_all()
            if not rows:
                break
            last = rows[-1].id
            _batch(gallery, collection, job_id, source, target, rows, report, actor)
            if on_progress is not None:
                on_progress(report)
            if gallery.cancel_requested(job_id):
                raise JobCancelled("the job was cancelled")
        report.checked, report.changed, report.changes, note = decision_changes(
            gallery, cid, source, target, MAX_LISTED
        )
        if note:
            report.notes.append(note)
        report.seconds = time.perf_counter() - started
        _finish(gallery, job_id, "done", report)
    except BaseException as exc:
        report.seconds = time.perf_counter() - started
        status, error = _job_end(job_id, exc)
        try:
            _finish(gallery, job_id, status, report, error)
        except Exception:  # the database may be what failed; keep the first error
            log.exception("could not record the end of migration job %s", job_id)
        raise
    return report


def _finish(
    gallery: GalleryStore,
    job_id: str,
    status: str,
    report: MigrationReport,
    error: str | None = None,
) -> None:
    with gallery.sessions.begin() as s:
        s.execute(
            update(GalleryJob)
            .where(GalleryJob.id == uuid.UUID(job_id))
            .values(
                status=status,
                finished_at=_now(),
                error=error,
                report=report.to_dict(),
                seen=report.done,
                enrolled=report.migrated,
                rejected=report.failed,
            )
        )
