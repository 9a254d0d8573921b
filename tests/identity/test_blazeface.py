"""BlazeFace (mediapipe, the `mesh` extra) on the shared real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from shared_data import SHARED_DIR

pytest.importorskip("mediapipe")

from identity.detect import load_detector
from identity.detect.blazeface import MOUTH_TO_EYE_RATIO, five_from_six
from identity.errors import InvalidInput
from identity.registry import resolve
from identity.settings import Settings

DATA = SHARED_DIR / "data"
TRAIN = DATA / "face_recognition" / "knn_examples" / "train"
SINGLE = sorted(TRAIN.glob("*/*")) + [DATA / "deepface" / f"img{i}.jpg" for i in (1, 2, 11, 24, 57)]


def load(path: Path, max_side: int = 640) -> np.ndarray:
    image = cv2.imread(str(path))
    scale = max_side / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale) if scale < 1 else image


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.mark.parametrize("name", ["blazeface_short", "blazeface_full"])
def test_manifest_resolves_inside_the_wheel_with_checksum(name: str) -> None:
    resolved = resolve(name, None, None)
    assert resolved.origin == "package"
    assert resolved.path is not None and resolved.path.suffix == ".tflite"


def test_finds_one_face_on_every_single_face_photo(settings: Settings) -> None:
    detector = load_detector("blazeface_short", settings)
    images = [load(p) for p in SINGLE]
    faces = detector.detect(images)
    counts = np.bincount(faces.image_index, minlength=len(images))
    assert counts.tolist() == [1] * len(images), dict(
        zip([p.name for p in SINGLE], counts, strict=False)
    )
    # the five points sit inside the box, in InsightFace order (image-left eye first)
    lm, boxes = faces.landmarks, faces.boxes
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all()
    assert (lm[:, 3, 0] < lm[:, 4, 0]).all()
    assert (lm[:, :, 0] >= boxes[:, None, 0] - 2).all() and (
        lm[:, :, 0] <= boxes[:, None, 2] + 2
    ).all()
    assert (faces.scores > 0.5).all()
    assert faces.extra["blazeface_keypoints"].shape == (len(faces), 6, 2)


def test_full_range_finds_the_faces_of_a_group_photo(settings: Settings) -> None:
    image = load(DATA / "face_recognition" / "knn_examples" / "test" / "obama_and_biden.jpg", 1280)
    faces = load_detector("blazeface_full", settings).detect([image])
    assert len(faces) == 2


def test_mouth_corners_follow_the_template_ratio_and_the_roll() -> None:
    # eyes 40 px apart on a line tilted by 30 degrees; mouth centre below the nose
    angle = np.radians(30)
    axis = np.array([np.cos(angle), np.sin(angle)])
    kp = np.array(
        [
            [
                [100, 100],
                [100 + 40 * axis[0], 100 + 40 * axis[1]],
                [115, 130],
                [110, 150],
                [80, 100],
                [160, 130],
            ]
        ]
    )
    five = five_from_six(kp)[0]
    mouth = five[4] - five[3]
    assert np.linalg.norm(mouth) == pytest.approx(40 * MOUTH_TO_EYE_RATIO, rel=1e-5)
    assert mouth[0] * axis[1] - mouth[1] * axis[0] == pytest.approx(0, abs=1e-4)
    assert np.allclose((five[3] + five[4]) / 2, kp[0, 3])


def test_bad_input_is_a_typed_error(settings: Settings) -> None:
    detector = load_detector("blazeface_short", settings)
    with pytest.raises(InvalidInput):
        detector.detect([np.zeros((10, 10), np.uint8)])
    assert len(detector.detect([np.zeros((64, 64, 3), np.uint8)])) == 0
