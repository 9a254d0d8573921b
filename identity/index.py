"""FAISS 1:N index over face templates: cosine similarity as inner product on unit vectors.

``FaceIndex`` is derived data. Postgres is the truth; an index can always be rebuilt from the
store with ``FaceIndex(dim, factory)`` + ``add(template_ids, embeddings)``, and a snapshot carries
a caller-supplied ``watermark`` (e.g. the last template id / change sequence it contains) so the
service can load the snapshot and replay only what the store changed since.

Design notes (why, not what):

* Any FAISS ``index_factory`` string works ("Flat", "HNSW32", "IVF1024,PQ64x4fs,RFlat", ...). The
  index is wrapped in ``IndexIDMap2`` so FAISS returns our int64 template ids directly, except
  a bare IVF index (optionally behind a pre-transform such as OPQ): IVF lists store our ids
  natively, and ``IndexIDMap2.remove_ids`` over an IVF corrupts the id map (IDMap assumes the
  sub-index renumbers sequentially after a removal, which IVF does not).
* **Untrained indexes** (IVF, PQ) cannot take vectors before k-means has run, and k-means on a
  handful of points gives useless centroids (FAISS warns below 39 points per centroid). So vectors
  are buffered in memory and searched exactly (brute force) until ``min_train_points`` exist; then
  the index is trained on (a sample of) the buffer and the buffer moves in. Results are exact
  below the threshold and approximate above it, at every size.
* **Removal**: Flat, IVF and PQ support ``remove_ids``. HNSW graphs and refine wrappers ("RFlat")
  do not. For those, removed ids go into a **tombstone** set: searches over-fetch (k + the number
  of tombstones that could be in the way, growing until k live results are found) and filter
  tombstones out, so a removed id is never returned. When tombstones exceed ``compact_fraction``
  of the live count the index is **compacted**: live vectors are reconstructed from the index
  (exact for HNSW-Flat and RFlat storage) and re-added to an empty clone that keeps the training.
  An index whose vectors cannot be reconstructed keeps its tombstones and logs a warning; the
  caller should rebuild it from the store.
* **Thread safety**: a readers-writer lock. FAISS searches on a CPU index are const and
  thread-safe, so concurrent searches run in parallel; adds, removals, training and compaction
  take the lock exclusively.
* **GPU**: with ``use_gpu`` and a FAISS build that sees a GPU, the index is cloned to GPU 0
  (faiss-gpu comes with the ``gpu`` extra). Index types FAISS cannot put on a GPU (HNSW) stay on
  the CPU, with a log line. Snapshots are always written from a CPU copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from identity.errors import IndexSnapshotError, IndexSnapshotMissing, InvalidInput
from identity.sealing import private_dir
from identity.settings import Settings

log = logging.getLogger(__name__)

_MAGIC = b"FACEIDX\x01"
_FORMAT_VERSION = 1
# FAISS k-means warns below 39 training points per centroid; we refuse to train below it.
_POINTS_PER_CENTROID_MIN = 39
# Training on more points than this per centroid costs minutes and gains little recall.
_POINTS_PER_CENTROID_MAX = 64


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers so it cannot starve."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _chain(index: faiss.Index) -> Iterator[Any]:
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


def _stores_ids(index: faiss.Index) -> bool:
    """IVF (behind pre-transforms only) keeps caller ids itself; see the module notes."""
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexPreTransform):
        node = faiss.downcast_index(node.index)
    return isinstance(node, faiss.IndexIVF)


def _stored_ids(index: faiss.Index) -> np.ndarray:
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


def _min_train_points(index: faiss.Index) -> int:
    """Smallest training set that gives sensible centroids (0 when no training is needed)."""
    if index.is_trained:
        return 0
    centroids = 1
    for node in _chain(index):
        if hasattr(node, "nlist"):
            centroids = max(centroids, int(node.nlist))
        pq = getattr(node, "pq", None)
        if pq is not None and hasattr(pq, "ksub"):
            centroids = max(centroids, int(pq.ksub))
    if centroids == 1:  # untrained but no k-means inside (e.g. scalar quantizer ranges)
        centroids = 256
    return _POINTS_PER_CENTROID_MIN * centroids


def _set_param(index: faiss.Index, name: str, value: float) -> bool:
    """Set a knob (nprobe, efSearch, efConstruction, k_factor) wherever it lives in the chain."""
    done = False
    for node in _chain(index):
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


def _search_defaults(index: faiss.Index) -> dict[str, float]:
    """The default knobs that apply to this index (see the constants above)."""
    out: dict[str, float] = {}
    for node in _chain(index):
        if hasattr(node, "nprobe") and hasattr(node, "nlist"):
            out["nprobe"] = float(max(1, int(node.nlist) // _DEFAULT_NPROBE_SHARE))
        if hasattr(node, "hnsw"):
            out["efSearch"] = float(_DEFAULT_EF_SEARCH)
        if hasattr(node, "k_factor"):
            out["k_factor"] = _DEFAULT_K_FACTOR
    return out


def _normalize(vectors: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InvalidInput(f"{what} contain a zero vector, which has no direction for cosine")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


class FaceIndex:
    """Cosine-similarity 1:N index of face templates keyed by int64 template id.

    >>> index = FaceIndex(512, "HNSW32")
    >>> index.add(template_ids, embeddings)          # embeddings (N, 512), any norm
    >>> sims, ids = index.search(probe_embeddings, k=10)   # best first, -1 / -inf padded
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        use_gpu: bool = False,
        *,
        params: dict[str, float] | None = None,
        compact_fraction: float = 0.2,
        normalize: bool = True,
    ) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise InvalidInput(f"dim must be a positive integer, got {dim!r}")
        if not compact_fraction > 0:
            raise InvalidInput("compact_fraction must be positive")
        try:
            base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise InvalidInput(
                f"not a valid FAISS index factory string: {factory!r}",
                factory=factory,
                reason=str(exc).splitlines()[-1][:200],
            ) from exc
        self.dim = dim
        self.factory = factory
        self.compact_fraction = compact_fraction
        self.normalize = normalize
        self.params: dict[str, float] = {}
        self.watermark: dict[str, Any] = {}
        self._lock = _ReadWriteLock()
        for node in _chain(base):
            # index_factory turns on polysemous training for "PQ<M>" (not "PQ<M>np"): minutes of
            # simulated annealing that only helps polysemous_ht filtering, which we never use.
            if getattr(node, "do_polysemous_training", False):
                node.do_polysemous_training = False
        self._index: faiss.Index = base if _stores_ids(base) else faiss.IndexIDMap2(base)
        self._min_train = _min_train_points(self._index)
        self._pending_ids: list[np.ndarray] = []
        self._pending_vecs: list[np.ndarray] = []
        self._tombstones: set[int] = set()
        self._live: set[int] = set()
        self._supports_remove: bool | None = None
        self._gpu_resources: Any = None
        self.on_gpu = False
        self._want_gpu = use_gpu
        self._to_gpu_if_asked()
        self.set_params(**{**_search_defaults(self._index), **(params or {})})

    # ---------------------------------------------------------------- properties
    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def min_train_points(self) -> int:
        """Vectors buffered (and searched exactly) before an untrained index is trained."""
        return self._min_train

    @property
    def tombstones(self) -> frozenset[int]:
        return frozenset(self._tombstones)

    def __len__(self) -> int:
        return len(self._live)

    def contains(self, template_id: int) -> bool:
        return int(template_id) in self._live

    def __contains__(self, template_id: object) -> bool:
        return isinstance(template_id, (int, np.integer)) and self.contains(int(template_id))

    def ids(self) -> np.ndarray:
        """The exact set of live template ids, sorted (int64)."""
        with self._lock.read():
            return np.sort(np.fromiter(self._live, dtype=np.int64, count=len(self._live)))

    def memory_bytes(self) -> int:
        """Serialized size of the FAISS index (codes, graph, id map) plus the exact buffer."""
        with self._lock.read():
            return int(faiss.serialize_index(self._cpu_index()).nbytes) + sum(
                v.nbytes + i.nbytes
                for v, i in zip(self._pending_vecs, self._pending_ids, strict=False)
            )

    def set_params(self, **params: float) -> None:
        """Knobs: ``nprobe`` (IVF), ``efSearch`` (HNSW), ``k_factor`` (refine: candidates
        re-ranked exactly = k * k_factor), ``efConstruction`` (HNSW graph quality; before adds).
        """
        with self._lock.write():
            for name, value in params.items():
                if name not in ("nprobe", "efSearch", "k_factor", "efConstruction"):
                    raise InvalidInput(f"unknown search parameter {name!r}")
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not (1 <= value < 2**31)
                ):
                    raise InvalidInput(f"{name} must be a number >= 1, got {value!r}")
                if not _set_param(self._index, name, value):
                    raise InvalidInput(f"{name} does not apply to index {self.factory!r}")
                self.params[name] = value

    # ---------------------------------------------------------------- input checks
    def _check_vectors(self, vectors: Any, what: str) -> np.ndarray:
        arr = np.asarray(vectors)
        if arr.ndim == 1 and arr.shape[0] == self.dim:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise InvalidInput(
                f"{what} must have shape (N, {self.dim}), got {arr.shape}", shape=list(arr.shape)
            )
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InvalidInput(f"{what} must be real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float32, copy=False)
        if not np.all(np.isfinite(arr)):
            raise InvalidInput(f"{what} contain NaN or infinity")
        return _normalize(arr, what) if self.normalize else np.ascontiguousarray(arr)

    @staticmethod
    def _check_ids(ids: Any) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr[None]
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise InvalidInput("ids must be a 1-D sequence of integers")
        arr = arr.astype(np.int64, copy=False)
        if np.any(arr < 0):
            raise InvalidInput("ids must be non-negative (-1 marks an empty result slot)")
        return arr

    # ---------------------------------------------------------------- mutation
    def add(self, ids: Any, vectors: Any) -> None:
        """Add templates. Ids must be new; vectors are L2-normalised (cosine) unless disabled."""
        id_arr = self._check_ids(ids)
        vecs = self._check_vectors(vectors, "vectors")
        if len(id_arr) != len(vecs):
            raise InvalidInput(f"{len(id_arr)} ids for {len(vecs)} vectors")
        if len(id_arr) == 0:
            return
        if len(np.unique(id_arr)) != len(id_arr):
            raise InvalidInput("duplicate ids in one add")
        with self._lock.write():
            clash = [i for i in id_arr.tolist() if i in self._live]
            if clash:
                raise InvalidInput("ids already in the index", ids=clash[:20])
            if self._tombstones.intersection(id_arr.tolist()):
                # A tombstoned copy still sits in FAISS under that id; drop it before reuse.
                self._compact_locked(force=True)
            if self._index.is_trained:
                self._add_to_faiss(id_arr, vecs)
            else:
                self._pending_ids.append(id_arr.copy())
                # normalised vectors are already a private copy; raw ones may be the caller's
                self._pending_vecs.append(vecs if self.normalize else vecs.copy())
                self._train_if_ready()
            self._live.update(id_arr.tolist())

    def train(self, vectors: Any) -> None:
        """Train explicitly on a representative sample (otherwise ``add`` trains when it can)."""
        vecs = self._check_vectors(vectors, "training vectors")
        with self._lock.write():
            if self._index.is_trained:
                return
            self._train_on(vecs)
            self._flush_pending()

    def remove(self, ids: Any) -> int:
        """Remove templates by id; unknown ids are ignored. Returns how many were removed."""
        id_arr = self._check_ids(ids)
        with self._lock.write():
            present = np.array([i for i in id_arr.tolist() if i in self._live], dtype=np.int64)
            if not len(present):
                return 0
            present = np.unique(present)
            gone = set(present.tolist())
            pending = (
                set(np.concatenate(self._pending_ids).tolist()) if self._pending_ids else set()
            )
            in_faiss = np.array([i for i in present.tolist() if i not in pending], np.int64)
            if self._pending_ids:
                ids_all = np.concatenate(self._pending_ids)
                vecs_all = np.concatenate(self._pending_vecs)
                keep = ~np.isin(ids_all, present)
                self._pending_ids = [ids_all[keep]] if keep.any() else []
                self._pending_vecs = [vecs_all[keep]] if keep.any() else []
            if len(in_faiss):
                if self._supports_remove is not False:
                    try:
                        # the SWIG wrapper takes an id array as well as an IDSelector
                        self._index.remove_ids(np.asarray(in_faiss, dtype=np.int64))  # type: ignore[arg-type]
                        self._supports_remove = True
                    except RuntimeError:
                        self._supports_remove = False
                if not self._supports_remove:
                    self._tombstones.update(int(i) for i in in_faiss)
            self._live.difference_update(gone)
            if len(self._tombstones) > self.compact_fraction * max(len(self._live), 1):
                self._compact_locked()
            return len(gone)

    def compact(self) -> None:
        """Drop tombstoned vectors now (normally automatic past ``compact_fraction``)."""
        with self._lock.write():
            self._compact_locked(force=True)

    # ---------------------------------------------------------------- search
    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine similarity: ``(similarities (Q,k) float32, ids (Q,k) int64)``.

        Rows are best first; missing slots hold id -1 and similarity -inf.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        k = int(k)
        q = self._check_vectors(queries, "queries")
        with self._lock.read():
            sims, ids = self._search_faiss(q, k)
            if self._pending_ids:
                psims, pids = self._search_pending(q, k)
                sims, ids = _merge_topk(sims, ids, psims, pids, k)
            return sims, ids

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq = len(q)
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        ntotal = int(self._index.ntotal)
        if ntotal == 0:
            return out_s, out_i
        if not self._tombstones:
            s, i = self._index.search(q, min(k, ntotal))
            s = np.where(i < 0, -np.inf, s).astype(np.float32)
            out_s[:, : s.shape[1]], out_i[:, : i.shape[1]] = s, i
            return out_s, out_i
        # Over-fetch past tombstones; rows still short of k live hits retry with a larger k.
        want = min(k, ntotal - len(self._tombstones))
        fetch = min(ntotal, k + min(len(self._tombstones), max(k, 16)))
        rows = np.arange(nq)
        dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
        while len(rows):
            s, i = self._index.search(q[rows], fetch)
            i = np.where(np.isin(i, dead), -1, i)
            done = []
            for r, (srow, irow) in enumerate(zip(s, i, strict=False)):
                keep = irow >= 0
                hits = int(keep.sum())
                if hits >= want or fetch >= ntotal:
                    n = min(hits, k)
                    out_s[rows[r], :n] = srow[keep][:n]
                    out_i[rows[r], :n] = irow[keep][:n]
                    done.append(r)
            rows = np.delete(rows, done)
            fetch = min(ntotal, fetch * 4)
        return out_s, out_i

    def _search_pending(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids_all = np.concatenate(self._pending_ids)
        vecs_all = np.concatenate(self._pending_vecs)
        sims = q @ vecs_all.T
        kk = min(k, len(ids_all))
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_s = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        out_s[:, :kk] = np.take_along_axis(top_s, order, axis=1)
        out_i[:, :kk] = ids_all[np.take_along_axis(top, order, axis=1)]
        return out_s, out_i

    # ---------------------------------------------------------------- internals (lock held)

    def _add_to_faiss(self, ids: np.ndarray, vecs: np.ndarray, chunk: int = 65536) -> None:
        for start in range(0, len(ids), chunk):
            self._index.add_with_ids(vecs[start : start + chunk], ids[start : start + chunk])

    def _train_if_ready(self) -> None:
        n = sum(len(i) for i in self._pending_ids)
        if n >= self._min_train:
            self._train_on(np.concatenate(self._pending_vecs))
            self._flush_pending()

    def _train_on(self, vecs: np.ndarray) -> None:
        if len(vecs) < self._min_train:
            raise InvalidInput(
                f"{self.factory!r} needs at least {self._min_train} training vectors, "
                f"got {len(vecs)}"
            )
        cap = self._min_train * _POINTS_PER_CENTROID_MAX // _POINTS_PER_CENTROID_MIN
        if len(vecs) > cap:
            pick = np.random.default_rng(1234).choice(len(vecs), cap, replace=False)
            vecs = vecs[np.sort(pick)]
        log.info("training FAISS %s on %d vectors", self.factory, len(vecs))
        self._index.train(vecs)
        for name, value in self.params.items():
            _set_param(self._index, name, value)

    def _flush_pending(self) -> None:
        if self._pending_ids:
            ids_all = np.concatenate(self._pending_ids)
            vecs_all = np.concatenate(self._pending_vecs)
            self._pending_ids, self._pending_vecs = [], []
            self._add_to_faiss(ids_all, vecs_all)

    def _compact_locked(self, force: bool = False) -> None:
        if not self._tombstones:
            return
        cpu = self._cpu_index()
        dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
        try:  # a GPU copy may refuse remove_ids where the CPU index accepts it
            if cpu is not self._index:
                cpu.remove_ids(dead)  # type: ignore[arg-type]  # ids array, as above
                self._replace_index(cpu)
                self._tombstones.clear()
                return
        except RuntimeError:
            pass
        fresh = faiss.clone_index(cpu)
        fresh.reset()  # keeps the trained quantizer / codebooks, drops vectors and ids
        inner = faiss.downcast_index(cpu.index)  # type: ignore[attr-defined]  # an IndexIDMap2
        id_map = faiss.vector_to_array(cpu.id_map).astype(np.int64)  # type: ignore[attr-defined]
        step = 65536
        try:
            for start in range(0, len(id_map), step):
                n = min(step, len(id_map) - start)
                vecs = inner.reconstruct_n(start, n)
                ids = id_map[start : start + n]
                keep = ~np.isin(ids, dead)
                if keep.any():
                    fresh.add_with_ids(np.ascontiguousarray(vecs[keep]), ids[keep])
        except RuntimeError as exc:
            log.warning(
                "index %s cannot reconstruct its vectors for compaction (%s); %d tombstones "
                "stay until the index is rebuilt from the store",
                self.factory,
                str(exc).splitlines()[-1][:120],
                len(self._tombstones),
            )
            return
        log.info("compacted index %s: dropped %d tombstones", self.factory, len(dead))
        self._replace_index(fresh)
        self._tombstones.clear()

    def _replace_index(self, cpu_index: faiss.Index) -> None:
        # no downcast_index here: the downcast proxy would not own the C++ object, and the
        # owning proxy's garbage collection would free the index under us
        self._index = cpu_index
        # clone_index keeps nprobe/efSearch on most types, but not all: re-apply ours.
        for name, value in self.params.items():
            _set_param(self._index, name, value)
        self.on_gpu = False
        self._to_gpu_if_asked()

    def _cpu_index(self) -> faiss.Index:
        if self.on_gpu:
            return faiss.index_gpu_to_cpu(self._index)
        return self._index

    def _to_gpu_if_asked(self) -> None:
        if not self._want_gpu:
            return
        ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if ngpu <= 0:
            log.info(
                "use_gpu asked but this FAISS build sees no GPU; index %s stays on CPU",
                self.factory,
            )
            return
        try:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
            self.on_gpu = True
        except RuntimeError as exc:
            log.info(
                "index %s cannot run on GPU (%s); staying on CPU",
                self.factory,
                str(exc).splitlines()[-1][:120],
            )

    # ---------------------------------------------------------------- snapshots
    def save(
        self,
        path: str | os.PathLike[str],
        watermark: dict[str, Any] | None = None,
        seal: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """Write a snapshot atomically: temp file, fsync, rename, fsync of the folder.

        ``watermark`` is any JSON-able dict (e.g. ``{"max_template_id": 123, "seq": 456}``) that
        tells the caller, after ``load``, where to resume catching up from the store. ``seal``
        (e.g. ``identity.sealing.seal`` with a data key) turns the whole file into ciphertext;
        ``load`` then needs the matching ``unseal``. The file is 0600 in a 0700 folder.
        """
        path = Path(path)
        if watermark is not None:
            self.watermark = dict(watermark)
        with self._lock.read():
            index_bytes = faiss.serialize_index(self._cpu_index()).tobytes()
            pend_ids = (
                np.concatenate(self._pending_ids) if self._pending_ids else np.zeros(0, np.int64)
            )
            pend_vecs = (
                np.concatenate(self._pending_vecs)
                if self._pending_vecs
                else np.zeros((0, self.dim), np.float32)
            )
            tomb = np.array(sorted(self._tombstones), dtype=np.int64)
            sections = {
                "faiss": index_bytes,
                "pending_ids": pend_ids.astype("<i8").tobytes(),
                "pending_vectors": pend_vecs.astype("<f4").tobytes(),
                "tombstones": tomb.astype("<i8").tobytes(),
            }
            header = {
                "format": _FORMAT_VERSION,
                "dim": self.dim,
                "factory": self.factory,
                "normalize": self.normalize,
                "compact_fraction": self.compact_fraction,
                "params": self.params,
                "watermark": self.watermark,
                "supports_remove": self._supports_remove,
                "sections": [[name, len(blob)] for name, blob in sections.items()],
                "sha256": _sha256(sections.values()),
            }
        head = json.dumps(header, sort_keys=True).encode()
        private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                if seal is None:
                    fh.write(_MAGIC + struct.pack("<Q", len(head)) + head)
                    fh.writelines(sections.values())
                else:
                    plain = b"".join(
                        [_MAGIC, struct.pack("<Q", len(head)), head, *sections.values()]
                    )
                    fh.write(seal(plain))
                    del plain
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        try:  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        use_gpu: bool = False,
        unseal: Callable[[bytes], bytes] | None = None,
    ) -> FaceIndex:
        """Read a snapshot (``unseal`` opens one written with ``seal``); raises
        ``IndexSnapshotError`` (or ``IndexSnapshotMissing``)."""
        path = Path(path)
        try:
            data = path.read_bytes()
            if unseal is not None:
                data = unseal(data)
        except FileNotFoundError as exc:
            raise IndexSnapshotMissing(f"no index snapshot at {path}", path=str(path)) from exc
        except OSError as exc:
            raise IndexSnapshotError(f"cannot read {path}: {exc}", path=str(path)) from exc

        def bad(why: str) -> IndexSnapshotError:
            return IndexSnapshotError(f"corrupt index snapshot {path}: {why}", path=str(path))

        if len(data) < len(_MAGIC) + 8 or not data.startswith(_MAGIC):
            raise bad("not a FaceIndex snapshot (bad magic)")
        (hlen,) = struct.unpack_from("<Q", data, len(_MAGIC))
        start = len(_MAGIC) + 8
        try:
            header = json.loads(data[start : start + hlen])
            if header["format"] != _FORMAT_VERSION:
                raise bad(f"format {header['format']} is not {_FORMAT_VERSION}")
            pos = start + hlen
            sections: dict[str, bytes] = {}
            for name, size in header["sections"]:
                sections[name] = data[pos : pos + size]
                if len(sections[name]) != size:
                    raise bad("truncated")
                pos += size
            if pos != len(data):
                raise bad("trailing bytes")
            if _sha256(sections.values()) != header["sha256"]:
                raise bad("checksum mismatch")
            dim = int(header["dim"])
            faiss_index = faiss.deserialize_index(np.frombuffer(sections["faiss"], np.uint8))
        except IndexSnapshotError:
            raise
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise bad(f"{type(exc).__name__}: {exc}") from exc

        self = cls(
            dim,
            header["factory"],
            use_gpu=False,
            compact_fraction=float(header["compact_fraction"]),
            normalize=bool(header["normalize"]),
        )
        self._index = faiss_index  # already the concrete, owning type
        if self._index.d != dim:
            raise bad("index dimension differs from the recorded one")
        # knobs the snapshot does not record (written before they had defaults) get today's
        self.params = {
            **_search_defaults(faiss_index),
            **{k: float(v) for k, v in header["params"].items()},
        }
        for name, value in self.params.items():
            _set_param(self._index, name, value)
        self.watermark = header["watermark"]
        self._supports_remove = header["supports_remove"]
        self._tombstones = set(np.frombuffer(sections["tombstones"], "<i8").tolist())
        pend_ids = np.frombuffer(sections["pending_ids"], "<i8").astype(np.int64)
        pend_vecs = np.frombuffer(sections["pending_vectors"], "<f4").astype(np.float32)
        if pend_vecs.size != len(pend_ids) * dim:
            raise bad("pending buffer sizes disagree")
        if len(pend_ids):
            self._pending_ids = [pend_ids]
            self._pending_vecs = [pend_vecs.reshape(-1, dim)]
        live = set(_stored_ids(self._index).tolist()) - self._tombstones
        self._live = live | set(pend_ids.tolist())
        self._want_gpu = use_gpu
        self._to_gpu_if_asked()
        return self


def index_for(dim: int, settings: Settings) -> FaceIndex:
    """A new, empty index as the settings name it: factory, search knobs, GPU."""
    return FaceIndex(
        dim, settings.index_factory, settings.use_gpu_index, params=settings.index_params
    )


def _sha256(blobs: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for blob in blobs:
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.hexdigest()


def _merge_topk(
    s1: np.ndarray, i1: np.ndarray, s2: np.ndarray, i2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    s = np.concatenate([s1, s2], axis=1)
    i = np.concatenate([i1, i2], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
