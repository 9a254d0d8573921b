"""Throughput of detect + align + embed on real photos, ours and the peers side by side.

    python bench/pipeline.py [--repeat 1] [--combos ...] [--no-peers]

Photos: deepface's 61 photos (many sizes, some 2-3 MB JPEGs). Every pipeline decodes the same
files from disk, finds faces and embeds every face found. Per-stage times are wall-clock
milliseconds per image, summed over the run. Peers:
- face_recognition 1.3: HOG detector upsampled once (its default for ``face_locations``),
  5-point shape predictor, dlib ResNet;
- InsightFace's own ``model_zoo`` runners (``insightface.model_zoo.get_model``) on the same ONNX
  files ours runs (SCRFD-2.5G and the MobileFaceNet), with InsightFace's ``norm_crop`` alignment.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEEPFACE, MODELS, command_line, print_table

DEFAULT_COMBOS = [
    "retinaface_mnet025+arcface_w600k_mbf_int8",
    "retinaface_mnet025+dlib_resnet_v1",
    "retinaface_mnet025+arcface_mobilefacenet_128",
    "scrfd_2.5g_kps+arcface_mobilefacenet_128",
    "yunet_n+arcface_mobilefacenet_128",
    "blazeface_short+arcface_mobilefacenet_128",
]


class Timer:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.total[self.name] += time.perf_counter() - self.start


def run_ours(combo: str, paths: list[Path]) -> tuple[int, Timer]:
    from identity.align import align_faces
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer
    from identity.settings import Settings

    detector, embedder = combo.split("+")
    settings = Settings(models_dir=MODELS, detector=detector, embedder=embedder)
    analyzer = FaceAnalyzer(settings)
    # load both models before timing, as a running service would have them
    analyzer.analyze([load_image(paths[0], settings)])
    timer, n_faces = Timer(), 0
    for path in paths:
        with timer.stage("decode"):
            image = load_image(path, settings)
        with timer.stage("detect"):
            faces = analyzer.detect([image])
        if not len(faces):
            continue
        with timer.stage("align"):
            crops = align_faces([image], faces, analyzer.embedder.template)
        with timer.stage("embed"):
            analyzer.embedder.embed(crops)
        n_faces += len(faces)
    return n_faces, timer


def run_face_recognition(paths: list[Path]) -> tuple[int, Timer]:
    import face_recognition

    timer, n_faces = Timer(), 0
    for path in paths:
        with timer.stage("decode"):
            image = face_recognition.load_image_file(str(path))
        with timer.stage("detect"):
            boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1)
        with timer.stage("align+embed"):
            face_recognition.face_encodings(image, boxes)
        n_faces += len(boxes)
    return n_faces, timer


def run_insightface(paths: list[Path]) -> tuple[int, Timer]:
    import cv2
    from insightface.model_zoo import get_model
    from insightface.utils import face_align

    det = get_model(str(MODELS / "scrfd_2.5g_kps.onnx"), providers=["CPUExecutionProvider"])
    det.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    rec = get_model(
        str(MODELS / "arcface_mobilefacenet_128.onnx"), providers=["CPUExecutionProvider"]
    )
    rec.prepare(ctx_id=-1)
    timer, n_faces = Timer(), 0
    for path in paths:
        with timer.stage("decode"):
            image = cv2.imread(str(path))
        with timer.stage("detect"):
            _, kpss = det.detect(image, max_num=0)
        if kpss is None or not len(kpss):
            continue
        with timer.stage("align"):
            crops = [face_align.norm_crop(image, landmark=k, image_size=112) for k in kpss]
        with timer.stage("embed"):
            rec.get_feat(crops)
        n_faces += len(kpss)
    return n_faces, timer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--combos", default=",".join(DEFAULT_COMBOS))
    parser.add_argument(
        "--repeat", type=int, default=1, help="pass over the photos this many times"
    )
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()

    paths = sorted(DEEPFACE.glob("img*.jpg")) * args.repeat
    runs: list[tuple[str, object]] = [
        (f"ours {c}", c) for c in filter(None, args.combos.split(","))
    ]
    if not args.no_peers:
        runs += [
            ("face_recognition 1.3 (HOG, upsample 1)", run_face_recognition),
            ("insightface model_zoo scrfd_2.5g + mobilefacenet", run_insightface),
        ]
    rows, baseline = [], None
    for name, what in runs:
        try:
            n_faces, timer = run_ours(what, paths) if isinstance(what, str) else what(paths)  # type: ignore[operator]
        except Exception as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        total = sum(timer.total.values())
        per_img = {k: 1000 * v / len(paths) for k, v in timer.total.items()}
        stages = ", ".join(f"{k} {v:.0f}" for k, v in per_img.items())
        ips = len(paths) / total
        if name.startswith("face_recognition"):
            baseline = ips
        rows.append([name, len(paths), n_faces, round(total, 2), round(ips, 2), stages])
    for r in rows:
        r.append(f"{r[4] / baseline:.1f}x" if baseline else "-")
    print_table(
        [
            "pipeline",
            "images",
            "faces",
            "seconds",
            "images/s",
            "ms per image by stage",
            "vs face_recognition",
        ],
        rows,
        title=f"detect + align + embed on deepface's photos, {len(paths)} images, 2-core CPU",
    )
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
