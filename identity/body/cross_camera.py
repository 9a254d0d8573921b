"""Cross-camera re-ID evaluation on labelled crops (a folder laid out like ``cuhk01``).

``LABELS.csv`` has ``path,person,camera``. The protocol (``bench/reid.py --labels``): each image
of one camera is a query against the gallery of every image of the *other* camera, in both
directions, pooled; rank-1, rank-5 (CMC) and mAP. The people are split in two by a documented,
deterministic rule (``split_people``) so that anything tuned is tuned on one half and reported
on the other.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from identity.body.evaluation import average_precision
from identity.errors import InvalidInput

# (query embeddings, gallery embeddings) -> (Q, G) similarity; the place re-ranking plugs in
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class LabelledCrops:
    crops: np.ndarray  # (N, H, W, 3) uint8 BGR, resized to the re-ID input
    person: np.ndarray  # (N,) int64
    camera: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.person)

    def subset(self, rows: np.ndarray) -> LabelledCrops:
        return LabelledCrops(self.crops[rows], self.person[rows], self.camera[rows])


def read_labels(labels_csv: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(image paths, person ids, camera names) from a ``path,person,camera`` CSV."""
    labels_csv = Path(labels_csv)
    try:
        with labels_csv.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {labels_csv}: {exc}") from exc
    if not rows or not {"path", "person", "camera"} <= set(rows[0]):
        raise InvalidInput(f"{labels_csv} needs a header path,person,camera and at least one row")
    try:
        person = np.array([int(r["person"]) for r in rows], np.int64)
    except ValueError as exc:
        raise InvalidInput(f"{labels_csv}: person must be an integer ({exc})") from exc
    paths = [labels_csv.parent / r["path"] for r in rows]
    return paths, person, np.array([r["camera"] for r in rows])


def split_people(person: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train people, test people): the distinct ids sorted, test = positions 0, 2, 4, ...

    For cuhk01's 971 people this gives the usual 486 test and 485 train people. Alternating
    (rather than first/second half) spreads both halves over the whole collection period.
    """
    ids = np.unique(person)
    return ids[1::2], ids[0::2]


def load_labelled(
    labels_csv: Path, size_wh: tuple[int, int] = (128, 256), people: np.ndarray | None = None
) -> LabelledCrops:
    """Crops of the listed people (all by default), squeezed to ``size_wh`` like any re-ID crop."""
    paths, person, camera = read_labels(labels_csv)
    keep = np.ones(len(paths), bool) if people is None else np.isin(person, people)
    crops = np.empty((int(keep.sum()), size_wh[1], size_wh[0], 3), np.uint8)
    for j, i in enumerate(np.flatnonzero(keep)):
        image = cv2.imread(str(paths[i]), cv2.IMREAD_COLOR)
        if image is None:
            raise InvalidInput(f"cannot read {paths[i]}")
        crops[j] = cv2.resize(image, size_wh, interpolation=cv2.INTER_LINEAR)
    return LabelledCrops(crops, person[keep], camera[keep])


def cosine(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    return np.asarray(queries, np.float32) @ np.asarray(gallery, np.float32).T


def cross_camera_scores(
    embeddings: np.ndarray, person: np.ndarray, camera: np.ndarray, scorer: Scorer = cosine
) -> dict[str, float]:
    """Rank-1, rank-5 and mAP of every camera's images against every other camera's, pooled.

    ``scorer`` turns (query, gallery) embeddings into a similarity matrix: plain cosine, or a
    re-ranking / query expansion that uses the gallery's own neighbours.
    """
    emb = np.asarray(embeddings, np.float32)
    cams = np.unique(camera)
    if len(cams) < 2:
        raise InvalidInput("the cross-camera protocol needs at least two cameras")
    hits1, hits5, aps = [], [], []
    for qc in cams:
        for gc in cams:
            if qc == gc:
                continue
            q, g = np.flatnonzero(camera == qc), np.flatnonzero(camera == gc)
            sim = scorer(emb[q], emb[g])
            for row, i in enumerate(q):
                positive = person[g] == person[i]
                if not positive.any():
                    continue  # seen by one camera only
                order = np.argsort(-sim[row], kind="stable")
                hits1.append(positive[order[0]])
                hits5.append(positive[order[:5]].any())
                aps.append(average_precision(sim[row], positive))
    if not aps:
        raise InvalidInput("no query has the same person in another camera")
    return {
        "rank1": float(np.mean(hits1)),
        "rank5": float(np.mean(hits5)),
        "mAP": float(np.mean(aps)),
        "queries": float(len(aps)),
    }
