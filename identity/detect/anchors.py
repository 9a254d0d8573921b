"""Anchors and the box / landmark decoders of the three detector families.

All functions work in canvas pixels and on arrays for all anchors at once.

- RetinaFace (Deng et al. 2019, the biubug6/Pytorch_Retinaface export): square prior boxes
  centred on each cell, ``(j + 0.5) * stride``, several sizes per level; SSD-style offsets
  with variances (0.1 for centres, 0.2 for log sizes).
- SCRFD (Guo et al. 2021, InsightFace): anchor points at the cell corner ``j * stride``;
  boxes and keypoints are distances from the point, already multiplied by the stride here.
- YuNet (Wu et al. 2023, libfacedetection): anchor-free; centre offset in cells, log size in
  strides, keypoints as offsets in cells from the cell corner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cell_grid(canvas_wh: tuple[int, int], stride: int, ceil: bool = False) -> tuple[int, int]:
    """(columns, rows) of a feature map at ``stride``."""
    w, h = canvas_wh
    if ceil:
        return -(-w // stride), -(-h // stride)
    return w // stride, h // stride


def grid_points(
    cols: int, rows: int, stride: float, per_cell: int = 1, offset: float = 0.0
) -> np.ndarray:
    """(rows * cols * per_cell, 2) xy points, row-major, each repeated ``per_cell`` times in a row
    (the order conv heads flatten NCHW outputs with anchors innermost)."""
    ys, xs = np.mgrid[:rows, :cols]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    pts = (pts + offset) * stride
    return np.repeat(pts, per_cell, axis=0) if per_cell > 1 else pts


# RetinaFace -----------------------------------------------------------------------------------
def retinaface_priors(
    canvas_wh: tuple[int, int], strides: Sequence[int], min_sizes: Sequence[Sequence[float]]
) -> np.ndarray:
    """(N, 4) priors cx, cy, w, h in canvas pixels, levels concatenated in stride order."""
    levels = []
    for stride, sizes in zip(strides, min_sizes, strict=False):
        cols, rows = cell_grid(canvas_wh, stride, ceil=True)
        centres = grid_points(cols, rows, stride, per_cell=len(sizes), offset=0.5)
        wh = np.tile(np.asarray(sizes, np.float32)[:, None].repeat(2, axis=1), (rows * cols, 1))
        levels.append(np.hstack([centres, wh]))
    return np.concatenate(levels).astype(np.float32)


def decode_prior_boxes(
    loc: np.ndarray, priors: np.ndarray, variances: tuple[float, float]
) -> np.ndarray:
    """SSD offsets (N, 4) -> xyxy (N, 4)."""
    centres = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * variances[1])
    return np.hstack([centres - sizes / 2, centres + sizes / 2]).astype(np.float32)


def decode_prior_points(
    pts: np.ndarray, priors: np.ndarray, variances: tuple[float, float]
) -> np.ndarray:
    """Landmark offsets (N, 2K) -> points (N, K, 2)."""
    offsets = pts.reshape(len(pts), -1, 2)
    return (priors[:, None, :2] + offsets * variances[0] * priors[:, None, 2:]).astype(np.float32)


# SCRFD ----------------------------------------------------------------------------------------
def distance_to_boxes(points: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Left, top, right, bottom distances (N, 4) from points (N, 2) -> xyxy."""
    return np.hstack([points - distances[:, :2], points + distances[:, 2:4]]).astype(np.float32)


def distance_to_points(points: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Keypoint offsets (N, 2K) from points (N, 2) -> (N, K, 2)."""
    return (points[:, None, :] + distances.reshape(len(points), -1, 2)).astype(np.float32)


# YuNet ----------------------------------------------------------------------------------------
def decode_yunet(
    bbox: np.ndarray, kps: np.ndarray, cols: int, rows: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """bbox (N, 4): centre offset in cells, log size in strides; kps (N, 10) offsets in cells.
    Returns xyxy (N, 4) and points (N, 5, 2) in canvas pixels."""
    cells = grid_points(cols, rows, 1.0)
    centres = (cells + bbox[:, :2]) * stride
    sizes = np.exp(bbox[:, 2:4]) * stride
    boxes = np.hstack([centres - sizes / 2, centres + sizes / 2]).astype(np.float32)
    points = ((cells[:, None, :] + kps.reshape(len(kps), -1, 2)) * stride).astype(np.float32)
    return boxes, points
