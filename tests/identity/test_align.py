"""Alignment: Umeyama recovers known transforms; chips put the landmarks on the template."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from identity.align import (
    TEMPLATES,
    align_faces,
    alignment_matrices,
    estimate_similarity,
    transform_points,
)
from identity.detect import load_detector
from identity.errors import InvalidInput
from identity.faces import Faces
from identity.settings import Settings

from shared_data import SHARED_DIR

DATA = SHARED_DIR / "data"
PHOTO = DATA / "deepface" / "img1.jpg"


@pytest.fixture(scope="module")
def detector():
    return load_detector("retinaface_mnet025", Settings())


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]]
    )


@pytest.mark.parametrize(
    "angle,scale,tx,ty", [(0, 1, 0, 0), (30, 0.25, 12, -40), (-170, 3.5, -300, 7)]
)
def test_umeyama_recovers_known_similarity(angle, scale, tx, ty):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, size=(5, 2))
    truth = similarity(angle, scale, tx, ty)
    dst = transform_points(truth, src)
    np.testing.assert_allclose(estimate_similarity(src, dst), truth, atol=1e-9)


def test_umeyama_is_least_squares_under_noise():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, size=(50, 2))
    truth = similarity(12, 0.6, 5, 9)
    dst = transform_points(truth, src) + rng.normal(0, 0.5, size=src.shape)
    m = estimate_similarity(src, dst)
    np.testing.assert_allclose(m[:, :2], truth[:, :2], atol=0.005)
    # the fitted map is within a fraction of the noise everywhere on the points
    assert np.abs(transform_points(m, src) - transform_points(truth, src)).max() < 0.3


def test_umeyama_never_mirrors():
    src = np.array([[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]], float)
    mirrored = src * [-1, 1]
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # a rotation, not a reflection


def test_degenerate_landmarks_raise_typed_error():
    with pytest.raises(InvalidInput):
        estimate_similarity(np.ones((5, 2)), TEMPLATES["arcface_112"].points)


def test_templates_have_expected_geometry():
    arc = TEMPLATES["arcface_112"]
    assert arc.size == 112 and arc.points.shape == (5, 2)
    dl = TEMPLATES["dlib_150"]
    assert dl.size == 150
    # dlib's chip with padding 0.25 puts the eyes about a third of the way down, centred.
    eyes = dl.points[:2]
    assert abs(eyes.mean(axis=0)[0] - 75) < 1.5
    assert 40 < eyes[:, 1].mean() < 52
    assert eyes[0, 0] < eyes[1, 0] and dl.points[3, 0] < dl.points[4, 0]


@pytest.mark.parametrize("template", ["arcface_112", "dlib_150"])
def test_aligned_landmarks_land_on_template(detector, template):
    image = cv2.imread(str(PHOTO))
    faces = detector.detect([image])
    assert len(faces) == 1
    tpl = TEMPLATES[template]
    m = alignment_matrices(faces, template)[0]
    mapped = transform_points(m, faces.landmarks[0])
    # 5 points, 4 degrees of freedom: a real face differs from the mean face, so single points
    # are off by its shape (a few px), but the least-squares fit puts the landmarks' centroid on
    # the template's exactly and leaves no residual rotation of the eye line.
    err = np.linalg.norm(mapped - tpl.points, axis=1)
    assert err.max() < 0.1 * tpl.size
    np.testing.assert_allclose(mapped.mean(axis=0), tpl.points.mean(axis=0), atol=1.0)
    eye_line = mapped[1] - mapped[0]
    tpl_line = tpl.points[1] - tpl.points[0]
    assert (
        abs(np.degrees(np.arctan2(eye_line[1], eye_line[0]) - np.arctan2(tpl_line[1], tpl_line[0])))
        < 3.0
    )

    chips = align_faces([image], faces, template)
    assert chips.shape == (1, tpl.size, tpl.size, 3) and chips.dtype == np.uint8
    if template != "arcface_112":
        return
    # Re-detect on the real chip (padded so the detector sees context) and compare with where
    # the transform put the landmarks: the warp itself must not move them. (On the dlib chip the
    # face is small and loosely framed, and the detector's own scatter, about 5 px, dominates.)
    pad = tpl.size
    canvas = cv2.copyMakeBorder(chips[0], pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    again = detector.detect([canvas]).largest()
    assert len(again) == 1
    redetected = again.landmarks[0] - pad
    np.testing.assert_array_less(np.linalg.norm(redetected - mapped, axis=1), 3.0)


def test_synthetic_warp_puts_marked_points_within_one_pixel():
    """A synthetic image with dots at known landmark positions: after alignment, the dots'
    centroids sit on the template within 1 px (the warp's pixel convention is right)."""
    tpl = TEMPLATES["arcface_112"]
    truth = similarity(-23, 4.0, 140, 60)  # chip -> image
    src_pts = transform_points(truth, tpl.points)
    image = np.zeros((800, 900, 3), np.uint8)
    for x, y in src_pts:
        cv2.circle(
            image,
            (round(x * 16), round(y * 16)),
            6 * 16,
            (255, 255, 255),
            -1,
            lineType=cv2.LINE_AA,
            shift=4,
        )
    faces = Faces(np.array([[0, 0, 900, 800]]), src_pts[None], [1.0], [0])
    chip = align_faces([image], faces, "arcface_112")[0]
    grey = chip[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[0:112, 0:112]
    for x, y in tpl.points:
        win = (np.abs(xs - x) < 5) & (np.abs(ys - y) < 5)
        w = grey * win
        cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
        assert np.hypot(cx - x, cy - y) < 1.0


def test_batch_uses_image_index_and_matches_one_by_one(detector):
    a = cv2.imread(str(DATA / "deepface" / "img1.jpg"))
    b = cv2.imread(str(DATA / "deepface" / "img2.jpg"))
    faces = detector.detect([a, b])
    assert sorted(faces.image_index.tolist()) == [0, 1]
    batch = align_faces([a, b], faces, "arcface_112")
    for i in range(len(faces)):
        img = [a, b][int(faces.image_index[i])]
        one = align_faces([img], faces[i].with_(image_index=np.array([0])), "arcface_112")
        np.testing.assert_array_equal(batch[i], one[0])


def test_empty_and_bad_inputs():
    assert align_faces([], Faces.empty(), "arcface_112").shape == (0, 112, 112, 3)
    faces = Faces(np.array([[0, 0, 10, 10]]), TEMPLATES["arcface_112"].points[None], [1.0], [3])
    with pytest.raises(InvalidInput):
        align_faces([np.zeros((20, 20, 3), np.uint8)], faces, "arcface_112")
    with pytest.raises(InvalidInput):
        align_faces([np.zeros((20, 20, 3), np.uint8)], faces, "no_such_template")
