"""FAISS indexes of body templates, one per (collection, body model), derived from Postgres.

Postgres is the truth. ``BodyIndexes`` builds an index from ``body_templates`` and keeps the
table's (row count, max id) as its watermark; every search re-reads that pair (one indexed
aggregate) and rebuilds when it changed (services/body_store.py says why that pair suffices).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, func, select

from identity.index import FaceIndex, index_for
from identity.settings import Settings
from services.sealed import DataKeys
from services.tables import BodyTemplate


@dataclass
class _BodyIndex:
    index: FaceIndex | None
    watermark: tuple[int, int]


class BodyIndexes:
    """FAISS indexes of body templates, one per (collection, model), derived from Postgres."""

    def __init__(self, settings: Settings, engine: Engine, sealer: DataKeys | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.sealer = sealer or DataKeys(settings, engine)
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str], _BodyIndex] = {}

    def _watermark(self, collection_id: int, model: str) -> tuple[int, int]:
        with self.engine.connect() as conn:
            count, max_id = conn.execute(
                select(
                    func.count(BodyTemplate.id), func.coalesce(func.max(BodyTemplate.id), 0)
                ).where(
                    BodyTemplate.collection_id == collection_id, BodyTemplate.model_name == model
                )
            ).one()
        return int(count), int(max_id)

    def rebuild(self, collection_id: int, model: str) -> _BodyIndex:
        """Build the index from the table (always correct; what a changed watermark triggers)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    BodyTemplate.id, BodyTemplate.dim, BodyTemplate.embedding, BodyTemplate.key_id
                )
                .where(
                    BodyTemplate.collection_id == collection_id, BodyTemplate.model_name == model
                )
                .order_by(BodyTemplate.id)
            ).all()
        index = None
        if rows:
            index = index_for(int(rows[0][1]), self.settings)
            index.add(
                np.array([r[0] for r in rows], np.int64),
                np.stack([self.sealer.embedding(r[2], r[3], r[1]) for r in rows]),
            )
        max_id = max((int(r[0]) for r in rows), default=0)
        entry = _BodyIndex(index, (len(rows), max_id))
        with self._lock:
            self._entries[(collection_id, model)] = entry
        return entry

    def search(
        self, collection_id: int, model: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (Q, k), template ids (Q, k)); empty (Q, 0) arrays for an empty gallery."""
        with self._lock:
            entry = self._entries.get((collection_id, model))
        if entry is None or entry.watermark != self._watermark(collection_id, model):
            entry = self.rebuild(collection_id, model)
        if entry.index is None or not len(entry.index):
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return entry.index.search(queries, min(k, len(entry.index)))

    def size(self, collection_id: int, model: str) -> int:
        with self._lock:
            entry = self._entries.get((collection_id, model))
        return 0 if entry is None or entry.index is None else len(entry.index)
