"""Quality on real photos: pose from 5 landmarks, sharpness, size, and the enrollment gate."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from identity.align import align_faces
from identity.detect import load_detector
from identity.faces import Faces
from identity.quality import assess_quality, enrollment_rejections, pose_from_landmarks
from identity.settings import Settings

from shared_data import SHARED_DIR

DATA = SHARED_DIR / "data"
PHOTO = DATA / "deepface" / "img1.jpg"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def detector(settings):
    return load_detector("retinaface_mnet025", settings)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    img = cv2.imread(str(PHOTO))
    scale = 800 / max(img.shape[:2])
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def analyse(detector, settings, image: np.ndarray) -> Faces:
    faces = detector.detect([image]).largest()
    assert len(faces) == 1
    faces = faces.with_(crops=align_faces([image], faces, "arcface_112"))
    return assess_quality(faces, settings)


def rotate(image: np.ndarray, angle_deg: float) -> np.ndarray:
    h, w = image.shape[:2]
    side = int(np.hypot(h, w))
    canvas = cv2.copyMakeBorder(
        image,
        (side - h) // 2,
        (side - h) // 2,
        (side - w) // 2,
        (side - w) // 2,
        cv2.BORDER_REPLICATE,
    )
    m = cv2.getRotationMatrix2D((canvas.shape[1] / 2, canvas.shape[0] / 2), angle_deg, 1.0)
    return cv2.warpAffine(
        canvas, m, (canvas.shape[1], canvas.shape[0]), borderMode=cv2.BORDER_REPLICATE
    )


def test_real_frontal_photo_scores_high(detector, settings, photo):
    q = analyse(detector, settings, photo)
    d = q.quality_details[0]
    assert q.quality[0] > 0.8 and q.quality_reasons[0] == []
    assert set(d) >= {"det_score", "inter_ocular_px", "sharpness", "pose"}
    assert abs(d["pose"]["yaw"]) < 15 and abs(d["pose"]["roll"]) < 10
    assert enrollment_rejections(q, settings) == [[]]


@pytest.mark.parametrize("angle", [-30, -10, 15, 35])
def test_roll_follows_known_rotation(detector, settings, photo, angle):
    base = analyse(detector, settings, photo).quality_details[0]["pose"]["roll"]
    rolled = analyse(detector, settings, rotate(photo, angle)).quality_details[0]["pose"]
    # cv2 rotates counter-clockwise for positive angles; roll is measured clockwise.
    assert abs((rolled["roll"] - base) - (-angle)) < 5.0


def test_mirrored_photo_flips_yaw(detector, settings):
    # A photo with a clearly turned head (deepface img11 looks to one side).
    img = cv2.imread(str(DATA / "deepface" / "img11.jpg"))
    yaw = analyse(detector, settings, img).quality_details[0]["pose"]["yaw"]
    mirrored = analyse(detector, settings, img[:, ::-1].copy()).quality_details[0]["pose"]["yaw"]
    assert abs(yaw) > 5
    assert np.sign(yaw) == -np.sign(mirrored)
    assert abs(yaw + mirrored) < 0.35 * abs(yaw) + 3


def test_yaw_and_pitch_directions_on_synthetic_landmarks():
    frontal = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 74.1], [41.5, 92.4], [70.7, 92.2]])
    turned = frontal.copy()
    turned[2, 0] += 10  # nose towards the image's right
    up = frontal.copy()
    up[2, 1] -= 8  # nose closer to the eyes: face tilted up
    yaw0, pitch0, _ = pose_from_landmarks(frontal)[0]
    assert abs(yaw0) < 1 and abs(pitch0) < 5
    assert pose_from_landmarks(turned)[0, 0] > 20
    assert pose_from_landmarks(up)[0, 1] > 15


def test_blur_lowers_sharpness_and_quality(detector, settings, photo):
    sharp = analyse(detector, settings, photo)
    iod = float(sharp.inter_ocular[0])
    blurred = analyse(detector, settings, cv2.GaussianBlur(photo, (0, 0), iod / 15))
    assert blurred.quality_details[0]["sharpness"] < sharp.quality_details[0]["sharpness"] - 0.3
    assert blurred.quality[0] < sharp.quality[0] - 0.3
    assert "blurry" in blurred.quality_reasons[0]


def test_small_face_is_flagged_and_gated(detector, settings, photo):
    faces = analyse(detector, settings, photo)
    scale = 14.0 / float(faces.inter_ocular[0])  # eyes 14 px apart
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(small, 40, 40, 40, 40, cv2.BORDER_REPLICATE)
    q = analyse(detector, settings, canvas)
    assert q.quality_details[0]["inter_ocular_px"] < 20
    assert "small_face" in q.quality_reasons[0]
    assert q.quality[0] < faces.quality[0]
    assert any(r.startswith("small_face") for r in enrollment_rejections(q, settings)[0])


def test_extension_signals_override_and_add(detector, settings, photo):
    faces = detector.detect([photo]).largest()
    faces.extra["pose_mesh"] = np.array([[55.0, 0.0, 0.0]], np.float32)
    faces.extra["eyes_open"] = np.array([0.1], np.float32)
    q = assess_quality(faces, settings)
    assert q.quality_details[0]["pose"]["source"] == "pose_mesh"
    assert {"extreme_pose", "eyes_closed"} <= set(q.quality_reasons[0])
    assert any(r.startswith("extreme_pose") for r in enrollment_rejections(q, settings)[0])


def test_adaface_feature_norm_is_a_signal(detector, settings, photo):
    faces = detector.detect([photo]).largest()
    faces = faces.with_(embedding_norms=np.array([5.0], np.float32))
    ada = assess_quality(faces, settings, embedder_name="adaface_ir101_webface12m")
    assert (
        "low_feature_norm" in ada.quality_reasons[0]
        and ada.quality_details[0]["feature_norm"] == 5.0
    )
    other = assess_quality(faces, settings, embedder_name="dlib_resnet_v1")
    assert "feature_norm" not in other.quality_details[0]


def test_arcface_norm_range_comes_from_the_manifest(detector, settings, photo):
    """The ArcFace MobileFaceNets declare a norm range fitted on celeba500 (17.0 to 19.5 for
    the default): a norm at the 1st percentile or below sinks the score, a typical one (above
    the 10th) costs nothing, and in between the factor ramps."""
    faces = detector.detect([photo]).largest()
    name = "arcface_w600k_mbf_int8"

    def scored(norm: float) -> Faces:
        with_norm = faces.with_(embedding_norms=np.array([norm], np.float32))
        return assess_quality(with_norm, settings, embedder_name=name)

    plain = assess_quality(faces, settings)
    low, mid, typical = scored(16.0), scored(18.25), scored(22.0)
    assert low.quality[0] == 0.0 and "low_feature_norm" in low.quality_reasons[0]
    assert typical.quality[0] == pytest.approx(plain.quality[0])
    assert mid.quality[0] == pytest.approx(plain.quality[0] * 0.5, abs=1e-3)
    assert "low_feature_norm" not in mid.quality_reasons[0]


def test_empty_faces(settings):
    q = assess_quality(Faces.empty(), settings)
    assert len(q) == 0 and q.quality.shape == (0,)


def test_native_sharpness_reads_a_small_sharp_face_as_sharp(detector, settings, photo):
    """A real face shrunk to eyes 12 px apart is small, not blurry: measured on the upsampled
    crop it loses most of its sharpness, measured at its own resolution it keeps it; a real blur
    at full size still reads blurry there."""
    from identity.quality import crop_sharpness, native_sharpness

    def measure(image: np.ndarray) -> tuple[float, float]:
        faces = detector.detect([image]).largest()
        crops = align_faces([image], faces, "arcface_112")
        return (
            float(crop_sharpness(crops)[1][0]),
            float(native_sharpness(crops, faces.inter_ocular, "arcface_112")[1][0]),
        )

    big_crop, big_native = measure(photo)
    iod = float(detector.detect([photo]).largest().inter_ocular[0])
    small = cv2.resize(photo, None, fx=12.0 / iod, fy=12.0 / iod, interpolation=cv2.INTER_AREA)
    small_crop, small_native = measure(
        cv2.copyMakeBorder(small, 40, 40, 40, 40, cv2.BORDER_REPLICATE)
    )
    _, blur_native = measure(cv2.GaussianBlur(photo, (0, 0), iod / 15))
    # the crop-based signal calls the small face blurry (< 0.4), the native one sharp
    assert small_crop < 0.4 and small_crop < big_crop - 0.3
    assert small_native > 0.6 and small_native > small_crop + 0.3
    assert blur_native < 0.4 and blur_native < big_native - 0.3
