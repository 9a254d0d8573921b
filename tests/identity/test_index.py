"""FaceIndex: exactness, ANN recall, removals, snapshots, the untrained-IVF buffer, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from identity.errors import IndexSnapshotError, IndexSnapshotMissing, InvalidInput
from identity.index import FaceIndex

DIM = 64


def clustered(n: int, dim: int = DIM, n_ids: int = 2000, noise: float = 0.6, seed: int = 0):
    """Face-like templates: identities are random unit centres, templates are noisy copies.

    The centres are the same for every ``seed`` (queries drawn with another seed are other
    photos of enrolled people). noise=0.6 gives genuine cosine ~0.75 and impostor cosine ~0
    (spread 1/sqrt(64)) in 64-d, as face embeddings do.
    """
    centres = np.random.default_rng(12345).standard_normal((n_ids, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_ids, n)
    x = centres[labels] + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), centres, labels


def brute_force(gallery: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int):
    sims = queries @ gallery.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


def recall_at(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    hits = [len(set(a[:k]) & set(e[:k])) for a, e in zip(approx_ids, exact_ids, strict=False)]
    return float(np.sum(hits)) / (k * len(exact_ids))


@pytest.fixture(scope="module")
def data():
    x, _centres, _ = clustered(12_000)
    q, _, _ = clustered(300, seed=1)  # other samples of the same identity centres
    ids = np.arange(len(x), dtype=np.int64) * 7 + 1000  # ids are not positions
    return x, ids, q


def test_flat_equals_numpy_brute_force(data):
    x, ids, q = data
    index = FaceIndex(DIM, "Flat")
    index.add(ids, x)
    sims, got = index.search(q, 10)
    ref_sims, ref_ids = brute_force(x, ids, q, 10)
    assert sims.dtype == np.float32 and got.dtype == np.int64 and got.shape == (300, 10)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    # ties aside, the same ids in the same order
    assert (got == ref_ids).mean() > 0.999


@pytest.mark.parametrize(
    "factory,params",
    [
        ("HNSW32", {"efConstruction": 200, "efSearch": 128}),
        ("IVF32,PQ32x4fs,RFlat", {"nprobe": 24, "k_factor": 16}),
    ],
)
def test_ann_recall_at_10(data, factory, params):
    x, ids, q = data
    index = FaceIndex(DIM, factory, params=params)
    index.add(ids, x)
    assert index.is_trained and len(index) == len(x)
    _, got = index.search(q, 10)
    _, ref = brute_force(x, ids, q, 10)
    # ranks 2..10 are mostly impostors at near-tied similarity, the hard part of recall@10
    assert recall_at(got, ref, 10) >= 0.95
    assert recall_at(got, ref, 1) >= 0.99


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF64,Flat", "IVF64,PQ32x4fs,RFlat"])
def test_removed_ids_never_returned(data, factory):
    x, ids, q = data
    params = {"efSearch": 64} if "HNSW" in factory else {"nprobe": 16} if "IVF" in factory else {}
    index = FaceIndex(DIM, factory, params=params)
    index.add(ids, x)
    # remove exactly what the queries would find first, the hardest case for over-fetching
    _, first = index.search(q[:50], 5)
    gone = np.unique(first[first >= 0])
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0  # idempotent
    _, after = index.search(q, 10)
    assert not np.isin(after, gone).any()
    assert (after >= 0).all()  # still k live results per row
    expected = np.setdiff1d(ids, gone)
    np.testing.assert_array_equal(index.ids(), expected)
    assert len(index) == len(expected)
    assert not index.contains(int(gone[0])) and index.contains(int(expected[0]))


def test_tombstones_compact_past_fraction(data):
    x, ids, q = data
    index = FaceIndex(
        DIM, "HNSW32", compact_fraction=0.1, params={"efConstruction": 200, "efSearch": 128}
    )
    index.add(ids, x)
    index.remove(ids[:500])
    assert len(index.tombstones) == 500  # HNSW cannot remove, so it tombstones
    index.remove(ids[500:1500])  # 1500 > 0.1 * live: compaction rebuilds without them
    assert len(index.tombstones) == 0
    assert index._index.ntotal == len(ids) - 1500
    _, got = index.search(q, 10)
    live = np.setdiff1d(ids, ids[:1500])
    keep = np.isin(ids, live)
    _, ref = brute_force(x[keep], ids[keep], q, 10)
    assert recall_at(got, ref, 10) >= 0.95
    # an id re-added after removal is findable again and not duplicated
    index.add(ids[:1], x[:1])
    _s, got1 = index.search(x[:1], 2)
    assert got1[0, 0] == ids[0] and got1[0, 1] != ids[0]


def test_untrained_ivf_is_exact_at_tiny_sizes_and_trains_later(data):
    x, ids, q = data
    index = FaceIndex(DIM, "IVF64,Flat", params={"nprobe": 64})
    assert not index.is_trained and index.min_train_points == 39 * 64
    # empty index: all padding
    s, i = index.search(q[:3], 5)
    assert (i == -1).all() and np.isneginf(s).all()
    for n in (1, 3, 20, 500):
        index = FaceIndex(DIM, "IVF64,Flat", params={"nprobe": 64})
        index.add(ids[:n], x[:n])
        assert not index.is_trained
        sims, got = index.search(q[:20], 5)
        ref_s, ref_i = brute_force(x[:n], ids[:n], q[:20], min(5, n))
        np.testing.assert_array_equal(got[:, : min(5, n)], ref_i)
        np.testing.assert_allclose(sims[:, : min(5, n)], ref_s, atol=1e-5)
        assert (got[:, n:] == -1).all()
    index.remove(ids[:2])
    assert not np.isin(index.search(q, 10)[1], ids[:2]).any()
    # crossing the threshold trains and moves the buffer into FAISS
    index.add(ids[500:3000], x[500:3000])
    assert index.is_trained and index._index.ntotal == 2998 and not index._pending_ids
    live = np.concatenate([ids[2:500], ids[500:3000]])
    np.testing.assert_array_equal(index.ids(), np.sort(live))
    _, got = index.search(q, 10)
    _, ref = brute_force(x[2:3000], ids[2:3000], q, 10)
    assert recall_at(got, ref, 10) == 1.0  # nprobe = nlist is exhaustive


@pytest.mark.parametrize(
    "factory", ["Flat", "HNSW32", "IVF64,PQ32x4fs,RFlat", "IVF64,Flat", "OPQ16,IVF16,PQ16x4fs"]
)
def test_save_load_round_trip(tmp_path: Path, data, factory):
    x, ids, q = data
    n = 1000 if factory == "IVF64,Flat" else len(x)  # IVF64 stays untrained: buffer persists
    index = FaceIndex(DIM, factory)
    index.add(ids[:n], x[:n])
    index.remove(ids[:10])
    before = index.search(q, 10)
    path = tmp_path / "snap" / "c1-model.faceidx"
    index.save(path, watermark={"max_template_id": int(ids[n - 1]), "seq": 42})
    loaded = FaceIndex.load(path)
    assert loaded.factory == factory and loaded.dim == DIM
    assert loaded.watermark == {"max_template_id": int(ids[n - 1]), "seq": 42}
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    assert loaded.tombstones == index.tombstones
    after = loaded.search(q, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    assert not list(path.parent.glob(".*tmp*"))  # no temp file left behind


def test_corrupt_or_missing_snapshot_raises_typed_error(tmp_path: Path, data):
    x, ids, _ = data
    index = FaceIndex(DIM, "Flat")
    index.add(ids[:100], x[:100])
    path = tmp_path / "idx.faceidx"
    index.save(path)
    raw = bytearray(path.read_bytes())
    with pytest.raises(IndexSnapshotMissing):
        FaceIndex.load(tmp_path / "absent.faceidx")
    for broken in (
        bytes(raw[: len(raw) // 2]),  # truncated mid-write
        bytes(raw[:-1000]) + bytes(1000),  # zeroed tail
        b"garbage",
        b"",
        bytes(raw[:12]) + b"\xff" * 8 + bytes(raw[20:]),  # header length nonsense
    ):
        path.write_bytes(broken)
        with pytest.raises(IndexSnapshotError) as err:
            FaceIndex.load(path)
        assert err.value.code.startswith("index_snapshot")
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF  # a single flipped bit in the vectors is caught by the checksum
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexSnapshotError, match="checksum"):
        FaceIndex.load(path)


def test_bad_inputs_raise_invalid_input(data):
    x, ids, _ = data
    index = FaceIndex(DIM)
    with pytest.raises(InvalidInput):
        FaceIndex(DIM, "NotAnIndex42")
    with pytest.raises(InvalidInput):
        index.add(ids[:3], x[:3, :10])  # wrong dim
    with pytest.raises(InvalidInput):
        index.add(ids[:3], x[:2])  # count mismatch
    with pytest.raises(InvalidInput):
        index.add([1, 1], x[:2])  # duplicate ids
    with pytest.raises(InvalidInput):
        index.add([1], np.zeros((1, DIM)))  # zero vector has no direction
    bad = x[:1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInput):
        index.add([1], bad)
    index.add([1], x[:1])
    with pytest.raises(InvalidInput):
        index.add([1], x[1:2])  # already present
    with pytest.raises(InvalidInput):
        index.search(x[:1], 0)
    with pytest.raises(InvalidInput):
        index.set_params(efSearch=10)  # Flat has no efSearch
    with pytest.raises(InvalidInput, match=">= 1"):
        FaceIndex(DIM, "IVF16,Flat", params={"nprobe": 0})
    with pytest.raises(InvalidInput, match=">= 1"):
        FaceIndex(DIM, "HNSW32", params={"efSearch": float("nan")})


def test_search_knobs_default_to_high_recall_and_survive_a_snapshot(tmp_path: Path, data):
    # FAISS's own defaults (nprobe 1, efSearch 16) miss the right template far too often
    assert FaceIndex(DIM, "IVF64,PQ16x4fs,RFlat").params == {"nprobe": 32, "k_factor": 8}
    assert FaceIndex(DIM, "HNSW32").params == {"efSearch": 256}
    assert FaceIndex(DIM).params == {}
    x, ids, q = data
    index = FaceIndex(DIM, "IVF16,Flat", params={"nprobe": 8})
    assert index.params == {"nprobe": 8}  # the caller's knob wins over the default
    index.add(ids, x)
    index.save(tmp_path / "ivf.faiss")
    back = FaceIndex.load(tmp_path / "ivf.faiss")
    assert back.params == {"nprobe": 8}
    assert np.array_equal(back.search(q, 5)[1], index.search(q, 5)[1])


def test_concurrent_search_and_add_are_safe(data):
    x, ids, q = data
    index = FaceIndex(DIM, "HNSW32")
    index.add(ids[:2000], x[:2000])
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for _ in range(30):
                _s, i = index.search(q[:20], 5)
                assert (i >= 0).all()
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        try:
            for start in range(2000, 6000, 500):
                index.add(ids[start : start + 500], x[start : start + 500])
                index.remove(ids[start : start + 50])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = np.setdiff1d(
        ids[:6000], np.concatenate([ids[s : s + 50] for s in range(2000, 6000, 500)])
    )
    np.testing.assert_array_equal(index.ids(), expected)


@pytest.mark.slow
def test_search_benchmark_quick_runs_and_prints_the_table():
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(repo / "bench" / "search.py"), "--quick", "--dims", "128"],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    ).stdout
    assert "| FaceIndex Flat (exact)" in out and "numpy face_distance" in out
    assert "python bench/search.py --quick --dims 128" in out.replace(str(repo) + "/", "")
