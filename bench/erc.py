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

The curves are printed twice: on celeba500's labels as published, and without the photos listed
in ``celeba500_mislabelled.csv`` (another person than the rest of their identity's photos, whose
"genuine" errors no quality score should predict; docs/calibration.md).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.celeba import CACHE, celeba_labels, complete, embed_all
from bench.common import MODELS, command_line, print_table
from bench.heldout import N_FOLDS, folds_of, pairs_within
from identity.calibration import threshold_in_sorted

FRACTIONS = (0.0, 0.05, 0.10, 0.20, 0.30)
FMR = 1e-3
# The gate must refuse at most 3% of ordinary faces; it is fitted at 2.5% of the fitting folds'
# faces, a margin for how much the refused share varies between sets of people.
GATE_MAX_REFUSED, GATE_FIT_Q = 0.03, 0.025
# the manifests' feature_norm_range: these quantiles of celeba500's embedding norms
NORM_LO_Q, NORM_HI_Q = 0.01, 0.1
MISLABELLED = Path(__file__).with_name("celeba500_mislabelled.csv")
PRODUCT = "fused (product, identity/quality.py)"


def recut(detector: str, embedder: str, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Re-cut the aligned crops from the cached landmarks and score them with the current
    identity/quality.py: sharpness at native resolution, the product's quality (its norm range or
    its shipped quality head from the manifest), the product's quality without the norm factor,
    and, for an embedder with a head, its pooled feature maps, the head's recognisability and the
    factor beside it."""
    from bench.celeba import aligned, detect_all
    from identity.embed import load_embedder
    from identity.quality import DET_SCORE_RAMP, assess_quality, native_sharpness, ramp
    from identity.settings import Settings

    det = detect_all(detector, CACHE)
    settings = Settings(models_dir=MODELS)
    runner = load_embedder(embedder, settings)
    template = runner.template
    paths, _ = celeba_labels()
    keys = ("native", "quality", "quality_no_norm", "base")
    out = {k: np.zeros(len(paths), np.float32) for k in keys}
    head = getattr(runner, "head", None)
    if head is not None:
        from bench.quality_head import pooled_maps

        out["maps"] = pooled_maps(data, detector, embedder)
        out["recognisability"] = head.of_pooled(out["maps"], data["norms"])
    out["base"] = ramp(data["det_score"], *DET_SCORE_RAMP).astype(
        np.float32
    )  # f_det, beside f_recog
    idx = np.flatnonzero(data["found"])
    for s in range(0, len(idx), 64):
        rows = idx[s : s + 64]
        faces, crops = aligned(det, paths, rows, template)
        out["native"][rows] = native_sharpness(crops, faces.inter_ocular, template)[1]
        faces = faces.with_(crops=crops, embeddings=data["emb"][rows])
        out["quality_no_norm"][rows] = assess_quality(faces, settings).quality
        faces = faces.with_(embedding_norms=data["norms"][rows])
        if head is not None:
            faces = faces.with_(extra={"recognisability": out["recognisability"][rows]})
        out["quality"][rows] = assess_quality(faces, settings, embedder_name=embedder).quality
    return out


def signals(data: dict[str, np.ndarray], cut: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    pose = np.abs(data["pose"][:, :2]).max(axis=1)
    native = cut["native"]
    out = {
        PRODUCT: cut["quality"],
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


def held_out_product(
    data: dict[str, np.ndarray], cut: dict[str, np.ndarray], found: np.ndarray, fold: np.ndarray
) -> dict[int, np.ndarray] | None:
    """Per fold k, the product's quality with what the manifest fits on all of celeba500 fitted
    on the other folds instead: the quality head and its points (bench/quality_head.py), or the
    norm range (1st and 10th percentiles); None when neither is a quality factor."""
    from identity.quality import ramp, recognisability_factor

    if "recognisability" in cut:
        from bench.celeba import celeba_labels
        from bench.quality_head import held_out_heads

        x = np.c_[data["norms"], cut["maps"]]
        heads = held_out_heads(x, data["emb"], celeba_labels()[1], found)
        return {k: cut["base"] * recognisability_factor(r, p) for k, (r, p) in heads.items()}
    if np.array_equal(cut["quality"], cut["quality_no_norm"]):
        return None
    out = {}
    for k in range(N_FOLDS):
        lo, hi = np.quantile(data["norms"][found & (fold != k)], [NORM_LO_Q, NORM_HI_Q])
        out[k] = cut["quality_no_norm"] * ramp(data["norms"], float(lo), float(hi))
    return out


def mislabelled() -> list[str]:
    """celeba500 photos that show someone other than their identity's other photos, found as the
    faces no genuine partner matches under any of the three embedders and confirmed by eye; the
    list keeps only the faces that are plainly another person (docs/calibration.md)."""
    with MISLABELLED.open(newline="") as fh:
        return [row["file"] for row in csv.DictReader(fh)]


def curves(
    sig: dict[str, np.ndarray],
    emb: np.ndarray,
    ids: np.ndarray,
    found: np.ndarray,
    fold: np.ndarray,
    held_out: dict[int, np.ndarray] | None,
) -> dict[str, list[float]]:
    out = {name: erc(emb, ids, found, lambda k, v=v: v) for name, v in sig.items()}
    if held_out is not None:
        fitted = "head and points" if PRODUCT not in sig else "norm range"
        out[f"fused (product, {fitted} fitted on the other folds)"] = erc(
            emb, ids, found, lambda k: held_out[k]
        )
    out["least squares on all signals (fitted on the other folds)"] = erc(
        emb, ids, found, lambda k: fitted_fusion(sig, emb, ids, found, fold, k)
    )
    return out


def print_erc(found_curves: dict[str, list[float]], title: str) -> None:
    rows: list[list[object]] = []
    for name, fnmr in found_curves.items():
        drop = 1 - fnmr[2] / fnmr[0] if fnmr[0] > 0 else 0.0
        rows.append([name, *[f"{v:.4f}" for v in fnmr], f"{100 * drop:.1f}%"])
    print_table(
        ["signal", *[f"FNMR, {int(100 * f)}% rejected" for f in FRACTIONS], "FNMR cut at 10%"],
        rows,
        title=title,
    )


def print_gate(
    cut: dict[str, np.ndarray],
    data: dict[str, np.ndarray],
    found: np.ndarray,
    fold: np.ndarray,
    held_out: dict[int, np.ndarray] | None,
) -> None:
    """The enrollment gate from the same folds: per fold, the gate that refuses 2.5% of the other
    folds' faces, and what it refuses on the fold itself (must be at most 3%)."""
    from identity.settings import Settings

    shipped = Settings().enroll_min_quality
    q_all = cut["quality"]
    refused, gates = 0, []
    for k in range(N_FOLDS):
        q = held_out[k] if held_out is not None else q_all
        train, test = found & (fold != k), found & (fold == k)
        gate = float(np.quantile(q[train], GATE_FIT_Q, method="lower"))
        gates.append(gate)
        refused += int((q[test] < gate).sum())
    q = q_all[found]
    print(
        f"\nEnrollment gate: fitted on 4 folds to refuse {100 * GATE_FIT_Q:.1f}% of "
        f"their faces, gates {', '.join(f'{g:.3f}' for g in gates)}; on the held-out folds they "
        f"refuse {100 * refused / found.sum():.1f}%. The shipped gate {shipped} refuses "
        f"{100 * np.mean(q < shipped):.1f}% of celeba500 faces (fitted on all of them the gate "
        f"is {np.quantile(q, GATE_FIT_Q, method='lower'):.3f}; at most 3% needs <= "
        f"{np.quantile(q, GATE_MAX_REFUSED, method='lower'):.3f}). 'blurry' (crop sharpness < 0.4) "
        f"on {100 * np.mean(data['sharpness'][found] < 0.4):.1f}% of faces, at native resolution "
        f"on {100 * np.mean(cut['native'][found] < 0.4):.1f}%."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", default="retinaface_mnet025+arcface_w600k_mbf_int8")
    args = parser.parse_args()
    detector, embedder = args.pipeline.split("+")
    data = embed_all(detector, embedder, CACHE)
    paths, ids = celeba_labels()
    done = complete(data)
    found = data["found"].astype(bool) & done
    emb = data["emb"]
    cut = recut(detector, embedder, data)
    sig = signals(data, cut)
    if "recognisability" in cut:
        # the shipped head was fitted on all of celeba500: only its held-out refit is reported
        del sig[PRODUCT]
    fold = folds_of(ids)
    held_out = held_out_product(data, cut, found, fold)
    title = f"Error-versus-reject on celeba500 ({{}} faces), {args.pipeline}, FNMR at FMR {FMR:g} "
    title += "(threshold from the other folds), 5 held-out folds"
    print_erc(curves(sig, emb, ids, found, fold, held_out), title.format(int(found.sum())))
    # The same on corrected labels: faces that show another person than the rest of their
    # identity's photos make "genuine" errors no quality score can (or should) predict.
    clean = found & ~np.isin([p.name for p in paths], mislabelled())
    print()
    print_erc(
        curves(sig, emb, ids, clean, fold, held_out),
        title.format(int(clean.sum())) + f", without the {int((found & ~clean).sum())} faces in "
        f"{MISLABELLED.name}",
    )
    print_gate(cut, data, found, fold, held_out)
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
