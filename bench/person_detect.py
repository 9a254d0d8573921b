"""Person detection recall on MOT17 ground truth: the SSD pedestrian detector against HOG.

    python bench/person_detect.py [--data DIR] [--detectors person_det_adas_0002,hog]
                                  [--min-height 50] [--min-visibility 0.5]

``--data`` is any folder of MOTChallenge sequences (default ``../shared/data/mot``). A person to
find is a ground-truth pedestrian (class 1, flag 1) at least ``--min-height`` px tall whose
annotated visibility is at least ``--min-visibility``. A detection finds it at IoU >= 0.5
(greedy by score, one detection per person). Detections that overlap no annotated person of any
visibility or class (pedestrians, static people, people on vehicles, reflections) at IoU >= 0.5
are counted as false positives per frame; annotations do not mark every person, so that
column is an upper bound.
"""

from __future__ import annotations

import argparse
import configparser
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from identity.body import load_person_detector
from identity.body.evaluation import PEDESTRIAN_CLASS, find_sequences
from identity.settings import Settings
from identity.video.tracker import iou_matrix

REPO = Path(__file__).resolve().parents[1]
# MOTChallenge classes that are a person: pedestrian, person on vehicle, static person, reflection
PERSON_CLASSES = (1, 2, 7, 12)


def frames(root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, boxes to find (K, 4) xyxy, every annotated person box (M, 4)) per frame."""
    out = []
    for seq in find_sequences(root):
        info = configparser.ConfigParser()
        info.read(seq / "seqinfo.ini")
        im_dir = seq / info.get("Sequence", "imDir", fallback="img1")
        ext = info.get("Sequence", "imExt", fallback=".jpg")
        gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2)
        for path in sorted(im_dir.glob(f"*{ext}")):
            rows = gt[gt[:, 0] == int(path.stem)]
            boxes = np.hstack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]]).astype(np.float32)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            out.append((image, rows, boxes))
    return out


def matched(found: np.ndarray, scores: np.ndarray, targets: np.ndarray) -> int:
    """How many targets a detection claims at IoU >= 0.5, each detection once, best score first."""
    iou = iou_matrix(found[np.argsort(-scores)], targets)
    taken = np.zeros(len(targets), bool)
    for row in iou:
        row = np.where(taken, 0.0, row)
        if len(row) and row.max() >= 0.5:
            taken[int(row.argmax())] = True
    return int(taken.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mot")
    parser.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    parser.add_argument("--detectors", default="person_det_adas_0002,hog")
    parser.add_argument("--min-height", type=float, default=50.0)
    parser.add_argument("--min-visibility", type=float, default=0.5)
    args = parser.parse_args(argv)
    settings = Settings(models_dir=args.models_dir)
    data = frames(args.data)
    print(
        f"$ python bench/person_detect.py {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()
    )
    targets = []
    for _image, rows, boxes in data:
        keep = (rows[:, 6] == 1) & (rows[:, 7] == PEDESTRIAN_CLASS)
        keep &= (rows[:, 5] >= args.min_height) & (rows[:, 8] >= args.min_visibility)
        targets.append(boxes[keep])
    total = sum(len(t) for t in targets)
    print(
        f"\n{len(data)} frames of {args.data}; {total} pedestrians >= {args.min_height:g} px tall, "
        f"visibility >= {args.min_visibility:g}\n"
    )
    print("| detector | recall (IoU 0.5) | detections / frame | unmatched / frame | s / frame |")
    print("|---|---|---|---|---|")
    for name in [d.strip() for d in args.detectors.split(",") if d.strip()]:
        detector = load_person_detector(name, settings)
        hits = n_found = unmatched = 0
        t = time.perf_counter()
        for (image, rows, boxes), want in zip(data, targets, strict=True):
            found = detector.detect([image])
            person = boxes[np.isin(rows[:, 7], PERSON_CLASSES)]
            hits += matched(found.boxes, found.scores, want)
            n_found += len(found)
            iou = iou_matrix(found.boxes, person)
            unmatched += int((iou.max(axis=1, initial=0.0) < 0.5).sum())
        seconds = (time.perf_counter() - t) / len(data)
        print(
            f"| {name} | {hits / max(total, 1):.3f} ({hits}/{total}) | {n_found / len(data):.1f} "
            f"| {unmatched / len(data):.1f} | {seconds:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
