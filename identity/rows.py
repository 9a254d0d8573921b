"""``Rows``: what ``Faces`` and ``Bodies`` share as dataclasses of per-row arrays.

Each subclass is a ``@dataclass`` whose fields are either per-row (an array or list with one
entry per detection, or None when a stage has not run) or listed in ``_shared_fields`` (one value
for every row, such as a descriptor grid). ``boxes`` (N, 4) xyxy and ``image_index`` (N,) are
always there. Slicing, concatenation and per-image selection are written once here so the two
result types cannot drift apart.

A subclass may also have a ``timings`` field (stage name -> seconds spent producing the rows):
slicing keeps it whole (the work was done for every row), concatenation sums it over every part,
empty parts included (a probe with no face still cost its decode and detect).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any, ClassVar, Self

import numpy as np


def merge_timings(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Seconds per stage summed over ``parts`` (stages keep their first-seen order)."""
    out: dict[str, float] = {}
    for part in parts:
        for stage, seconds in part.items():
            out[stage] = out.get(stage, 0.0) + float(seconds)
    return out


class Rows:
    """Mixin for a dataclass of per-row arrays (see module docstring)."""

    # Per-row Python lists (not arrays) that slice together with the arrays.
    _list_fields: ClassVar[tuple[str, ...]] = ()
    # Not per row: kept as they are when slicing; kept when concatenating only if all parts agree.
    _shared_fields: ClassVar[tuple[str, ...]] = ()
    # What a row is, for error messages ("faces", "bodies").
    _row_noun: ClassVar[str] = "rows"

    boxes: np.ndarray
    image_index: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Self:
        raise NotImplementedError

    @classmethod
    def concatenate(cls, parts: Sequence[Self]) -> Self:
        timings = merge_timings(getattr(p, "timings", None) or {} for p in parts)
        parts = [p for p in parts if len(p)]
        if not parts:
            out = cls.empty()
            return out.with_(timings=timings) if hasattr(out, "timings") else out
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            values = [getattr(p, f.name) for p in parts]
            if f.name == "timings":
                kwargs["timings"] = timings
            elif f.name == "extra":
                keys = set.intersection(*(set(v) for v in values))
                kwargs["extra"] = {k: np.concatenate([v[k] for v in values]) for k in keys}
            elif f.name in cls._shared_fields:
                kwargs[f.name] = values[0] if len(set(values)) == 1 else None
            elif any(v is None for v in values):
                kwargs[f.name] = None
            elif f.name in cls._list_fields:
                kwargs[f.name] = [item for v in values for item in v]
            else:
                kwargs[f.name] = np.concatenate(values)
        return cls(**kwargs)

    # access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Self:
        """Rows by int, slice, integer array or boolean mask; always returns the same type."""
        if isinstance(index, (int, np.integer)):
            idx = np.array([int(index)])
        elif isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                if len(idx) != len(self):
                    raise IndexError(f"mask of length {len(idx)} for {len(self)} {self._row_noun}")
                idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        kwargs: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "timings":
                kwargs["timings"] = dict(value)
            elif f.name == "extra":
                kwargs["extra"] = {k: v[idx] for k, v in value.items()}
            elif value is None or f.name in self._shared_fields:
                kwargs[f.name] = value
            elif f.name in self._list_fields:
                kwargs[f.name] = [value[i] for i in idx]
            else:
                kwargs[f.name] = value[idx]
        return type(self)(**kwargs)

    def with_(self, **changes: Any) -> Self:
        """A copy with some fields replaced (stages add their outputs this way)."""
        return replace(self, **changes)  # type: ignore[type-var]

    def for_image(self, i: int) -> Self:
        return self[self.image_index == i]

    def split_by_image(self, n_images: int) -> list[Self]:
        return [self.for_image(i) for i in range(n_images)]

    @property
    def areas(self) -> np.ndarray:
        w = np.clip(self.boxes[:, 2] - self.boxes[:, 0], 0, None)
        h = np.clip(self.boxes[:, 3] - self.boxes[:, 1], 0, None)
        return w * h

    def largest(self) -> Self:
        """The largest row of each image (one row per image that has any)."""
        keep = []
        for i in np.unique(self.image_index):
            rows = np.flatnonzero(self.image_index == i)
            keep.append(rows[np.argmax(self.areas[rows])])
        return self[np.array(keep, dtype=np.int64)]

    def sorted_by_area(self) -> Self:
        return self[np.argsort(-self.areas, kind="stable")]

    def to_dicts(self, with_embeddings: bool = False) -> list[dict[str, Any]]:
        """JSON-ready rows for the CLI and the HTTP layer: the box, the detector's score, what
        the subclass adds (``row_fields``), and the embedding's norm (and the embedding)."""
        out = []
        norms = getattr(self, "embedding_norms", None)
        embeddings = getattr(self, "embeddings", None)
        for i in range(len(self)):
            row: dict[str, Any] = {
                "bbox": [round(float(v), 2) for v in self.boxes[i]],
                "det_score": round(float(self.scores[i]), 4),
                **self.row_fields(i),
            }
            if norms is not None:
                row["embedding_norm"] = round(float(norms[i]), 4)
            if with_embeddings and embeddings is not None:
                row["embedding"] = [float(v) for v in embeddings[i]]
            out.append(row)
        return out

    def row_fields(self, i: int) -> dict[str, Any]:
        """Row ``i``'s own JSON fields beyond the shared ones (``to_dicts``)."""
        return {}
