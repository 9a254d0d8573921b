"""Person detectors. Each returns one ``Bodies`` for a batch of BGR uint8 images.

- ``person_det_adas_0002`` (default): Intel's pedestrian-detection-adas-0002, a MobileNet-v2 SSD
  on OpenVINO (``body`` extra); the whole batch in one call, boxes in image pixels.
- ``hog``: OpenCV's HOG + linear SVM pedestrian detector (Dalal and Triggs 2005), kept as the
  benchmark's baseline and a no-download fallback. It finds upright people at least ~100 px
  tall, and ``detectMultiScale`` crashes the process (segfault) on images smaller than its
  64x128 window, so it refuses those itself before calling OpenCV.
- ``mediapipe_pose``: MediaPipe's BlazePose (legacy ``solutions.pose``, ``mesh`` extra). One
  person per image (the solution tracks a single pose); the box is the landmarks' extent.
- ``scrfd_person``: InsightFace's SCRFD-2.5GF person detector (ONNX), fetched by
  ``identity models pull scrfd_person_2.5g``; anchor-point decoding as for SCRFD faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from identity.body.bodies import Bodies
from identity.detect.anchors import distance_to_boxes, grid_points
from identity.detect.geometry import letterbox
from identity.detect.nms import nms
from identity.errors import InvalidInput, ModelError, UnsuitablePersonImage
from identity.preprocess import to_tensor
from identity.registry import ResolvedModel
from identity.runtime import onnx_session, openvino_model
from identity.settings import Settings

# No person image is smaller than this on a side (a re-ID crop is 128x256; a 32 px person is
# already below what any detector here finds), nor longer than this many times its width or
# height: a standing person is ~1:2.5, a panorama frame ~4:1.
MIN_PERSON_IMAGE_SIDE = 32
MAX_PERSON_IMAGE_ASPECT = 8.0


def check_person_images(
    images_bgr: Sequence[np.ndarray], min_side: int = MIN_PERSON_IMAGE_SIDE
) -> None:
    """Refuse, before any native code runs, what cannot hold a person: a wrong array, an image
    under ``min_side`` px on a side, or a strip more than ``MAX_PERSON_IMAGE_ASPECT`` : 1."""
    for i, img in enumerate(images_bgr):
        if (
            not isinstance(img, np.ndarray)
            or img.ndim != 3
            or img.shape[2] != 3
            or img.dtype != np.uint8
        ):
            raise InvalidInput(f"image {i} must be an HxWx3 uint8 BGR array")
        h, w = img.shape[:2]
        if min(h, w) < min_side:
            raise UnsuitablePersonImage(
                f"image {i} is {w}x{h}: person images must be at least {min_side} px on a side",
                width=w,
                height=h,
                min_side=min_side,
            )
        if max(h, w) > MAX_PERSON_IMAGE_ASPECT * min(h, w):
            raise UnsuitablePersonImage(
                f"image {i} is {w}x{h}: no person image is a strip longer than "
                f"{MAX_PERSON_IMAGE_ASPECT:g}:1",
                width=w,
                height=h,
            )


class HOGPersonDetector:
    """OpenCV's default people detector, run on a copy whose long side is at most ``max_side``.

    Its 64x128 window means people shorter than ~128 px at the working scale are missed, so
    large frames are shrunk only as far as ``max_side`` (not to the face detector's 640).
    """

    name = "hog"
    # detectMultiScale segfaults below its 64x128 window plus the 8 px padding; refuse earlier.
    min_size_wh = (80, 144)

    def __init__(self, settings: Settings | None = None, max_side: int = 1280) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]
        self.max_side = max_side
        self.nms_threshold = settings.det_nms_threshold if settings else 0.4
        # The SVM margin is unbounded; 0.5 margin ~ the default hit threshold plus a little.
        self.min_margin = 0.5

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Bodies:
        check_person_images(images_bgr)
        parts = []
        for i, img in enumerate(images_bgr):
            scale = min(1.0, self.max_side / max(img.shape[:2]))
            work = (
                img
                if scale == 1.0
                else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            )
            if work.shape[1] < self.min_size_wh[0] or work.shape[0] < self.min_size_wh[1]:
                raise UnsuitablePersonImage(
                    f"image {i} is {img.shape[1]}x{img.shape[0]}: the hog person detector needs "
                    f"at least {self.min_size_wh[0]}x{self.min_size_wh[1]} px",
                    width=img.shape[1],
                    height=img.shape[0],
                )
            rects, weights = self.hog.detectMultiScale(
                work, winStride=(8, 8), padding=(8, 8), scale=1.05
            )
            if len(rects) == 0:
                continue
            boxes_wh = np.asarray(rects, np.float32).reshape(-1, 4)
            margin = np.asarray(weights, np.float32).reshape(-1)
            keep = margin >= self.min_margin
            boxes_wh, margin = boxes_wh[keep], margin[keep]
            boxes = np.hstack([boxes_wh[:, :2], boxes_wh[:, :2] + boxes_wh[:, 2:]]) / scale
            # Logistic squashing makes the SVM margin a [0, 1] score comparable across runs.
            scores = 1.0 / (1.0 + np.exp(-margin))
            order = nms(boxes, scores, self.nms_threshold)
            parts.append(Bodies(boxes[order], scores[order], np.full(len(order), i, np.int32)))
        return Bodies.concatenate(parts)


class MediaPipePoseDetector:
    """BlazePose via MediaPipe's legacy solutions; at most one person per image."""

    name = "mediapipe_pose"

    def __init__(
        self, resolved: ResolvedModel | None = None, settings: Settings | None = None
    ) -> None:
        try:
            import mediapipe as mp

            self._pose = mp.solutions.pose.Pose(
                static_image_mode=True, model_complexity=1, min_detection_confidence=0.5
            )
        except Exception as exc:  # any import or graph failure means "not usable here"
            raise ModelError(
                f"MediaPipe pose is not usable here ({type(exc).__name__}: {exc}); "
                "install the 'mesh' extra (mediapipe==0.10.14 needs protobuf<5) or use 'hog'"
            ) from exc

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Bodies:
        check_person_images(images_bgr)
        boxes, scores, index = [], [], []
        for i, img in enumerate(images_bgr):
            h, w = img.shape[:2]
            result = self._pose.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            if result.pose_landmarks is None:
                continue
            lm = np.array(
                [[p.x * w, p.y * h, p.visibility] for p in result.pose_landmarks.landmark]
            )
            seen = lm[lm[:, 2] > 0.5] if (lm[:, 2] > 0.5).sum() >= 4 else lm
            x1, y1 = seen[:, 0].min(), seen[:, 1].min()
            x2, y2 = seen[:, 0].max(), seen[:, 1].max()
            # Landmarks are joints: the body outline extends past them (head top above the
            # eyes, shoulders' width); 10% each side, 15% above, is a person-box convention.
            bw, bh = x2 - x1, y2 - y1
            boxes.append([x1 - 0.1 * bw, y1 - 0.15 * bh, x2 + 0.1 * bw, y2 + 0.05 * bh])
            scores.append(float(lm[:, 2].mean()))
            index.append(i)
        if not boxes:
            return Bodies.empty()
        out = Bodies(np.asarray(boxes, np.float32), np.asarray(scores), np.asarray(index))
        for i, img in enumerate(images_bgr):  # clip to each image
            rows = out.image_index == i
            h, w = img.shape[:2]
            out.boxes[rows, 0::2] = np.clip(out.boxes[rows, 0::2], 0, w)
            out.boxes[rows, 1::2] = np.clip(out.boxes[rows, 1::2], 0, h)
        return out


def decode_scrfd_person(
    outputs: Sequence[np.ndarray],
    canvas_wh: tuple[int, int],
    strides: Sequence[int] = (8, 16, 32),
    anchors_per_cell: int = 2,
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """SCRFD head outputs for one image -> (boxes xyxy in canvas pixels, scores), before NMS.

    ``outputs`` are in InsightFace's export order: the score maps of every stride, then the
    box-distance maps, then (optionally) the keypoint maps; rows are cells in row-major order
    with ``anchors_per_cell`` anchors innermost. Distances are in units of the stride.
    """
    n = len(strides)
    if len(outputs) not in (2 * n, 3 * n):
        raise ModelError(f"SCRFD expects {2 * n} or {3 * n} outputs, got {len(outputs)}")
    all_boxes, all_scores = [], []
    for level, stride in enumerate(strides):
        scores = np.asarray(outputs[level], np.float32).reshape(-1)
        dist = np.asarray(outputs[n + level], np.float32).reshape(-1, 4) * stride
        cols, rows = -(-canvas_wh[0] // stride), -(-canvas_wh[1] // stride)
        points = grid_points(cols, rows, stride, per_cell=anchors_per_cell)
        if len(points) != len(scores):
            raise ModelError(
                f"SCRFD stride {stride}: {len(scores)} scores for {len(points)} anchors "
                f"on a {canvas_wh} canvas"
            )
        keep = scores >= threshold
        all_boxes.append(distance_to_boxes(points[keep], dist[keep]))
        all_scores.append(scores[keep])
    return np.concatenate(all_boxes), np.concatenate(all_scores)


class SCRFDPersonDetector:
    """InsightFace's SCRFD person detector on ONNX; input size and normalisation from the manifest."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        self.manifest = resolved.manifest
        self.name = self.manifest.name
        if self.manifest.input_size is None:
            raise ModelError(f"person detector '{self.name}' has no input_size in its manifest")
        self.canvas_wh: tuple[int, int] = self.manifest.input_size
        self.session = onnx_session(resolved, settings)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        extra: dict[str, Any] = self.manifest.extra
        self.strides = tuple(extra.get("strides", (8, 16, 32)))
        self.anchors_per_cell = int(extra.get("anchors_per_cell", 2))
        self.threshold = float(extra.get("score_threshold", settings.det_threshold))
        self.nms_threshold = settings.det_nms_threshold

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Bodies:
        check_person_images(images_bgr)
        parts = []
        for i, img in enumerate(images_bgr):
            canvas, lb = letterbox(img, self.canvas_wh)
            blob = to_tensor([canvas], self.manifest)
            outputs = self.session.run(self.output_names, {self.input_name: blob})
            boxes, scores = decode_scrfd_person(
                outputs, self.canvas_wh, self.strides, self.anchors_per_cell, self.threshold
            )
            if not len(boxes):
                continue
            order = nms(boxes, scores, self.nms_threshold)
            boxes = lb.boxes_to_source(boxes[order])
            parts.append(Bodies(boxes, scores[order], np.full(len(order), i, np.int32)))
        return Bodies.concatenate(parts)


class SSDPersonDetector:
    """Intel's pedestrian-detection-adas-0002 (MobileNet-v2 SSD) on OpenVINO.

    Each frame is squeezed to the manifest's input size (672x384, no letterbox, as Open Model
    Zoo's demos feed it); the graph's DetectionOutput layer already applies NMS and returns
    relative corners, so boxes are scaled back by each image's own size.
    """

    batch = 8  # frames per call: bounds the input tensor (8 x 3 x 384 x 672 floats, 25 MB)

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        self.manifest = resolved.manifest
        self.name = self.manifest.name
        if self.manifest.input_size is None:
            raise ModelError(f"person detector '{self.name}' has no input_size in its manifest")
        self.compiled = openvino_model(resolved, settings)
        self.threshold = float(self.manifest.extra.get("score_threshold", 0.5))

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Bodies:
        check_person_images(images_bgr)
        parts = []
        for start in range(0, len(images_bgr), self.batch):
            chunk = images_bgr[start : start + self.batch]
            blob = to_tensor(chunk, self.manifest)
            rows = self.compiled.create_infer_request().infer([blob])[0].reshape(-1, 7)
            # image_id -1 ends the list; label 1 is "pedestrian" (0 is background)
            rows = rows[(rows[:, 0] >= 0) & (rows[:, 2] >= self.threshold)]
            for j, img in enumerate(chunk):
                mine = rows[rows[:, 0] == j]
                if not len(mine):
                    continue
                h, w = img.shape[:2]
                boxes = np.clip(mine[:, 3:7], 0.0, 1.0) * np.array([w, h, w, h], np.float32)
                ok = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
                parts.append(
                    Bodies(boxes[ok], mine[ok, 2], np.full(int(ok.sum()), start + j, np.int32))
                )
        return Bodies.concatenate(parts) if parts else Bodies.empty()
