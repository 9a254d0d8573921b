"""``Bodies``: the typed result for people, the body counterpart of ``identity.faces.Faces``.

Arrays inside, one row per person: detection (or the caller) fills boxes, scores and image_index;
cropping adds crops; a re-ID embedder adds embeddings and their raw norms; a ViT descriptor adds
dense per-patch descriptors. Every optional field is None or has exactly ``len(bodies)`` rows, so
slicing keeps everything consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np


@dataclass
class Bodies:
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
        for name in ("scores", "image_index", "crops", "embeddings", "embedding_norms",
                     "descriptors"):
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
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if f.name == "extra":
                keys = set.intersection(*(set(v) for v in values))
                kwargs["extra"] = {k: np.concatenate([v[k] for v in values]) for k in keys}
            elif f.name == "descriptor_grid":
                kwargs[f.name] = values[0] if len(set(values)) == 1 else None
            elif any(v is None for v in values):
                kwargs[f.name] = None
            else:
                kwargs[f.name] = np.concatenate(values)
        if kwargs["descriptor_grid"] is None:
            kwargs["descriptors"] = None  # patches of different grids cannot share one array
        return cls(**kwargs)

    # access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Bodies:
        """Rows by int, slice, integer array or boolean mask; always returns ``Bodies``."""
        if isinstance(index, (int, np.integer)):
            idx = np.array([int(index)])
        elif isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                if len(idx) != len(self):
                    raise IndexError(f"mask of length {len(idx)} for {len(self)} bodies")
                idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        kwargs: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                kwargs["extra"] = {k: v[idx] for k, v in value.items()}
            elif value is None or f.name == "descriptor_grid":
                kwargs[f.name] = value
            else:
                kwargs[f.name] = value[idx]
        return Bodies(**kwargs)

    def with_(self, **changes: Any) -> Bodies:
        """A copy with some fields replaced (stages add their outputs this way)."""
        return replace(self, **changes)

    def for_image(self, i: int) -> Bodies:
        return self[self.image_index == i]

    def split_by_image(self, n_images: int) -> list[Bodies]:
        return [self.for_image(i) for i in range(n_images)]

    @property
    def areas(self) -> np.ndarray:
        w = np.clip(self.boxes[:, 2] - self.boxes[:, 0], 0, None)
        h = np.clip(self.boxes[:, 3] - self.boxes[:, 1], 0, None)
        return w * h

    def largest(self) -> Bodies:
        """The largest person of each image (one row per image that has people)."""
        keep = []
        for i in np.unique(self.image_index):
            rows = np.flatnonzero(self.image_index == i)
            keep.append(rows[np.argmax(self.areas[rows])])
        return self[np.array(keep, dtype=np.int64)]

    def to_dicts(self, with_embeddings: bool = False) -> list[dict[str, Any]]:
        """JSON-ready rows for the CLI and the HTTP layer."""
        out = []
        for i in range(len(self)):
            row: dict[str, Any] = {
                "bbox": [round(float(v), 2) for v in self.boxes[i]],
                "det_score": round(float(self.scores[i]), 4),
                "image_index": int(self.image_index[i]),
            }
            if self.embedding_norms is not None:
                row["embedding_norm"] = round(float(self.embedding_norms[i]), 4)
            if with_embeddings and self.embeddings is not None:
                row["embedding"] = [float(v) for v in self.embeddings[i]]
            out.append(row)
        return out
