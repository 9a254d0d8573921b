"""The enrollment gate re-run on a collection's stored templates: who falls below it now."""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
from sqlalchemy import select

from identity.errors import InvalidInput
from services.store.core import StoreCore
from services.tables import FaceTemplate, IdentityRow


class QualityReportMixin(StoreCore):
    """Reports only: removing a face stays the admin's ``remove_face``."""

    def quality_report(self, collection: str, min_quality: float | None = None) -> dict[str, Any]:
        """The active model's templates the enrollment gate would refuse today (or at
        ``min_quality`` instead of ``enroll_min_quality``), with their reasons, per identity, and
        the identities left with no template that passes.

        Read from the stored values (quality, detector score, 5 landmarks): nothing is
        re-analysed, and a template that did not store a value says so.
        """
        from identity.quality import stored_gate_rejections

        gate = self.settings.enroll_min_quality if min_quality is None else min_quality
        if not (isinstance(gate, (int, float)) and math.isfinite(gate) and 0 <= gate <= 1):
            raise InvalidInput("min_quality must be a number in [0, 1]", min_quality=gate)
        settings = self.settings.model_copy(update={"enroll_min_quality": float(gate)})
        with self.sessions() as s:
            c = self._collection(s, collection)
            model = self.face_model(c)
            rows = s.execute(
                select(
                    IdentityRow.id,
                    IdentityRow.external_id,
                    IdentityRow.display_name,
                    FaceTemplate.id,
                    FaceTemplate.quality,
                    FaceTemplate.quality_reasons,
                    FaceTemplate.det_score,
                    FaceTemplate.landmarks,
                )
                .join(FaceTemplate, FaceTemplate.identity_id == IdentityRow.id)
                .where(IdentityRow.collection_id == c.id, FaceTemplate.model_name == model)
                .order_by(IdentityRow.created_at, IdentityRow.id, FaceTemplate.id)
            ).all()
        rejections, missing = (
            stored_gate_rejections(
                np.asarray([r[7] for r in rows], np.float64),
                [r[6] for r in rows],
                [r[4] for r in rows],
                [r[5] or [] for r in rows],
                settings,
            )
            if rows
            else ([], [])
        )
        people: dict[uuid.UUID, dict[str, Any]] = {}
        for r, reasons, lacks in zip(rows, rejections, missing, strict=True):
            p = people.setdefault(
                r[0],
                {
                    "identity_id": str(r[0]),
                    "external_id": r[1],
                    "display_name": r[2],
                    "templates": 0,
                    "passing": 0,
                    "below_gate": [],
                    "not_stored": [],
                },
            )
            p["templates"] += 1
            if lacks:  # not known to be below the gate: it passes, as it does in decisions
                p["not_stored"].append({"template_id": int(r[3]), "missing": lacks})
            if not reasons:
                p["passing"] += 1
                continue
            p["below_gate"].append(
                {
                    "template_id": int(r[3]),
                    "quality": None if r[4] is None else round(float(r[4]), 4),
                    "quality_reasons": list(r[5] or []),
                    "gate_reasons": reasons,
                }
            )
        flagged = [p for p in people.values() if p["below_gate"] or p["not_stored"]]
        for p in flagged:
            p["no_template_passes"] = p["passing"] == 0
        return {
            "collection": collection,
            "model": model,
            "min_quality": float(gate),
            "gate": {
                "min_quality": float(gate),
                "min_det_score": settings.enroll_min_det_score,
                "min_inter_ocular_px": settings.enroll_min_inter_ocular_px,
                "max_abs_yaw": settings.enroll_max_abs_yaw,
            },
            "identities_checked": len(people),
            "templates_checked": len(rows),
            "templates_below_gate": sum(len(p["below_gate"]) for p in flagged),
            "templates_quality_missing": sum(1 for r in rows if r[4] is None),
            "templates_det_score_missing": sum(1 for r in rows if r[6] is None),
            "identities_with_templates_below_gate": sum(1 for p in flagged if p["below_gate"]),
            "identities_with_no_template_passing": [
                {k: p[k] for k in ("identity_id", "external_id", "display_name", "templates")}
                for p in flagged
                if p["no_template_passes"]
            ],
            "identities": flagged,
        }
