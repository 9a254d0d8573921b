"""Person re-ID on real pedestrians: cross-frame (MOT) and cross-camera (cuhk01), per model.

    python bench/reid.py [--data DIR] [--models osnet_x0_25,dino_vits16_random,...]
                         [--dense-query-step 2] [--labels CSV] [--steps-model reid_intel_0287]
                         [--fusion-partner reid_intel_0288,osnet_x0_25] [--zoom]

``--labels`` is a ``path,person,camera`` CSV of any folder laid out like ``cuhk01`` (default
``../shared/data/cuhk01/LABELS.csv``; ``--labels none`` skips it). Its people are split in two
(``identity.body.cross_camera.split_people``: distinct ids sorted, even positions = test, 486 of
cuhk01's 971); each test image of one camera is a query against every test image of the other
camera, both directions pooled: rank-1, rank-5, mAP. Every model of ``--crosscam-models`` runs
on the test half as its documentation feeds it (no flip, no re-ranking). Then the matching steps
of ``bench/reid_steps.py`` for ``--steps-model``: each tuned on the train half only, reported on
the test half.

``--data`` is any folder of MOTChallenge sequences (seqinfo.ini, img1/*.jpg, gt/gt.txt); the
default is ``../shared/data/mot`` beside the repository (5 MOT17 sequences, 4-8 frames each).
Every visible ground-truth pedestrian (class 1, flag 1, visibility >= 0.5, at least 32 px tall)
is a query; its gallery is the crops of the same sequence in other frames; same track id =
same person.

Side by side:
- ``osnet_x0_25``: OSNet x0.25 trained on MSMT17 (ONNX, ``osnet_x0_25_msmt17`` manifest);
- ``dino_vits16_random``: our DINO ViT-S/16 global descriptor (CLS token) with random weights,
  the control that says how much comes from the architecture and pixels alone (the official
  DINO weights need ``identity models pull dino_vits16``; with them in IDENTITY_MODELS_DIR or
  the cache, ``dino_vits16`` runs too);
- ``dino_vits16_random_dense``: the same network's dense path (log-binned keys of layer 9,
  ``DinoViTDescriptor.dense``) ranked by best-buddies similarity. Part-level matching costs a
  128 x 128 patch product per pair, so only every ``--dense-query-step``-th eligible query is
  used (deterministic; the line says how many), each against its whole gallery, and the line
  repeats the CLS descriptor's scores on the same queries when that model ran before it;
- ``colour_hist``: HSV stripe histograms, the classic hand-made re-ID baseline.

Any ``dino_*`` name takes ``_dense`` (``dino_vitb16_random_dense``, ``dino_vits16_dense``).
Consecutive frames of a track look alike, so these numbers are an easy, same-camera setting:
they rank methods against each other, not against cross-camera re-ID benchmarks.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/reid_steps.py

from identity.body.cross_camera import cross_camera_scores, load_labelled, split_people
from identity.body.evaluation import (
    ReIDSet,
    colour_histograms,
    cross_frame_scores,
    dense_cross_frame_scores,
    load_mot,
)
from identity.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mot"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
DEFAULT_LABELS = REPO.parent / "shared" / "data" / "cuhk01" / "LABELS.csv"
CROSSCAM_MODELS = "osnet_x0_25,reid_intel_0287,reid_intel_0288,dino_vits16_random,colour_hist"


def descriptor(model: str, settings: Settings, cache: dict[str, Any]) -> Any:
    """A DINO descriptor by bench name, built once so a model's global and dense lines share it."""
    if model not in cache:
        if model.endswith("_random"):
            from identity.body.vit import DinoViTDescriptor
            from identity.registry import get_manifest

            cache[model] = DinoViTDescriptor.random(get_manifest(model.removesuffix("_random")))
        else:
            from identity.body import load_body_embedder

            cache[model] = load_body_embedder(model, settings)
    return cache[model]


def embed_crops(
    model: str, crops: np.ndarray, settings: Settings, cache: dict[str, Any]
) -> np.ndarray:
    """Embeddings as each model's documentation feeds it: no flip averaging (a later step)."""
    if model == "colour_hist":
        return colour_histograms(crops)
    name = "osnet_x0_25_msmt17" if model == "osnet_x0_25" else model
    if name.startswith("dino_"):
        return descriptor(model, settings, cache).embed(crops)[0]
    if name not in cache:
        # without flip averaging, and outside the shared pool (which holds the configured runner)
        from identity.body import EMBEDDER_RUNNERS
        from identity.runtime import build_runner

        plain = settings.model_copy(update={"body_flip_average": False})
        cache[name] = build_runner(EMBEDDER_RUNNERS, name, plain)
    return cache[name].embed(crops)[0]


def embed_with(model: str, data: ReIDSet, settings: Settings, cache: dict[str, Any]) -> np.ndarray:
    return embed_crops(model, data.crops, settings, cache)


def eligible_queries(data: ReIDSet) -> np.ndarray:
    """Rows with at least one positive in their gallery (the queries the scores count)."""
    valid = (data.sequence[:, None] == data.sequence[None, :]) & (
        data.frame[:, None] != data.frame[None, :]
    )
    return np.flatnonzero((valid & (data.track[:, None] == data.track[None, :])).any(axis=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    parser.add_argument(
        "--models",
        default="osnet_x0_25,dino_vits16_random,dino_vits16_random_dense,colour_hist",
        help="comma-separated: osnet_x0_25, dino_vits16_random, dino_vitb16_random, colour_hist, "
        "any body embedder manifest name (dino_vits16 once pulled); a dino name + _dense for "
        "best-buddies matching of dense descriptors",
    )
    parser.add_argument(
        "--dense-query-step",
        type=int,
        default=2,
        help="dense lines use every k-th eligible query (1 = all; about 0.6 s per query for ViT-S on 2 cores)",
    )
    parser.add_argument("--min-visibility", type=float, default=0.5)
    parser.add_argument(
        "--labels", default=str(DEFAULT_LABELS), help="path,person,camera CSV; none = skip"
    )
    parser.add_argument("--crosscam-models", default=CROSSCAM_MODELS)
    parser.add_argument("--steps-model", default="reid_intel_0287")
    parser.add_argument(
        "--fusion-partner",
        default="reid_intel_0288,osnet_x0_25",
        help="models fused with --steps-model, one step each, in order; none = no fusion step",
    )
    parser.add_argument(
        "--zoom", action="store_true", help="also try multi-scale averaging (2 more passes)"
    )
    args = parser.parse_args(argv)
    if args.dense_query_step < 1:
        parser.error("--dense-query-step must be >= 1")

    settings = Settings(models_dir=args.models_dir)
    t0 = time.perf_counter()
    data = load_mot(args.data, min_visibility=args.min_visibility)
    print(f"$ python bench/reid.py {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(
        f"data: {args.data} ({', '.join(data.sequences)}): {len(data)} crops, "
        f"{len(np.unique(data.track))} tracks, loaded in {time.perf_counter() - t0:.1f} s"
    )
    eligible = eligible_queries(data)
    dense_queries = eligible[:: args.dense_query_step]
    cache: dict[str, Any] = {}
    global_embeddings: dict[str, np.ndarray] = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        t = time.perf_counter()
        if model.endswith("_dense"):
            base = model.removesuffix("_dense")
            dense, _grid = descriptor(base, settings, cache).dense(data.crops)
            scores = dense_cross_frame_scores(dense, data, dense_queries)
            del dense
            note = (
                f"{int(scores['queries'])} of {len(eligible)} queries, 1 in {args.dense_query_step}"
            )
            if base in global_embeddings:
                cls = cross_frame_scores(global_embeddings[base], data, dense_queries)
                note += f"; CLS on them: rank-1 {cls['rank1']:.3f} mAP {cls['mAP']:.3f}"
        else:
            emb = embed_with(model, data, settings, cache)
            global_embeddings[model] = emb
            scores = cross_frame_scores(emb, data)
            note = f"{int(scores['queries'])} queries"
        print(
            f"{model:<26} rank-1 {scores['rank1']:.3f} mAP {scores['mAP']:.3f}   "
            f"({note}, {time.perf_counter() - t:.1f} s)"
        )
    if args.labels.lower() != "none":
        cross_camera(Path(args.labels), args, settings, cache, global_embeddings, data)
    return 0


def cross_camera(
    labels: Path,
    args: argparse.Namespace,
    settings: Settings,
    cache: dict[str, Any],
    mot: dict[str, np.ndarray],
    data: ReIDSet,
) -> None:
    from reid_steps import Features, run_steps

    t0 = time.perf_counter()
    people = load_labelled(labels)
    train, test = split_people(people.person)
    in_test = np.isin(people.person, test)
    print(
        f"\ncross-camera: {labels}: {len(people)} crops of {len(np.unique(people.person))} people, "
        f"cameras {', '.join(np.unique(people.camera))}; test half {len(test)} people "
        f"({int(in_test.sum())} crops), train half {len(train)} (loaded in {time.perf_counter() - t0:.1f} s)\n"
    )
    print("| model | cuhk01 rank-1 | rank-5 | mAP | MOT cross-frame rank-1 | MOT mAP | s |")
    print("|---|---|---|---|---|---|---|")
    steps = [args.steps_model] + [
        m.strip() for m in args.fusion_partner.split(",") if m.strip() and m.lower() != "none"
    ]
    plain: dict[str, np.ndarray] = {}
    for model in [m.strip() for m in args.crosscam_models.split(",") if m.strip()]:
        t = time.perf_counter()
        # models the steps reuse are embedded on both halves once; the rest on the test half
        rows = np.ones(len(people), bool) if model in steps else in_test
        emb = embed_crops(model, people.crops[rows], settings, cache)
        if model in steps:
            plain[model] = emb
            emb = emb[in_test]
        s = cross_camera_scores(emb, people.person[in_test], people.camera[in_test])
        if model not in mot:
            mot[model] = embed_with(model, data, settings, cache)
        m = cross_frame_scores(mot[model], data)
        print(
            f"| {model} | {s['rank1']:.3f} | {s['rank5']:.3f} | {s['mAP']:.3f} | {m['rank1']:.3f} "
            f"| {m['mAP']:.3f} | {time.perf_counter() - t:.0f} |"
        )
    for model in steps:
        if model not in plain:
            plain[model] = embed_crops(model, people.crops, settings, cache)
    flipped = {m: embed_crops(m, people.crops[:, :, ::-1], settings, cache) for m in steps}
    print(
        f"\nmatching steps on {args.steps_model}, cumulative; settings chosen on the train half "
        "(fitted maps: fitted on one part of it, chosen on the other), scores of the test half\n"
    )
    print(
        "| step | setting (from train) | train rank-1 / mAP | test rank-1 | rank-5 | mAP | kept |"
    )
    print("|---|---|---|---|---|---|---|")

    def report(step: str, setting: str, tr: dict, te: dict, kept: bool) -> None:
        print(
            f"| {step} | {setting} | {tr['rank1']:.3f} / {tr['mAP']:.3f} | {te['rank1']:.3f} "
            f"| {te['rank5']:.3f} | {te['mAP']:.3f} | {'yes' if kept else 'no'} |"
        )

    zoomed = None
    if args.zoom:
        from reid_steps import zoom_crops

        crops = zoom_crops(people.crops)
        zoomed = (
            embed_crops(args.steps_model, crops, settings, cache),
            embed_crops(args.steps_model, crops[:, :, ::-1], settings, cache),
        )
    features = Features(plain, flipped, people.person, people.camera, zoomed)
    run_steps(features, args.steps_model, steps[1:], report)


if __name__ == "__main__":
    raise SystemExit(main())
