"""Calibrate each shipped detector + embedder pipeline on celeba500 and write the records the
product decides with (``models/calibration/<detector>+<embedder>.json``).

    python bench/celeba.py --pipelines retinaface_mnet025+dlib_resnet_v1,...   # embed once
    python bench/calibrate.py [--pipelines ...] [--write]

Thresholds come from the empirical impostor distribution of every pair of different people
among the faces found (no distribution fit), at FARs 1e-1 .. 1e-6; a FAR is kept only where at
least 3/FAR impostor pairs stand behind it, and each carries the upper limit of its 95%
Clopper-Pearson interval. The shipped record uses all 500 identities; how well thresholds fitted
this way hold on people they were not fitted on is ``bench/accuracy.py`` (identity-disjoint
folds). Prints one table per pipeline; ``--write`` stores the records.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.celeba import CACHE, celeba_labels, complete, embed_all
from bench.common import command_line, print_table
from identity.calibration import SHIPPED_DIR, WIDE_FARS, CalibrationReport, evaluate, write_record

PIPELINES = [
    "retinaface_mnet025+dlib_resnet_v1",
    "retinaface_mnet025+arcface_mobilefacenet_128",
    "retinaface_mnet025+arcface_w600k_mbf_int8",
]


def pair_scores_blocked(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor cosine similarities of all pairs, a block of rows at a time (the
    full 4,929 x 4,929 upper triangle with its index arrays would need several GB)."""
    gen, imp = [], []
    for s in range(0, len(emb), 512):
        block = emb[s : s + 512] @ emb.T
        for r in range(len(block)):
            i = s + r
            row, same = block[r, i + 1 :], labels[i + 1 :] == labels[i]
            gen.append(row[same])
            imp.append(row[~same])
    return np.concatenate(gen).astype(np.float64), np.concatenate(imp).astype(np.float64)


def calibrate(combo: str, cache: Path, subset: np.ndarray | None = None) -> CalibrationReport:
    """The record of ``combo`` on celeba500 (or on the photos in ``subset``)."""
    detector, embedder = combo.split("+")
    data = embed_all(detector, embedder, cache, perturb=False)
    _, ids = celeba_labels()
    done = complete(data)
    keep = data["found"].astype(bool) & done & (True if subset is None else subset)
    genuine, impostor = pair_scores_blocked(data["emb"][keep], ids[keep])
    people = len(set(ids[done].tolist()))
    name = "celeba500" if done.all() else f"celeba500 (first {people} identities)"
    return evaluate(
        embedder,
        genuine,
        impostor,
        WIDE_FARS,
        int(keep.sum()),
        len(set(ids[keep])),
        detector=detector,
        set_name=name,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--write", action="store_true", help=f"write records to {SHIPPED_DIR}")
    args = parser.parse_args()
    for combo in filter(None, args.pipelines.split(",")):
        report = calibrate(combo, args.cache_dir)
        rows: list[list[object]] = [
            [
                f"{p.far:.0e}",
                f"{p.threshold:.4f}",
                p.impostors_above,
                f"{p.far_upper_95:.2e}" if p.far_upper_95 is not None else "-",
                f"{p.tar:.4f}",
                f"{p.tar_ci_95[0]:.4f}-{p.tar_ci_95[1]:.4f}" if p.tar_ci_95 else "-",
                "yes" if p.reliable else "no (fewer than 3/FAR impostor pairs)",
            ]
            for p in report.points
        ]
        print_table(
            ["FAR", "threshold", "impostors >= t", "FAR 95% upper", "TAR", "TAR 95% CI", "offered"],
            rows,
            title=(
                f"{combo} on celeba500: {report.n_images} faces, {report.n_identities} "
                f"identities, {report.n_genuine} genuine / {report.n_impostor} impostor pairs, "
                f"EER {report.eer:.4f}"
            ),
        )
        if args.write:
            print(f"wrote {write_record(report, SHIPPED_DIR / f'{combo}.json')}")
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
