"""Gallery ingestion throughput: batched multi-process ingestion vs a one-image-at-a-time loop.

Both sides run the same library calls (``decode_image`` then ``FaceAnalyzer.analyze`` with the
settings' detector and embedder) over the same real photos (``../shared/data``, repeated to
``--images``). The loop is what a user writes first: one process, one image per call, onnxruntime
and OpenCV with their default threads. The indexer is ``identity.gallery.worker.analyze_batches``:
``--workers`` processes, one thread each, ``--batch`` images per call. Model loading is excluded
from both (each side warms up first: one image for the loop, one batch per worker for the
pool); database writes are not part of either.

    .venv/bin/python bench/ingest.py --images 48 --workers 2 --batch 8
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from identity.gallery.worker import WorkItem, analyze_batches, default_workers
from identity.settings import Settings

DATA = REPO.parent / "shared" / "data"


def photos(n: int) -> list[Path]:
    pool = sorted((DATA / "deepface").glob("*.jpg")) + sorted(
        (DATA / "face_recognition" / "knn_examples").rglob("*.jp*g")
    )
    return [pool[i % len(pool)] for i in range(n)]


def one_at_a_time(paths: list[Path], settings: Settings) -> tuple[float, int]:
    from identity.image import decode_image
    from identity.pipeline import FaceAnalyzer

    analyzer = FaceAnalyzer(settings)
    analyzer.analyze([decode_image(paths[0].read_bytes(), settings)])  # load models
    faces = 0
    start = time.perf_counter()
    for p in paths:
        faces += len(analyzer.analyze([decode_image(p.read_bytes(), settings)]))
    return time.perf_counter() - start, faces


def batched(
    paths: list[Path], settings: Settings, workers: int, batch: int
) -> tuple[float, int, int]:
    """Steady-state time: from the first batch's result (pool started, every worker's models
    loading in parallel by then) to the last; returns (seconds, images timed, faces)."""
    items = [WorkItem(str(p), data=p.read_bytes()) for p in paths]
    # one warm-up batch per worker so each loads its models before the timed batches
    warm = [items[:batch] for _ in range(workers)]
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    faces = timed = 0
    started = None
    for k, (_, results) in enumerate(analyze_batches(warm + batches, settings, False, workers)):
        if k < workers:
            if k == workers - 1:
                started = time.perf_counter()
            continue
        faces += sum(len(r.faces) for r in results)
        timed += len(results)
    assert started is not None and timed == len(paths)
    return time.perf_counter() - started, timed, faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    settings = Settings(models_dir=REPO.parent / "shared" / "models")
    paths = photos(args.images)
    loop_s, loop_faces = one_at_a_time(paths, settings)
    pool_s, _, pool_faces = batched(paths, settings, args.workers, args.batch)
    n = len(paths)
    print(
        f"command: .venv/bin/python bench/index.py --images {n} --workers {args.workers} "
        f"--batch {args.batch}"
    )
    print(
        f"machine: {platform.machine()}, {default_workers()} cores usable; "
        f"detector {settings.detector}, embedder {settings.embedder}"
    )
    print()
    print("| method | images | faces | seconds | images/s | speed-up |")
    print("|---|---|---|---|---|---|")
    print(
        f"| one image at a time (1 process) | {n} | {loop_faces} | {loop_s:.1f} | "
        f"{n / loop_s:.2f} | 1.00 |"
    )
    print(
        f"| batched indexer ({args.workers} processes, batch {args.batch}) | {n} | {pool_faces} "
        f"| {pool_s:.1f} | {n / pool_s:.2f} | {loop_s / pool_s:.2f} |"
    )


if __name__ == "__main__":
    main()
