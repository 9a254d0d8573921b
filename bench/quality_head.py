"""The quality heads the ArcFace embedders ship (identity/recognisability.py): how they are
fitted, how far they go, and the files themselves.

    python bench/celeba.py --pipelines retinaface_mnet025+arcface_w600k_mbf_int8   # embed once
    python bench/quality_head.py [--pipeline retinaface_mnet025+arcface_mobilefacenet_128]

CR-FIQA's idea without its training: the embedder's last feature map (512 x 7 x 7, the tensor
before the global depthwise convolution; FEATURE_MAPS names it per graph) is read beside the
embedding, pooled to each channel's mean, standard deviation and maximum, and a ridge regression
from those 1,536 values and the norm (or with the factor formula's signals as well) predicts a
face's share of genuine comparisons above the FMR 1e-3 threshold (sigmoid-softened, scale 0.1),
all fitted on four identity-disjoint folds and scored by the error-versus-reject curve of
bench/erc.py on the fifth. Each crop runs alone, as the product runs the int8 default (its
activation scales are per tensor). The pooled maps are cached in .bench_cache/celeba500.

Then, for an embedder that ships a head, out of celeba500: deepface's 520 pairs degraded the way
``bench/quality.py`` degrades them (its seeds), at the pipeline's shipped threshold for FAR 1e-3,
ordered by the product's score with the shipped head, by the factor formula it replaced, and by
the norm.

    python bench/quality_head.py --write models/weights/arcface_w600k_mbf_int8.quality_head.npz
    python bench/quality_head.py --pipeline retinaface_mnet025+arcface_mobilefacenet_128 \
        --write models/weights/arcface_mobilefacenet_128.quality_head.npz

writes a head the product ships (identity/recognisability.py): the ridge on the norm and the
pooled map fitted on all of celeba500, and prints the SHA-256 and the points its manifest names:
quality 0.1 (the default enrollment gate) at the 2.5th percentile of the held-out folds'
predictions (each face scored by the ridge of the other folds, as a face the head never saw) and
1 at the 30th, 0 at a predicted share of 0. So the gate refuses about 2.5% of ordinary faces as
it does under the factor formula, the score keeps ordering faces up to the 30% an
error-versus-reject curve rejects and below the gate too, and a typical face scores 1.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.celeba import CACHE, aligned, celeba_labels, complete, detect_all, embed_all
from bench.common import MODELS, command_line, deepface_pairs
from bench.degradations import CLEAN, DEGRADATIONS, Image
from bench.erc import FMR, FRACTIONS, erc, mislabelled, print_erc
from bench.heldout import N_FOLDS, folds_of, pairs_within
from bench.quality_study import Face, Probe, Study, mixed_pairs, one_sided_pairs
from identity.calibration import threshold_in_sorted
from identity.registry import get_manifest

DETECTOR, EMBEDDER = "retinaface_mnet025", "arcface_w600k_mbf_int8"
# Where each embedder's head reads: its last feature map, before the global depthwise conv.
FEATURE_MAPS = {
    "arcface_w600k_mbf_int8": "509",  # the last PReLU, 512 x 7 x 7
    "arcface_mobilefacenet_128": "/conv2/conv2.2/Clip_output_0",  # the last ReLU6, 512 x 7 x 7
}
ALPHA, TAU = 1000.0, 0.1
# The shipped head's points: quality 0.1 (the default enrollment gate) at this quantile of held-out
# predictions and 1 at the next; 0 at a predicted share of 0.
POINTS_Q = (0.025, 0.30)


class FeatureMaps:
    """The embedder's graph with its last feature map as a second output, pooled per channel."""

    def __init__(self, embedder: str) -> None:
        import onnxruntime as ort

        from identity.registry import resolve
        from identity.runtime import with_outputs

        resolved = resolve(embedder, MODELS, None)
        self.manifest, self.output = resolved.manifest, FEATURE_MAPS[embedder]
        self.session = ort.InferenceSession(
            with_outputs(resolved.read_bytes(), [self.output]), providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    def pooled(self, crop: np.ndarray) -> np.ndarray:
        """(3C,) for one aligned crop (1, S, S, 3), run alone (as an int8 graph must be)."""
        from identity.preprocess import to_tensor
        from identity.recognisability import pooled

        fmap = self.session.run([self.output], {self.input: to_tensor(crop, self.manifest)})[0]
        return pooled(fmap)[0]


def pooled_maps(
    data: dict[str, np.ndarray], detector: str = DETECTOR, embedder: str = EMBEDDER
) -> np.ndarray:
    """(N, 3C) pooled last feature map of each celeba500 face (zeros where no face was found),
    cached."""
    path = CACHE / f"{detector}+{embedder}.feature_map.npy"
    if path.exists():
        return np.load(path)
    maps = FeatureMaps(embedder)
    template = maps.manifest.alignment or "arcface_112"
    det = detect_all(detector, CACHE)
    paths, _ = celeba_labels()
    rows = np.flatnonzero(data["found"])
    first = maps.pooled(aligned(det, paths, rows[:1], template)[1])
    out = np.zeros((len(paths), len(first)), np.float32)
    for i in rows:
        out[i] = maps.pooled(aligned(det, paths, np.array([i]), template)[1])
    np.save(path, out)
    return out


def share_matched(
    emb: np.ndarray, ids: np.ndarray, found: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Per face among ``rows``: the mean over its genuine partners of sigmoid((s - t) / TAU), t
    the FMR 1e-3 threshold of these rows' impostor pairs; NaN for a face without a partner."""
    pairs = pairs_within(emb, found, ids, rows, False, found_only=True)
    t = threshold_in_sorted(np.sort(pairs.scores[~pairs.same])[::-1], FMR)
    gen = pairs.same
    soft = 1 / (1 + np.exp(-(pairs.scores[gen] - t) / TAU))
    total, count = np.zeros(len(emb)), np.zeros(len(emb))
    for side in (pairs.i[gen], pairs.j[gen]):
        np.add.at(total, side, soft)
        np.add.at(count, side, 1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass
class Ridge:
    """A ridge regression on standardised inputs: what identity/recognisability.py applies."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def __call__(self, new: np.ndarray) -> np.ndarray:
        return np.asarray((new - self.mean) / self.scale @ self.weights + self.bias)


def fit_ridge(x: np.ndarray, y: np.ndarray) -> Ridge:
    """Ridge on standardised inputs (strength ALPHA)."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + ALPHA * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return Ridge(mu, sd, w, float(y.mean()))


def fitted_on(
    rows: np.ndarray, x: np.ndarray, emb: np.ndarray, ids: np.ndarray, found: np.ndarray
) -> Ridge:
    y = share_matched(emb, ids, found, rows)
    ok = rows[np.isfinite(y[rows])]
    return fit_ridge(x[ok], y[ok])


def ridge_of_fold(
    x: np.ndarray, emb: np.ndarray, ids: np.ndarray, found: np.ndarray, fold: np.ndarray
) -> Callable[[int], np.ndarray]:
    """Per held-out fold k: a ridge fitted on the faces of the other folds, applied to all."""
    fitted: dict[int, np.ndarray] = {}

    def of(k: int) -> np.ndarray:
        if k not in fitted:
            train = np.flatnonzero(found & (fold != k))
            fitted[k] = fitted_on(train, x, emb, ids, found)(x)
        return fitted[k]

    return of


@dataclass
class ScoredFace(Face):
    norm: float = 0.0
    factors: float = 0.0


class HeadStudy(Study):
    """bench/quality.py's study, each face also scored by the norm and by the factor formula
    the head replaced (identity/quality.py without the recognisability)."""

    def face(self, image: Image) -> Face | None:
        from identity.quality import assess_quality

        f = self.largest(image)
        if f is None:
            return None
        assert f.embedding_norms is not None
        without = {k: v for k, v in f.extra.items() if k != "recognisability"}
        factors = assess_quality(f.with_(extra=without), self.settings, embedder_name=self.embedder)
        assert factors.quality is not None
        return ScoredFace(
            **vars(self.face_of(f)),
            norm=float(f.embedding_norms[0]),
            factors=float(factors.quality[0]),
        )


def degraded_curves(
    found: dict[Any, Face | None], probes: list[Probe], t: float
) -> dict[str, list[float]]:
    """FNMR at threshold t after rejecting the lowest fractions of genuine pairs, per score."""
    out: dict[str, list[float]] = {}
    for name, attr in (
        ("factors (the score before the head)", "factors"),
        ("embedding norm", "norm"),
        ("product's score (the shipped head)", "q_mesh"),
    ):
        sims, quality = [], []
        for p in probes:
            fa, fb = found[p.a], found[p.b]
            if p.same and fa is not None and fb is not None:
                sims.append(float(fa.embedding @ fb.embedding))
                quality.append(min(getattr(fa, attr), getattr(fb, attr)))
        miss = (np.array(sims) < t)[np.argsort(quality, kind="mergesort")]
        out[name] = [float(miss[round(f * len(miss)) :].mean()) for f in FRACTIONS]
    return out


def out_of_celeba(detector: str, embedder: str) -> None:
    from identity.calibration import threshold_for
    from identity.settings import Settings

    t = threshold_for(embedder, FMR, Settings(models_dir=MODELS, data_dir=Path("/nonexistent")))
    pairs = deepface_pairs()
    photos = sorted({p.a for p in pairs} | {p.b for p in pairs})
    found = HeadStudy(detector, embedder).run(photos, [CLEAN, *DEGRADATIONS])
    one_sided = [pr for name in DEGRADATIONS for pr in one_sided_pairs(pairs, name)]
    for what, probes in (
        (
            "every pair with one or both sides degraded (bench/quality.py's mixed set)",
            mixed_pairs(pairs),
        ),
        ("clean first photo against each degradation of the second", one_sided),
    ):
        genuine = sum(
            1 for p in probes if p.same and found[p.a] is not None and found[p.b] is not None
        )
        print_erc(
            degraded_curves(found, probes, t),
            f"deepface's pairs, {what}: {genuine} genuine pairs with both faces found, "
            f"FNMR at the shipped threshold {t:.4f} (FAR {FMR:g}); the head as shipped",
        )
        print()


def head_points(
    x: np.ndarray, emb: np.ndarray, ids: np.ndarray, found: np.ndarray, fold: np.ndarray
) -> list[list[float]]:
    """The points of a head fitted on ``found`` (identity/quality.py interpolates between them):
    its faces' scores, each from a ridge fitted without the face's fold (as a face the head never
    saw), at the POINTS_Q quantiles map to the default gate and to 1."""
    from identity.settings import Settings

    held_out = ridge_of_fold(x, emb, ids, found, fold)
    scores = np.full(len(x), np.nan)
    for k in np.unique(fold[found]):
        scores[fold == k] = held_out(int(k))[fold == k]
    gate_at, full_at = np.quantile(scores[found], POINTS_Q)
    gate = Settings.model_fields["enroll_min_quality"].default
    return [[0.0, 0.0], [round(float(gate_at), 4), gate], [round(float(full_at), 4), 1.0]]


def held_out_heads(
    x: np.ndarray, emb: np.ndarray, ids: np.ndarray, found: np.ndarray
) -> dict[int, tuple[np.ndarray, list[list[float]]]]:
    """Per fold k, what shipping a head fitted without fold k gives: its recognisability of
    every face and its points, taken from the other folds alone as write_head takes them."""
    fold = folds_of(ids)
    out = {}
    for k in range(N_FOLDS):
        train = found & (fold != k)
        ridge = fitted_on(np.flatnonzero(train), x, emb, ids, found)
        out[k] = (np.clip(ridge(x), 0, 1), head_points(x, emb, ids, train, fold))
    return out


def write_head(
    path: Path, x: np.ndarray, emb: np.ndarray, ids: np.ndarray, found: np.ndarray
) -> None:
    """The shipped head: the ridge fitted on every face, and its points from held-out scores."""
    ridge = fitted_on(np.flatnonzero(found), x, emb, ids, found)
    points = head_points(x, emb, ids, found, folds_of(ids))
    np.savez(path, mean=ridge.mean, scale=ridge.scale, weights=ridge.weights, bias=ridge.bias)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"wrote {path} ({path.stat().st_size} bytes) from {int(found.sum())} faces")
    print(f'sha256 = "{digest}"')
    print(f"points = {points}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", default=f"{DETECTOR}+{EMBEDDER}")
    parser.add_argument("--write", type=Path, help="write the shipped head here, then stop")
    args = parser.parse_args()
    detector, embedder = args.pipeline.split("+")
    if embedder not in FEATURE_MAPS:
        parser.error(f"no feature map known for {embedder}; known: {sorted(FEATURE_MAPS)}")
    data = embed_all(detector, embedder, CACHE)
    paths, ids = celeba_labels()
    found = data["found"].astype(bool) & complete(data)
    emb, fold = data["emb"], folds_of(ids)
    maps = pooled_maps(data, detector, embedder)
    if args.write:
        write_head(args.write, np.c_[data["norms"], maps], emb, ids, found)
        return
    pose = np.abs(data["pose"][:, :2]).max(axis=1)
    signals = np.c_[
        data["det_score"],
        pose,
        np.log(np.maximum(data["iod"], 1)),
        data["sharpness"],
        data["norms"],
    ]
    inputs: dict[str, np.ndarray | None] = {
        "embedding norm (no fit)": None,
        "ridge: norm + pooled feature map": np.c_[data["norms"], maps],
        "ridge: product's signals + pooled feature map": np.c_[signals, maps],
    }
    clean = found & ~np.isin([p.name for p in paths], mislabelled())
    title = f"Error-versus-reject on celeba500 ({{}} faces), {args.pipeline}, FNMR at FMR "
    title += f"{FMR:g}, {N_FOLDS} held-out folds, fitted on the other folds"
    for keep in (found, clean):
        curves = {}
        for name, x in inputs.items():
            score = (
                (lambda k: data["norms"]) if x is None else ridge_of_fold(x, emb, ids, keep, fold)
            )
            curves[name] = erc(emb, ids, keep, score)
        left_out = int((found & ~keep).sum())
        label = f", without the {left_out} faces in celeba500_mislabelled.csv" if left_out else ""
        print_erc(curves, title.format(int(keep.sum())) + label)
        print()
    if get_manifest(embedder).extra.get("quality_head"):
        out_of_celeba(detector, embedder)
    print(f"`{command_line()}`")


if __name__ == "__main__":
    main()
