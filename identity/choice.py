"""Which face of a photo a request means: by index (largest first), by a box the caller drew,
or the only one; and the short summary of a face that answers and errors carry.

Library rules, so the API, the dashboard and any other caller choose alike: a photo with several
faces and no choice is ``MultipleFaces`` (listing them), never a silent pick of the largest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from identity.detect.nms import box_iou
from identity.errors import InvalidInput, MultipleFaces, NoFaceFound
from identity.faces import Faces

# A drawn box names the detected face it overlaps at least this much (IoU).
MIN_BBOX_IOU = 0.3


def rounded(values: Sequence[float] | np.ndarray, nd: int = 2) -> list[float]:
    return [round(float(v), nd) for v in values]


def face_summary(faces: Faces, i: int) -> dict[str, Any]:
    return {
        "bbox": rounded(faces.boxes[i]),
        "det_score": round(float(faces.scores[i]), 4),
        "quality": None if faces.quality is None else round(float(faces.quality[i]), 4),
        "quality_reasons": list(faces.quality_reasons[i]) if faces.quality_reasons else [],
    }


def choose_face(faces: Faces, face_index: int | None, bbox: Sequence[float] | None) -> Faces:
    """The one face a request means (see the module docstring); errors list every face found."""
    if not len(faces):
        raise NoFaceFound("no face found in the image")
    faces = faces.sorted_by_area()
    found = [face_summary(faces, i) for i in range(len(faces))]
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise InvalidInput(
                f"face_index {face_index} out of range: the image has {len(faces)} faces",
                faces=found,
            )
        return faces[face_index]
    if bbox is not None:
        ious = box_iou(np.asarray(bbox, dtype=np.float32), faces.boxes)
        best = int(np.argmax(ious))
        if ious[best] < MIN_BBOX_IOU:
            raise NoFaceFound("no detected face overlaps the given bbox", faces=found)
        return faces[best]
    if len(faces) > 1:
        raise MultipleFaces(
            f"{len(faces)} faces found; choose one with face_index (largest first) or bbox",
            faces=found,
        )
    return faces
