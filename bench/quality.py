"""Does rejecting low-quality faces raise verification accuracy? And do mesh landmarks help?

    python bench/quality.py [--detector retinaface_mnet025] [--embedder dlib_resnet_v1]

On deepface's 520 labelled pairs (``../shared/data/deepface/PAIRS.csv``, largest face per
photo). The similarity threshold is the embedder's calibrated one at FAR 1e-3
(``identity.calibration.threshold_for``: for dlib_resnet_v1 calibrated on the face_recognition
people, never on these pairs); quality thresholds are the fixed grid below, not fitted here.
A pair is kept when both of its faces reach the quality threshold.

Table 1: quality threshold vs faces kept vs pairs kept vs accuracy, with the 5-landmark pose
only (``IDENTITY_QUALITY_MESH=false``) and with the FaceMesh signals (pose from the mesh, eyes).
Table 2: alignment from the detector's 5 points vs from the mesh (iris centres or eye corners).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODELS, command_line, deepface_pairs, print_table
from identity.calibration import auc_of, roc_curve

# enroll_min_quality defaults to 0.4; the deepface portraits are good photos (quality 0.7 to
# 1.0), so the sweep goes up to where faces start being rejected.
GRID = [0.0, 0.4, 0.7, 0.8, 0.85, 0.9, 0.95]


def analyse(
    paths: list[Path], **overrides: object
) -> tuple[dict[Path, tuple[np.ndarray, float]], float]:
    """Largest face per photo -> (embedding, quality); seconds taken."""
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer
    from identity.settings import Settings

    settings = Settings(models_dir=MODELS, **overrides)  # type: ignore[arg-type]
    analyzer = FaceAnalyzer(settings)
    out: dict[Path, tuple[np.ndarray, float]] = {}
    start = time.perf_counter()
    for path in paths:
        image = load_image(path, settings)
        faces = analyzer.analyze([image])
        if len(faces):
            face = faces.largest()
            assert face.embeddings is not None and face.quality is not None
            out[path] = (face.embeddings[0], float(face.quality[0]))
    return out, time.perf_counter() - start


def pair_table(
    found: dict[Path, tuple[np.ndarray, float]], threshold: float, q: float
) -> tuple[int, int, float]:
    pairs = deepface_pairs()
    kept_faces = sum(1 for _, qual in found.values() if qual >= q)
    correct = total = 0
    for p in pairs:
        if p.a not in found or p.b not in found:
            continue
        (ea, qa), (eb, qb) = found[p.a], found[p.b]
        if min(qa, qb) < q:
            continue
        total += 1
        correct += (float(ea @ eb) >= threshold) == p.same
    return kept_faces, total, correct / total if total else float("nan")


def auc(found: dict[Path, tuple[np.ndarray, float]]) -> float:
    gen, imp = [], []
    for p in deepface_pairs():
        if p.a in found and p.b in found:
            s = float(found[p.a][0] @ found[p.b][0])
            (gen if p.same else imp).append(s)
    far, tar, _ = roc_curve(np.array(gen), np.array(imp))
    return auc_of(far, tar)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--detector", default="retinaface_mnet025")
    parser.add_argument("--embedder", default="dlib_resnet_v1")
    parser.add_argument("--far", type=float, default=1e-3)
    parser.add_argument("--no-alignment", action="store_true", help="Skip table 2.")
    args = parser.parse_args()

    from identity.calibration import threshold_for
    from identity.settings import Settings

    threshold = threshold_for(args.embedder, args.far, Settings(models_dir=MODELS))
    paths = sorted({p.a for p in deepface_pairs()} | {p.b for p in deepface_pairs()})
    base = {"detector": args.detector, "embedder": args.embedder}
    runs = {
        "5-landmark pose": analyse(paths, quality_mesh=False, **base),
        "mesh pose + eyes": analyse(paths, quality_mesh=True, **base),
    }
    rows = []
    for q in GRID:
        row: list[object] = [q]
        for found, _ in runs.values():
            faces, pairs, acc = pair_table(found, threshold, q)
            row += [f"{faces}/{len(paths)}", pairs, acc]
        rows.append(row)
    headers = ["min quality"]
    for name in runs:
        headers += [f"faces kept ({name})", "pairs kept", "accuracy"]
    print_table(
        headers,
        rows,
        f"Quality gate vs verification accuracy, {args.detector} + {args.embedder}, "
        f"similarity threshold {threshold:.4f} (FAR {args.far:g}, calibrated elsewhere)",
    )
    print(f"\n`{command_line()}`")
    for name, (found, secs) in runs.items():
        q = np.array([qual for _, qual in found.values()])
        print(f"\n{name}: quality min {q.min():.3f}, median {np.median(q):.3f}, {secs:.1f} s")
    if args.no_alignment:
        return

    align_rows = []
    variants = {
        "detector 5 points": runs["mesh pose + eyes"],
        "mesh: iris centres": analyse(
            paths, quality_mesh=True, mesh_landmarks=True, mesh_landmark_eyes="iris", **base
        ),
        "mesh: eye-corner midpoints": analyse(
            paths, quality_mesh=True, mesh_landmarks=True, mesh_landmark_eyes="corners", **base
        ),
    }
    for name, (found, secs) in variants.items():
        _, pairs, acc = pair_table(found, threshold, 0.0)
        align_rows.append([name, f"{len(found)}/{len(paths)}", pairs, auc(found), acc, secs])
    print_table(
        ["alignment landmarks", "faces", "pairs", "AUC", "accuracy", "seconds (61 photos)"],
        align_rows,
        f"Alignment landmarks, {args.detector} + {args.embedder}",
    )
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
