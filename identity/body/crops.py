"""Person crops: boxes in source pixels -> fixed-size BGR crops for a re-ID network.

Re-ID networks are trained on crops squeezed to a fixed size (256x128 for the Market/MSMT
convention) without keeping the aspect ratio, so the crop is resized directly, not letterboxed:
a letterboxed crop would show the network black bars it never saw in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity.body.bodies import Bodies
from identity.errors import InvalidInput


def clip_boxes(boxes_xyxy: np.ndarray, image_wh: tuple[int, int]) -> np.ndarray:
    """Boxes clipped to the image; a tracker's box may run past the frame edge."""
    w, h = image_wh
    out = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def crop_bodies(
    images_bgr: Sequence[np.ndarray], bodies: Bodies, size_wh: tuple[int, int]
) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR crops of each person, resized to ``size_wh`` (w, h).

    Raises ``InvalidInput`` for a box that names a missing image or lies outside its image.
    """
    w, h = size_wh
    crops = np.empty((len(bodies), h, w, 3), dtype=np.uint8)
    for row in range(len(bodies)):
        i = int(bodies.image_index[row])
        if not 0 <= i < len(images_bgr):
            raise InvalidInput(f"person {row} refers to image {i}, but {len(images_bgr)} given")
        img = images_bgr[i]
        ih, iw = img.shape[:2]
        x1, y1, x2, y2 = clip_boxes(bodies.boxes[row], (iw, ih))[0]
        # Whole pixels covering the box: floor the start, ceil the end.
        c0, r0 = int(np.floor(x1)), int(np.floor(y1))
        c1, r1 = int(np.ceil(x2)), int(np.ceil(y2))
        if c1 - c0 < 2 or r1 - r0 < 2:
            raise InvalidInput(
                f"person box {row} {bodies.boxes[row].round(1).tolist()} is empty or outside "
                f"its {iw}x{ih} image",
                box=bodies.boxes[row].tolist(),
            )
        patch = img[r0:r1, c0:c1]
        shrinking = patch.shape[0] > h and patch.shape[1] > w
        crops[row] = cv2.resize(
            patch, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    return crops
