"""What a Milvus collection of templates looks like: its index type with build and search params
(from settings, with high-recall defaults as FAISS's), and template rows in insert-sized chunks.
Used by ``services.milvus_store`` and ``bench/milvus_search.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from identity.errors import InvalidInput
from identity.settings import Settings

_INSERT_ROWS = 10_000  # rows per insert/upsert call, well under the 64 MB gRPC message limit

# Build params per index type when settings leave them unset; search params derive from them.
_BUILD_DEFAULTS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "HNSW": {"M": 32, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
    "IVF_SQ8": {"nlist": 1024},
    "IVF_PQ": {"nlist": 1024, "m": 64, "nbits": 8},
    "GPU_BRUTE_FORCE": {},
    "GPU_IVF_FLAT": {"nlist": 1024},
    "GPU_IVF_PQ": {"nlist": 1024, "m": 64, "nbits": 8},
    "GPU_CAGRA": {"intermediate_graph_degree": 64, "graph_degree": 32},
    "DISKANN": {},
}


@dataclass(frozen=True)
class IndexSpec:
    index_type: str
    build: dict[str, Any]
    search: dict[str, Any]

    @property
    def factory(self) -> str:
        return f"milvus:{self.index_type}"

    def fingerprint(self) -> str:
        """What a collection was built with; a change of it means a rebuild (not of search)."""
        return json.dumps({"type": self.index_type, "build": self.build}, sort_keys=True)


def index_spec(settings: Settings) -> IndexSpec:
    """The index type, build and search params the settings name; InvalidInput if unknown."""
    kind = settings.milvus_index_type.upper()
    if kind not in _BUILD_DEFAULTS:
        raise InvalidInput(
            f"IDENTITY_MILVUS_INDEX_TYPE {settings.milvus_index_type!r} is not one of "
            + ", ".join(sorted(_BUILD_DEFAULTS)),
        )
    build = {**_BUILD_DEFAULTS[kind], **settings.milvus_index_params}
    search: dict[str, Any] = {}
    if "HNSW" in kind:
        search["ef"] = 256  # as FAISS efSearch: recall@1 >= 0.99 up to 1M (docs/search.md)
    elif "nlist" in build:
        search["nprobe"] = max(1, int(build["nlist"]) // 2)  # as FAISS: half of the lists
    elif kind == "GPU_CAGRA":
        search["itopk_size"] = 128
    search.update(settings.milvus_search_params)
    return IndexSpec(kind, build, search)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so Milvus's inner product is the cosine FaceIndex returns."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms == 0, 1, norms), dtype=np.float32)


def milvus_rows(ids: np.ndarray, vectors: np.ndarray) -> Iterator[list[dict[str, Any]]]:
    """Milvus rows (primary key, unit vector) in insert-sized chunks."""
    for start in range(0, len(ids), _INSERT_ROWS):
        part = unit_rows(vectors[start : start + _INSERT_ROWS])
        yield [
            {"id": int(i), "vec": v.tolist()}
            for i, v in zip(ids[start : start + _INSERT_ROWS], part, strict=True)
        ]
