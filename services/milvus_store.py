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
"""

from __future__ import annotations

import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection, Engine, select, text

from identity.settings import Settings
from services.change_log import read_changes, templates_at_seq
from services.errors import VectorStoreUnavailable
from services.milvus_index import index_spec, milvus_rows, unit_rows
from services.sealed import DataKeys
from services.tables import Collection, FaceTemplate

log = logging.getLogger(__name__)

T = TypeVar("T")
_APPLY_LOCK_CLASS = 0x1D15  # first key of the two-int advisory lock (a keyspace of its own)
_QUERY_LIMIT = 16_384  # Milvus's largest query page
_INDEX_WAIT_S = 6 * 3600
_CALL_TIMEOUT_S = 30  # an int: pymilvus bounds its retries only by an int timeout


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class MilvusIndexes:
    """The ``VectorStore`` on a Milvus server (or a milvus-lite file); thread-safe."""

    def __init__(self, settings: Settings, engine: Engine, sealer: DataKeys | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.sealer = sealer or DataKeys(settings, engine)
        self.spec = index_spec(settings)
        self._client: Any = None
        self._lock = threading.Lock()
        # (collection id, model) -> (last seq known to be in Milvus, whether its collection exists)
        self._known: dict[tuple[int, str], tuple[int, bool]] = {}
        # when this process last saw (collection, model) change in Milvus (time.monotonic)
        self._changed_at: dict[tuple[int, str], float] = {}
        self.last_compaction: int | None = None  # job id of the last erasure's compaction

    # connection -------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                self._client = self._call(
                    lambda: MilvusClient(
                        uri=self.settings.milvus_uri,
                        token=self.settings.milvus_token or "",
                        db_name=self.settings.milvus_database or "",
                        timeout=_CALL_TIMEOUT_S,
                    )
                )
            return self._client

    def _milvus(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)``; an unreachable or failing server is a 503 problem, not a 500."""
        # Bounds pymilvus's retries too: without it a dead server keeps a call retrying for minutes.
        kwargs.setdefault("timeout", _CALL_TIMEOUT_S)
        return self._call(lambda: getattr(self.client, method)(*args, **kwargs))

    def _call(self, fn: Callable[[], T]) -> T:
        from pymilvus.exceptions import MilvusException

        try:
            return fn()
        except MilvusException as exc:
            raise VectorStoreUnavailable(
                f"Milvus at {self.settings.milvus_uri} failed: {exc}", uri=self.settings.milvus_uri
            ) from exc

    def alias(self, collection_id: int, model: str) -> str:
        return f"{_safe(self.settings.milvus_collection_prefix)}_{collection_id}_{_safe(model)}"

    # remote state -----------------------------------------------------------------------------
    def _remote(self, alias: str) -> dict[str, Any] | None:
        """The watermark properties of the collection behind ``alias``; None if there is none."""
        if not self._milvus("has_collection", alias):
            return None
        desc = self._milvus("describe_collection", alias)
        return {**desc.get("properties", {}), "physical": desc["collection_name"]}

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
            sql += " AND model_name = :m"
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
            remote = self._remote(alias)
            if remote is None or not self._usable(
                remote, info, model, self._max_seq(conn, collection_id)
            ):
                self._known[key] = self._build(collection_id, model, info)
                self._changed_at[key] = time.monotonic()
                return True
            seq = int(remote["identity.seq"])
            batch = read_changes(self.engine, self.sealer, collection_id, model, seq)
            if batch is not None:
                self._apply(alias, batch.add_ids, batch.add_vectors, batch.remove_ids)
                self._milvus(
                    "alter_collection_properties",
                    alias,
                    properties={"identity.seq": str(batch.last_seq)},
                )
                seq = batch.last_seq
            self._known[key] = (seq, True)
            self._changed_at[key] = time.monotonic()
            return True

    def _apply(
        self, name: str, add_ids: np.ndarray, add_vecs: np.ndarray, remove: np.ndarray
    ) -> None:
        if len(remove):
            self._milvus("delete", name, ids=[int(i) for i in remove])
        for rows in milvus_rows(add_ids, add_vecs):
            self._milvus("upsert", name, rows)
        if len(remove):
            # Erasure: persist the deletes and compact, so the vectors leave the segment files.
            self._milvus("flush", name)
            self.last_compaction = self._milvus("compact", name)

    def purge(self, collection_id: int, model: str) -> None:
        """Nothing left to do after an erasure: applying its deletes (``_apply``, run by the
        store's catch-up just before) already flushed them and started a compaction."""

    def _build(self, collection_id: int, model: str, info: tuple[str, str]) -> tuple[int, bool]:
        """Fill a new physical collection from the templates table, index it, swing the alias
        to it, drop the old one. Caller holds the applier lock. Returns (seq it reflects, whether
        a collection exists: not while there is no template, as the dimension is unknown)."""
        alias = self.alias(collection_id, model)
        physical: str | None = None
        n = 0
        started = time.monotonic()
        with templates_at_seq(self.engine, self.sealer, collection_id, model) as (seq, chunks):
            for ids, vecs in chunks:
                if physical is None:
                    physical = f"{alias}__v{time.time_ns() // 1_000_000}"
                    self._create(physical, vecs.shape[1], info, model, seq)
                for rows in milvus_rows(ids, vecs):
                    self._milvus("insert", physical, rows)
                n += len(ids)
        if physical is None:  # no templates: no collection (the dimension is not even known)
            if self._remote(alias) is not None:
                self._milvus("drop_alias", alias)
            self._drop_copies(alias, keep=None)
            return seq, False
        filled = time.monotonic()
        self._milvus("flush", physical, timeout=_INDEX_WAIT_S)
        params = self.client.prepare_index_params()
        params.add_index(
            field_name="vec",
            index_type=self.spec.index_type,
            metric_type="IP",
            params=self.spec.build,
        )
        self._milvus("create_index", physical, params, timeout=_INDEX_WAIT_S)  # waits for the build
        self._wait_for_index(physical)
        self._milvus("load_collection", physical, timeout=_INDEX_WAIT_S)
        if self._remote(alias) is None:
            self._milvus("create_alias", physical, alias)
        else:
            # Workers searching the old copy with Bounded consistency (_consistency) see the new
            # one only once its rows are older than the staleness bound.
            time.sleep(
                max(0.0, self.settings.milvus_graceful_time_s + 1.0 - (time.monotonic() - filled))
            )
            self._milvus("alter_alias", physical, alias)
        self._drop_copies(alias, keep=physical)
        log.info(
            "Milvus %s (%s/%s) built from %d templates in %.1f s",
            physical,
            info[0],
            model,
            n,
            time.monotonic() - started,
        )
        return seq, True

    def _drop_copies(self, alias: str, keep: str | None) -> None:
        """Drop the old copies behind ``alias``, and any half-filled one a crash mid-build left."""
        for name in self._milvus("list_collections"):
            if name.startswith(f"{alias}__v") and name != keep:
                self._milvus("drop_collection", name)

    def _create(self, physical: str, dim: int, info: tuple[str, str], model: str, seq: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        properties = {
            "identity.seq": str(seq),
            "identity.collection": info[0],
            "identity.created": info[1],
            "identity.model": model,
            "identity.index": self.spec.fingerprint(),
        }
        self._milvus(
            "create_collection",
            physical,
            schema=schema,
            consistency_level="Strong",
            properties=properties,
        )

    def _wait_for_index(self, physical: str) -> None:
        deadline = time.monotonic() + _INDEX_WAIT_S
        while time.monotonic() < deadline:
            d = self._milvus("describe_index", physical, "vec")
            if "state" not in d and "pending_index_rows" not in d:
                return  # milvus-lite reports no build progress: its create_index has finished
            if d.get("state") == "Finished" or (
                d.get("pending_index_rows", 1) == 0
                and d.get("indexed_rows", 0) >= d.get("total_rows", 0)
            ):
                return
            time.sleep(0.5)
        log.warning(
            "Milvus index of %s not finished after %.0f s; searching anyway",
            physical,
            _INDEX_WAIT_S,
        )

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
                if self._remote(self.alias(collection_id, model)) is not None:
                    self._sync(collection_id, model)
            except VectorStoreUnavailable:
                log.exception("Milvus not ready at start; searches retry it")
                return

    def search(
        self, collection_id: int, model: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        empty = np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        if not self._holds(collection_id, model):
            return empty
        alias = self.alias(collection_id, model)
        params = dict(self.spec.search)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), k)  # HNSW cannot return more than ef
        hits = self._milvus(
            "search",
            alias,
            data=unit_rows(np.asarray(queries, np.float32)).tolist(),
            limit=k,
            search_params={"metric_type": "IP", "params": params},
            consistency_level=self._consistency(collection_id, model),
        )
        width = max((len(h) for h in hits), default=0)
        sims = np.full((n, width), -np.inf, np.float32)
        ids = np.full((n, width), -1, np.int64)
        for row, found in enumerate(hits):
            for col, hit in enumerate(found):
                sims[row, col], ids[row, col] = hit["distance"], hit["id"]
        return sims, ids

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
        alias = self.alias(collection_id, model)
        out: set[int] = set()
        last = -1  # template ids are positive
        while True:  # pages in primary-key order (what Milvus's own query iterator relies on)
            page = self._milvus(
                "query",
                alias,
                filter=f"id > {last}",
                output_fields=["id"],
                limit=_QUERY_LIMIT,
                consistency_level="Strong",
            )
            got = [int(r["id"]) for r in page]
            out.update(got)
            if len(got) < _QUERY_LIMIT:
                return out
            last = max(got)

    def count(self, collection_id: int, model: str) -> int:
        if not self._holds(collection_id, model):
            return 0
        alias = self.alias(collection_id, model)
        rows = self._milvus(
            "query", alias, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    def rebuild(self, collection_id: int, model: str) -> int:
        with self._applier(collection_id, model) as conn:
            info = self._collection_info(conn, collection_id)
            if info is None:
                return 0
            self._known[(collection_id, model)] = self._build(collection_id, model, info)
        return self.count(collection_id, model)

    def drop(self, collection_id: int) -> None:
        head = f"{_safe(self.settings.milvus_collection_prefix)}_{collection_id}_"
        for name in self._milvus("list_collections"):
            if name.startswith(head):
                for alias in self._milvus("describe_collection", name).get("aliases", []):
                    self._milvus("drop_alias", alias)
                self._milvus("drop_collection", name)
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
            remote = self._remote(alias)
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
