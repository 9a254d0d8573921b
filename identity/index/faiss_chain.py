"""FAISS below ``FaceIndex``: building an index from a factory string, the chain of wrappers it
is made of, its search knobs wherever they sit in that chain, training sizes, a copy without some
ids, and GPU placement.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np

from identity.errors import InvalidInput

log = logging.getLogger(__name__)

# FAISS k-means warns below 39 training points per centroid; we refuse to train below it.
POINTS_PER_CENTROID_MIN = 39
# Training on more points than this per centroid costs minutes and gains little recall.
POINTS_PER_CENTROID_MAX = 64


def new_index(dim: int, factory: str) -> faiss.Index:
    """An empty inner-product index for ``factory``, wrapped so that it keeps our int64 ids."""
    try:
        base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InvalidInput(
            f"not a valid FAISS index factory string: {factory!r}",
            factory=factory,
            reason=str(exc).splitlines()[-1][:200],
        ) from exc
    for node in chain(base):
        # index_factory turns on polysemous training for "PQ<M>" (not "PQ<M>np"): minutes of
        # simulated annealing that only helps polysemous_ht filtering, which we never use.
        if getattr(node, "do_polysemous_training", False):
            node.do_polysemous_training = False
    return base if stores_ids(base) else faiss.IndexIDMap2(base)


def chain(index: faiss.Index) -> Iterator[Any]:
    """The index and every index it wraps (IDMap, PreTransform, Refine, HNSW storage)."""
    seen: list[Any] = []
    stack = [index]
    while stack:
        node = faiss.downcast_index(stack.pop())
        if node is None or any(node is s for s in seen):
            continue
        seen.append(node)
        yield node
        for attr in ("index", "base_index", "refine_index", "storage"):
            child = getattr(node, attr, None)
            if isinstance(child, faiss.Index):
                stack.append(child)


def stores_ids(index: faiss.Index) -> bool:
    """IVF (behind pre-transforms only) keeps caller ids itself; see the notes in identity/index/__init__.py."""
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexPreTransform):
        node = faiss.downcast_index(node.index)
    return isinstance(node, faiss.IndexIVF)


def stored_ids(index: faiss.Index) -> np.ndarray:
    """Every id FAISS holds (tombstoned ones included)."""
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    assert invlists is not None  # a trained or empty IVF always has its lists
    parts = [np.zeros(0, np.int64)]
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).astype(np.int64))
    return np.concatenate(parts)


def copy_without(index: faiss.Index, dead: np.ndarray) -> faiss.Index:
    """A clone of an ``IndexIDMap2`` (training kept) holding every vector but the ``dead`` ids'.

    The vectors are reconstructed from the index (exact for Flat, HNSW-Flat and RFlat storage);
    raises ``RuntimeError`` where FAISS cannot reconstruct them.
    """
    fresh = faiss.clone_index(index)
    fresh.reset()  # keeps the trained quantizer / codebooks, drops vectors and ids
    inner = faiss.downcast_index(index.index)  # type: ignore[attr-defined]  # an IndexIDMap2
    id_map = faiss.vector_to_array(index.id_map).astype(np.int64)  # type: ignore[attr-defined]
    step = 65536
    for start in range(0, len(id_map), step):
        n = min(step, len(id_map) - start)
        vecs = inner.reconstruct_n(start, n)
        ids = id_map[start : start + n]
        keep = ~np.isin(ids, dead)
        if keep.any():
            fresh.add_with_ids(np.ascontiguousarray(vecs[keep]), ids[keep])
    return fresh


def min_train_points(index: faiss.Index) -> int:
    """Smallest training set that gives sensible centroids (0 when no training is needed)."""
    if index.is_trained:
        return 0
    centroids = 1
    for node in chain(index):
        if hasattr(node, "nlist"):
            centroids = max(centroids, int(node.nlist))
        pq = getattr(node, "pq", None)
        if pq is not None and hasattr(pq, "ksub"):
            centroids = max(centroids, int(pq.ksub))
    if centroids == 1:  # untrained but no k-means inside (e.g. scalar quantizer ranges)
        centroids = 256
    return POINTS_PER_CENTROID_MIN * centroids


def set_param(index: faiss.Index, name: str, value: float) -> bool:
    """Set a knob (nprobe, efSearch, efConstruction, k_factor) wherever it lives in the chain."""
    done = False
    for node in chain(index):
        if name == "nprobe" and hasattr(node, "nprobe"):
            node.nprobe = int(value)
            done = True
        elif name == "efSearch" and hasattr(node, "hnsw"):
            node.hnsw.efSearch = int(value)
            done = True
        elif name == "efConstruction" and hasattr(node, "hnsw"):
            # only shapes vectors added afterwards; set it before the first add
            node.hnsw.efConstruction = int(value)
            done = True
        elif name == "k_factor" and hasattr(node, "k_factor"):
            node.k_factor = float(value)
            done = True
    return done


# Search knobs a FaceIndex starts with when the caller sets none. FAISS's own (nprobe 1, efSearch
# 16, k_factor 1) trade recall for speed on clustered data; templates of distinct people sit
# nearly uniformly on the sphere (what ArcFace-type losses train for), the hardest case for a
# partition or a graph, and a 1:N search that silently misses the right person is the failure
# users notice. bench/search.py measures these against exact search (docs/search.md).
_DEFAULT_EF_SEARCH = 256
_DEFAULT_K_FACTOR = 8.0
_DEFAULT_NPROBE_SHARE = 2  # scan half of the IVF lists: recall@1 >= 0.99 from 10k to 1M templates


def search_defaults(index: faiss.Index) -> dict[str, float]:
    """The default knobs that apply to this index (see the constants above)."""
    out: dict[str, float] = {}
    for node in chain(index):
        if hasattr(node, "nprobe") and hasattr(node, "nlist"):
            out["nprobe"] = float(max(1, int(node.nlist) // _DEFAULT_NPROBE_SHARE))
        if hasattr(node, "hnsw"):
            out["efSearch"] = float(_DEFAULT_EF_SEARCH)
        if hasattr(node, "k_factor"):
            out["k_factor"] = _DEFAULT_K_FACTOR
    return out


def clone_to_gpu(
    index: faiss.Index, resources: Any, factory: str
) -> tuple[faiss.Index, Any] | None:
    """``index`` cloned to GPU 0 with the GPU resources it uses (``resources`` reused when not
    None), or None, with a log line, where this FAISS build sees no GPU or cannot put the type
    there (HNSW)."""
    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if ngpu <= 0:
        log.info("use_gpu asked but this FAISS build sees no GPU; index %s stays on CPU", factory)
        return None
    try:
        if resources is None:
            resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, 0, index), resources
    except RuntimeError as exc:
        log.info(
            "index %s cannot run on GPU (%s); staying on CPU",
            factory,
            str(exc).splitlines()[-1][:120],
        )
        return None
