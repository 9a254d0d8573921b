"""YuNet (libfacedetection.train), the ONNX graph OpenCV's ``FaceDetectorYN`` runs.

Signature: 12 outputs ``cls_{8,16,32}``, ``obj_*``, ``bbox_*``, ``kps_*`` of shape (B, N, C).
cls and obj are already sigmoids; the face score is sqrt(cls * obj) after clamping both to
[0, 1], as OpenCV does. Input: BGR, raw 0..255 (mean 0, std 1), sides multiples of 32; the
manifest says so, this runner does not hard-code it.
"""

from __future__ import annotations

import re

import numpy as np

from identity.detect.anchors import cell_grid, decode_yunet
from identity.detect.base import Candidates, OnnxDetector
from identity.errors import ModelError

_NAME = re.compile(r"^(cls|obj|bbox|kps)_(\d+)$")


class YuNetDetector(OnnxDetector):
    def setup_layout(self) -> None:
        index: dict[tuple[str, int], int] = {}
        for i, o in enumerate(self.outputs):
            m = _NAME.match(o.name)
            if m:
                index[(m.group(1), int(m.group(2)))] = i
        self.strides = sorted({s for _, s in index})
        missing = [
            f"{k}_{s}"
            for s in self.strides
            for k in ("cls", "obj", "bbox", "kps")
            if (k, s) not in index
        ]
        if not self.strides or missing:
            raise ModelError(
                f"model '{self.name}' is not a YuNet graph (outputs "
                f"{[o.name for o in self.outputs]}; missing {missing})",
                model=self.name,
            )
        self.index = index
        self.max_stride = max(self.strides)

    def decode(self, outputs: list[np.ndarray], j: int, canvas_wh: tuple[int, int]) -> Candidates:
        boxes_l, pts_l, scores_l = [], [], []
        for s in self.strides:
            cols, rows = cell_grid(canvas_wh, s)
            cls = np.clip(outputs[self.index[("cls", s)]][j].reshape(-1), 0.0, 1.0)
            obj = np.clip(outputs[self.index[("obj", s)]][j].reshape(-1), 0.0, 1.0)
            bbox = outputs[self.index[("bbox", s)]][j].reshape(-1, 4)
            kps = outputs[self.index[("kps", s)]][j].reshape(-1, 10)
            if len(cls) != cols * rows:
                raise ModelError(f"YuNet level {s}: {len(cls)} rows for a {cols}x{rows} grid")
            boxes, pts = decode_yunet(bbox, kps, cols, rows, s)
            boxes_l.append(boxes)
            pts_l.append(pts)
            scores_l.append(np.sqrt(cls * obj).astype(np.float32))
        return Candidates(np.concatenate(boxes_l), np.concatenate(pts_l), np.concatenate(scores_l))
