"""BlazeFace (MediaPipe) face detector, short or full range, behind the ``mesh`` extra.

Runs mediapipe 0.10.14's legacy ``face_detection`` solution (``model_selection`` from the
manifest's ``extra``). BlazeFace gives a box and six keypoints: the two eyes, nose tip, mouth
centre and the two ear tragions. Our alignment needs InsightFace's five points, so:

* eyes and nose map directly (BlazeFace's first eye is the image-left one);
* the two mouth corners, which BlazeFace does not predict, are placed on either side of the mouth
  centre along the eye line, half a mouth width away, where mouth width / eye distance = 0.828
  is the ratio of ArcFace's own 112 px template (29.18 / 35.24 px). This keeps the points
  consistent with the template the crops are warped onto, whatever the roll;
* with ``IDENTITY_MESH_LANDMARKS=true`` the pipeline replaces all five with FaceMesh points
  (identity.mesh.annotate_mesh); docs/mesh.md measures both on the shared pairs.

The six raw keypoints are kept in ``faces.extra["blazeface_keypoints"]`` (N, 6, 2).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from identity.errors import InvalidInput
from identity.faces import Faces
from identity.mesh import _solutions, run_graph
from identity.registry import ResolvedModel
from identity.settings import Settings

log = logging.getLogger(__name__)

# ArcFace template: mouth-corner distance / eye distance (identity/align.py arcface_112 points)
MOUTH_TO_EYE_RATIO = (70.7299 - 41.5493) / (73.5318 - 38.2946)


def five_from_six(keypoints: np.ndarray) -> np.ndarray:
    """(N, 6, 2) BlazeFace keypoints -> (N, 5, 2) InsightFace order (see module docstring)."""
    kp = np.asarray(keypoints, np.float32).reshape(-1, 6, 2)
    eye_l, eye_r, nose, mouth = kp[:, 0], kp[:, 1], kp[:, 2], kp[:, 3]
    half = (eye_r - eye_l) * (MOUTH_TO_EYE_RATIO / 2)
    return np.stack([eye_l, eye_r, nose, mouth - half, mouth + half], axis=1)


class BlazeFaceDetector:
    """``BlazeFaceDetector(resolved, settings)``; ``detect`` takes a batch of BGR uint8 images."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        _, _, face_detection = _solutions()
        self.name = resolved.manifest.name
        self.settings = settings
        self.model_selection = int(resolved.manifest.extra.get("model_selection", 0))
        # The legacy graph is not re-entrant: one call at a time per detector.
        self._lock = threading.Lock()
        self._graph: Any = None
        self._make_graph = lambda: face_detection.FaceDetection(
            min_detection_confidence=float(settings.det_threshold),
            model_selection=self.model_selection,
        )

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Faces:
        boxes, kps, scores, index = [], [], [], []
        for i, image in enumerate(images_bgr):
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
                raise InvalidInput(
                    f"image {i}: expected a BGR uint8 array (H, W, 3), got "
                    f"{getattr(image, 'shape', type(image).__name__)}",
                )
            h, w = image.shape[:2]
            rgb = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_BGR2RGB)
            with self._lock:
                result = run_graph(self, rgb)
            for det in result.detections or []:
                rel = det.location_data.relative_bounding_box
                x1, y1 = rel.xmin * w, rel.ymin * h
                boxes.append([x1, y1, x1 + rel.width * w, y1 + rel.height * h])
                kps.append([[p.x * w, p.y * h] for p in det.location_data.relative_keypoints])
                scores.append(det.score[0] if det.score else 0.0)
                index.append(i)
        if not boxes:
            faces = Faces.empty()
            faces.extra["blazeface_keypoints"] = np.zeros((0, 6, 2), np.float32)
            return faces
        keypoints = np.asarray(kps, np.float32)
        box_arr = np.asarray(boxes, np.float32)
        # clip to the image like the other detectors (BlazeFace boxes can spill past an edge)
        for row, i in enumerate(index):
            hh, ww = images_bgr[i].shape[:2]
            box_arr[row, [0, 2]] = np.clip(box_arr[row, [0, 2]], 0, ww)
            box_arr[row, [1, 3]] = np.clip(box_arr[row, [1, 3]], 0, hh)
        return Faces(
            boxes=box_arr,
            landmarks=five_from_six(keypoints),
            scores=np.asarray(scores, np.float32),
            image_index=np.asarray(index, np.int32),
            extra={"blazeface_keypoints": keypoints},
        )
