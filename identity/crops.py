"""Source crops: what a template keeps of its photo so that another model can re-embed it.

Every face model here aligns from the detector's 5 landmarks (``identity.align``), and every
alignment template lies within about 1.6x the face box, so a square of twice the box side
centred on the box holds what any of them needs. The crop is stored with the box and landmarks
in its own pixels (``geometry``): re-embedding is ``FaceAnalyzer.analyze`` on the crop with
those faces given, with no second detection that could pick another face or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from identity.errors import BadImage
from identity.faces import Faces

if TYPE_CHECKING:  # the pipeline imports this module
    from identity.pipeline import FaceAnalyzer

# Box side times this on each side: the crop is (1 + 2 * MARGIN) box sides wide.
MARGIN = 0.5
JPEG_QUALITY = 95  # re-embedding must not pay for compression: near-lossless at this size


@dataclass(frozen=True)
class SourceCrop:
    image_bgr: np.ndarray  # (S, S, 3) uint8
    box: np.ndarray  # (4,) float32, x1 y1 x2 y2 in the crop's pixels
    landmarks: np.ndarray  # (5, 2) float32 in the crop's pixels

    def geometry(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


def source_crop(
    image_bgr: np.ndarray, box: np.ndarray, landmarks: np.ndarray, max_side: int
) -> SourceCrop:
    """The square margin crop around ``box`` (in ``image_bgr``'s pixels), at most ``max_side``
    pixels wide; outside the image it is black, so the geometry stays one scale and shift."""
    import cv2

    box = np.asarray(box, np.float32)
    side = float(max(box[2] - box[0], box[3] - box[1])) * (1 + 2 * MARGIN)
    if not side > 1:
        raise BadImage("face box too small for a source crop", box=box.tolist())
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, y0 = cx - side / 2, cy - side / 2
    out = int(min(max_side, round(side)))
    scale = out / side
    m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
    image = cv2.warpAffine(
        image_bgr, m, (out, out), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT
    )
    shift = np.array([x0, y0], np.float32)
    return SourceCrop(
        image_bgr=image,
        box=((box.reshape(2, 2) - shift) * scale).reshape(4).astype(np.float32),
        landmarks=((np.asarray(landmarks, np.float32) - shift) * scale).astype(np.float32),
    )


def encode_crop(crop: SourceCrop) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", crop.image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise BadImage("could not encode the source crop")
    return buf.tobytes()


def decode_crop(data: bytes, geometry: dict[str, Any]) -> SourceCrop:
    """A stored crop back, with its geometry; BadImage when either is damaged."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    try:
        box = np.asarray(geometry["box"], np.float32).reshape(4)
        landmarks = np.asarray(geometry["landmarks"], np.float32).reshape(5, 2)
    except (KeyError, TypeError, ValueError):
        raise BadImage("source crop geometry is damaged") from None
    if image is None:
        raise BadImage("source crop is not a readable image")
    return SourceCrop(image_bgr=image, box=box, landmarks=landmarks)


def crop_faces(crops: Sequence[SourceCrop], scores: Sequence[float]) -> Faces:
    """One face per crop (crop i is image i of the batch), for ``FaceAnalyzer.analyze(faces=)``."""
    n = len(crops)
    if not n:
        return Faces.empty()
    return Faces(
        boxes=np.stack([c.box for c in crops]).astype(np.float32),
        landmarks=np.stack([c.landmarks for c in crops]).astype(np.float32),
        scores=np.asarray(scores, np.float32).reshape(n),
        image_index=np.arange(n, dtype=np.int32),
    )


def embed_crops(
    analyzer: FaceAnalyzer, crops: Sequence[SourceCrop], scores: Sequence[float]
) -> Faces:
    """Re-analyse stored crops with ``analyzer``'s models: aligned crops,
    embeddings and quality, one face per crop, in order."""
    if not crops:
        return Faces.empty()
    return analyzer.analyze([c.image_bgr for c in crops], faces=crop_faces(crops, scores))
