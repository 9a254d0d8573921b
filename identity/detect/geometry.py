"""Resizing onto a fixed detector canvas and the exact way back to source pixels.

Coordinates here are continuous pixel-edge coordinates: pixel ``i`` covers ``[i, i + 1)``.
``cv2.resize`` samples with half-pixel centres, which is the same as a pure scale in these
coordinates, so mapping a canvas point back is a division by the per-axis scale, exactly.
Per-axis, because rounding the resized size makes the two axes' scales differ slightly; one
shared scale (as InsightFace uses) is off by up to 1/scale pixels on the rounded axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How a source image was placed on the canvas: resized to ``resized_wh`` at the top-left."""

    source_wh: tuple[int, int]
    resized_wh: tuple[int, int]
    canvas_wh: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        return (
            self.resized_wh[0] / self.source_wh[0],
            self.resized_wh[1] / self.source_wh[1],
        )

    def points_to_source(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) canvas xy -> source xy."""
        sx, sy = self.scale_xy
        out = np.asarray(points, dtype=np.float32).copy()
        out[..., 0] /= sx
        out[..., 1] /= sy
        return out

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) canvas xyxy -> source xyxy."""
        return self.points_to_source(np.asarray(boxes, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)

    def points_to_canvas(self, points: np.ndarray) -> np.ndarray:
        sx, sy = self.scale_xy
        out = np.asarray(points, dtype=np.float32).copy()
        out[..., 0] *= sx
        out[..., 1] *= sy
        return out


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def canvas_size(max_side: int, multiple: int) -> tuple[int, int]:
    """A square canvas whose side is ``max_side`` rounded up to the network's largest stride.

    The same canvas for every image means a batch gives exactly what one-by-one calls give.
    """
    side = round_up(max(int(max_side), multiple), multiple)
    return side, side


def fit_size(source_wh: tuple[int, int], canvas_wh: tuple[int, int]) -> tuple[int, int]:
    """The largest size with the source's aspect ratio that fits the canvas (up or down)."""
    w, h = source_wh
    cw, ch = canvas_wh
    scale = min(cw / w, ch / h)
    return (min(cw, max(1, round(w * scale))), min(ch, max(1, round(h * scale))))


def letterbox(
    image: np.ndarray, canvas_wh: tuple[int, int], pad_value: int = 0
) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (HxWxC uint8) to fit ``canvas_wh``, top-left aligned, padding the rest.

    Top-left placement keeps the mapping a pure scale (no offset to carry around).
    """
    h, w = image.shape[:2]
    rw, rh = fit_size((w, h), canvas_wh)
    if (rw, rh) == (w, h):
        resized = image
    else:
        # INTER_AREA when shrinking: bilinear would alias a 4000 px photo down to 640 and blur
        # the small faces the detector most needs.
        interp = cv2.INTER_AREA if rw < w else cv2.INTER_LINEAR
        resized = cv2.resize(image, (rw, rh), interpolation=interp)
    cw, ch = canvas_wh
    canvas = np.full((ch, cw) + image.shape[2:], pad_value, dtype=image.dtype)
    canvas[:rh, :rw] = resized
    return canvas, Letterbox(source_wh=(w, h), resized_wh=(rw, rh), canvas_wh=(cw, ch))
