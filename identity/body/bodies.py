"""``Bodies``: the typed result for people, the body counterpart of ``identity.faces.Faces``.

Arrays inside, one row per person: detection (or the caller) fills boxes, scores and image_index;
cropping adds crops; a re-ID embedder adds embeddings and their raw norms; a ViT descriptor adds
dense per-patch descriptors. Every optional field is None or has exactly ``len(bodies)`` rows, so
slicing keeps everything consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from identity.rows import Rows


@dataclass
class Bodies(Rows):
    # One grid for every row: kept by slicing, dropped (with descriptors) when parts disagree.
    _shared_fields: ClassVar[tuple[str, ...]] = ("descriptor_grid",)
    _row_noun: ClassVar[str] = "bodies"

    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in source-image pixels
    scores: np.ndarray  # (N,) float32 detector confidence in [0, 1]; 1.0 for given boxes
    image_index: np.ndarray  # (N,) int32: which image of the batch each person came from
    crops: np.ndarray | None = None  # (N, H, W, 3) uint8 BGR, resized to the embedder's input
    embeddings: np.ndarray | None = None  # (N, D) float32, L2-normalised
    embedding_norms: np.ndarray | None = None  # (N,) float32 norm before normalisation
    descriptors: np.ndarray | None = None  # (N, P, C) float32 dense per-patch, L2-normalised
    descriptor_grid: tuple[int, int] | None = None  # (rows, cols) of the P patches; shared
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # per-person arrays of other stages

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.image_index = np.asarray(self.image_index, dtype=np.int32).reshape(-1)
        n = len(self.boxes)
        for name in (
            "scores",
            "image_index",
            "crops",
            "embeddings",
            "embedding_norms",
            "descriptors",
        ):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Bodies.{name} has {len(value)} rows, boxes {n}")

    # construction ---------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Bodies:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            image_index=np.zeros((0,), np.int32),
        )

    @classmethod
    def from_boxes(
        cls,
        boxes_xyxy: np.ndarray | Sequence[Sequence[float]],
        image_index: np.ndarray | Sequence[int] | None = None,
        scores: np.ndarray | Sequence[float] | None = None,
    ) -> Bodies:
        """People whose boxes a tracker or an upstream detector already found."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(boxes)
        return cls(
            boxes=boxes,
            scores=np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32),
            image_index=np.zeros(n, np.int32) if image_index is None else np.asarray(image_index),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Bodies]) -> Bodies:
        if len({p.descriptor_grid for p in parts if len(p)}) > 1:
            # patches of different grids cannot share one array: drop them before stacking
            parts = [p.with_(descriptors=None, descriptor_grid=None) for p in parts]
        return super().concatenate(parts)

    # access (slicing, concatenate, with_, for_image, largest, ...: ``Rows``) -----------------
    def row_fields(self, i: int) -> dict[str, Any]:
        return {"image_index": int(self.image_index[i])}
