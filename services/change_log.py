"""The ``index_changes`` log and template rows as vectors, read the same way by every vector
store (FAISS in ``services.indexes``, Milvus in ``services.milvus_store``); sealed embeddings are
opened here (``DataKeys``), so stores only ever see vectors.

Writers append one change row per template added or removed, inside the transaction that changes
``face_templates`` or ``body_templates`` (the row's ``kind``; ``TEMPLATE_TABLES``), holding the
collection's advisory lock until commit; so within a collection change-log order is commit
order, and a store that applied everything up to ``seq`` only needs the rows after it. Applying
a ``ChangeBatch`` is idempotent by template id (at-least-once is enough): it says which
templates to hold, with their current vectors, and which to drop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sqlalchemy import Engine, Row, select, text

from services.sealed import DataKeys
from services.tables import BodyTemplate, FaceTemplate, IndexChange

Kind = Literal["face", "body"]
# The table an index of each kind is derived from (``index_changes.kind``).
TEMPLATE_TABLES: dict[str, type[FaceTemplate] | type[BodyTemplate]] = {
    "face": FaceTemplate,
    "body": BodyTemplate,
}


def embedding_to_bytes(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def embedding_from_bytes(data: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4", count=dim)


@dataclass
class ChangeBatch:
    """Changes after a watermark, collapsed to the last op per template id (applying it twice,
    or over a copy that already holds part of it, gives the same result)."""

    last_seq: int
    n_changes: int
    add_ids: np.ndarray  # (A,) int64: templates to hold, with their current rows
    add_vectors: np.ndarray  # (A, dim) float32
    remove_ids: np.ndarray  # (R,) int64


def read_changes(
    engine: Engine,
    sealer: DataKeys,
    collection_id: int,
    model: str,
    after_seq: int,
    kind: Kind = "face",
) -> ChangeBatch | None:
    """The changes of (collection, model) after ``after_seq``; None when there are none."""
    table = TEMPLATE_TABLES[kind]
    with engine.connect() as conn:
        changes = conn.execute(
            select(IndexChange.seq, IndexChange.template_id, IndexChange.op)
            .where(IndexChange.collection_id == collection_id)
            .where(IndexChange.model_name == model)
            .where(IndexChange.kind == kind)
            .where(IndexChange.seq > after_seq)
            .order_by(IndexChange.seq)
        ).all()
        if not changes:
            return None
        last_op: dict[int, str] = {}
        for _, template_id, op in changes:
            last_op[template_id] = op
        to_add = [t for t, op in last_op.items() if op == "add"]
        rows: Sequence[Row[int, int, bytes, int | None]] = []
        if to_add:
            # A template added then erased before we got here is simply absent.
            rows = conn.execute(
                select(table.id, table.dim, table.embedding, table.key_id).where(
                    table.id.in_(to_add)
                )
            ).all()
    dim = rows[0][1] if rows else 0
    return ChangeBatch(
        last_seq=int(changes[-1][0]),
        n_changes=len(changes),
        add_ids=np.array([r[0] for r in rows], dtype=np.int64),
        add_vectors=(
            np.stack([sealer.embedding(r[2], r[3], dim) for r in rows])
            if rows
            else np.zeros((0, 0), np.float32)
        ),
        remove_ids=np.array([t for t, op in last_op.items() if op == "remove"], dtype=np.int64),
    )


@contextmanager
def templates_at_seq(
    engine: Engine,
    sealer: DataKeys,
    collection_id: int,
    model: str,
    chunk: int = 50_000,
    kind: Kind = "face",
) -> Iterator[tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]]:
    """(seq, chunks of (ids, vectors)): every template of (collection, model) and the change-log
    position they reflect, read in one snapshot, so replaying after ``seq`` neither misses nor
    double-applies anything. Streams, so a store can fill from a large table in bounded memory."""
    table = TEMPLATE_TABLES[kind]
    with engine.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        seq = conn.execute(
            text("SELECT coalesce(max(seq), 0) FROM index_changes WHERE collection_id = :c"),
            {"c": collection_id},
        ).scalar()
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(
            select(table.id, table.dim, table.embedding, table.key_id)
            .where(table.collection_id == collection_id)
            .where(table.model_name == model)
            .order_by(table.id)
        )

        def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for part in result.partitions(chunk):
                dim = part[0][1]
                yield (
                    np.array([r[0] for r in part], dtype=np.int64),
                    np.stack([sealer.embedding(r[2], r[3], dim) for r in part]),
                )

        yield int(seq or 0), chunks()
