"""1:N search on Milvus: one collection per (collection, model), shared by every worker and host.

Postgres stays the truth; a Milvus collection is a derived copy of ``face_templates`` keyed by
template id (the primary key), kept in step through the change log like the FAISS copies:

- **watermark in Milvus**: the collection's properties record the last change ``seq`` it holds
  and which Postgres collection (name, creation time) and model it belongs to. A collection that
  is missing, another collection's, ahead of the database or built with other index settings is
  rebuilt from the templates table.
- **one applier at a time**: a process that sees changes after its last known ``seq`` takes a
  Postgres advisory lock for (collection, model), re-reads the watermark (another worker may have
  applied them), upserts / deletes by primary key and then advances the watermark. A crash (of
  the service or of Milvus) between the two replays the same changes again: idempotent by id.
- **read-your-writes**: every search first applies what is committed, then searches with
  ``milvus_consistency`` (Strong by default: every acknowledged write is visible).
- **erasure**: deletes are flushed and a compaction is started so erased vectors leave the
  sealed segments too, not only the search results.
- **rebuild** (``identity db reindex``, or a stale copy) fills a new physical collection, builds
  its index, then swings the alias the service uses to it and drops the old one: searches from
  other workers keep working during a rebuild.

The Milvus calls themselves (connection, copies, search) are ``services.milvus_client``; this
module decides when to make them.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, select, text

from identity.settings import Settings
from services.change_log import read_changes, templates_at_seq
from services.errors import VectorStoreUnavailable
from services.milvus_client import MilvusCollections
from services.milvus_index import index_spec
from services.sealed import DataKeys
from services.tables import Collection, FaceTemplate

log = logging.getLogger(__name__)

_APPLY_LOCK_CLASS = 0x1D15  # first key of the two-int advisory lock (a keyspace of its own)


class MilvusIndexes:
    """The ``VectorStore`` on a Milvus server (or a milvus-lite file); thread-safe."""

    def __init__(self, settings: Settings, engine: Engine, sealer: DataKeys | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.sealer = sealer or DataKeys(settings, engine)
        self.spec = index_spec(settings)
        self.milvus = MilvusCollections(settings, self.spec)
        # (collection id, model) -> (last seq known to be in Milvus, whether its collection exists)
        self._known: dict[tuple[int, str], tuple[int, bool]] = {}
        # when this process last saw (collection, model) change in Milvus (time.monotonic)
        self._changed_at: dict[tuple[int, str], float] = {}
        self.last_compaction: int | None = None  # job id of the last erasure's compaction

    def alias(self, collection_id: int, model: str) -> str:
        return self.milvus.alias(collection_id, model)

    def _usable(
        self, remote: dict[str, Any], info: tuple[str, str], model: str, max_seq: int
    ) -> bool:
        why = None
        if (remote.get("identity.collection"), remote.get("identity.created")) != info:
            why = "belongs to another collection"
        elif remote.get("identity.model") != model:
            why = "holds another model"
        elif remote.get("identity.index") != self.spec.fingerprint():
            why = "was built with other IDENTITY_MILVUS_INDEX_* settings"
        elif int(remote.get("identity.seq", -1)) > max_seq:
            why = "is ahead of the database"
        if why:
            log.warning(
                "Milvus collection %s %s; rebuilding from Postgres", remote["physical"], why
            )
        return why is None

    # the applier ------------------------------------------------------------------------------
    @contextmanager
    def _applier(self, collection_id: int, model: str) -> Iterator[Connection]:
        """Held by one process at a time per (collection, model): the transaction-scoped
        advisory lock is released by the commit, or by Postgres when the holder dies."""
        key = (collection_id * 1_000_003 + zlib.crc32(model.encode())) % (2**31)
        with self.engine.begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _APPLY_LOCK_CLASS, "b": key}
            )
            yield conn

    def _collection_info(self, conn: Connection, collection_id: int) -> tuple[str, str] | None:
        row = conn.execute(
            select(Collection.name, Collection.created_at).where(Collection.id == collection_id)
        ).first()
        return None if row is None else (row[0], row[1].isoformat())

    @staticmethod
    def _max_seq(conn: Connection, collection_id: int, model: str | None = None) -> int:
        sql = "SELECT coalesce(max(seq), 0) FROM index_changes WHERE collection_id = :c"
        params: dict[str, Any] = {"c": collection_id}
        if model is not None:
            sql += " AND model_name = :m AND kind = 'face'"
            params["m"] = model
        return int(conn.execute(text(sql), params).scalar() or 0)

    def _sync(self, collection_id: int, model: str) -> bool:
        """Bring Milvus up to every committed change; False if the collection no longer exists."""
        key = (collection_id, model)
        known = self._known.get(key)
        if known is not None:
            with self.engine.connect() as conn:
                if self._max_seq(conn, collection_id, model) <= known[0]:
                    return True
        with self._applier(collection_id, model) as conn:
            info = self._collection_info(conn, collection_id)
            if info is None:
                return False
            alias = self.alias(collection_id, model)
            remote = self.milvus.remote(alias)
            if remote is None or not self._usable(
                remote, info, model, self._max_seq(conn, collection_id)
            ):
                self._known[key] = self._build(collection_id, model, info)
                self._changed_at[key] = time.monotonic()
                return True
            seq = int(remote["identity.seq"])
            batch = read_changes(self.engine, self.sealer, collection_id, model, seq)
            if batch is not None:
                job = self.milvus.apply(alias, batch.add_ids, batch.add_vectors, batch.remove_ids)
                if job is not None:
                    self.last_compaction = job
                self.milvus.set_seq(alias, batch.last_seq)
                seq = batch.last_seq
            self._known[key] = (seq, True)
            self._changed_at[key] = time.monotonic()
            return True

    def purge(self, collection_id: int, model: str) -> None:
        """Nothing left to do after an erasure: applying its deletes (``MilvusCollections.apply``,
        run by the store's catch-up just before) already flushed them and started a compaction."""

    def _build(self, collection_id: int, model: str, info: tuple[str, str]) -> tuple[int, bool]:
        """Rebuild the copy from the templates table (``MilvusCollections.build``). Caller holds
        the applier lock. Returns (seq it reflects, whether a collection exists: not while there
        is no template, as the dimension is unknown)."""
        started = time.monotonic()
        with templates_at_seq(self.engine, self.sealer, collection_id, model) as (seq, chunks):
            properties = {
                "identity.seq": str(seq),
                "identity.collection": info[0],
                "identity.created": info[1],
                "identity.model": model,
                "identity.index": self.spec.fingerprint(),
            }
            n = self.milvus.build(self.alias(collection_id, model), chunks, properties)
        if n is None:
            return seq, False
        log.info(
            "Milvus %s (%s/%s) built from %d templates in %.1f s",
            self.alias(collection_id, model),
            info[0],
            model,
            n,
            time.monotonic() - started,
        )
        return seq, True

    # VectorStore ------------------------------------------------------------------------------
    def catch_up(self, collection_id: int, model: str) -> None:
        self._sync(collection_id, model)

    def catch_up_all(self) -> None:
        for collection_id, model in list(self._known):
            if not self._sync(collection_id, model):
                self._known.pop((collection_id, model), None)

    def warm(self) -> None:
        """Replay into every Milvus collection the changes committed since it was last caught up.

        Nothing is built per worker, and a collection missing from Milvus is not built here (N
        workers starting would queue on it): ``identity db reindex`` or its first use builds it."""
        with self.engine.connect() as conn:
            pairs = conn.execute(
                select(FaceTemplate.collection_id, FaceTemplate.model_name).distinct()
            ).all()
        for collection_id, model in pairs:
            try:
                if self.milvus.remote(self.alias(collection_id, model)) is not None:
                    self._sync(collection_id, model)
            except VectorStoreUnavailable:
                log.exception("Milvus not ready at start; searches retry it")
                return

    def search(
        self, collection_id: int, model: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self._holds(collection_id, model):
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        return self.milvus.search(
            self.alias(collection_id, model), queries, k, self._consistency(collection_id, model)
        )

    def _consistency(self, collection_id: int, model: str) -> str:
        """Strong only while a change may still be newer than Bounded's staleness bound.

        Strong makes every search wait for Milvus's next time tick (about 0.2 s). Bounded sees
        every write older than the server's ``common.gracefulTime``; the writes this process
        knows of were all made before it last saw the watermark move, so once that is longer ago
        than the bound (plus a second), Bounded returns what Strong would, without the wait."""
        level = self.settings.milvus_consistency
        bound = self.settings.milvus_graceful_time_s
        changed = self._changed_at.get((collection_id, model))
        if (
            level == "Strong"
            and bound > 0
            and changed is not None
            and time.monotonic() - changed > bound + 1.0
        ):
            return "Bounded"
        return level

    def _holds(self, collection_id: int, model: str) -> bool:
        """Synced, and a Milvus collection exists for (collection, model)."""
        if not self._sync(collection_id, model):
            return False
        known = self._known.get((collection_id, model))
        return known is not None and known[1]

    def ids(self, collection_id: int, model: str) -> set[int]:
        if not self._holds(collection_id, model):
            return set()
        return self.milvus.ids(self.alias(collection_id, model))

    def count(self, collection_id: int, model: str) -> int:
        if not self._holds(collection_id, model):
            return 0
        return self.milvus.count(self.alias(collection_id, model))

    def rebuild(self, collection_id: int, model: str) -> int:
        with self._applier(collection_id, model) as conn:
            info = self._collection_info(conn, collection_id)
            if info is None:
                return 0
            self._known[(collection_id, model)] = self._build(collection_id, model, info)
        return self.count(collection_id, model)

    def drop(self, collection_id: int) -> None:
        self.milvus.drop_collection_copies(collection_id)
        for key in [k for k in self._known if k[0] == collection_id]:
            del self._known[key]

    def snapshot_all(self) -> None:
        """Nothing to do: Milvus persists every acknowledged write itself."""

    def sizes(self) -> dict[tuple[str, str], int]:
        return {(str(d["collection"]), str(d["model"])): int(d["size"]) for d in self.describe()}

    def factory(self, collection_id: int, model: str) -> str | None:
        return self.spec.factory if self._holds(collection_id, model) else None

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for (collection_id, model), (seq, _) in list(self._known.items()):
            alias = self.alias(collection_id, model)
            remote = self.milvus.remote(alias)
            out.append(
                {
                    "collection": remote.get("identity.collection")
                    if remote
                    else str(collection_id),
                    "model": model,
                    "factory": self.spec.factory if remote else None,
                    "params": dict(self.spec.search),
                    "size": self.count(collection_id, model) if remote else 0,
                    "seq": seq,
                    "milvus_collection": remote["physical"] if remote else None,
                }
            )
        return out
