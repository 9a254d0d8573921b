"""celeba500 faces per pipeline, computed once and cached: the input of the accuracy, calibration
and quality benchmarks.

    python bench/celeba.py --pipelines retinaface_mnet025+dlib_resnet_v1,... [--peer]

For each detector the largest face of every photo is detected once (``<detector>.npz``); for each
detector + embedder pair the aligned crops are embedded as is, mirrored and shifted by 2 px
(the embedding-stability quality signal) and their quality signals recorded
(``<detector>+<embedder>.npz``). ``--peer`` caches face_recognition's own pipeline
(``face_recognition.npz``). Rows follow ``../shared/data/celeba500/LABELS.csv`` (sorted by
identity); a photo without a face has ``found = False`` and zero rows elsewhere. Work is saved
every few hundred photos (``done`` = photos processed) and resumed, so an interrupted run keeps
its first identities complete and the benchmarks use the identities done. The cache lives in
``.bench_cache/`` (git ignores it) or ``--cache-dir``; delete a file to recompute it.

The photos are 178 x 218 with the face filling the middle: they are detected on a 256 px canvas
(``det_max_side = 256``, about their own size) instead of the product's 640, which would only
upscale them 3x at 6x the cost.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA, MODELS, REPO

CELEBA = DATA / "celeba500"
CACHE = REPO / ".bench_cache" / "celeba500"
SHIFT_PX = 2.0
BATCH = 32
CHECKPOINT = 320
DET_MAX_SIDE = 256


def celeba_labels() -> tuple[list[Path], np.ndarray]:
    """(photo paths, identity per photo) in LABELS.csv order."""
    with (CELEBA / "LABELS.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [CELEBA / r["path"] for r in rows], np.asarray([r["identity"] for r in rows])


def _settings(detector: str, embedder: str) -> Any:
    from identity.settings import Settings

    return Settings(
        models_dir=MODELS,
        detector=detector,
        embedder=embedder,
        data_dir=Path("/nonexistent-no-calibration"),
        det_max_side=DET_MAX_SIDE,
    )


def _resume(path: Path, fresh: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint at ``path`` if there is one, else ``fresh`` with ``done = 0``."""
    if path.is_file():
        return dict(np.load(path))
    return {**fresh, "done": np.int64(0), "seconds": np.float64(0.0)}


def _save(path: Path, state: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **state)
    tmp.replace(path)


def complete(state: dict[str, np.ndarray]) -> np.ndarray:
    """Photos whose whole identity is processed (an interrupted run stops mid-identity)."""
    _, ids = celeba_labels()
    done = np.zeros(len(ids), bool)
    done[: int(state.get("done", len(ids)))] = True
    partial = set(ids[~done].tolist())
    return done & ~np.isin(ids, list(partial))


def detect_all(detector: str, cache: Path) -> dict[str, np.ndarray]:
    path = cache / f"{detector}.npz"
    paths, _ = celeba_labels()
    n = len(paths)
    state = _resume(
        path,
        {
            "found": np.zeros(n, bool),
            "boxes": np.zeros((n, 4), np.float32),
            "landmarks": np.zeros((n, 5, 2), np.float32),
            "scores": np.zeros(n, np.float32),
        },
    )
    if int(state["done"]) >= n:
        return state
    from identity.pipeline import FaceAnalyzer

    analyzer = FaceAnalyzer(_settings(detector, "dlib_resnet_v1"))
    for s in range(int(state["done"]), n, BATCH):
        start = time.perf_counter()
        images = [cv2.imread(str(p)) for p in paths[s : s + BATCH]]
        faces = analyzer.detect(images)
        for j in range(len(images)):
            f = faces.for_image(j)
            if len(f):
                f = f.largest()
                state["found"][s + j] = True
                state["boxes"][s + j], state["landmarks"][s + j] = f.boxes[0], f.landmarks[0]
                state["scores"][s + j] = f.scores[0]
        state["seconds"] = np.float64(state["seconds"] + time.perf_counter() - start)
        state["done"] = np.int64(min(s + BATCH, n))
        if int(state["done"]) % CHECKPOINT == 0 or int(state["done"]) == n:
            _save(path, state)
            print(
                f"{detector}: {int(state['done'])}/{n} {float(state['seconds']):.0f} s",
                file=sys.stderr,
            )
    return state


def _shifted(crops: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return np.stack(
        [cv2.warpAffine(c, m, c.shape[1::-1], borderMode=cv2.BORDER_REPLICATE) for c in crops]
    )


def aligned(det: dict[str, np.ndarray], paths: list[Path], rows: np.ndarray, template: str) -> Any:
    """(Faces, crops) of the cached detections ``rows`` (one face per photo), aligned to
    ``template`` from the photos read again."""
    from identity.align import align_faces
    from identity.faces import Faces

    images = [cv2.imread(str(paths[i])) for i in rows]
    faces = Faces(
        boxes=det["boxes"][rows],
        landmarks=det["landmarks"][rows],
        scores=det["scores"][rows],
        image_index=np.arange(len(rows)),
    )
    return faces, align_faces(images, faces, template)


def embed_all(
    detector: str, embedder: str, cache: Path, perturb: bool = True, wait: bool = False
) -> dict[str, np.ndarray]:
    """Embeddings (plain, mirrored, shifted) and quality signals of every detected face.

    ``wait = False`` returns a partial checkpoint as it is (benchmarks use ``complete``)."""
    path = cache / f"{detector}+{embedder}.npz"
    paths, _ = celeba_labels()
    n = len(paths)
    if path.is_file() and not wait:
        return dict(np.load(path))
    det = detect_all(detector, cache)
    from identity.embed import load_embedder
    from identity.quality import assess_quality, pose_from_landmarks

    settings = _settings(detector, embedder)
    model = load_embedder(embedder, settings)
    dim = model.dim
    fresh: dict[str, np.ndarray] = {
        "emb": np.zeros((n, dim), np.float32),
        "norms": np.zeros(n, np.float32),
        "quality": np.zeros(n, np.float32),
        "sharpness": np.zeros(n, np.float32),
        "laplacian_var": np.zeros(n, np.float32),
        "box_side": np.zeros(n, np.float32),
        "embed_seconds": np.float64(0.0),
    }
    if perturb:
        fresh.update(
            emb_flip=np.zeros((n, dim), np.float32), emb_shift=np.zeros((n, dim), np.float32)
        )
    state = _resume(path, fresh)
    state.update(
        found=det["found"],
        det_score=det["scores"],
        iod=np.linalg.norm(det["landmarks"][:, 1] - det["landmarks"][:, 0], axis=1).astype(
            np.float32
        ),
        pose=pose_from_landmarks(det["landmarks"]).astype(np.float32),
        detect_s_per_photo=np.float64(det["seconds"] / n),
    )
    for s in range(int(state["done"]), n, BATCH):
        start = time.perf_counter()
        rows = np.arange(s, min(s + BATCH, n))
        rows = rows[det["found"][rows]]
        if len(rows):
            faces, crops = aligned(det, paths, rows, model.template)
            t0 = time.perf_counter()
            e, nr = model.embed(crops)
            state["embed_seconds"] = np.float64(state["embed_seconds"] + time.perf_counter() - t0)
            state["emb"][rows], state["norms"][rows] = e, nr
            if perturb:
                state["emb_flip"][rows] = model.embed(np.ascontiguousarray(crops[:, :, ::-1]))[0]
                state["emb_shift"][rows] = model.embed(_shifted(crops, SHIFT_PX, SHIFT_PX))[0]
            q = assess_quality(
                faces.with_(crops=crops, embeddings=e, embedding_norms=nr),
                settings,
                embedder_name=embedder,
            )
            assert q.quality_details is not None and q.quality is not None
            state["quality"][rows] = q.quality
            state["sharpness"][rows] = [d["sharpness"] for d in q.quality_details]
            state["laplacian_var"][rows] = [d["laplacian_var"] for d in q.quality_details]
            state["box_side"][rows] = np.minimum(
                faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1]
            )
        state["seconds"] = np.float64(state["seconds"] + time.perf_counter() - start)
        state["done"] = np.int64(min(s + BATCH, n))
        if int(state["done"]) % CHECKPOINT == 0 or int(state["done"]) == n:
            found_done = max(int(det["found"][: int(state["done"])].sum()), 1)
            state["embed_s_per_face"] = np.float64(state["embed_seconds"] / found_done)
            _save(path, state)
            print(
                f"{embedder}: {int(state['done'])}/{n} {float(state['seconds']):.0f} s",
                file=sys.stderr,
            )
    return state


def peer_all(cache: Path, wait: bool = False) -> dict[str, np.ndarray]:
    """face_recognition's own pipeline (HOG upsampled once, 5-point predictor, dlib ResNet)."""
    path = cache / "face_recognition.npz"
    if path.is_file() and not wait:
        return dict(np.load(path))
    import face_recognition

    paths, _ = celeba_labels()
    n = len(paths)
    state = _resume(path, {"found": np.zeros(n, bool), "emb": np.zeros((n, 128), np.float32)})
    start = time.perf_counter() - float(state["seconds"])
    for i in range(int(state["done"]), n):
        image = face_recognition.load_image_file(str(paths[i]))
        locations = face_recognition.face_locations(image, number_of_times_to_upsample=1)
        if locations:
            largest = max(locations, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
            state["emb"][i] = face_recognition.face_encodings(image, [largest])[0]
            state["found"][i] = True
        state["done"] = np.int64(i + 1)
        if (i + 1) % 100 == 0 or i + 1 == n:
            state["seconds"] = np.float64(time.perf_counter() - start)
            state["seconds_per_photo"] = np.float64(state["seconds"] / (i + 1))
            _save(path, state)
            print(f"face_recognition: {i + 1}/{n} {float(state['seconds']):.0f} s", file=sys.stderr)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", default="")
    parser.add_argument("--peer", action="store_true")
    parser.add_argument(
        "--no-perturb", action="store_true", help="skip mirrored/shifted embeddings"
    )
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    args = parser.parse_args()
    for combo in filter(None, args.pipelines.split(",")):
        detector, embedder = combo.split("+")
        embed_all(detector, embedder, args.cache_dir, perturb=not args.no_perturb, wait=True)
        print(f"cached {combo}", file=sys.stderr)
    if args.peer:
        peer_all(args.cache_dir, wait=True)
        print("cached face_recognition", file=sys.stderr)


if __name__ == "__main__":
    main()
