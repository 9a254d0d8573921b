"""Manifest-driven preprocessing: images in, the network's input tensor out.

Every ONNX runner (face embedders, re-ID, detectors fed fixed-size inputs) turns pixels into a
tensor the same way, and the only thing that differs between models is data in the manifest:
``input_size`` (w, h), ``colour``, ``scale``, ``mean``, ``std``, ``layout``. Keeping the arithmetic
here means a new model with a known runner needs a manifest, not code.

The formula is ``((pixel * scale) - mean) / std`` per channel, in the manifest's channel order,
so ``scale = 1/255`` with ImageNet mean/std is torchvision's ``Normalize`` after ``ToTensor``, and
``scale = 1, mean = 127.5, std = 128`` is InsightFace's ArcFace convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity.errors import InvalidInput
from identity.registry import Manifest


def _as_list(images_bgr: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(images_bgr, np.ndarray):
        if images_bgr.ndim == 3:  # one image, not a batch
            return [images_bgr]
        if images_bgr.ndim != 4:
            raise InvalidInput(f"expected (N, H, W, 3) images, got shape {images_bgr.shape}")
        return list(images_bgr)
    return list(images_bgr)


def to_tensor(images_bgr: Sequence[np.ndarray] | np.ndarray, manifest: Manifest) -> np.ndarray:
    """BGR uint8 images (a list of any sizes, or an (N, H, W, 3) array) -> float32 batch.

    Each image is resized to the manifest's ``input_size`` when it differs (bilinear, or area
    when shrinking, which aliases less), converted to its ``colour`` order, normalised, and laid
    out as ``nchw`` or ``nhwc``. Returns shape (N, 3, H, W) or (N, H, W, 3); (N, 1, H, W) for grey.
    """
    images = _as_list(images_bgr)
    if manifest.input_size is None:
        raise InvalidInput(f"model '{manifest.name}' has no input_size in its manifest")
    w, h = (int(v) for v in manifest.input_size)
    channels = 1 if manifest.colour == "gray" else 3
    out = np.empty((len(images), h, w, channels), dtype=np.float32)
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) == 0:
            raise InvalidInput(
                f"image {i} for model '{manifest.name}' must be HxWx3 uint8 BGR, "
                f"got shape {img.shape} dtype {img.dtype}"
            )
        if img.shape[0] != h or img.shape[1] != w:
            shrinking = img.shape[0] > h and img.shape[1] > w
            img = cv2.resize(
                img, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            )
        if manifest.colour == "rgb":
            img = img[:, :, ::-1]
        elif manifest.colour == "gray":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
        out[i] = img
    mean = np.asarray(manifest.mean, dtype=np.float32)[:channels]
    std = np.asarray(manifest.std, dtype=np.float32)[:channels]
    out *= np.float32(manifest.scale)
    out -= mean
    out /= std
    if manifest.layout == "nchw":
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit length, and the norms they had (a quality signal for embedders)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    return x / np.maximum(norms, eps)[:, None], norms.astype(np.float32)
