"""Enrollment: images (face choice, quality gate) or analysed faces in, and their thumbnails."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from identity.choice import choose_face, face_summary, rounded
from identity.crops import SourceCrop, encode_crop
from identity.errors import CodedError, InvalidInput
from identity.faces import Faces, check_bbox_xyxy
from identity.image import sha256_hex
from identity.registry import get_manifest
from services.errors import DuplicateImage, NotFound
from services.indexes import embedding_to_bytes
from services.liveness import audit_fields, stored_verdict, wanted
from services.metrics import record_stages
from services.sealed import THUMBNAIL
from services.store.liveness import LivenessMixin
from services.store.write import NewTemplate
from services.tables import FaceTemplate


class EnrollmentMixin(LivenessMixin):
    """Templates in: enroll images or analysed faces; the thumbnails they keep."""

    def thumbnail_path(self, collection: str, template_id: int) -> Any:
        """Path of a template's sealed thumbnail file; NotFound if none."""
        with self.sessions() as s:
            c = self._collection(s, collection)
            t = s.get(FaceTemplate, template_id)
            if t is None or t.collection_id != c.id or not t.thumbnail:
                raise NotFound(f"no thumbnail for template {template_id}")
            return self._thumb_path(c.id, t.thumbnail)

    def thumbnail_jpeg(self, collection: str, template_id: int) -> bytes:
        """A template's thumbnail JPEG, unsealed (for the dashboard); NotFound if none."""
        path = self.thumbnail_path(collection, template_id)
        try:
            blob = path.read_bytes()
        except OSError:
            raise NotFound(f"no thumbnail for template {template_id}") from None
        return self.sealer.open(blob, THUMBNAIL) if path.suffix == ".sealed" else blob

    def thumbnail_of(self, faces: Faces, i: int) -> bytes | None:
        if not self.settings.store_thumbnails or faces.crops is None:
            return None
        import cv2

        ok, buf = cv2.imencode(".jpg", faces.crops[i], [cv2.IMWRITE_JPEG_QUALITY, 85])
        return buf.tobytes() if ok else None

    def enroll_faces(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        faces: Faces,
        source_sha256: str,
        actor: int | None = None,
        crops: Sequence[SourceCrop] | None = None,
        model: str | None = None,
        liveness: Sequence[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Store already-analysed faces as templates of one identity; returns template ids.

        ``model`` names the embedder of ``faces`` (default: the collection's active model);
        ``crops`` are their source crops (``identity.crops``), kept when the settings say so.
        Raises Conflict if this image (by SHA-256) is already enrolled for the identity. No
        quality gate: the caller decided. ``liveness``: each face's liveness verdict, kept with
        its template, when a check ran.
        """
        if faces.embeddings is None or not len(faces):
            raise InvalidInput("enroll_faces needs faces with embeddings")
        if crops is not None and len(crops) != len(faces):
            raise InvalidInput("enroll_faces needs one source crop per face")
        thumbs = [self.thumbnail_of(faces, i) for i in range(len(faces))]
        kept = [self._crop_record(c) for c in crops] if crops else [(None, None)] * len(faces)
        kept_liveness = (
            [stored_verdict(v) for v in liveness] if liveness else [(None, None)] * len(faces)
        )
        try:
            with self.write(collection, actor) as w:
                model = model or self.face_model(w.collection)
                row = w.identity(identity_id)
                dup = w.session.execute(
                    select(FaceTemplate.id).where(
                        FaceTemplate.identity_id == row.id,
                        FaceTemplate.model_name == model,
                        FaceTemplate.source_sha256 == source_sha256,
                    )
                ).first()
                if dup is not None:
                    raise DuplicateImage(
                        "this image is already enrolled for this identity", template_id=dup[0]
                    )
                new = w.add_templates(
                    [
                        NewTemplate(
                            identity_id=row.id,
                            model_name=model,
                            model_version=get_manifest(model).version,
                            dim=int(faces.embeddings.shape[1]),
                            embedding=embedding_to_bytes(faces.embeddings[i]),
                            quality=None if faces.quality is None else float(faces.quality[i]),
                            quality_reasons=list(faces.quality_reasons[i])
                            if faces.quality_reasons
                            else [],
                            det_score=float(faces.scores[i]),
                            bbox=rounded(faces.boxes[i]),
                            landmarks=[rounded(p) for p in faces.landmarks[i]],
                            source_sha256=source_sha256,
                            thumbnail_jpeg=thumbs[i],
                            crop_jpeg=kept[i][0],
                            crop_geometry=kept[i][1],
                            liveness=kept_liveness[i][0],
                            liveness_verdict=kept_liveness[i][1],
                        )
                        for i in range(len(faces))
                    ]
                )
                w.audit(
                    "face.enroll",
                    "accepted",
                    identity_id=row.id,
                    templates=[t.id for t in new],
                    quality=[t.quality for t in new],
                    **(
                        {"liveness": [audit_fields(v)["liveness"] for v in liveness]}
                        if liveness
                        else {}
                    ),
                )
        except IntegrityError:
            raise DuplicateImage("this image is already enrolled for this identity") from None
        return [t.id for t in new]

    def _crop_record(self, crop: SourceCrop) -> tuple[bytes | None, dict[str, Any] | None]:
        """(JPEG, geometry) of a source crop to keep, or nothing when crops are not kept."""
        if not self.settings.keep_face_crops:
            return None, None
        return encode_crop(crop), crop.geometry()

    def _quality_gate(self, face: Faces) -> list[str]:
        from identity.quality import enrollment_rejections

        return list(enrollment_rejections(face, self.settings)[0])

    def enroll_images(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        images: Sequence[tuple[str, bytes]],
        face_index: int | None = None,
        bbox: Sequence[float] | None = None,
        actor: int | None = None,
        liveness: bool = False,
    ) -> dict[str, list[dict[str, Any]]]:
        """Analyse and enroll each ``(filename, bytes)``; every image is accepted or rejected.

        ``liveness`` opts in to the presentation-attack score when the collection's policy is
        ``off``; under ``require`` a spoof is rejected with code ``presentation_attack``.
        """
        if not images:
            raise InvalidInput("no images given")
        if bbox is not None:
            bbox = check_bbox_xyxy(bbox)
        identity_id = self.require_identity(
            collection, identity_id
        )  # fail fast; UUID or external id
        with self.read(collection) as (_, c):
            policy, model = c.liveness_policy, self.face_model(c)
        analyzer = self.analyzer_for(model)
        live_check = wanted(policy, liveness)
        accepted: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        seen: set[str] = set()
        for filename, data in images:
            digest = sha256_hex(data)
            try:
                if digest in seen:
                    raise DuplicateImage("the same image was sent twice in this request")
                seen.add(digest)
                analyzed = analyzer.analyze_bytes(data, liveness=live_check)
                record_stages(analyzed.faces.timings)
                face = choose_face(analyzed.faces, face_index, bbox)
                extra: dict[str, Any] = {}
                if live_check:
                    (extra["liveness"],) = self._liveness_gate(
                        face, policy, "face.enroll", actor, collection, uuid.UUID(str(identity_id))
                    )
                reasons = self._quality_gate(face)
                if reasons:
                    from identity.errors import LowQuality

                    raise LowQuality(
                        "face below the enrollment quality gate: " + ", ".join(reasons),
                        reasons=reasons,
                        face=face_summary(face, 0),
                    )
                keep = self.settings.keep_face_crops
                crops = (
                    [analyzed.source_crop(face, 0, self.settings.face_crop_side)] if keep else None
                )
                (tid,) = self.enroll_faces(
                    collection,
                    identity_id,
                    face,
                    digest,
                    actor=actor,
                    crops=crops,
                    model=model,
                    liveness=[extra["liveness"]] if live_check else None,
                )
                accepted.append(
                    {"filename": filename, "template_id": tid, **face_summary(face, 0), **extra}
                )
            except CodedError as exc:
                if isinstance(exc, NotFound) or exc.http_status >= 500:
                    # The identity vanished, or a model is broken: the request failed, not the image.
                    raise
                rejected.append(
                    {
                        "filename": filename,
                        "code": exc.code,
                        "message": exc.message,
                        "reasons": exc.details.get("reasons", [exc.code]),
                        "details": exc.details,
                    }
                )
        if rejected:
            self.audit(
                actor,
                "face.enroll",
                "rejected",
                collection=collection,
                identity_id=uuid.UUID(str(identity_id)),
                codes=[r["code"] for r in rejected],
            )
        return {"accepted": accepted, "rejected": rejected}
