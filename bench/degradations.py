"""Degradations of a real photo the way real probes go wrong, for ``bench/quality.py``.

Each takes (image BGR, the clean face's box xyxy, its eye distance in px, a seeded generator) and
returns a new image. The strength is drawn from a fixed range and scaled to the face's size, so a
2 MB portrait and a 300 px thumbnail get comparable damage.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Image = np.ndarray
Degrade = Callable[[Image, np.ndarray, float, np.random.Generator], Image]


def gaussian_blur(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Out of focus: sigma 3% to 25% of the eye distance (1 to 9 px at the 35 px template)."""
    sigma = rng.uniform(0.03, 0.25) * iod
    return cv2.GaussianBlur(img, (0, 0), sigma)


def motion_blur(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Camera or subject motion: a line kernel 10% to 80% of the eye distance, any direction."""
    length = max(3, int(np.rint(rng.uniform(0.1, 0.8) * iod)) | 1)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return cv2.filter2D(img, -1, kernel / kernel.sum())


def small_face(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Far from the camera: the whole photo shrunk until the eyes are 6 to 22 px apart."""
    scale = min(1.0, rng.uniform(6.0, 22.0) / iod)
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def jpeg_q10(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """A re-compressed web/CCTV still: face at 20-45 px eye distance, JPEG quality 10."""
    scale = min(1.0, rng.uniform(20.0, 45.0) / iod)
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def underexposed(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Heavy under-exposure: 3% to 20% of the light, plus sensor read noise (sd 2 grey levels)."""
    gain = rng.uniform(0.03, 0.2)
    out = img.astype(np.float32) * gain + rng.normal(0.0, 2.0, img.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def rotated(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Large in-plane rotation (45 to 150 degrees either way) about the face, canvas enlarged."""
    angle = float(rng.choice([-1.0, 1.0]) * rng.uniform(45.0, 150.0))
    h, w = img.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
    side = int(np.hypot(h, w))
    m[:, 2] += (side / 2 - cx, side / 2 - cy)
    return cv2.warpAffine(img, m, (side, side), borderMode=cv2.BORDER_REPLICATE)


def cut_face(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """The frame cuts the face: 25% to 60% of the face box lost off one side."""
    x0, y0, x1, y1 = (int(np.rint(v)) for v in box)
    h, w = img.shape[:2]
    lost = rng.uniform(0.25, 0.6)
    side = int(rng.integers(4))
    if side == 0:  # left part of the face cut away
        return img[:, min(w - 1, max(0, x0 + int(lost * (x1 - x0)))) :]
    if side == 1:  # right part
        return img[:, : max(1, x1 - int(lost * (x1 - x0)))]
    if side == 2:  # top
        return img[min(h - 1, max(0, y0 + int(lost * (y1 - y0)))) :, :]
    return img[: max(1, y1 - int(lost * (y1 - y0))), :]


DEGRADATIONS: dict[str, Degrade] = {
    "gaussian blur": gaussian_blur,
    "motion blur": motion_blur,
    "small face": small_face,
    "jpeg q10": jpeg_q10,
    "under-exposed": underexposed,
    "rotated 45-150": rotated,
    "face cut by frame": cut_face,
}
CLEAN = "clean"
