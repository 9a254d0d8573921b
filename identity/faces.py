"""``Faces``: the one typed result object that flows through the pipeline.

Arrays inside, one row per face, in the spirit of supervision's ``Detections``: detection fills
boxes, landmarks, scores and image_index; alignment adds crops; embedding adds embeddings and
their raw norms; quality adds the score, reasons and per-signal details. Every optional field is
either None or has exactly ``len(faces)`` rows, so slicing keeps everything consistent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from identity.errors import InvalidInput
from identity.rows import Rows


def check_bbox_xyxy(bbox: Sequence[float]) -> list[float]:
    """A caller's box as four finite floats with x2 > x1 and y2 > y1, else ``InvalidInput``.

    Written as "not >" so NaN (every comparison with it is false) fails too, instead of picking
    a face by an IoU of NaN.
    """
    values = [float(v) for v in bbox]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidInput(
            "bbox must be four finite numbers: x1,y1,x2,y2", bbox=[str(v) for v in bbox]
        )
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise InvalidInput("bbox must have x2 > x1 and y2 > y1", bbox=values)
    return values


@dataclass
class Faces(Rows):
    # Per-face Python lists (not arrays) that slice together with the arrays.
    _list_fields: ClassVar[tuple[str, ...]] = (
        "quality_reasons",
        "quality_details",
        "liveness_reasons",
    )
    _row_noun: ClassVar[str] = "faces"

    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in source-image pixels
    landmarks: np.ndarray  # (N, 5, 2) float32: left eye, right eye, nose, left mouth, right mouth
    scores: np.ndarray  # (N,) float32 detector confidence in [0, 1]
    image_index: np.ndarray  # (N,) int32: which image of the batch each face came from
    crops: np.ndarray | None = None  # (N, S, S, 3) uint8 BGR aligned crops (S from the embedder)
    embeddings: np.ndarray | None = None  # (N, D) float32, L2-normalised
    embedding_norms: np.ndarray | None = None  # (N,) float32 norm before normalisation
    quality: np.ndarray | None = None  # (N,) float32 in [0, 1], higher is better
    quality_reasons: list[list[str]] | None = None  # why quality was lowered, per face
    quality_details: list[dict[str, Any]] | None = None  # raw signals (pose, blur, ...), per face
    liveness: np.ndarray | None = None  # (N,) float32 probability of a live face, NaN = not judged
    liveness_reasons: list[str | None] | None = None  # why a face was not judged (None = judged)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # per-face arrays of other stages
    # Seconds per pipeline stage (decode, detect, mesh, align, embed, quality, liveness) spent on
    # the images these faces came from; not per face (see ``Rows``).
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.image_index = np.asarray(self.image_index, dtype=np.int32).reshape(-1)
        n = len(self.boxes)
        for name in ("landmarks", "scores", "image_index"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Faces.{name} has {len(getattr(self, name))} rows, boxes {n}")

    # construction ---------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Faces:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
            scores=np.zeros((0,), np.float32),
            image_index=np.zeros((0,), np.int32),
        )

    # access (slicing, concatenate, with_, for_image, largest, ...: ``Rows``) -----------------
    @property
    def inter_ocular(self) -> np.ndarray:
        """Distance between the eye landmarks, in source pixels."""
        return np.linalg.norm(self.landmarks[:, 1] - self.landmarks[:, 0], axis=1)

    def row_fields(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks[i]],
        }
        if self.quality is not None:
            row["quality"] = {
                "score": round(float(self.quality[i]), 4),
                "reasons": list(self.quality_reasons[i]) if self.quality_reasons else [],
                **(self.quality_details[i] if self.quality_details else {}),
            }
        if self.liveness is not None:
            live = float(self.liveness[i])
            row["liveness"] = None if math.isnan(live) else round(live, 4)
            row["liveness_reason"] = self.liveness_reasons[i] if self.liveness_reasons else None
        return row
