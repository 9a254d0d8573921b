"""The quality gate on degraded copies of real photos: worse copies score lower, and the strongly
degraded ones are refused for the reason a reviewer would give.

Degradation strengths are set relative to the face's eye distance on the original (as in
``bench/quality.py``), so each photo gets comparable damage. Not covered: ``extreme_pose``. No
shared photo shows a head turned past 26 degrees, and an image-plane warp (squeezing one half of
the face) is read as near-frontal by both pose estimators, so there is no real turned face to test
it on; ``tests/identity/test_quality.py`` and ``tests/identity/test_mesh.py`` test pose itself.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from identity.faces import Faces
from identity.pipeline import FaceAnalyzer
from identity.quality import enrollment_rejections
from identity.settings import Settings

from shared_data import SHARED_DIR

DATA = SHARED_DIR / "data"
PHOTOS = [
    DATA / "deepface" / "img1.jpg",
    DATA / "face_recognition" / "tests" / "test_images" / "biden.jpg",
    DATA / "face_recognition" / "knn_examples" / "train" / "kit_harington" / "john1.jpeg",
]

Degrade = Callable[[np.ndarray, float], np.ndarray]


def gaussian_blur(sigma_per_iod: float) -> Degrade:
    return lambda img, iod: cv2.GaussianBlur(img, (0, 0), sigma_per_iod * iod)


def shrink_to_iod(target_px: float) -> Degrade:
    def degrade(img: np.ndarray, iod: float) -> np.ndarray:
        s = target_px / iod
        return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)

    return degrade


def underexpose(gain: float) -> Degrade:
    def degrade(img: np.ndarray, iod: float) -> np.ndarray:
        noise = np.random.default_rng(0).normal(0.0, 2.0, img.shape)
        return np.clip(np.round(img * gain + noise), 0, 255).astype(np.uint8)

    return degrade


def jpeg(quality: int, target_iod: float) -> Degrade:
    def degrade(img: np.ndarray, iod: float) -> np.ndarray:
        small = shrink_to_iod(target_iod)(img, iod)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)

    return degrade


# Strong enough that a human reviewer would refuse the photo for enrollment.
STRONG: dict[str, tuple[Degrade, str]] = {
    "gaussian blur, sigma 25% of eye distance": (gaussian_blur(0.25), "blurry"),
    "shrunk to a 12 px eye distance": (shrink_to_iod(12.0), "small_face"),
    # No brightness term in the formula: a dark, noisy face has no edges left, so it reads blurry.
    "5% of the light": (underexpose(0.05), "blurry"),
}
# Mild: still a usable enrollment photo.
MILD: dict[str, Degrade] = {
    "gaussian blur, sigma 2% of eye distance": gaussian_blur(0.02),
    "shrunk to a 40 px eye distance": shrink_to_iod(40.0),
    "JPEG quality 60 at a 40 px eye distance": jpeg(60, 40.0),
}


@pytest.fixture(scope="module")
def settings() -> Settings:
    # 5-landmark pose only: the gate's size and sharpness signals do not depend on the mesh, and
    # this keeps the module fast.
    return Settings(quality_mesh=False)


@pytest.fixture(scope="module")
def analyzer(settings: Settings) -> FaceAnalyzer:
    return FaceAnalyzer(settings, detector="retinaface_mnet025", embedder="dlib_resnet_v1")


def largest(analyzer: FaceAnalyzer, image: np.ndarray) -> Faces:
    return analyzer.analyze([np.ascontiguousarray(image)], embed=False).largest()


@pytest.fixture(scope="module")
def originals(analyzer: FaceAnalyzer) -> list[tuple[np.ndarray, Faces]]:
    out = []
    for path in PHOTOS:
        img = cv2.imread(str(path))
        scale = min(1.0, 800 / max(img.shape[:2]))
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces = largest(analyzer, img)
        assert len(faces) == 1
        out.append((img, faces))
    return out


def test_originals_pass_the_gate(originals, settings):
    for _, faces in originals:
        assert faces.quality[0] > 0.8 and faces.quality_reasons[0] == []
        assert enrollment_rejections(faces, settings) == [[]]


@pytest.mark.parametrize("name", list(STRONG))
def test_strong_degradation_scores_lower_and_is_refused_with_its_reason(
    name, analyzer, settings, originals
):
    degrade, reason = STRONG[name]
    found = 0
    for img, orig in originals:
        faces = largest(analyzer, degrade(img, float(orig.inter_ocular[0])))
        if not len(faces):  # the detector refusing the face is a rejection too
            continue
        found += 1
        assert faces.quality[0] < orig.quality[0] - 0.3, (name, faces.quality_details[0])
        assert reason in faces.quality_reasons[0], (name, faces.quality_details[0])
        rejections = enrollment_rejections(faces, settings)[0]
        assert rejections and rejections[0].startswith("low_quality"), rejections
        assert reason in rejections[0], rejections
        if reason == "small_face":
            assert any(r.startswith("small_face: inter-ocular") for r in rejections)
    # It must not pass only because the detector lost every degraded face.
    assert found >= 2, name


@pytest.mark.parametrize("name", list(MILD))
def test_mild_degradation_still_passes_the_gate(name, analyzer, settings, originals):
    for img, orig in originals:
        faces = largest(analyzer, MILD[name](img, float(orig.inter_ocular[0])))
        assert len(faces) == 1
        assert faces.quality[0] <= orig.quality[0] + 1e-6
        assert enrollment_rejections(faces, settings) == [[]], (name, faces.quality_details[0])


def test_quality_falls_as_blur_grows(analyzer, originals):
    img, orig = originals[0]
    iod = float(orig.inter_ocular[0])
    scores = [float(orig.quality[0])]
    for sigma in (0.05, 0.1, 0.15, 0.2, 0.3):
        faces = largest(analyzer, gaussian_blur(sigma)(img, iod))
        if not len(faces):  # blurred past what the detector can find: rejected before quality
            break
        scores.append(float(faces.quality[0]))
    assert len(scores) >= 4, scores
    # Strictly falling while the landmarks hold; past sigma 0.15 the landmarks drift and the
    # score only has to stay low.
    assert scores[0] > scores[1] > scores[2] > scores[3], scores
    assert max(scores[2:]) < 0.3, scores
