"""What every ONNX face detector shares: input checks, letterboxing onto one canvas,
manifest-driven normalisation, batching, thresholding, NMS and mapping back to source pixels.

A runner subclass only says how big its largest stride is (``max_stride``) and how to turn the
raw outputs of one image into candidate boxes, landmarks and scores (``decode``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from identity.detect.geometry import Letterbox, canvas_size, fit_size, letterbox, round_up
from identity.detect.nms import nms
from identity.errors import InvalidInput, ModelError
from identity.faces import Faces
from identity.registry import Manifest, ResolvedModel
from identity.settings import Settings


@dataclass
class Candidates:
    """Raw detections of one image in canvas pixels, before threshold and NMS."""

    boxes: np.ndarray  # (N, 4) xyxy
    landmarks: np.ndarray  # (N, 5, 2)
    scores: np.ndarray  # (N,) in [0, 1]


@dataclass(frozen=True)
class OutputInfo:
    """Name and (possibly symbolic) shape of one graph output, for dispatch by signature."""

    name: str
    shape: tuple[Any, ...]

    @property
    def last_dim(self) -> int | None:
        d = self.shape[-1] if self.shape else None
        return d if isinstance(d, int) else None


def check_images(images_bgr: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every image must be HxWx3 uint8 (BGR); anything else is the caller's mistake."""
    if isinstance(images_bgr, np.ndarray) and images_bgr.ndim == 3:
        raise InvalidInput("detect() takes a sequence of images; wrap a single image in a list")
    out = []
    for i, img in enumerate(images_bgr):
        if not isinstance(img, np.ndarray):
            raise InvalidInput(f"image {i} is a {type(img).__name__}, not a numpy array", index=i)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InvalidInput(
                f"image {i} must be an HxWx3 uint8 BGR array, got shape {img.shape} "
                f"dtype {img.dtype}",
                index=i,
            )
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise InvalidInput(f"image {i} is empty ({img.shape})", index=i)
        out.append(img)
    return out


def normalise(canvases: np.ndarray, manifest: Manifest) -> np.ndarray:
    """(B, H, W, 3) uint8 BGR -> float32 blob laid out and scaled as the manifest says."""
    fast = manifest.layout == "nchw" and manifest.colour in ("bgr", "rgb")
    if fast and len(set(manifest.std)) == 1 and len(manifest.mean) == 3:
        # OpenCV's one pass (swap, subtract, scale, transpose) is 3x numpy's on a 640 px canvas:
        # (x * scale - mean) / std == (x - mean / scale) * (scale / std), mean after the swap.
        m0, m1, m2 = (float(v) / float(manifest.scale) for v in manifest.mean)
        blob: np.ndarray = cv2.dnn.blobFromImages(
            list(canvases),
            scalefactor=float(manifest.scale) / float(manifest.std[0]),
            size=(int(canvases.shape[2]), int(canvases.shape[1])),
            mean=(m0, m1, m2),
            swapRB=manifest.colour == "rgb",
            crop=False,
        )
        return blob
    x: np.ndarray = canvases.astype(np.float32)
    if manifest.colour == "rgb":
        x = x[..., ::-1]
    elif manifest.colour == "gray":
        raise ModelError(f"detector '{manifest.name}': grey input is not supported")
    if manifest.scale != 1.0:
        x = x * np.float32(manifest.scale)
    x = (x - np.asarray(manifest.mean, np.float32)) / np.asarray(manifest.std, np.float32)
    if manifest.layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


class OnnxDetector:
    """Base of the ONNX detectors; built as ``Class(resolved_model, settings)``."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        from identity.runtime import on_cpu, onnx_session

        self.manifest = resolved.manifest
        self.name = self.manifest.name
        self.settings = settings
        try:
            self.session = onnx_session(resolved, settings)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(
                f"detector '{self.name}' could not be loaded from {resolved.location}: {exc}",
                model=self.name,
            ) from exc
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        shape = list(inp.shape)
        self.fixed_batch: int | None = shape[0] if isinstance(shape[0], int) else None
        self.outputs = [OutputInfo(o.name, tuple(o.shape)) for o in self.session.get_outputs()]
        self.output_names = [o.name for o in self.outputs]
        self.setup_layout()
        fixed_hw = shape[2:4] if self.manifest.layout == "nchw" else shape[1:3]
        if len(fixed_hw) == 2 and all(isinstance(d, int) and d > 0 for d in fixed_hw):
            self.canvas_wh: tuple[int, int] = (int(fixed_hw[1]), int(fixed_hw[0]))
        elif self.manifest.input_size is not None:
            self.canvas_wh = (int(self.manifest.input_size[0]), int(self.manifest.input_size[1]))
        else:
            self.canvas_wh = canvas_size(settings.det_max_side, self.max_stride)
            # On the CPU a canvas of each image's shape saves the padding's work and batching
            # saves nothing; on a GPU one square canvas keeps a whole batch in one run.
            self.fits_canvas = on_cpu(self.session)
        if self.canvas_wh[0] % self.max_stride or self.canvas_wh[1] % self.max_stride:
            raise ModelError(
                f"detector '{self.name}': canvas {self.canvas_wh} is not a multiple of the "
                f"largest stride {self.max_stride}",
                model=self.name,
            )

    # subclasses ---------------------------------------------------------------------------
    max_stride: int = 32
    fits_canvas = False  # the graph takes any input size: each image gets a canvas of its shape

    def setup_layout(self) -> None:
        """Read the output signature (called once, after the session exists)."""

    def decode(self, outputs: list[np.ndarray], j: int, canvas_wh: tuple[int, int]) -> Candidates:
        """Candidates of batch row ``j`` from the raw outputs of one run on ``canvas_wh``."""
        raise NotImplementedError

    # shared -------------------------------------------------------------------------------
    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(self.output_names, {self.input_name: blob}))

    def canvas_for(self, image: np.ndarray) -> tuple[int, int]:
        """The canvas ``image`` is detected on: the graph's fixed one, or, for a graph that takes
        any size, the image fitted into ``canvas_wh`` and rounded up to the largest stride. A
        portrait photo then runs on 480 x 640 instead of 640 x 640: the same pixels at the same
        scale, a quarter less work (a 16:9 frame, 44% less)."""
        if not self.fits_canvas:
            return self.canvas_wh
        rw, rh = fit_size((image.shape[1], image.shape[0]), self.canvas_wh)
        return round_up(rw, self.max_stride), round_up(rh, self.max_stride)

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Faces:
        images = check_images(images_bgr)
        if not images:
            return Faces.empty()
        # One batch per canvas shape: an image gets the same canvas alone or in a batch, so a
        # batch gives exactly what one-by-one calls give.
        by_canvas: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_canvas.setdefault(self.canvas_for(img), []).append(i)
        found: dict[int, Faces] = {}
        for canvas_wh, members in by_canvas.items():
            chunk = self.fixed_batch or len(members)
            for start in range(0, len(members), chunk):
                rows = members[start : start + chunk]
                placed = [letterbox(images[i], canvas_wh) for i in rows]
                canvases = np.stack([c for c, _ in placed])
                if self.fixed_batch and len(rows) < self.fixed_batch:
                    # A graph with a fixed batch gets zero canvases as filler; rows ignored.
                    filler = np.zeros(
                        (self.fixed_batch - len(rows),) + canvases.shape[1:], np.uint8
                    )
                    canvases = np.concatenate([canvases, filler])
                outputs = self.run(normalise(canvases, self.manifest))
                for j, (i, (_, box)) in enumerate(zip(rows, placed, strict=True)):
                    found[i] = self._finish(self.decode(outputs, j, canvas_wh), box, i)
        return Faces.concatenate([found[i] for i in range(len(images))])

    def _finish(self, cand: Candidates, box: Letterbox, image_index: int) -> Faces:
        keep = cand.scores >= self.settings.det_threshold
        boxes, landmarks, scores = cand.boxes[keep], cand.landmarks[keep], cand.scores[keep]
        if len(scores) == 0:
            return Faces.empty()
        kept = nms(boxes, scores, self.settings.det_nms_threshold)
        boxes, landmarks, scores = boxes[kept], landmarks[kept], scores[kept]
        return Faces(
            boxes=box.boxes_to_source(boxes),
            landmarks=box.points_to_source(landmarks),
            scores=np.clip(scores, 0.0, 1.0),
            image_index=np.full(len(scores), image_index, np.int32),
        )


def batch_row(output: np.ndarray, j: int, rank_with_batch: int = 3) -> np.ndarray:
    """Row ``j`` of an output that may or may not carry a batch axis ((B, N, C) or (N, C))."""
    return output[j] if output.ndim == rank_with_batch else output
