"""Store one batch of analysed gallery images in one transaction, and skip what is stored."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update

from identity.gallery.worker import ImageResult
from identity.registry import get_manifest
from services.gallery.base import GalleryBase
from services.gallery.report import IngestReport
from services.indexes import embedding_to_bytes
from services.sealed import EMBEDDING, THUMBNAIL
from services.store import NewTemplate
from services.tables import FaceTemplate, GalleryFace, GalleryImage, GalleryJob


class GalleryBatches(GalleryBase):
    def known_shas(self, collection_id: int, model: str, shas: Iterable[str]) -> set[str]:
        """Which of these image digests the collection already has for ``model``."""
        wanted = list(set(shas))
        if not wanted:
            return set()
        with self.sessions() as s:
            done = s.execute(
                select(GalleryImage.sha256).where(
                    GalleryImage.collection_id == collection_id,
                    GalleryImage.model_name == model,
                    GalleryImage.sha256.in_(wanted),
                )
            ).scalars()
            enrolled = s.execute(
                select(FaceTemplate.source_sha256).where(
                    FaceTemplate.collection_id == collection_id,
                    FaceTemplate.model_name == model,
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
        report: IngestReport,
        actor: int | None = None,
        model: str | None = None,
    ) -> None:
        """Store one batch of analysed images (embedded by ``model``, default the collection's)
        in ONE transaction and update ``report``.

        Images the store already has (a concurrent run, a resumed run) are skipped inside the
        transaction, under the collection lock, so two runs can never enroll the same image twice.
        Labelled faces go through ``CollectionWrite.add_templates`` (thumbnails, index log).
        """
        store = self.store
        model = model or store.model_of(collection)
        version = get_manifest(model).version
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
            ids, created = (
                w.ensure_identities(labels, {"source": "gallery"}) if labelled else ({}, 0)
            )
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
                                identity_id=ids[r.label],
                                thumbnail_jpeg=face.thumbnail_jpeg,
                                crop_jpeg=face.crop_jpeg,
                                crop_geometry=face.crop_geometry,
                                **common,
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
                                thumbnail_jpeg=None
                                if thumb is None
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
                "gallery.batch",
                "ok",
                job=job_id,
                images=len(results),
                enrolled=delta["enrolled"],
                rejected=delta["rejected"],
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
