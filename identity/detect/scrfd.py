"""SCRFD in the InsightFace model-pack format (scrfd_*.onnx, buffalo_l det_10g.onnx, antelopev2
scrfd_10g_bnkps.onnx).

Signature: 6 outputs (scores, boxes per level) or 9 (plus keypoints) for strides 8/16/32 with 2
anchors per cell; 10 or 15 for strides 8..128 with 1 anchor. Each output is (N, C) or (B, N, C)
with C = 1 (score, already a sigmoid), 4 (distances) or 10 (keypoint offsets), in stride units.
Outputs are grouped by C and each group's levels ordered by row count (most rows = stride 8),
so we do not rely on the graph's output order or names.
"""

from __future__ import annotations

import numpy as np

from identity.detect.anchors import cell_grid, distance_to_boxes, distance_to_points, grid_points
from identity.detect.base import Candidates, OnnxDetector, OutputInfo, batch_row
from identity.errors import ModelError


class ScrfdLayout:
    """Which output is which, read once from the graph; decodes one image's rows."""

    def __init__(self, outputs: list[OutputInfo], model: str, extra: dict) -> None:
        n = len(outputs)
        if n in (6, 9):
            default_strides, default_anchors = [8, 16, 32], 2
        elif n in (10, 15):
            default_strides, default_anchors = [8, 16, 32, 64, 128], 1
        else:
            raise ModelError(
                f"model '{model}' has {n} outputs; an SCRFD graph has 6, 9, 10 or 15", model=model
            )
        self.strides: list[int] = list(extra.get("strides", default_strides))
        self.num_anchors: int = int(extra.get("num_anchors", default_anchors))
        levels = len(self.strides)
        self.has_kps = n == 3 * levels
        self.batched = len(outputs[0].shape) == 3
        groups: dict[int, list[int]] = {}
        dims = [o.last_dim for o in outputs]
        if all(d in (1, 4, 10) for d in dims):
            for i, d in enumerate(dims):
                groups.setdefault(int(d), []).append(i)  # type: ignore[arg-type]
        else:  # symbolic widths: fall back to InsightFace's order (scores, boxes, kps)
            groups = {1: list(range(levels)), 4: list(range(levels, 2 * levels))}
            if self.has_kps:
                groups[10] = list(range(2 * levels, 3 * levels))
        if any(len(groups.get(c, [])) != levels for c in ((1, 4, 10) if self.has_kps else (1, 4))):
            raise ModelError(f"model '{model}': SCRFD outputs do not group by level", model=model)
        self.groups = groups

    def decode(self, outputs: list[np.ndarray], j: int, canvas_wh: tuple[int, int]) -> Candidates:
        # Levels: match each output to a stride by its row count (largest map = stride 8).
        def by_rows(idx: list[int]) -> list[np.ndarray]:
            arrs = [batch_row(outputs[i], j) for i in idx]
            return sorted(arrs, key=lambda a: -a.shape[0])

        scores_l, boxes_l = by_rows(self.groups[1]), by_rows(self.groups[4])
        kps_l = by_rows(self.groups[10]) if self.has_kps else [None] * len(self.strides)
        all_boxes, all_pts, all_scores = [], [], []
        for stride, sc, bb, kp in zip(self.strides, scores_l, boxes_l, kps_l, strict=False):
            cols, rows = cell_grid(canvas_wh, stride)
            if sc.shape[0] != cols * rows * self.num_anchors:
                raise ModelError(
                    f"SCRFD level stride {stride}: {sc.shape[0]} rows, expected "
                    f"{cols * rows * self.num_anchors} for canvas {canvas_wh}"
                )
            pts = grid_points(cols, rows, stride, per_cell=self.num_anchors)
            all_scores.append(sc.reshape(-1))
            all_boxes.append(distance_to_boxes(pts, bb * stride))
            if kp is not None:
                all_pts.append(distance_to_points(pts, kp * stride))
            else:
                # Keypoint-less graphs: five points placed from the box by a frontal template, so
                # downstream code always has landmarks (rough; alignment quality suffers).
                all_pts.append(template_points(all_boxes[-1]))
        return Candidates(
            boxes=np.concatenate(all_boxes),
            landmarks=np.concatenate(all_pts),
            scores=np.concatenate(all_scores).astype(np.float32),
        )


# Mean landmark positions of a frontal face inside its detector box (fractions of width/height),
# only used for keypoint-less SCRFD graphs.
_TEMPLATE = np.array(
    [[0.32, 0.42], [0.68, 0.42], [0.50, 0.60], [0.36, 0.78], [0.64, 0.78]], np.float32
)


def template_points(boxes: np.ndarray) -> np.ndarray:
    wh = boxes[:, 2:4] - boxes[:, :2]
    return (boxes[:, None, :2] + _TEMPLATE[None] * wh[:, None, :]).astype(np.float32)


class SCRFDDetector(OnnxDetector):
    def setup_layout(self) -> None:
        self.layout = ScrfdLayout(self.outputs, self.name, self.manifest.extra)
        self.max_stride = max(self.layout.strides)

    def decode(self, outputs: list[np.ndarray], j: int, canvas_wh: tuple[int, int]) -> Candidates:
        return self.layout.decode(outputs, j, canvas_wh)
