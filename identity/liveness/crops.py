"""Crop geometry of the presentation-attack models, and which faces are fit to be judged.

A PAD model sees more than the face: the paper's edge, the hand holding it and the moire of a
screen sit around the face box, so each model crops at its own scale around the detector's box.

* ``minifasnet``: Silent-Face-Anti-Spoofing's ``CropImage`` (minivision-ai, Apache-2.0). The box
  is scaled by ``s`` about its centre, ``s`` first capped so the crop fits the image
  (``min(s, (H-1)/h, (W-1)/w)``), then shifted (not shrunk) back inside the image, truncated to
  integers and cut inclusive of its right and bottom pixel; the cut is resized to 80 x 80.
* ``square_reflect``: face-antispoof-onnx's ``crop`` (CelebA-Spoof MiniFAS): a square of side
  ``int(max(w, h) * s)`` about the box centre, the part outside the image filled by reflection
  (``BORDER_REFLECT_101``).

Both geometries change the picture when the face touches the border (shifted crop, mirrored
pixels), which is exactly what these models never saw in training: such faces, and faces too
small to carry print texture, are not scored (``unfit_reasons``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity.errors import InvalidInput

REASON_SMALL = "face_too_small"
REASON_BORDER = "face_cut_by_border"


def minifasnet_box(
    image_wh: tuple[int, int], box_xyxy: Sequence[float], scale: float
) -> tuple[int, int, int, int]:
    """Upstream ``CropImage._get_new_box``: inclusive integer (x1, y1, x2, y2) of the crop."""
    src_w, src_h = image_wh
    x, y = float(box_xyxy[0]), float(box_xyxy[1])
    box_w, box_h = float(box_xyxy[2]) - x, float(box_xyxy[3]) - y
    if box_w <= 0 or box_h <= 0:
        raise InvalidInput("face box must have positive width and height", bbox=list(box_xyxy))
    scale = min((src_h - 1) / box_h, (src_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = x + box_w / 2, y + box_h / 2
    left, top, right, bottom = cx - new_w / 2, cy - new_h / 2, cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > src_w - 1:
        left -= right - src_w + 1
        right = src_w - 1
    if bottom > src_h - 1:
        top -= bottom - src_h + 1
        bottom = src_h - 1
    return int(left), int(top), int(right), int(bottom)


def minifasnet_crop(
    image_bgr: np.ndarray, box_xyxy: Sequence[float], scale: float, size: int
) -> np.ndarray:
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = minifasnet_box((w, h), box_xyxy, scale)
    # cv2.resize's default (bilinear), as upstream calls it.
    return cv2.resize(image_bgr[y1 : y2 + 1, x1 : x2 + 1], (size, size))


def square_box(box_xyxy: Sequence[float], scale: float) -> tuple[int, int, int]:
    """face-antispoof-onnx geometry: (x, y, side) of the square crop, possibly off the image."""
    x, y = float(box_xyxy[0]), float(box_xyxy[1])
    w, h = float(box_xyxy[2]) - x, float(box_xyxy[3]) - y
    if w <= 0 or h <= 0:
        raise InvalidInput("face box must have positive width and height", bbox=list(box_xyxy))
    side = max(w, h) * scale
    return int(x + w / 2 - side / 2), int(y + h / 2 - side / 2), int(side)


def square_reflect_crop(
    image_bgr: np.ndarray, box_xyxy: Sequence[float], scale: float, size: int
) -> np.ndarray:
    h, w = image_bgr.shape[:2]
    x, y, side = square_box(box_xyxy, scale)
    x1, y1, x2, y2 = max(0, x), max(0, y), min(w, x + side), min(h, y + side)
    cut = image_bgr[y1:y2, x1:x2]
    cut = cv2.copyMakeBorder(
        cut, y1 - y, (y + side) - y2, x1 - x, (x + side) - x2, cv2.BORDER_REFLECT_101
    )
    # The square needs no letterbox; upstream shrinks with area and enlarges with Lanczos.
    interp = cv2.INTER_LANCZOS4 if size > side else cv2.INTER_AREA
    return cv2.resize(cut, (size, size), interpolation=interp)


CROPPERS = {"minifasnet": minifasnet_crop, "square_reflect": square_reflect_crop}


def unfit_reasons(
    image_shapes: Sequence[tuple[int, ...]],
    boxes: np.ndarray,
    image_index: np.ndarray,
    min_face_px: float,
    border_margin: float,
) -> list[str | None]:
    """Per face: None when it can be judged, else why not (``face_too_small``,
    ``face_cut_by_border``).

    Cut by the border = the box comes closer to an image edge than ``border_margin`` times its
    own side, and at least 1 px (some detectors clip boxes to the image, so a cut face can show
    as a box that merely touches the edge).
    """
    out: list[str | None] = []
    for box, i in zip(np.asarray(boxes, np.float64), np.asarray(image_index), strict=True):
        h, w = image_shapes[int(i)][:2]
        bw, bh = box[2] - box[0], box[3] - box[1]
        margin = max(1.0, border_margin * min(bw, bh))
        if min(bw, bh) < min_face_px:
            out.append(REASON_SMALL)
        elif box[0] < margin or box[1] < margin or box[2] > w - margin or box[3] > h - margin:
            out.append(REASON_BORDER)
        else:
            out.append(None)
    return out
