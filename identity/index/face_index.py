"""``FaceIndex``: the cosine-similarity 1:N index of face templates (notes in ``__init__``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from identity.errors import InvalidInput
from identity.index.faiss_chain import (
    POINTS_PER_CENTROID_MAX,
    POINTS_PER_CENTROID_MIN,
    clone_to_gpu,
    copy_without,
    min_train_points,
    new_index,
    search_defaults,
    set_param,
    stored_ids,
)
from identity.index.inputs import check_ids, check_vectors
from identity.index.rwlock import ReadWriteLock
from identity.index.snapshot import corrupt, read_snapshot, write_snapshot
from identity.index.topk import exact_topk, merge_topk, search_live
from identity.settings import Settings

log = logging.getLogger(__name__)


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
        index = new_index(dim, factory)
        self.dim = dim
        self.factory = factory
        self.compact_fraction = compact_fraction
        self.normalize = normalize
        self.params: dict[str, float] = {}
        self.watermark: dict[str, Any] = {}
        self._lock = ReadWriteLock()
        self._index: faiss.Index = index
        self._min_train = min_train_points(self._index)
        self._pending_ids: list[np.ndarray] = []
        self._pending_vecs: list[np.ndarray] = []
        self._tombstones: set[int] = set()
        self._live: set[int] = set()
        self._supports_remove: bool | None = None
        self._gpu_resources: Any = None
        self.on_gpu = False
        self._want_gpu = use_gpu
        self._to_gpu_if_asked()
        self.set_params(**{**search_defaults(self._index), **(params or {})})

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
                if not set_param(self._index, name, value):
                    raise InvalidInput(f"{name} does not apply to index {self.factory!r}")
                self.params[name] = value

    # ---------------------------------------------------------------- mutation
    def add(self, ids: Any, vectors: Any) -> None:
        """Add templates. Ids must be new; vectors are L2-normalised (cosine) unless disabled."""
        id_arr = check_ids(ids)
        vecs = check_vectors(vectors, self.dim, self.normalize, "vectors")
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
        vecs = check_vectors(vectors, self.dim, self.normalize, "training vectors")
        with self._lock.write():
            if self._index.is_trained:
                return
            self._train_on(vecs)
            self._flush_pending()

    def remove(self, ids: Any) -> int:
        """Remove templates by id; unknown ids are ignored. Returns how many were removed."""
        id_arr = check_ids(ids)
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
        q = check_vectors(queries, self.dim, self.normalize, "queries")
        with self._lock.read():
            sims, ids = search_live(self._index, q, k, self._tombstones)
            if self._pending_ids:
                pending = np.concatenate(self._pending_ids), np.concatenate(self._pending_vecs)
                psims, pids = exact_topk(q, *pending, k)
                sims, ids = merge_topk(sims, ids, psims, pids, k)
            return sims, ids

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
        cap = self._min_train * POINTS_PER_CENTROID_MAX // POINTS_PER_CENTROID_MIN
        if len(vecs) > cap:
            pick = np.random.default_rng(1234).choice(len(vecs), cap, replace=False)
            vecs = vecs[np.sort(pick)]
        log.info("training FAISS %s on %d vectors", self.factory, len(vecs))
        self._index.train(vecs)
        for name, value in self.params.items():
            set_param(self._index, name, value)

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
        try:
            fresh = copy_without(cpu, dead)
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
            set_param(self._index, name, value)
        self.on_gpu = False
        self._to_gpu_if_asked()

    def _cpu_index(self) -> faiss.Index:
        if self.on_gpu:
            return faiss.index_gpu_to_cpu(self._index)
        return self._index

    def _to_gpu_if_asked(self) -> None:
        if self._want_gpu:
            placed = clone_to_gpu(self._index, self._gpu_resources, self.factory)
            if placed is not None:
                self._index, self._gpu_resources = placed
                self.on_gpu = True

    def save(
        self,
        path: str | os.PathLike[str],
        watermark: dict[str, Any] | None = None,
        seal: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """Write a snapshot atomically (``identity.index.snapshot``).

        ``watermark`` is any JSON-able dict (e.g. ``{"max_template_id": 123, "seq": 456}``) that
        tells the caller, after ``load``, where to resume catching up from the store. ``seal``
        (e.g. ``identity.sealing.seal`` with a data key) turns the whole file into ciphertext;
        ``load`` then needs the matching ``unseal``. The file is 0600 in a 0700 folder.
        """
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
                "dim": self.dim,
                "factory": self.factory,
                "normalize": self.normalize,
                "compact_fraction": self.compact_fraction,
                "params": self.params,
                "watermark": self.watermark,
                "supports_remove": self._supports_remove,
            }
        write_snapshot(Path(path), header, sections, seal)

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
        header, sections = read_snapshot(path, unseal)
        try:
            dim = int(header["dim"])
            faiss_index = faiss.deserialize_index(np.frombuffer(sections["faiss"], np.uint8))
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise corrupt(path, f"{type(exc).__name__}: {exc}") from exc

        self = cls(
            dim,
            header["factory"],
            use_gpu=False,
            compact_fraction=float(header["compact_fraction"]),
            normalize=bool(header["normalize"]),
        )
        self._index = faiss_index  # already the concrete, owning type
        if self._index.d != dim:
            raise corrupt(path, "index dimension differs from the recorded one")
        # knobs the snapshot does not record (written before they had defaults) get today's
        self.params = {
            **search_defaults(faiss_index),
            **{k: float(v) for k, v in header["params"].items()},
        }
        for name, value in self.params.items():
            set_param(self._index, name, value)
        self.watermark = header["watermark"]
        self._supports_remove = header["supports_remove"]
        self._tombstones = set(np.frombuffer(sections["tombstones"], "<i8").tolist())
        pend_ids = np.frombuffer(sections["pending_ids"], "<i8").astype(np.int64)
        pend_vecs = np.frombuffer(sections["pending_vectors"], "<f4").astype(np.float32)
        if pend_vecs.size != len(pend_ids) * dim:
            raise corrupt(path, "pending buffer sizes disagree")
        if len(pend_ids):
            self._pending_ids = [pend_ids]
            self._pending_vecs = [pend_vecs.reshape(-1, dim)]
        live = set(stored_ids(self._index).tolist()) - self._tombstones
        self._live = live | set(pend_ids.tolist())
        self._want_gpu = use_gpu
        self._to_gpu_if_asked()
        return self


def index_for(dim: int, settings: Settings) -> FaceIndex:
    """A new, empty index as the settings name it: factory, search knobs, GPU."""
    return FaceIndex(
        dim, settings.index_factory, settings.use_gpu_index, params=settings.index_params
    )
