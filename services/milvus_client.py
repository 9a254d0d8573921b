"""The Milvus side of the Milvus vector store: the connection, and what one template copy (an
alias over a physical collection) can be asked: its watermark properties, upserts and deletes,
a fresh build swung in behind the alias, search, the ids it holds, its size.

Nothing here knows about the change log or Postgres; ``services.milvus_store`` decides when to
call what (freshness, the one-applier lock, consistency levels). A failing server is a
``VectorStoreUnavailable`` (503), never a 500.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from identity.settings import Settings
from services.errors import VectorStoreUnavailable
from services.milvus_index import IndexSpec, milvus_rows, unit_rows

log = logging.getLogger(__name__)

T = TypeVar("T")
_QUERY_LIMIT = 16_384  # Milvus's largest query page
INDEX_WAIT_S = 6 * 3600
_CALL_TIMEOUT_S = 30  # an int: pymilvus bounds its retries only by an int timeout
_READS = frozenset({"query", "search"})
_NOT_LOADED = 101  # Milvus's "collection not loaded"


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class MilvusCollections:
    """Template copies on a Milvus server (or a milvus-lite file), one alias per (collection,
    model); thread-safe (one client, made on first use)."""

    def __init__(self, settings: Settings, spec: IndexSpec) -> None:
        self.settings = settings
        self.spec = spec
        self._client: Any = None
        self._lock = threading.Lock()

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

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)``; an unreachable or failing server is a 503 problem, not a 500."""
        # Bounds pymilvus's retries too: without it a dead server keeps a call retrying for minutes.
        kwargs.setdefault("timeout", _CALL_TIMEOUT_S)
        run = lambda: getattr(self.client, method)(*args, **kwargs)  # noqa: E731
        if method in _READS:
            return self._call(lambda: self._loaded(run, args[0]))
        return self._call(run)

    def _loaded(self, read: Callable[[], T], alias: str) -> T:
        """``read()``; a restarted server reloads its collections in the background and answers
        "collection not loaded" until it is done, so then: load (which waits) and read again."""
        from pymilvus.exceptions import MilvusException

        try:
            return read()
        except MilvusException as exc:
            if exc.code != _NOT_LOADED and "not loaded" not in str(exc.message):
                raise
        log.info("Milvus collection %s is not loaded (a server restart?): loading it", alias)
        physical = self.client.describe_collection(alias, timeout=_CALL_TIMEOUT_S)
        self.client.load_collection(physical["collection_name"], timeout=_CALL_TIMEOUT_S)
        return read()

    def _call(self, fn: Callable[[], T]) -> T:
        from pymilvus.exceptions import MilvusException

        try:
            return fn()
        except MilvusException as exc:
            raise VectorStoreUnavailable(
                f"Milvus at {self.settings.milvus_uri} failed: {exc}", uri=self.settings.milvus_uri
            ) from exc

    def _prefix(self, collection_id: int) -> str:
        return f"{_safe(self.settings.milvus_collection_prefix)}_{collection_id}_"

    def alias(self, collection_id: int, model: str) -> str:
        return f"{self._prefix(collection_id)}{_safe(model)}"

    # watermark --------------------------------------------------------------------------------
    def remote(self, alias: str) -> dict[str, Any] | None:
        """The watermark properties of the collection behind ``alias``; None if there is none."""
        if not self.call("has_collection", alias):
            return None
        desc = self.call("describe_collection", alias)
        return {**desc.get("properties", {}), "physical": desc["collection_name"]}

    def set_seq(self, alias: str, seq: int) -> None:
        self.call("alter_collection_properties", alias, properties={"identity.seq": str(seq)})

    # writes -----------------------------------------------------------------------------------
    def apply(
        self, name: str, add_ids: np.ndarray, add_vecs: np.ndarray, remove: np.ndarray
    ) -> int | None:
        """Upsert and delete by primary key (idempotent); returns the compaction job an erasure
        started, else None."""
        if len(remove):
            self.call("delete", name, ids=[int(i) for i in remove])
        for rows in milvus_rows(add_ids, add_vecs):
            self.call("upsert", name, rows)
        if not len(remove):
            return None
        # Erasure: persist the deletes and compact, so the vectors leave the segment files.
        self.call("flush", name)
        return self.call("compact", name)  # type: ignore[no-any-return]

    def build(
        self,
        alias: str,
        chunks: Iterator[tuple[np.ndarray, np.ndarray]],
        properties: dict[str, str],
    ) -> int | None:
        """Fill a new physical collection from ``chunks`` of (ids, vectors), index it, swing
        ``alias`` to it, drop the old one; returns how many rows, or None when there were none
        (then no collection is left behind the alias: the dimension is not even known)."""
        physical: str | None = None
        n = 0
        for ids, vecs in chunks:
            if physical is None:
                physical = f"{alias}__v{time.time_ns() // 1_000_000}"
                self._create(physical, vecs.shape[1], properties)
            for rows in milvus_rows(ids, vecs):
                self.call("insert", physical, rows)
            n += len(ids)
        if physical is None:
            if self.remote(alias) is not None:
                self.call("drop_alias", alias)
            self._drop_copies(alias, keep=None)
            return None
        filled = time.monotonic()
        self.call("flush", physical, timeout=INDEX_WAIT_S)
        params = self.client.prepare_index_params()
        params.add_index(
            field_name="vec",
            index_type=self.spec.index_type,
            metric_type="IP",
            params=self.spec.build,
        )
        self.call("create_index", physical, params, timeout=INDEX_WAIT_S)  # waits for the build
        self._wait_for_index(physical)
        self.call("load_collection", physical, timeout=INDEX_WAIT_S)
        if self.remote(alias) is None:
            self.call("create_alias", physical, alias)
        else:
            # Workers searching the old copy with Bounded consistency (the store's
            # _consistency) see the new one only once its rows are older than the staleness
            # bound.
            time.sleep(
                max(0.0, self.settings.milvus_graceful_time_s + 1.0 - (time.monotonic() - filled))
            )
            self.call("alter_alias", physical, alias)
        self._drop_copies(alias, keep=physical)
        return n

    def _drop_copies(self, alias: str, keep: str | None) -> None:
        """Drop the old copies behind ``alias``, and any half-filled one a crash mid-build left."""
        for name in self.call("list_collections"):
            if name.startswith(f"{alias}__v") and name != keep:
                self.call("drop_collection", name)

    def _create(self, physical: str, dim: int, properties: dict[str, str]) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        self.call(
            "create_collection",
            physical,
            schema=schema,
            consistency_level="Strong",
            properties=properties,
        )

    def _wait_for_index(self, physical: str) -> None:
        deadline = time.monotonic() + INDEX_WAIT_S
        while time.monotonic() < deadline:
            d = self.call("describe_index", physical, "vec")
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
            INDEX_WAIT_S,
        )

    def drop_collection_copies(self, collection_id: int) -> None:
        """Drop every copy (and alias) of one Postgres collection, every model."""
        for name in self.call("list_collections"):
            if name.startswith(self._prefix(collection_id)):
                for alias in self.call("describe_collection", name).get("aliases", []):
                    self.call("drop_alias", alias)
                self.call("drop_collection", name)

    # reads ------------------------------------------------------------------------------------
    def search(
        self, alias: str, queries: np.ndarray, k: int, consistency: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities, template ids), each (n, k'), best first; -1 pads short rows."""
        n = len(queries)
        params = dict(self.spec.search)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), k)  # HNSW cannot return more than ef
        hits = self.call(
            "search",
            alias,
            data=unit_rows(np.asarray(queries, np.float32)).tolist(),
            limit=k,
            search_params={"metric_type": "IP", "params": params},
            consistency_level=consistency,
        )
        width = max((len(h) for h in hits), default=0)
        sims = np.full((n, width), -np.inf, np.float32)
        ids = np.full((n, width), -1, np.int64)
        for row, found in enumerate(hits):
            for col, hit in enumerate(found):
                sims[row, col], ids[row, col] = hit["distance"], hit["id"]
        return sims, ids

    def ids(self, alias: str) -> set[int]:
        out: set[int] = set()
        last = -1  # template ids are positive
        while True:  # pages in primary-key order (what Milvus's own query iterator relies on)
            page = self.call(
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

    def count(self, alias: str) -> int:
        rows = self.call(
            "query", alias, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])
