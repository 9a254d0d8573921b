"""Where 1:N search runs: the interface the service needs from a vector store, and the choice.

Postgres is the truth for both backends; each is a derived copy of ``face_templates`` per
(collection, embedding model), keyed by template id and kept in step through the change log
(``services.change_log``):

- ``faiss`` (default): ``services.indexes.IndexRegistry``, a FAISS copy in every worker process,
  snapshotted to ``data_dir/indexes``. Fastest on one host; memory grows with the gallery in each
  worker.
- ``milvus``: ``services.milvus_store.MilvusIndexes``, one Milvus collection per (collection,
  model) shared by every worker and host; workers hold no vectors (the ``milvus`` extra).

``IDENTITY_VECTOR_STORE`` picks one; docs/search.md says when to switch and how to migrate.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine

from identity.errors import FeatureUnavailable
from identity.settings import Settings
from services.sealed import DataKeys


class VectorStore(Protocol):
    """What ``IdentityStore``, the app's background round, the admin pages and the CLI call."""

    sealer: DataKeys  # opens the sealed embeddings it reads from Postgres

    def catch_up(self, collection_id: int, model: str) -> None:
        """Apply every committed change of (collection, model) (after each write's commit)."""

    def catch_up_all(self) -> None:
        """Apply changes of everything this process has used (the background round)."""

    def warm(self) -> None:
        """Make every (collection, model) with templates ready to search (service start)."""

    def search(
        self, collection_id: int, model: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities, template ids), each (n_queries, k'), best first, k' <= k;
        id -1 = no hit. Sees every change committed before the call (read-your-writes)."""
        ...

    def ids(self, collection_id: int, model: str) -> set[int]:
        """Every template id the store holds (the consistency check digests it)."""
        ...

    def rebuild(self, collection_id: int, model: str) -> int:
        """Rebuild from the templates table (``identity db reindex``); returns the count."""
        ...

    def purge(self, collection_id: int, model: str) -> None:
        """After an erasure: keep no copy of the erased vectors at rest (a snapshot, a segment)."""

    def drop(self, collection_id: int) -> None:
        """Forget a deleted collection, every model."""

    def snapshot_all(self) -> None:
        """Persist what this process holds (clean shutdown); a no-op where the store persists."""

    def sizes(self) -> dict[tuple[str, str], int]:
        """Vectors held per (collection name, model), for metrics."""
        ...

    def factory(self, collection_id: int, model: str) -> str | None:
        """The index type in use (a FAISS factory string, or ``milvus:<type>``); None if empty."""
        ...

    def describe(self) -> list[dict[str, Any]]:
        """Each (collection, model) in use: collection, model, factory, params, size, seq."""
        ...


def make_vector_store(
    settings: Settings, engine: Engine, sealer: DataKeys | None = None
) -> VectorStore:
    """The backend ``settings.vector_store`` names."""
    if settings.vector_store == "milvus":
        from services.milvus_store import MilvusIndexes

        return MilvusIndexes(settings, engine, sealer)
    from services.indexes import IndexRegistry

    return IndexRegistry(settings, engine, sealer)


def check_vector_store_settings(settings: Settings) -> None:
    """Fail at start, not in the first request, on a bad index setting or a missing extra."""
    if settings.vector_store == "milvus":
        try:
            import pymilvus  # noqa: F401
        except ImportError as exc:
            raise FeatureUnavailable(
                "IDENTITY_VECTOR_STORE=milvus needs the milvus extra: pip install 'identity-platform[milvus]'"
            ) from exc
        from services.milvus_index import index_spec

        index_spec(settings)
        return
    from services.indexes import check_index_settings

    check_index_settings(settings)
