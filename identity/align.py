"""Face alignment: a similarity transform of the 5 landmarks onto a template, then a warp.

Every embedder was trained on crops made one particular way, so the template (chip size and the
five reference points, in InsightFace order: left eye, right eye, nose, left mouth, right mouth,
"left" meaning the image's left) is part of the model's contract and is named in its manifest.

* ``arcface_112``: InsightFace's ArcFace template (``insightface.utils.face_align.arcface_dst``),
  used by every ArcFace-family and AdaFace model.
* ``dlib_150``: the geometry of dlib's ``get_face_chip(img, shape, size=150, padding=0.25)``,
  which dlib's ResNet face descriptor was trained on. dlib maps its own landmark scheme onto a mean
  face; we place the equivalent 5 InsightFace-order points of that same mean face (eye centres =
  mean of the six eye contour points, nose tip = point 30, mouth corners = points 48/54 of the
  iBUG-68 mean shape in dlib's ``get_face_chip_details``) into a 150 px chip with 25 % padding.
  docs/embeddings.md compares this with running dlib's own shape predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from identity.errors import InvalidInput
from identity.faces import Faces


@dataclass(frozen=True)
class AlignTemplate:
    name: str
    size: int  # square chip side in pixels
    points: np.ndarray  # (5, 2) float64 reference landmarks in chip pixels, InsightFace order


def _dlib_mean_face_points(size: int, padding: float) -> np.ndarray:
    """InsightFace-order points of dlib's iBUG-68 mean face, placed as get_face_chip places them."""
    # dlib's mean_face_shape for parts 36-41 (one eye), 42-47 (other eye), 30, 48, 54;
    # normalised face coordinates in [0, 1] (dlib/image_transforms/interpolation.h).
    eye_a_x = [0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743]
    eye_a_y = [0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077]
    eye_b_x = [0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335]
    eye_b_y = [0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099]
    face = np.array(
        [
            [np.mean(eye_a_x), np.mean(eye_a_y)],
            [np.mean(eye_b_x), np.mean(eye_b_y)],
            [0.490127, 0.515625],  # nose tip (part 30)
            [0.254149, 0.780233],  # mouth corner (part 48)
            [0.726104, 0.780233],  # mouth corner (part 54)
        ]
    )
    return (padding + face) / (2 * padding + 1) * size


TEMPLATES: dict[str, AlignTemplate] = {
    "arcface_112": AlignTemplate(
        "arcface_112",
        112,
        np.array(
            [
                [38.2946, 51.6963],
                [73.5318, 51.5014],
                [56.0252, 71.7366],
                [41.5493, 92.3655],
                [70.7299, 92.2041],
            ]
        ),
    ),
    "dlib_150": AlignTemplate("dlib_150", 150, _dlib_mean_face_points(150, 0.25)),
}


def get_template(name: str) -> AlignTemplate:
    if name not in TEMPLATES:
        raise InvalidInput(
            f"unknown alignment template '{name}'; known: {', '.join(sorted(TEMPLATES))}",
            template=name,
        )
    return TEMPLATES[name]


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns", in 2-D. Returns the 2x3 matrix ``M`` with ``dst ~ M @ [x, y, 1]``. The reflection
    guard (the ``d`` sign flip) keeps a mirrored landmark set from producing a mirrored crop.
    """
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise InvalidInput(f"need matching point sets of >= 2 points, got {src.shape} {dst.shape}")
    n = len(src)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / n
    if not np.isfinite(src_var) or src_var < 1e-12:
        raise InvalidInput("landmarks are degenerate (all at one point)")
    cov = dst_c.T @ src_c / n
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / src_var)
    t = dst_mean - scale * rot @ src_mean
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = t
    return m


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def alignment_matrices(faces: Faces, template: str) -> np.ndarray:
    """(N, 2, 3) source-image -> chip transforms for every face."""
    tpl = get_template(template)
    return (
        np.stack([estimate_similarity(lm, tpl.points) for lm in faces.landmarks])
        if len(faces)
        else np.zeros((0, 2, 3))
    )


def _warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """warpAffine with anti-aliasing: when the chip shrinks the face more than 2x, first shrink
    the region around it with INTER_AREA (bilinear sampling alone aliases high-resolution photos,
    and dlib's own extract_image_chip uses a pyramid for the same reason)."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        # Source region the chip covers, plus a margin for the interpolation kernel.
        inv = cv2.invertAffineTransform(m)
        corners = transform_points(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        h, w = image.shape[:2]
        pad = 2.0 / scale
        x0 = int(max(np.floor(corners[:, 0].min() - pad), 0))
        y0 = int(max(np.floor(corners[:, 1].min() - pad), 0))
        x1 = int(min(np.ceil(corners[:, 0].max() + pad), w))
        y1 = int(min(np.ceil(corners[:, 1].max() + pad), h))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = 1.0 / (2.0 * scale)  # leave a final bilinear shrink of about 2x
            region = image[y0:y1, x0:x1]
            rw = max(round((x1 - x0) / factor), 1)
            rh = max(round((y1 - y0) / factor), 1)
            small = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
            fx, fy = (x1 - x0) / rw, (y1 - y0) / rh
            # small pixel centre (u, v) sits at source x0 + (u + 0.5) * fx - 0.5
            to_src = np.array([[fx, 0.0, x0 + 0.5 * fx - 0.5], [0.0, fy, y0 + 0.5 * fy - 0.5]])
            lin = m[:, :2]
            m = np.hstack([lin @ to_src[:, :2], (lin @ to_src[:, 2] + m[:, 2])[:, None]])
            image = small
    return cv2.warpAffine(
        image,
        m,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def align_faces(images_bgr: Sequence[np.ndarray], faces: Faces, template: str) -> np.ndarray:
    """(N, S, S, 3) uint8 BGR chips, one per face; ``faces.image_index`` picks the source image."""
    tpl = get_template(template)
    out = np.zeros((len(faces), tpl.size, tpl.size, 3), dtype=np.uint8)
    if not len(faces):
        return out
    if len(images_bgr) and int(faces.image_index.max()) >= len(images_bgr):
        raise InvalidInput(
            f"face refers to image {int(faces.image_index.max())} of a batch of {len(images_bgr)}"
        )
    for i, m in enumerate(alignment_matrices(faces, template)):
        image = images_bgr[int(faces.image_index[i])]
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        out[i] = _warp(image, m, tpl.size)
    return out
