"""1:N search: FaceIndex (Flat, HNSW, IVF-PQ fast-scan + exact refine) vs a numpy linear scan.

The peer is what face_recognition does (``face_distance``: ``np.linalg.norm(known - probe,
axis=1)`` over every known encoding, per probe; DeepFace's ``find`` does the same per row with
pandas, slower still). We also show the best numpy can do (one BLAS matmul for a batch of probes).

Gallery: "realistic" face templates. Each gallery vector is a distinct identity: a random unit
centre plus isotropic noise; each probe is another noisy sample of a random enrolled identity, so
a probe's genuine template has cosine ~0.7 while impostors sit near 0 (spread 1/sqrt(D)), as real
face embeddings behave. Real embeddings are mixed in: the deepface photos (13 people) embedded
by ``identity.pipeline.FaceAnalyzer`` (dlib ResNet, 128-d); one photo per person is enrolled and
the others are probes. For D > 128 they are lifted by a random orthonormal map (cosines unchanged).

Recall@k is measured against exact search (Flat) over all probes; "real hit@1" is the share of
real probes whose top-1 is a template of the right person (same for every exact method).

    .venv/bin/python bench/search.py                      # 10k, 100k, 1M x 128-d and 512-d
    .venv/bin/python bench/search.py --quick              # 10k x 128 and 512, fewer probes
    .venv/bin/python bench/search.py --sizes 100000 --dims 512
    .venv/bin/python bench/search.py --sizes 1000000 --hnsw-max 1000000   # HNSW at 1M too (slow)
    .venv/bin/python bench/search.py --store milvus --sizes 100000 1000000 --dims 512

``--store milvus`` adds the same rows for Milvus (bench/milvus_search.py: HNSW and IVF_FLAT with the
service's defaults, on the embedded Milvus server unless ``--milvus-uri``) beside FAISS's, whose
sweeps shrink to the service defaults (HNSW efSearch 256, IVF nprobe = half of the lists).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import command_line, deepface_labels, print_table
from bench.milvus_search import milvus_server
from identity.index import FaceIndex

NOISE = 0.65  # genuine cosine 1/(1+0.65^2) ~ 0.70


def real_embeddings() -> tuple[np.ndarray, np.ndarray] | None:
    """(embeddings (M,128), person index (M,)) of the deepface photos, or None if unavailable."""
    try:
        import cv2

        from identity.pipeline import FaceAnalyzer
        from identity.settings import Settings

        analyzer = FaceAnalyzer(Settings(embedder="dlib_resnet_v1"))  # 128-d, lifted for D > 128
        embs, people, names = [], [], {}
        for path, person in sorted(deepface_labels().items()):
            image = cv2.imread(str(path))
            if image is None:
                continue
            faces = analyzer.analyze([image])
            if not len(faces) or faces.embeddings is None:
                continue
            embs.append(faces.largest().embeddings[0])
            people.append(names.setdefault(person, len(names)))
        return np.asarray(embs, np.float32), np.asarray(people)
    except Exception as exc:
        print(f"# real embeddings unavailable ({type(exc).__name__}: {exc}); synthetic only")
        return None


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, dim: int, n_probes: int, real, seed: int = 0):
    """Gallery (n, dim) float32 unit rows, probes, and the row of each real probe's genuine
    templates (-1 for synthetic probes: their truth is the exact search)."""
    rng = np.random.default_rng(seed)
    gallery = np.empty((n, dim), np.float32)
    chunk = 100_000
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        c = unit_rows(rng.standard_normal((m, dim), dtype=np.float32))
        gallery[s : s + m] = c  # identity centres; noise is added below, after probes copy them
    probe_rows = rng.integers(0, n, n_probes)
    centres = gallery[probe_rows].copy()
    noise = NOISE / np.sqrt(dim)
    # templates and probes are independent noisy samples of the same centre
    gallery_noise_rng = np.random.default_rng(seed + 1)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        gallery[s : s + m] += noise * gallery_noise_rng.standard_normal((m, dim), np.float32)
        unit_rows(gallery[s : s + m])
    probes = unit_rows(centres + noise * rng.standard_normal(centres.shape, np.float32))
    real_truth: list[set[int]] = []
    if real is not None:
        emb, person = real
        basis = np.linalg.qr(rng.standard_normal((dim, emb.shape[1])))[0].astype(np.float32)
        lifted = unit_rows((emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ basis.T)
        enrolled = {}
        for i, p in enumerate(person):
            enrolled.setdefault(int(p), i)
        rows = rng.choice(n, len(enrolled), replace=False)  # overwrite random gallery rows
        row_of = {}
        for (p, i), r in zip(enrolled.items(), rows, strict=False):
            gallery[r] = lifted[i]
            row_of[p] = int(r)
        probe_idx = [i for i in range(len(person)) if enrolled[int(person[i])] != i]
        probes = np.concatenate([lifted[probe_idx], probes])
        real_truth = [{row_of[int(person[i])]} for i in probe_idx]
    return gallery, probes, real_truth


def numpy_face_distance_qps(gallery: np.ndarray, probes: np.ndarray, budget_s: float) -> float:
    """face_recognition.face_distance per probe (chunked so 1M x 512 fits in memory)."""
    done, t0 = 0, time.perf_counter()
    for q in probes:
        best = np.inf
        for s in range(0, len(gallery), 131072):
            d = np.linalg.norm(gallery[s : s + 131072] - q, axis=1)
            best = min(best, float(d.min()))
        done += 1
        if time.perf_counter() - t0 > budget_s:
            break
    return done / (time.perf_counter() - t0)


def numpy_matmul_batch_qps(gallery: np.ndarray, probes: np.ndarray) -> float:
    t0 = time.perf_counter()
    for s in range(0, len(probes), 256):
        sims = probes[s : s + 256] @ gallery.T
        np.argpartition(-sims, 10, axis=1)[:, :10]
    return len(probes) / (time.perf_counter() - t0)


def recall(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = sum(len(set(a[:k]) & set(e[:k])) for a, e in zip(approx, exact, strict=False))
    return hits / (k * len(exact))


def measure(index: FaceIndex, probes: np.ndarray, budget_s: float, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    _, batch_ids = index.search(probes, 10)
    qps_batch = len(probes) / (time.perf_counter() - t0)
    # one query at a time is what a verify/identify request does; FAISS has nothing to split
    # across threads for a single query, and OpenMP's spin-waiting only costs there
    faiss.omp_set_num_threads(1)
    done, t0 = 0, time.perf_counter()
    for q in probes:
        index.search(q[None], 10)
        done += 1
        if time.perf_counter() - t0 > budget_s:
            break
    qps_single = done / (time.perf_counter() - t0)
    return batch_ids, qps_single, qps_batch


def build(
    dim: int, factory: str, gallery: np.ndarray, params: dict, threads: int
) -> tuple[FaceIndex, float]:
    import faiss

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    index = FaceIndex(dim, factory, params=params)
    if not index.is_trained:
        index.train(gallery[:: max(1, len(gallery) // index.min_train_points // 2)])
    ids = np.arange(len(gallery), dtype=np.int64)
    for s in range(0, len(gallery), 100_000):
        index.add(ids[s : s + 100_000], gallery[s : s + 100_000])
    return index, time.perf_counter() - t0


def nlist_for(n: int) -> int:
    # ~sqrt(N) lists, capped at 1024 so k-means training stays around a minute on 2 cores
    return int(min(1024, max(32, 2 ** round(np.log2(np.sqrt(n))))))


HEADERS = [
    "N",
    "D",
    "method",
    "params",
    "build s",
    "bytes/template",
    "recall@1",
    "recall@10",
    "QPS single",
    "QPS batch",
    "x numpy (single)",
]


def title(args: argparse.Namespace) -> str:
    return (
        f"1:N search, {os.cpu_count()} cores ({args.threads} FAISS thread(s) batched, 1 single), "
        f"{platform.processor() or platform.machine()}, top-10 per probe"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--probes", type=int, default=1000, help="synthetic probes per run")
    ap.add_argument("--quick", action="store_true", help="10k only, 200 probes, fewer settings")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds per single-query timing")
    ap.add_argument(
        "--hnsw-max",
        type=int,
        default=100_000,
        help="skip HNSW above this size (building HNSW32 over 1M templates takes over 12 minutes "
        "at 128-d on 2 cores, several times that at 512-d)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="FAISS OpenMP threads for building and for batched search (default: every core). "
        "Single queries always run on one thread: on a 2-core machine OpenMP's spin-waiting cost "
        "more than the second thread gave there (10k x 512 Flat: 60 vs 400 single-query QPS).",
    )
    ap.add_argument("--store", choices=["faiss", "milvus"], default="faiss")
    ap.add_argument("--milvus-uri", default=None, help="a running Milvus (default: embedded)")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.probes, args.budget = [10_000], 200, 2.0
    real = real_embeddings()
    rows: list[list[object]] = []
    with ExitStack() as stack:
        milvus = (
            stack.enter_context(milvus_server(args.milvus_uri)) if args.store == "milvus" else None
        )
        run_sizes(args, real, rows, milvus)
    print_table(HEADERS, rows, title=title(args))
    print(f"\n{command_line()}")


def run_sizes(args: argparse.Namespace, real, rows: list[list[object]], milvus) -> None:  # type: ignore[no-untyped-def]
    for dim in args.dims:
        for n in args.sizes:
            gallery, probes, real_truth = make_data(n, dim, args.probes, real)
            n_real = len(real_truth)
            print(f"# N={n} D={dim}: {len(probes)} probes ({n_real} real)", flush=True)
            fd_qps = numpy_face_distance_qps(gallery, probes, args.budget)
            mm_qps = numpy_matmul_batch_qps(gallery, probes)
            flat, t_build = build(dim, "Flat", gallery, {}, args.threads)
            exact, flat_single, flat_batch = measure(flat, probes, args.budget, args.threads)
            flat_bytes = flat.memory_bytes() / n
            del flat
            gc.collect()
            hit = np.mean([exact[i, 0] in real_truth[i] for i in range(n_real)]) if n_real else None
            base = [n, dim]
            rows.append(
                base
                + [
                    "numpy face_distance (face_recognition)",
                    "-",
                    0.0,
                    4 * dim,
                    1.0,
                    1.0,
                    fd_qps,
                    "-",
                    1.0,
                ]
            )
            rows.append(
                base
                + [
                    "numpy matmul, batches of 256",
                    "-",
                    0.0,
                    4 * dim,
                    1.0,
                    1.0,
                    "-",
                    mm_qps,
                    mm_qps / fd_qps,
                ]
            )
            rows.append(
                base
                + [
                    "FaceIndex Flat (exact)",
                    "-",
                    t_build,
                    flat_bytes,
                    1.0,
                    1.0,
                    flat_single,
                    flat_batch,
                    flat_single / fd_qps,
                ]
            )
            configs: list[tuple[str, dict, list[dict]]] = []
            if n <= args.hnsw_max:
                efs = (32, 128) if args.quick else (16, 32, 64, 128, 256)
                efs = (256,) if args.store == "milvus" else efs
                configs.append(("HNSW32", {"efConstruction": 80}, [{"efSearch": e} for e in efs]))
            nl = nlist_for(n)
            # 4-bit codes of 16-d sub-vectors (8-d below 256-d: a 128-d template in 4 bytes is too
            # coarse); the exact re-rank of k * k_factor candidates repairs the code's error
            m = dim // 16 if dim >= 256 else dim // 8
            # nprobe as a share of the lists: face templates of distinct people are spread nearly
            # uniformly on the sphere (that is what ArcFace-type losses train for), the hardest
            # case for a partition, so the useful range reaches a large share of the lists
            shares = (16, 4) if args.quick else (64, 16, 8, 4, 3, 2)
            shares = (2,) if args.store == "milvus" else shares
            nprobes = sorted({max(1, nl // d) for d in shares})
            configs.append(
                (
                    f"IVF{nl},PQ{m}x4fs,RFlat",
                    {"k_factor": 8},
                    [{"nprobe": p} for p in nprobes],
                )
            )
            # the same codes for every template, no partition: nothing to miss
            if args.store == "faiss":
                configs.append((f"PQ{m}x4fs,RFlat", {}, [{"k_factor": 8}]))
            for factory, build_params, sweep in configs:
                index, t_build = build(dim, factory, gallery, build_params, args.threads)
                nbytes = index.memory_bytes() / n
                for params in sweep:
                    index.set_params(**params)
                    got, single, batch = measure(index, probes, args.budget, args.threads)
                    label = ", ".join(f"{k}={v}" for k, v in {**build_params, **params}.items())
                    rows.append(
                        base
                        + [
                            f"FaceIndex {factory}",
                            label,
                            t_build,
                            nbytes,
                            recall(got, exact, 1),
                            recall(got, exact, 10),
                            single,
                            batch,
                            single / fd_qps,
                        ]
                    )
                    print(
                        f"#   {factory} {label}: r@1 {rows[-1][6]:.4f} "
                        f"single {single:.0f} qps batch {batch:.0f} qps",
                        flush=True,
                    )
                del index
                gc.collect()
            if hit is not None:
                print(f"#   real probes: exact top-1 is the right person for {hit:.3f}")
            # this size's rows at once: the 1M runs take long, and an interrupted run keeps them
            if milvus is not None:
                milvus_rows_for(args, milvus, n, dim, gallery, probes, exact, fd_qps, rows)
            print_table(HEADERS, [r for r in rows if r[:2] == [n, dim]], title=title(args))
            print(flush=True)
            del gallery, probes
            gc.collect()


def milvus_rows_for(args, milvus, n, dim, gallery, probes, exact, fd_qps, rows) -> None:  # type: ignore[no-untyped-def]
    from bench import milvus_search

    kinds = (["HNSW"] if n <= args.hnsw_max else []) + ["IVF_FLAT"]
    for kind in kinds:
        for r in milvus_search.run(*milvus, kind, nlist_for(n), gallery, probes, args.budget):
            per = r["server_bytes_per_template"]
            rows.append(
                [
                    n,
                    dim,
                    r["label"],
                    r["params"],
                    r["build_s"],
                    "-" if per is None else per,
                    recall(r["ids"], exact, 1),
                    recall(r["ids"], exact, 10),
                    r["qps_single"],
                    r["qps_batch"],
                    r["qps_single"] / fd_qps,
                ]
            )
            print(
                f"#   {r['label']} {r['params']}: r@1 {rows[-1][6]:.4f} single "
                f"{r['qps_single']:.0f} qps batch {r['qps_batch']:.0f} qps; bench process grew "
                f"{r['client_growth_mb']:.0f} MB while searching",
                flush=True,
            )


if __name__ == "__main__":
    main()
