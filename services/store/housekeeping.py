"""Housekeeping: the audit log, index status and rebuild, orphan thumbnail sweep."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select

from services import audit as audit_log
from services.store.core import StoreCore
from services.tables import AuditEvent, Collection, FaceTemplate


class HousekeepingMixin(StoreCore):
    """Audit reading, index consistency and rebuild, orphan sweeps."""

    def audit_events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.execute(
                select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            ).scalars()
            return [audit_log.event_dict(e) for e in rows]

    def sweep_orphan_thumbnails(self) -> int:
        """Delete thumbnail and source-crop files no template references (left by a crash
        mid-erase/enroll)."""
        root = self.settings.thumbnails_dir
        if not root.exists():
            return 0
        with self.sessions() as s:
            known = {
                (str(c), f)
                for c, *files in s.execute(
                    select(FaceTemplate.collection_id, FaceTemplate.thumbnail, FaceTemplate.crop)
                ).all()
                for f in files
                if f
            }
        removed = 0
        for path in root.glob("*/*"):
            if path.is_file() and (path.parent.name, path.name) not in known:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def index_status(self, collection: str) -> dict[str, Any]:
        """The index for the current model next to Postgres: its FAISS type, sizes, id-set digests.

        ``consistent`` is true when the index holds exactly the templates Postgres has.
        """
        with self.sessions() as s:
            c = self._collection(s, collection)
            cid, model = c.id, self.face_model(c)
        index_ids = sorted(self.indexes.ids(cid, model))
        with self.sessions() as s:
            db_ids = sorted(
                s.execute(
                    select(FaceTemplate.id).where(
                        FaceTemplate.collection_id == cid,
                        FaceTemplate.model_name == model,
                    )
                ).scalars()
            )

        def digest(ids: list[int]) -> str:
            return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()

        return {
            "model": model,
            "index_factory": self.indexes.factory(cid, model),
            "index_size": len(index_ids),
            "templates": len(db_ids),
            "index_digest": digest(index_ids),
            "templates_digest": digest(db_ids),
            "consistent": index_ids == db_ids,
        }

    def reindex(self, collection: str | None = None) -> dict[str, int]:
        """Rebuild every (collection, model) index from Postgres, or one collection's; returns
        sizes."""
        if collection is not None:
            self.collection_id(collection)  # NotFound for an unknown name
        query = (
            select(Collection.id, Collection.name, FaceTemplate.model_name)
            .join(FaceTemplate, FaceTemplate.collection_id == Collection.id)
            .distinct()
        )
        if collection is not None:
            query = query.where(Collection.name == collection)
        with self.sessions() as s:
            pairs = s.execute(query).all()
        return {f"{name}/{model}": self.indexes.rebuild(cid, model) for cid, name, model in pairs}
