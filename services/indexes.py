"""FAISS indexes derived from Postgres: one ``FaceIndex`` per (collection, model).

Postgres is the truth. An index is a cache of ``face_templates`` rows (``kind="face"``) or
``body_templates`` rows (``kind="body"``: the body store's registry, FAISS whatever
``IDENTITY_VECTOR_STORE`` says) for one collection and one embedding model, keyed by template id,
and is kept in step through the ``index_changes`` log (its rows of that kind):

- **start**: load the snapshot in ``settings.index_dir`` (it records the last change ``seq`` it
  contains, which collection it belongs to and its FAISS factory string) and replay the changes
  after it; with no usable snapshot (torn, another collection's, ahead of the database, or built
  with another factory than ``settings.index_factory``), build from the templates table.
- **after each commit**: the store calls ``catch_up(collection)``, which replays new changes (the
  writer's own and those of other processes, e.g. the batch indexer). Searches call it too, so a
  read always sees every committed write, whichever process made it.
- **snapshots**: every ``settings.index_snapshot_every`` applied changes, and on clean shutdown.
  A crash loses nothing: the next start replays the log from the snapshot's ``seq``. Snapshots
  are sealed with the collection's data key (``services.sealed``), 0600 in a 0700 folder.
- **erasure** (``purge``): the snapshot is deleted at once, so no file keeps an erased vector; the
  next save writes a fresh one. A save never writes tombstoned (removed but not yet compacted)
  vectors: it compacts first and, where the index cannot, writes nothing (start rebuilds).
- ``rebuild`` drops and rebuilds from the templates table (``identity db reindex``).

Why replaying by ``seq`` is exact: writers lock the collection (``pg_advisory_xact_lock``) before
writing a change row and hold it until commit, so within a collection no change with a lower
``seq`` can become visible after a higher one has been read.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select, text

from identity.errors import SealingError
from identity.index import FaceIndex, index_for
from identity.registry import get_manifest
from identity.settings import Settings
from services.change_log import (  # noqa: F401 - the embedding codec is re-exported
    TEMPLATE_TABLES,
    Kind,
    embedding_from_bytes,
    embedding_to_bytes,
    read_changes,
    templates_at_seq,
)
from services.sealed import SNAPSHOT, DataKeys
from services.tables import Collection

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    collection_id: int
    collection_name: str
    collection_created: str
    model: str
    index: FaceIndex | None  # None until the first template (the dim is not known before)
    seq: int = 0  # last change applied
    unsaved: int = 0  # changes applied since the last snapshot
    lock: threading.RLock = field(default_factory=threading.RLock)

    def size(self) -> int:
        return 0 if self.index is None else len(self.index)


def check_index_settings(settings: Settings) -> None:
    """Raise ``InvalidInput`` for a bad factory string or search knob at start, not in the first
    request that builds an index (an empty index of the face embedder's dimension is cheap)."""
    dim = get_manifest(settings.embedder).output_dim
    if dim:
        index_for(dim, settings)


class IndexRegistry:
    """All (collection, model) indexes of one kind (face or body templates) of one process;
    thread-safe."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sealer: DataKeys | None = None,
        kind: Kind = "face",
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sealer = sealer or DataKeys(settings, engine)
        self.kind: Kind = kind
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str], _Entry] = {}

    # paths ----------------------------------------------------------------------------------
    def _snapshot_path(self, collection_id: int, model: str) -> Path:
        # body models get a prefix: one folder per collection, which ``drop`` removes whole
        name = f"{model}.faiss" if self.kind == "face" else f"{self.kind}.{model}.faiss"
        return self.settings.index_dir / str(collection_id) / name

    # building -------------------------------------------------------------------------------
    def _new_index(self, dim: int) -> FaceIndex:
        return index_for(dim, self.settings)

    def _collection_info(self, collection_id: int) -> tuple[str, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(Collection.name, Collection.created_at).where(Collection.id == collection_id)
            ).first()
        return None if row is None else (row[0], row[1].isoformat())

    def _entry(self, collection_id: int, model: str) -> _Entry | None:
        """The entry for (collection, model), loaded or built on first use; None if no collection."""
        key = (collection_id, model)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return entry
        info = self._collection_info(collection_id)
        if info is None:
            return None
        entry = self._load_snapshot(collection_id, model, info) or self._build(
            collection_id, model, info
        )
        with self._lock:
            # Another thread may have won the race; keep the first one.
            return self._entries.setdefault(key, entry)

    def _load_snapshot(
        self, collection_id: int, model: str, info: tuple[str, str]
    ) -> _Entry | None:
        path = self._snapshot_path(collection_id, model)
        if not path.exists():
            return None
        try:
            index = FaceIndex.load(
                path, use_gpu=self.settings.use_gpu_index, unseal=self.sealer.opener(SNAPSHOT)
            )
            watermark = index.watermark
        except Exception as exc:
            log.warning("index snapshot %s unusable (%s); rebuilding", path, exc)
            # e.g. a plaintext snapshot from before sealing: it must not stay on disk
            path.unlink(missing_ok=True)
            return None
        if (
            watermark.get("collection_name") != info[0]
            or watermark.get("collection_created") != info[1]
            or watermark.get("model") != model
            or watermark.get("kind", "face") != self.kind
        ):
            log.warning("index snapshot %s belongs to another collection; rebuilding", path)
            return None
        if index.factory != self.settings.index_factory:
            # The setting changed since the snapshot was written (say Flat -> HNSW32 as a gallery
            # grew): serving the old type would silently ignore the operator's choice.
            log.warning(
                "index snapshot %s is %r but IDENTITY_INDEX_FACTORY is %r; rebuilding from Postgres",
                path,
                index.factory,
                self.settings.index_factory,
            )
            return None
        if self.settings.index_params:  # the knobs may have changed since the snapshot
            index.set_params(**self.settings.index_params)
        with self.engine.connect() as conn:
            max_seq = conn.execute(text("SELECT coalesce(max(seq), 0) FROM index_changes")).scalar()
        if int(watermark.get("seq", -1)) > int(max_seq or 0):
            log.warning("index snapshot %s is ahead of the database; rebuilding", path)
            return None
        entry = _Entry(collection_id, info[0], info[1], model, index, seq=int(watermark["seq"]))
        self._replay(entry)
        log.info(
            "%s index %s/%s loaded from snapshot at seq %d",
            self.kind,
            info[0],
            model,
            watermark["seq"],
        )
        return entry

    def _build(self, collection_id: int, model: str, info: tuple[str, str]) -> _Entry:
        with templates_at_seq(self.engine, self.sealer, collection_id, model, kind=self.kind) as (
            seq,
            chunks,
        ):
            parts = list(chunks)
        entry = _Entry(collection_id, info[0], info[1], model, None, seq=seq)
        if parts:
            entry.index = self._new_index(parts[0][1].shape[1])
            entry.index.add(
                np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            )
        entry.unsaved = sum(len(p[0]) for p in parts)
        log.info("%s index %s/%s built from %d templates", self.kind, info[0], model, entry.unsaved)
        return entry

    def _replay(self, entry: _Entry) -> int:
        """Apply changes after ``entry.seq``; returns how many were read. Caller holds no lock."""
        with entry.lock:
            batch = read_changes(
                self.engine, self.sealer, entry.collection_id, entry.model, entry.seq, self.kind
            )
            if batch is None:
                return 0
            index = entry.index
            if len(batch.remove_ids) and index is not None:
                index.remove(batch.remove_ids)  # unknown ids are ignored
            # Replaying over a snapshot may meet adds it already holds.
            keep = [
                i for i, t in enumerate(batch.add_ids) if index is None or not index.contains(t)
            ]
            if keep:
                if entry.index is None:
                    entry.index = self._new_index(batch.add_vectors.shape[1])
                entry.index.add(batch.add_ids[keep], batch.add_vectors[keep])
            entry.seq = batch.last_seq
            entry.unsaved += batch.n_changes
            if entry.unsaved >= self.settings.index_snapshot_every:
                self._save(entry)
            return batch.n_changes

    def _save(self, entry: _Entry) -> None:
        with entry.lock:
            path = self._snapshot_path(entry.collection_id, entry.model)
            if entry.index is not None and entry.index.tombstones:
                entry.index.compact()
            if entry.index is None or entry.index.tombstones:
                # Removed vectors the index cannot drop (see identity.index) must not reach the
                # disk: no snapshot, the next start rebuilds from Postgres.
                path.unlink(missing_ok=True)
            else:
                entry.index.save(
                    path,
                    watermark={
                        "seq": entry.seq,
                        "collection_name": entry.collection_name,
                        "collection_created": entry.collection_created,
                        "model": entry.model,
                        "kind": self.kind,
                    },
                    seal=self.sealer.sealer(entry.collection_id, SNAPSHOT),
                )
            entry.unsaved = 0

    # public ---------------------------------------------------------------------------------
    def catch_up(self, collection_id: int, model: str) -> None:
        """Bring (collection, model) up to date with every committed change."""
        entry = self._entry(collection_id, model)
        if entry is not None:
            self._replay(entry)

    def catch_up_all(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            if self._collection_info(entry.collection_id) is None:
                self.drop(entry.collection_id)
            else:
                self._replay(entry)

    def warm(self) -> None:
        """Load or build every (collection, model) that has templates (service start)."""
        table = TEMPLATE_TABLES[self.kind]
        with self.engine.connect() as conn:
            pairs = conn.execute(select(table.collection_id, table.model_name).distinct()).all()
        for collection_id, model in pairs:
            try:
                self.catch_up(collection_id, model)
            except SealingError as exc:  # a data key this KEK cannot open: the others still serve
                log.warning(
                    "%s index of collection %d / %s not loaded: %s",
                    self.kind,
                    collection_id,
                    model,
                    exc.message,
                )
            except Exception:
                log.exception(
                    "%s index of collection %d / %s not loaded", self.kind, collection_id, model
                )

    def search(
        self, collection_id: int, model: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, template ids), each (n_queries, k'), best first; k' <= k; -1 = none."""
        entry = self._entry(collection_id, model)
        n = len(queries)
        if entry is None:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        self._replay(entry)
        with entry.lock:
            if entry.index is None:
                return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
            k = min(k, len(entry.index))
            if k == 0:
                return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
            sims, ids = entry.index.search(np.asarray(queries, dtype=np.float32), k)
        return np.asarray(sims), np.asarray(ids)

    def ids(self, collection_id: int, model: str) -> set[int]:
        entry = self._entry(collection_id, model)
        if entry is None:
            return set()
        self._replay(entry)
        with entry.lock:
            return set() if entry.index is None else {int(i) for i in entry.index.ids()}

    def rebuild(self, collection_id: int, model: str) -> int:
        """Drop and rebuild (collection, model) from the templates table; returns its size."""
        info = self._collection_info(collection_id)
        key = (collection_id, model)
        with self._lock:
            self._entries.pop(key, None)
        if info is None:
            return 0
        entry = self._build(collection_id, model, info)
        self._save(entry)
        with self._lock:
            self._entries[key] = entry
        return entry.size()

    def drop(self, collection_id: int) -> None:
        """Forget a deleted collection: in memory and its snapshots on disk."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == collection_id]:
                del self._entries[key]
        shutil.rmtree(self.settings.index_dir / str(collection_id), ignore_errors=True)

    def purge(self, collection_id: int, model: str) -> None:
        """After an erasure: delete the snapshot now (it may hold the erased vectors); the
        in-memory index already dropped them, and the next save writes a snapshot without them."""
        with self._lock:
            entry = self._entries.get((collection_id, model))
        if entry is None:
            self._snapshot_path(collection_id, model).unlink(missing_ok=True)
            return
        with entry.lock:
            self._snapshot_path(collection_id, model).unlink(missing_ok=True)
            entry.unsaved = max(entry.unsaved, 1)

    def snapshot_all(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            if entry.unsaved:
                self._save(entry)

    def sizes(self) -> dict[tuple[str, str], int]:
        with self._lock:
            entries = list(self._entries.values())
        return {(e.collection_name, e.model): e.size() for e in entries}

    def factory(self, collection_id: int, model: str) -> str | None:
        """The FAISS factory string of the index in use; None while it holds no template."""
        entry = self._entry(collection_id, model)
        return None if entry is None or entry.index is None else entry.index.factory

    def describe(self) -> list[dict[str, Any]]:
        """Each loaded index with its real type (``factory``: None until its first template)."""
        with self._lock:
            entries = list(self._entries.values())
        return [
            {
                "collection": e.collection_name,
                "model": e.model,
                "factory": None if e.index is None else e.index.factory,
                "params": {} if e.index is None else dict(e.index.params),
                "size": e.size(),
                "seq": e.seq,
            }
            for e in entries
        ]


def watermark_json(path: Path, sealer: DataKeys) -> dict[str, Any]:
    """The watermark stored in a sealed snapshot (for tests and `identity db reindex` output)."""
    return dict(
        json.loads(json.dumps(FaceIndex.load(path, unseal=sealer.opener(SNAPSHOT)).watermark))
    )
