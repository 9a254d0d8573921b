"""Housekeeping: the audit log and its chain, the indexes' life cycle (warm, background catch-up,
snapshots, sizes, status, rebuild), orphan thumbnail sweep."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select

from services import audit as audit_log
from services.change_log import TEMPLATE_TABLES
from services.store.core import StoreCore
from services.tables import AuditEvent, Collection, FaceTemplate
from services.vector_store import VectorStore


class HousekeepingMixin(StoreCore):
    """Audit reading, index consistency and rebuild, orphan sweeps."""

    def audit_events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.execute(
                select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            ).scalars()
            return [audit_log.event_dict(e) for e in rows]

    def verify_audit_chain(self) -> audit_log.ChainReport:
        """The audit log's hash chain checked end to end (``services.audit.verify_chain``)."""
        return audit_log.verify_chain(self.sessions)

    def load_models(self) -> None:
        """Load the face detector and embedder now (service start), not in the first request."""
        self.analyzer.detector  # noqa: B018 - the properties load and time the models once
        self.analyzer.embedder  # noqa: B018

    # indexes: faces (the configured vector store) and bodies (FAISS), one life cycle ---------
    def _all_indexes(self) -> tuple[VectorStore, VectorStore]:
        return self.indexes, self.body_indexes

    def warm_indexes(self) -> None:
        """Load or build every index that has templates (service start)."""
        for indexes in self._all_indexes():
            indexes.warm()

    def catch_up_indexes(self) -> None:
        """Apply other processes' committed changes to every index in use (background round)."""
        for indexes in self._all_indexes():
            indexes.catch_up_all()

    def snapshot_indexes(self) -> None:
        """Persist every index with unsaved changes (clean shutdown)."""
        for indexes in self._all_indexes():
            indexes.snapshot_all()

    def index_sizes(self) -> dict[tuple[str, str], int]:
        """Vectors held per (collection name, model), faces and bodies, for metrics."""
        return {k: v for indexes in self._all_indexes() for k, v in indexes.sizes().items()}

    def describe_indexes(self) -> list[dict[str, Any]]:
        """Each index in use: collection, model, kind, factory, params, size, seq."""
        return [
            {"kind": kind, **d}
            for kind, indexes in zip(("face", "body"), self._all_indexes(), strict=True)
            for d in indexes.describe()
        ]

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
        """Rebuild every (collection, model) index, face and body, from Postgres, or one
        collection's; returns sizes by "collection/model"."""
        if collection is not None:
            self.collection_id(collection)  # NotFound for an unknown name
        sizes: dict[str, int] = {}
        for kind, indexes in zip(("face", "body"), self._all_indexes(), strict=True):
            table = TEMPLATE_TABLES[kind]
            query = (
                select(Collection.id, Collection.name, table.model_name)
                .join(table, table.collection_id == Collection.id)
                .distinct()
            )
            if collection is not None:
                query = query.where(Collection.name == collection)
            with self.sessions() as s:
                pairs = s.execute(query).all()
            sizes |= {f"{name}/{model}": indexes.rebuild(cid, model) for cid, name, model in pairs}
        return sizes
