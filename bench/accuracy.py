"""Verification accuracy on real faces, ours and face_recognition's side by side.

    python bench/celeba.py --pipelines <combos> --peer     # embed celeba500 once (cached)
    python bench/accuracy.py [--combos retinaface_mnet025+dlib_resnet_v1,...] [--no-peer] [--deepface]

The main table is celeba500 (4,929 photos of 500 people) in 5 identity-disjoint folds: for each
fold k the thresholds are read from the impostor pairs of the other four folds (400 people,
about 7.7 million pairs) and every pair of fold k (100 people: about 4,400 genuine and 480,000
impostor pairs) is decided with them; counts are pooled over the five folds. A photo whose face
was not found counts as a rejection in every pair it is part of. Columns: faces found, TAR at
FAR 1e-3 and 1e-4 with 95% Clopper-Pearson intervals and the FAR actually reached on the held-out
people, EER (mean over folds), and FNMR / FMR at the product default (ours: the threshold at
FAR 1e-3 fitted on the other folds; face_recognition: its fixed distance 0.6).

``--deepface`` adds the older table on deepface's 520 labelled pairs (``../shared/data/deepface/PAIRS.csv``):
- faces found (largest face per photo, out of 61 photos),
- AUC, EER, TAR at FAR 1e-2 (140 genuine / 380 impostor pairs: FARs below 1/380 cannot be
  measured here, so none are claimed),
- accuracy at a threshold calibrated on a DIFFERENT set: the face_recognition people
  (``../shared/data/face_recognition``, 5 people, 20 photos), never on the reported pairs,
- accuracy at the default threshold: ours decide at FAR 1e-3 with the shipped threshold
  (calibrated on celeba500, never on deepface); face_recognition at its distance 0.6,
- accuracy under identity-disjoint 2-fold cross-validation on deepface (threshold chosen on the
  pairs of one half of the people, accuracy measured on the other half, then swapped).

face_recognition runs its own pipeline (HOG detector upsampled once, 5-point shape predictor,
dlib ResNet) with its documented default distance 0.6 and, for fairness, calibrated the same way.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Pair,
    all_pairs,
    command_line,
    deepface_labels,
    deepface_pairs,
    face_recognition_people,
    print_table,
)
from identity.calibration import eer_of, roc_curve

DEFAULT_COMBOS = [
    "retinaface_mnet025+dlib_resnet_v1",
    "retinaface_mnet025+arcface_mobilefacenet_128",
    "retinaface_mnet025+arcface_w600k_mbf_int8",
    "scrfd_500m_kps+arcface_w600k_mbf_int8",
]
CELEBA_FARS = (1e-3, 1e-4)

Embed = Callable[[Path], np.ndarray | None]


def default_threshold(embedder: str, models_dir: Path) -> float:
    """The threshold our product decides with out of the box: the manifest's, at the default FAR
    (calibrated on the face_recognition people, never on deepface)."""
    from identity.calibration import threshold_for
    from identity.settings import Settings

    settings = Settings(models_dir=models_dir, data_dir=Path("/nonexistent-no-calibration"))
    return threshold_for(embedder, settings.default_far, settings)


def ours(detector: str, embedder: str, models_dir: Path) -> Embed:
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer
    from identity.settings import Settings

    settings = Settings(models_dir=models_dir, detector=detector, embedder=embedder)
    analyzer = FaceAnalyzer(settings)

    def embed(path: Path) -> np.ndarray | None:
        faces = analyzer.analyze([load_image(path, settings)])
        return faces.largest().embeddings[0] if len(faces) else None

    return embed


def face_recognition_peer() -> Embed:
    import face_recognition

    def embed(path: Path) -> np.ndarray | None:
        image = face_recognition.load_image_file(str(path))
        locations = face_recognition.face_locations(image, number_of_times_to_upsample=1)
        if not locations:
            return None
        largest = max(locations, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        return face_recognition.face_encodings(image, [largest])[0]

    return embed


def scores(
    pairs: list[Pair], emb: dict[Path, np.ndarray | None], distance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity (higher = same) of each pair with both faces found; misses score -inf."""
    sims, same = [], []
    for p in pairs:
        a, b = emb.get(p.a), emb.get(p.b)
        if a is None or b is None:
            s = -np.inf
        elif distance:
            s = -float(np.linalg.norm(a - b))  # face_recognition compares Euclidean distances
        else:
            s = float(a @ b)
        sims.append(s)
        same.append(p.same)
    return np.asarray(sims), np.asarray(same)


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    """Threshold with the highest accuracy on a calibration set (midpoint between scores)."""
    finite = np.unique(sims[np.isfinite(sims)])
    candidates = np.r_[finite[0] - 1e-6, (finite[:-1] + finite[1:]) / 2, finite[-1] + 1e-6]
    accs = [np.mean((sims >= t) == same) for t in candidates]
    return float(candidates[int(np.argmax(accs))])


def accuracy(sims: np.ndarray, same: np.ndarray, t: float) -> float:
    return float(np.mean((sims >= t) == same))


def two_fold_accuracy(
    pairs: list[Pair], sims: np.ndarray, same: np.ndarray, labels: dict[Path, str]
) -> float:
    people = sorted(set(labels.values()))
    halves = [set(people[0::2]), set(people[1::2])]
    accs, weights = [], []
    for cal, rep in ((0, 1), (1, 0)):

        def in_half(p: Pair, h: int) -> bool:
            return labels[p.a] in halves[h] and labels[p.b] in halves[h]

        cal_idx = np.array([in_half(p, cal) for p in pairs])
        rep_idx = np.array([in_half(p, rep) for p in pairs])
        t = best_threshold(sims[cal_idx], same[cal_idx])
        accs.append(accuracy(sims[rep_idx], same[rep_idx], t))
        weights.append(rep_idx.sum())
    return float(np.average(accs, weights=weights))


def evaluate(name: str, embed: Embed, distance: bool, default_t: float | None) -> list[object]:
    df_labels = deepface_labels()
    fr_labels = face_recognition_people()
    pairs = deepface_pairs()
    start = time.perf_counter()
    emb = {p: embed(p) for p in df_labels}
    elapsed = time.perf_counter() - start
    emb_fr = {p: embed(p) for p in fr_labels}
    found = sum(v is not None for v in emb.values())

    sims, same = scores(pairs, emb, distance)
    far, tar, thr = roc_curve(sims[same], sims[~same])
    auc = float(np.trapezoid(tar, far))
    eer, _ = eer_of(far, tar, thr)
    imp = np.sort(sims[~same])[::-1]
    t_far = np.nextafter(imp[int(0.01 * len(imp))], np.inf)
    tar_1e2 = float(np.mean(sims[same] >= t_far))

    cal_sims, cal_same = scores(all_pairs(fr_labels), emb_fr, distance)
    t_cal = best_threshold(cal_sims, cal_same)
    row: list[object] = [
        name,
        f"{found}/{len(df_labels)}",
        auc,
        eer,
        tar_1e2,
        accuracy(sims, same, t_cal),
        two_fold_accuracy(pairs, sims, same, df_labels),
    ]
    row.append(accuracy(sims, same, default_t) if default_t is not None else "-")
    row.append(round(elapsed, 1))
    return row


def celeba_row(
    name: str,
    data: dict[str, np.ndarray],
    distance: bool,
    default: float | None,
    ms_per_face: str,
    subset: np.ndarray,
) -> list[object]:
    from bench.celeba import celeba_labels
    from bench.heldout import held_out

    _, ids = celeba_labels()
    found = data["found"].astype(bool)
    h = held_out(
        data["emb"][subset], found[subset], ids[subset], CELEBA_FARS, distance, default=default
    )
    row: list[object] = [name, f"{int(found[subset].sum())}/{int(subset.sum())}"]
    for f in CELEBA_FARS:
        tar, lo, hi = h.tar(f)
        reached, upper = h.far_reached(f)
        row += [f"{tar:.4f} ({lo:.4f}-{hi:.4f})", f"{reached:.1e} (<= {upper:.1e})"]
    fnmr = 1 - h.default_gen_accepted / h.n_genuine
    fmr = h.default_imp_accepted / h.n_impostor
    row += [float(np.mean(h.eers)), f"{fnmr:.4f} / {fmr:.1e}", ms_per_face]
    return row


def celeba_table(combos: list[str], peer: bool, cache: Path) -> None:
    """One table of ours on every identity cached, and, when face_recognition (2 s a photo on
    the busy machine) covers fewer people, a side-by-side table on the people both cover."""
    from bench.celeba import celeba_labels, complete, embed_all, peer_all

    _, ids = celeba_labels()
    runs: list[tuple[str, dict[str, np.ndarray], bool, float | None, str]] = []
    for combo in combos:
        detector, embedder = combo.split("+")
        data = embed_all(detector, embedder, cache, perturb=False)
        ms = f"{1000 * float(data['detect_s_per_photo']):.0f} + {1000 * float(data['embed_s_per_face']):.0f}"
        runs.append((f"ours {detector} + {embedder}", data, False, None, ms))
    if peer:
        data = peer_all(cache)
        runs.append(
            (
                "face_recognition 1.3 (HOG + dlib ResNet)",
                data,
                True,
                -0.6,
                f"{1000 * float(data['seconds_per_photo']):.0f} (all)",
            )
        )
    headers = [
        "pipeline",
        "faces",
        "TAR@FAR1e-3 (95% CI)",
        "FAR reached (95% upper)",
        "TAR@FAR1e-4 (95% CI)",
        "FAR reached (95% upper)",
        "EER (mean of folds)",
        "FNMR / FMR at default",
        "ms detect + embed",
    ]
    masks = [complete(r[1]) for r in runs]
    common = np.logical_and.reduce(masks)

    def people(subset: np.ndarray) -> int:
        return len(set(ids[subset].tolist()))

    title = (
        "in 5 identity-disjoint folds: thresholds fitted on 4 folds, decisions counted on "
        "the 5th, pooled"
    )
    if not all(m.all() for m in masks):
        # each pipeline on every person it has embedded so far (resumable cache), then all of
        # them side by side on the people they share
        rows = [
            [*celeba_row(r[0], r[1], r[2], r[3], r[4], m), people(m)]
            for r, m in zip(runs, masks, strict=True)
            if not r[2]
        ]
        print_table([*headers, "people"], rows, title=f"Verification on celeba500 {title}")
    rows = [
        celeba_row(name, data, dist, default, ms, common) for name, data, dist, default, ms in runs
    ]
    print_table(
        headers,
        rows,
        title=f"Verification on celeba500, {people(common)} people "
        f"({int(common.sum())} photos), side by side, {title}",
    )


def deepface_table(combos: list[str], models_dir: Path, peer: bool) -> None:
    rows = []
    for combo in combos:
        detector, embedder = combo.split("+")
        try:
            rows.append(
                evaluate(
                    f"ours {detector} + {embedder}",
                    ours(detector, embedder, models_dir),
                    False,
                    default_threshold(embedder, models_dir),
                )
            )
        except Exception as exc:
            print(f"skipped {combo}: {exc}", file=sys.stderr)
    if peer:
        rows.append(
            evaluate(
                "face_recognition 1.3 (HOG + dlib ResNet)", face_recognition_peer(), True, -0.6
            )
        )
    print_table(
        [
            "pipeline",
            "faces",
            "AUC",
            "EER",
            "TAR@FAR1e-2",
            "acc (cal. on fr people)",
            "acc (2-fold by id)",
            "acc @ default threshold",
            "embed s (61 photos)",
        ],
        rows,
        title="Verification on deepface PAIRS.csv (520 pairs: 140 genuine, 380 impostor)",
    )


def main() -> None:
    from bench.celeba import CACHE

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--combos", default=",".join(DEFAULT_COMBOS))
    parser.add_argument(
        "--models-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "models"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    parser.add_argument("--deepface", action="store_true", help="also the deepface PAIRS.csv table")
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    args = parser.parse_args()
    combos = list(filter(None, args.combos.split(",")))
    celeba_table(combos, not args.no_peer, args.cache_dir)
    if args.deepface:
        deepface_table(combos, args.models_dir, not args.no_peer)
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
