"""Does quality predict errors? Error-versus-reject curves on celeba500 held-out folds, the way
ISO/IEC 29794-5 and NIST's face-quality evaluations (FATE Quality) measure a quality score.

    python bench/celeba.py --pipelines retinaface_mnet025+arcface_w600k_mbf_int8   # embed once
    python bench/erc.py [--pipeline retinaface_mnet025+arcface_w600k_mbf_int8]

For each identity-disjoint fold k (bench/heldout.py) the decision threshold is fixed at FMR 1e-3
from the impostor pairs of the other folds; the genuine comparisons of fold k are ranked by the
pair's LOWER quality and the lowest 0-30% are rejected; FNMR is counted among those kept, pooled
over the folds. A perfect quality ordering removes every error once the rejected fraction reaches
the FNMR. Faces the detector missed are not in these comparisons (no quality without a face).

Signals (higher = better): the product's fused score (identity/quality.py), each of its parts,
sharpness at the face's own resolution (``native_sharpness``), embedding stability (mean cosine
between the embedding and those of the mirrored crop and of the crop shifted by 2 px: the
SER-FIQ idea without dropout), the raw embedding norm, and a fused score fitted by least squares
on the other folds' faces (target: a face's mean genuine similarity, its utility) and applied to
fold k: never fitted on what it is reported on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.celeba import CACHE, celeba_labels, complete, embed_all
from bench.common import MODELS, command_line, print_table
from bench.heldout import N_FOLDS, folds_of, pairs_within
from identity.calibration import threshold_in_sorted

FRACTIONS = (0.0, 0.05, 0.10, 0.20, 0.30)
FMR = 1e-3


def native_sharpness_of(detector: str, embedder: str, data: dict[str, np.ndarray]) -> np.ndarray:
    """Re-cut the aligned crops from the cached landmarks and measure native sharpness."""
    from bench.celeba import detect_all
    from identity.align import align_faces
    from identity.embed import load_embedder
    from identity.faces import Faces
    from identity.quality import native_sharpness
    from identity.settings import Settings

    det = detect_all(detector, CACHE)
    template = load_embedder(embedder, Settings(models_dir=MODELS)).template
    paths, _ = celeba_labels()
    out = np.zeros(len(paths), np.float32)
    idx = np.flatnonzero(data["found"])
    for s in range(0, len(idx), 64):
        rows = idx[s : s + 64]
        images = [cv2.imread(str(paths[i])) for i in rows]
        faces = Faces(
            boxes=det["boxes"][rows],
            landmarks=det["landmarks"][rows],
            scores=det["scores"][rows],
            image_index=np.arange(len(rows)),
        )
        crops = align_faces(images, faces, template)
        out[rows] = native_sharpness(crops, faces.inter_ocular, template)[1]
    return out


def signals(data: dict[str, np.ndarray], native: np.ndarray) -> dict[str, np.ndarray]:
    pose = np.abs(data["pose"][:, :2]).max(axis=1)
    out = {
        "fused (product, identity/quality.py)": data["quality"],
        "detector score": data["det_score"],
        "size (eye distance)": data["iod"],
        "pose (-max |yaw|, |pitch|)": -pose,
        "sharpness of the crop (product)": data["sharpness"],
        "sharpness at native resolution": native,
        "embedding norm": data["norms"],
    }
    if "emb_flip" in data:
        e = data["emb"]
        out["stability (flip, 2 px shift)"] = (
            (e * data["emb_flip"]).sum(1) + (e * data["emb_shift"]).sum(1)
        ) / 2
    return out


def features(sig: dict[str, np.ndarray]) -> np.ndarray:
    keys = [
        "detector score",
        "pose (-max |yaw|, |pitch|)",
        "sharpness at native resolution",
        "embedding norm",
        "stability (flip, 2 px shift)",
    ]
    cols = [sig[k] for k in keys if k in sig] + [
        np.log(np.maximum(sig["size (eye distance)"], 1.0))
    ]
    return np.stack(cols, axis=1).astype(np.float64)


def utility(emb: np.ndarray, ids: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Mean genuine cosine of each face with the other photos of its person among ``faces``."""
    out = np.full(len(emb), np.nan)
    for person in set(ids[faces].tolist()):
        rows = faces[ids[faces] == person]
        if len(rows) < 2:
            continue
        sims = emb[rows] @ emb[rows].T
        out[rows] = (sims.sum(1) - 1.0) / (len(rows) - 1)
    return out


def fitted_fusion(
    sig: dict[str, np.ndarray],
    emb: np.ndarray,
    ids: np.ndarray,
    found: np.ndarray,
    fold: np.ndarray,
    k: int,
) -> np.ndarray:
    """Least-squares utility predictor fitted on the faces of folds != k, applied to all."""
    x = features(sig)
    train = np.flatnonzero(found & (fold != k))
    u = utility(emb, ids, train)
    ok = train[np.isfinite(u[train])]
    mu, sd = x[ok].mean(0), x[ok].std(0) + 1e-9
    design = np.c_[np.ones(len(ok)), (x[ok] - mu) / sd]
    w, *_ = np.linalg.lstsq(design, u[ok], rcond=None)
    return np.c_[np.ones(len(x)), (x - mu) / sd] @ w


def erc(
    emb: np.ndarray,
    ids: np.ndarray,
    found: np.ndarray,
    quality_of_fold: Callable[[int], np.ndarray],
) -> list[float]:
    """FNMR at FMR 1e-3 (threshold from the other folds) after rejecting each fraction."""
    fold = folds_of(ids)
    errors = np.zeros(len(FRACTIONS))
    kept = np.zeros(len(FRACTIONS))
    for k in range(N_FOLDS):
        train = pairs_within(emb, found, ids, np.flatnonzero(fold != k), False, found_only=True)
        t = threshold_in_sorted(np.sort(train.scores[~train.same])[::-1], FMR)
        test = pairs_within(emb, found, ids, np.flatnonzero(fold == k), False, found_only=True)
        gen = test.same
        q = quality_of_fold(k)
        pair_q = np.minimum(q[test.i[gen]], q[test.j[gen]])
        order = np.argsort(pair_q, kind="mergesort")
        miss = (test.scores[gen] < t)[order]
        for f, frac in enumerate(FRACTIONS):
            drop = round(frac * len(order))
            errors[f] += miss[drop:].sum()
            kept[f] += len(order) - drop
    return (errors / kept).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", default="retinaface_mnet025+arcface_w600k_mbf_int8")
    args = parser.parse_args()
    detector, embedder = args.pipeline.split("+")
    data = embed_all(detector, embedder, CACHE)
    _, ids = celeba_labels()
    done = complete(data)
    found = data["found"].astype(bool) & done
    emb = data["emb"]
    sig = signals(data, native_sharpness_of(detector, embedder, data))
    fold = folds_of(ids)
    rows: list[list[object]] = []
    curves = {name: erc(emb, ids, found, lambda k, v=v: v) for name, v in sig.items()}
    curves["fused (fitted on the other folds)"] = erc(
        emb, ids, found, lambda k: fitted_fusion(sig, emb, ids, found, fold, k)
    )
    for name, fnmr in curves.items():
        cut = 1 - fnmr[2] / fnmr[0] if fnmr[0] > 0 else 0.0
        rows.append([name, *[f"{v:.4f}" for v in fnmr], f"{100 * cut:.0f}%"])
    print_table(
        ["signal", *[f"FNMR, {int(100 * f)}% rejected" for f in FRACTIONS], "FNMR cut at 10%"],
        rows,
        title=f"Error-versus-reject on celeba500 ({int(found.sum())} faces), {args.pipeline}, "
        f"FNMR at FMR {FMR:g} (threshold from the other folds), 5 held-out folds",
    )
    q = data["quality"][found]
    print(
        f"\nProduct quality: the gate 0.4 refuses {100 * np.mean(q < 0.4):.1f}% of celeba500 faces; "
        f"refusing at most 3% needs a gate <= {np.quantile(q, 0.03):.3f}. "
        f"'blurry' (crop sharpness < 0.4) on {100 * np.mean(data['sharpness'][found] < 0.4):.1f}% "
        f"of faces, at native resolution on {100 * np.mean(sig['sharpness at native resolution'][found] < 0.4):.1f}%."
    )
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
