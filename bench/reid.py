"""Person re-ID on real pedestrians: cross-frame rank-1 and mAP, one line per model.

    python bench/reid.py [--data DIR] [--models osnet_x0_25,dino_vits16_random,colour_hist]

``--data`` is any folder of MOTChallenge sequences (seqinfo.ini, img1/*.jpg, gt/gt.txt); the
default is ``../shared/data/mot`` beside the repository (5 MOT17 sequences, 4-8 frames each).
Every visible ground-truth pedestrian (class 1, flag 1, visibility >= 0.5, at least 32 px tall)
is a query; its gallery is the crops of the same sequence in other frames; same track id =
same person.

Side by side:
- ``osnet_x0_25``: OSNet x0.25 trained on MSMT17 (ONNX, ``osnet_x0_25_msmt17`` manifest);
- ``dino_vits16_random``: our DINO ViT-S/16 descriptor path (CLS token) with random weights,
  the control that says how much comes from the architecture and pixels alone (the official
  DINO weights need ``identity models pull dino_vits16``; with them in IDENTITY_MODELS_DIR or
  the cache, ``dino_vits16`` runs too);
- ``colour_hist``: HSV stripe histograms, the classic hand-made re-ID baseline.

Consecutive frames of a track look alike, so these numbers are an easy, same-camera setting:
they rank methods against each other, not against cross-camera re-ID benchmarks.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from identity.body.evaluation import (
    ReIDSet,
    colour_histograms,
    cross_frame_scores,
    load_mot,
)
from identity.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mot"
DEFAULT_MODELS = REPO.parent / "shared" / "models"


def embed_with(model: str, data: ReIDSet, settings: Settings) -> np.ndarray:
    if model == "colour_hist":
        return colour_histograms(data.crops)
    if model == "osnet_x0_25":
        from identity.body import load_body_embedder

        return load_body_embedder("osnet_x0_25_msmt17", settings).embed(data.crops)[0]
    if model.endswith("_random"):
        from identity.body.vit import DinoViTDescriptor
        from models.registry import get_manifest

        return DinoViTDescriptor.random(get_manifest(model.removesuffix("_random"))).embed(
            data.crops
        )[0]
    from identity.body import load_body_embedder

    return load_body_embedder(model, settings).embed(data.crops)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    parser.add_argument(
        "--models", default="osnet_x0_25,dino_vits16_random,colour_hist",
        help="comma-separated: osnet_x0_25, dino_vits16_random, dino_vitb16_random, colour_hist, "
        "or any body embedder manifest name (dino_vits16 once pulled)",
    )
    parser.add_argument("--min-visibility", type=float, default=0.5)
    args = parser.parse_args(argv)

    settings = Settings(models_dir=args.models_dir)
    t0 = time.perf_counter()
    data = load_mot(args.data, min_visibility=args.min_visibility)
    print(f"$ python bench/reid.py {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(
        f"data: {args.data} ({', '.join(data.sequences)}): {len(data)} crops, "
        f"{len(np.unique(data.track))} tracks, loaded in {time.perf_counter() - t0:.1f} s"
    )
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        t = time.perf_counter()
        emb = embed_with(model, data, settings)
        scores = cross_frame_scores(emb, data)
        print(
            f"{model:<20} rank-1 {scores['rank1']:.3f} mAP {scores['mAP']:.3f}   "
            f"({int(scores['queries'])} queries, {time.perf_counter() - t:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
