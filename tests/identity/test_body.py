"""Bodies, person crops, manifest preprocessing, the OSNet runner and person detectors on real
MOT17 frames with their ground-truth boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from identity.body import Bodies, BodyAnalyzer, crop_bodies, load_person_detector
from identity.body.detect import decode_scrfd_person
from identity.detect.nms import box_iou
from identity.errors import InvalidInput, ModelError, ModelNotFound, NoPersonFound
from identity.preprocess import to_tensor
from identity.registry import get_manifest
from identity.runtime import resolve_model
from identity.settings import Settings

from shared_data import SHARED_DIR

SHARED = SHARED_DIR
SEQ = SHARED / "data" / "mot" / "MOT17-09-FRCNN"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(models_dir=SHARED / "models", data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def frames() -> tuple[list[np.ndarray], np.ndarray]:
    """Frames 1-2 of MOT17-09 and their visible pedestrians (frame, id, x1, y1, x2, y2)."""
    images = [cv2.imread(str(SEQ / "img1" / f"{i:06d}.jpg")) for i in (1, 2)]
    gt = np.loadtxt(SEQ / "gt" / "gt.txt", delimiter=",")
    gt = gt[(gt[:, 0] <= 2) & (gt[:, 6] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= 0.5)]
    rows = np.column_stack([gt[:, 0], gt[:, 1], gt[:, 2:4], gt[:, 2:4] + gt[:, 4:6]])
    return images, rows


def test_bodies_slicing_and_concatenation() -> None:
    b = Bodies.from_boxes([[0, 0, 10, 20], [5, 5, 50, 100], [1, 1, 3, 3]], image_index=[0, 1, 1])
    b = b.with_(embeddings=np.eye(3, dtype=np.float32))
    assert len(b) == 3 and b.scores.tolist() == [1, 1, 1]
    assert len(b[1:]) == 2 and b[1:].embeddings.shape == (2, 3)
    assert b[np.array([False, True, False])].boxes.tolist() == [[5, 5, 50, 100]]
    assert b.largest().boxes.tolist() == [[0, 0, 10, 20], [5, 5, 50, 100]]
    assert len(b.for_image(1)) == 2
    both = Bodies.concatenate([b, b[:1]])
    assert len(both) == 4 and both.embeddings.shape == (4, 3)
    assert Bodies.concatenate([b, Bodies.from_boxes([[0, 0, 1, 1]])]).embeddings is None
    assert b.to_dicts()[1]["bbox"] == [5.0, 5.0, 50.0, 100.0]
    with pytest.raises(ValueError):
        Bodies(np.zeros((2, 4)), np.zeros(3), np.zeros(2))
    with pytest.raises(IndexError):
        b[np.array([True, False])]


def test_to_tensor_follows_the_manifest() -> None:
    m = get_manifest("osnet_x0_25_msmt17")
    img = np.zeros((256, 128, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    t = to_tensor([img], m)
    assert t.shape == (1, 3, 256, 128) and t.dtype == np.float32
    # RGB order, x/255, ImageNet mean/std: channel 0 is red (30).
    expected = [(30 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (10 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(t[0, :, 5, 5], expected, rtol=1e-5)
    resized = to_tensor(np.zeros((1, 100, 60, 3), np.uint8), m)
    assert resized.shape == (1, 3, 256, 128)
    with pytest.raises(InvalidInput):
        to_tensor([np.zeros((10, 10), np.uint8)], m)


def test_crops_come_from_the_box_and_bad_boxes_are_typed_errors(frames) -> None:
    images, rows = frames
    x1, y1, x2, y2 = rows[0, 2:6]
    crops = crop_bodies(images, Bodies.from_boxes([[x1, y1, x2, y2]]), (128, 256))
    assert crops.shape == (1, 256, 128, 3)
    direct = cv2.resize(
        images[0][int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))], (128, 256)
    )
    assert np.abs(crops[0].astype(int) - direct.astype(int)).mean() < 2
    w = images[0].shape[1]
    with pytest.raises(InvalidInput, match="outside"):
        crop_bodies(images, Bodies.from_boxes([[w + 10, 0, w + 50, 80]]), (128, 256))
    with pytest.raises(InvalidInput, match="image 5"):
        crop_bodies(images, Bodies.from_boxes([[0, 0, 50, 80]], image_index=[5]), (128, 256))


def test_osnet_matches_people_across_frames(settings: Settings, frames) -> None:
    images, rows = frames
    analyzer = BodyAnalyzer(settings, embedder="osnet_x0_25_msmt17")
    bodies = analyzer.analyze(images, Bodies.from_boxes(rows[:, 2:6], rows[:, 0].astype(int) - 1))
    assert bodies.embeddings.shape == (len(rows), 512)
    np.testing.assert_allclose(np.linalg.norm(bodies.embeddings, axis=1), 1.0, atol=1e-5)
    first, second = rows[:, 0] == 1, rows[:, 0] == 2
    sim = bodies.embeddings[first] @ bodies.embeddings[second].T
    ids1, ids2 = rows[first, 1], rows[second, 1]
    assert np.array_equal(ids2[sim.argmax(axis=1)], ids1)  # every person found in the next frame
    # Batching changes nothing: one crop alone gives the same embedding.
    one = analyzer.analyze(images[:1], Bodies.from_boxes(rows[:1, 2:6]))
    np.testing.assert_allclose(one.embeddings[0], bodies.embeddings[0], atol=1e-5)
    # The single-box API and its errors.
    assert len(analyzer.analyze_one(images[0], rows[0, 2:6])) == 1
    with pytest.raises(NoPersonFound):
        BodyAnalyzer(settings, detector="hog").analyze_one(np.full((300, 200, 3), 127, np.uint8))


def test_hog_finds_the_annotated_pedestrians(settings: Settings, frames) -> None:
    images, rows = frames
    found = load_person_detector("hog", settings).detect(images[:1])
    assert len(found) >= 2 and np.all(found.image_index == 0)
    assert np.all((found.scores > 0) & (found.scores <= 1))
    gt = rows[rows[:, 0] == 1, 2:6].astype(np.float32)
    best = [box_iou(box, gt).max() for box in found.boxes]
    # HOG boxes are loose (its window has a margin), so IoU 0.3 counts as a hit here.
    assert sum(iou >= 0.3 for iou in best) >= 2
    with pytest.raises(InvalidInput):
        load_person_detector("hog", settings).detect([np.zeros((10, 10), np.uint8)])


def test_mediapipe_pose_is_usable_or_says_why(settings: Settings, frames) -> None:
    images, rows = frames
    try:
        detector = load_person_detector("mediapipe_pose", settings)
    except ModelError as exc:  # mediapipe missing, or its protobuf pin broken by another package
        assert "hog" in exc.message
        pytest.skip(f"mediapipe pose not usable here: {exc.message}")
    x1, y1, x2, y2 = rows[0, 2:6].astype(int)
    person = images[0][max(0, y1 - 20) : y2 + 20, max(0, x1 - 20) : x2 + 20]
    found = detector.detect([person])
    assert len(found) == 1


def test_scrfd_person_decoding_on_a_synthetic_head() -> None:
    # A 64x64 canvas: stride 8 has an 8x8 grid with 2 anchors per cell = 128 rows.
    canvas = (64, 64)
    strides = (8, 16, 32)
    scores, boxes = [], []
    for s in strides:
        n = (64 // s) ** 2 * 2
        scores.append(np.zeros((n, 1), np.float32))
        boxes.append(np.zeros((n, 4), np.float32))
    # Cell (row 2, col 3) at stride 8, second anchor: point (24, 16). Distances in strides.
    row = (2 * 8 + 3) * 2 + 1
    scores[0][row] = 0.9
    boxes[0][row] = [1, 2, 3, 4]  # left, top, right, bottom
    got_boxes, got_scores = decode_scrfd_person(scores + boxes, canvas, strides, 2, 0.5)
    np.testing.assert_allclose(got_boxes, [[24 - 8, 16 - 16, 24 + 24, 16 + 32]])
    np.testing.assert_allclose(got_scores, [0.9])
    with pytest.raises(ModelError):
        decode_scrfd_person(scores, canvas, strides)
    with pytest.raises(ModelError):
        decode_scrfd_person(scores + boxes, (96, 64), strides)


def test_person_detector_manifest_says_how_to_get_weights(settings: Settings) -> None:
    m = get_manifest("scrfd_person_2.5g")
    assert m.source_url and m.source_url.startswith("https://github.com/deepinsight/insightface/")
    assert "non-commercial" in m.licence
    with pytest.raises(ModelNotFound, match="identity models pull scrfd_person_2.5g"):
        resolve_model("scrfd_person_2.5g", settings)
