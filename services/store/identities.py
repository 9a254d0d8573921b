"""Identities: create, list (paged, searched), get, erase (with VACUUM) and remove one face."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from identity.errors import InvalidInput
from services.errors import Conflict, NotFound
from services.liveness import template_liveness
from services.store.core import StoreCore
from services.tables import BodyTemplate, FaceTemplate, IdentityRow


class IdentitiesMixin(StoreCore):
    """Identities, addressed by UUID or ``external_id`` within a collection."""

    @staticmethod
    def _identity_dict(i: IdentityRow, templates: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(i.id),
            "external_id": i.external_id,
            "display_name": i.display_name,
            "metadata": i.metadata_,
            "created_at": i.created_at.isoformat(),
            "updated_at": i.updated_at.isoformat(),
        }
        if templates is not None:
            out["templates"] = templates
        return out

    def create_identity(
        self,
        collection: str,
        external_id: str,
        display_name: str = "",
        metadata: dict[str, Any] | None = None,
        actor: int | None = None,
    ) -> dict[str, Any]:
        if not external_id or len(external_id) > 256:
            raise InvalidInput("external_id must be 1-256 characters")
        if len(display_name or "") > 256:
            raise InvalidInput("display_name must be at most 256 characters")
        try:
            with self.sessions.begin() as s:
                c = self._collection(s, collection)
                row = IdentityRow(
                    collection_id=c.id,
                    external_id=external_id,
                    display_name=display_name or "",
                    metadata_=metadata or {},
                )
                s.add(row)
                s.flush()
                s.refresh(row)
                self._audit(
                    s, actor, "identity.create", "ok", collection=collection, identity_id=row.id
                )
        except IntegrityError:
            raise Conflict(
                f"external_id '{external_id}' already exists in '{collection}'",
                external_id=external_id,
            ) from None
        return self._identity_dict(row, templates=0)

    def list_identities(
        self, collection: str, q: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        """A page of identities; ``q`` searches display name and external id (case-insensitive
        substring)."""
        if not 1 <= limit <= 1000 or offset < 0:
            raise InvalidInput("limit must be 1-1000 and offset >= 0", limit=limit, offset=offset)
        with self.sessions() as s:
            c = self._collection(s, collection)
            where = [IdentityRow.collection_id == c.id]
            if q:
                pattern = (
                    "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                )
                where.append(
                    or_(
                        IdentityRow.display_name.ilike(pattern),
                        IdentityRow.external_id.ilike(pattern),
                    )
                )
            total = s.execute(
                select(func.count()).select_from(IdentityRow).where(*where)
            ).scalar_one()
            rows = (
                s.execute(
                    select(IdentityRow)
                    .where(*where)
                    .order_by(IdentityRow.created_at, IdentityRow.id)
                    .limit(limit)
                    .offset(offset)
                )
                .scalars()
                .all()
            )
            counts = dict(
                s.execute(
                    select(FaceTemplate.identity_id, func.count())
                    .where(FaceTemplate.identity_id.in_([r.id for r in rows]))
                    .group_by(FaceTemplate.identity_id)
                ).all()
            )
        return {
            "items": [self._identity_dict(r, counts.get(r.id, 0)) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    def get_identity(self, collection: str, identity_id: uuid.UUID | str) -> dict[str, Any]:
        with self.sessions() as s:
            c = self._collection(s, collection)
            row = self._identity(s, c, identity_id)
            templates = [
                {
                    "id": t.id,
                    "model": t.model_name,
                    "model_version": t.model_version,
                    "quality": t.quality,
                    "quality_reasons": t.quality_reasons,
                    "bbox": t.bbox,
                    "source_sha256": t.source_sha256,
                    "thumbnail": t.thumbnail is not None,
                    "liveness": template_liveness(t.liveness, t.liveness_verdict),
                    "crop": t.crop is not None,
                    "migrated_from": t.migrated_from,
                    "created_at": t.created_at.isoformat(),
                }
                for t in row.templates
            ]
            if templates:
                for face, reasons in zip(
                    templates, self._gate_reasons(list(row.templates)), strict=True
                ):
                    face["gate_reasons"] = reasons
            out = self._identity_dict(row, templates=len(templates))
        out["faces"] = templates
        return out

    def _gate_reasons(self, templates: list[FaceTemplate]) -> list[list[str]]:
        """Per template, why the current enrollment gate would refuse it (empty: it passes)."""
        from identity.quality import stored_gate_rejections

        rejections, _ = stored_gate_rejections(
            np.asarray([t.landmarks for t in templates], np.float64),
            [t.det_score for t in templates],
            [t.quality for t in templates],
            [t.quality_reasons or [] for t in templates],
            self.settings,
        )
        return rejections

    def erase_identity(
        self, collection: str, identity_id: uuid.UUID | str, actor: int | None = None
    ) -> dict[str, Any]:
        """Erase an identity: templates (face, body, the gallery faces named into it),
        thumbnails, index entries and snapshot, then VACUUM (docs/security.md); the audit log
        keeps that it happened (never what was erased)."""
        with self.write(collection, actor) as w:
            row = w.identity(identity_id)
            templates = w.session.execute(
                select(
                    FaceTemplate.id,
                    FaceTemplate.model_name,
                    FaceTemplate.thumbnail,
                    FaceTemplate.crop,
                ).where(FaceTemplate.identity_id == row.id)
            ).all()
            for tid, model, thumb, crop in templates:
                w.template_removed(tid, model, thumb, crop)
            bodies = w.session.execute(
                select(BodyTemplate.id, BodyTemplate.model_name).where(
                    BodyTemplate.identity_id == row.id
                )
            ).all()
            for tid, model in bodies:
                w.template_removed(tid, model, kind="body")
            iid = row.id
            w.session.delete(row)  # templates cascade
            w.audit("identity.erase", "ok", identity_id=iid, templates=len(templates))
        return {"erased": str(iid), "templates": len(templates)}

    def remove_face(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        template_id: int,
        actor: int | None = None,
    ) -> dict[str, Any]:
        """Delete one template of an identity: row, thumbnail and index entry, like an erase."""
        with self.write(collection, actor) as w:
            row = w.identity(identity_id)
            t = w.session.get(FaceTemplate, template_id)
            if t is None or t.identity_id != row.id:
                raise NotFound(
                    f"face {template_id} not found on identity '{row.id}'", template_id=template_id
                )
            w.template_removed(t.id, t.model_name, t.thumbnail, t.crop)
            w.session.delete(t)
            w.audit("face.remove", "ok", identity_id=row.id, template_id=template_id)
        return {"removed": template_id}
