"""Intel's OpenVINO models on real data: the manifests and checksums of the IR pairs, the re-ID
networks on cuhk01 people across its two cameras, the SSD pedestrian detector on MOT17 frames
with ground truth, and the input checks that keep native code away from unusable images."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.body import BodyAnalyzer, load_body_embedder, load_person_detector
from identity.body.cross_camera import cross_camera_scores, load_labelled, read_labels, split_people
from identity.body.detect import check_person_images
from identity.body.evaluation import colour_histograms
from identity.errors import ChecksumMismatch, NoPersonFound, UnsuitablePersonImage
from identity.registry import get_manifest, model_status
from identity.runtime import resolve_model
from identity.settings import Settings

SHARED = Path(__file__).resolve().parents[3] / "shared"
CUHK01 = SHARED / "data" / "cuhk01" / "LABELS.csv"
SEQ = SHARED / "data" / "mot" / "MOT17-09-FRCNN"
INTEL = ("reid_intel_0287", "reid_intel_0288", "person_det_adas_0002")

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(models_dir=SHARED / "models", data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def people() -> object:
    """The first 12 people of cuhk01's test half, 4 crops each (2 per camera)."""
    _paths, person, _camera = read_labels(CUHK01)
    _train, test = split_people(person)
    return load_labelled(CUHK01, people=test[:12])


@pytest.mark.parametrize("name", INTEL)
def test_intel_manifests_verify_both_files_of_the_ir(name: str, settings: Settings) -> None:
    m = get_manifest(name)
    assert m.licence == "Apache-2.0" and m.colour == "bgr" and m.mean == (0, 0, 0)
    assert m.file.endswith(".xml") and m.weights_file.endswith(".bin")
    assert model_status(name, settings.models_dir, None)["checksum"] == "ok"
    assert resolve_model(name, settings).weights_path.name == m.weights_file


def test_a_tampered_bin_is_refused(tmp_path: Path) -> None:
    m = get_manifest("reid_intel_0288")
    shutil.copy(SHARED / "models" / m.file, tmp_path / m.file)
    data = bytearray((SHARED / "models" / m.weights_file).read_bytes())
    data[1000] ^= 0xFF
    (tmp_path / m.weights_file).write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        resolve_model("reid_intel_0288", Settings(models_dir=tmp_path, data_dir=tmp_path))


def test_cuhk01_split_is_by_person_and_covers_everyone() -> None:
    _paths, person, camera = read_labels(CUHK01)
    train, test = split_people(person)
    assert (len(test), len(train)) == (486, 485)
    assert not set(train) & set(test) and len(set(train) | set(test)) == len(np.unique(person))
    assert set(camera) == {"A", "B"}


def test_intel_reid_matches_people_across_cameras(settings: Settings, people) -> None:
    scores = {}
    for name in ("reid_intel_0287", "reid_intel_0288"):
        emb, norms = load_body_embedder(name, settings).embed(people.crops)
        assert emb.shape == (len(people), 256) and np.all(norms > 0)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        scores[name] = cross_camera_scores(emb, people.person, people.camera)
    hist = cross_camera_scores(colour_histograms(people.crops), people.person, people.camera)
    assert (
        scores["reid_intel_0287"]["queries"] == 48
    )  # 12 people x 4 crops, each against the other camera
    for s in scores.values():
        assert s["rank1"] >= 0.75 and s["rank1"] > hist["rank1"] and s["mAP"] > hist["mAP"]


def test_flip_averaging_sums_the_mirrored_crop(settings: Settings, people) -> None:
    plain = Settings(
        models_dir=settings.models_dir, data_dir=settings.data_dir, body_flip_average=False
    )
    from identity.body.reid import ReIDOpenVINO

    raw = ReIDOpenVINO(resolve_model("reid_intel_0288", plain), plain)
    crops = people.crops[:3]
    a, _ = raw.embed(crops)
    b, _ = raw.embed(crops[:, :, ::-1])
    both, _ = load_body_embedder("reid_intel_0288", settings).embed(crops)
    expected = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    np.testing.assert_allclose(both, expected, atol=1e-5)
    # batch of one = the same crop inside a batch
    one, _ = raw.embed(crops[1:2])
    np.testing.assert_allclose(one[0], a[1], atol=1e-5)


def _ground_truth(frame: int) -> np.ndarray:
    gt = np.loadtxt(SEQ / "gt" / "gt.txt", delimiter=",")
    gt = gt[(gt[:, 0] == frame) & (gt[:, 6] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= 0.5)]
    gt = gt[gt[:, 5] >= 50]
    return np.column_stack([gt[:, 2:4], gt[:, 2:4] + gt[:, 4:6]]).astype(np.float32)


def test_ssd_finds_the_annotated_pedestrians_in_image_pixels(settings: Settings) -> None:
    from identity.video.tracker import iou_matrix

    frames = [cv2.imread(str(SEQ / "img1" / f"{i:06d}.jpg")) for i in (1, 2)]
    detector = load_person_detector("person_det_adas_0002", settings)
    both = detector.detect(frames)
    assert set(both.image_index.tolist()) == {0, 1}
    assert np.all((both.scores >= 0.5) & (both.scores <= 1))
    for i, frame in enumerate(frames):
        mine = both.for_image(i)
        gt = _ground_truth(i + 1)
        found = int((iou_matrix(gt, mine.boxes).max(axis=1) >= 0.5).sum())
        # bench/person_detect.py: recall 0.46 over all 27 MOT frames (HOG 0.08)
        assert found >= 2, f"frame {i + 1}: {found} of {len(gt)} pedestrians found"
        h, w = frame.shape[:2]
        assert mine.boxes[:, 2].max() <= w and mine.boxes[:, 3].max() <= h
        # batch in = the same as one frame at a time
        alone = detector.detect([frame])
        np.testing.assert_allclose(alone.boxes, mine.boxes, atol=1e-3)


@pytest.mark.parametrize("wh", [(1, 1), (3, 5000), (60, 30), (31, 200), (40, 400)])
def test_unusable_images_are_refused_before_native_code(settings: Settings, wh) -> None:
    w, h = wh
    image = np.full((h, w, 3), 127, np.uint8)
    with pytest.raises(UnsuitablePersonImage):
        check_person_images([image])
    for detector in ("person_det_adas_0002", "hog"):
        with pytest.raises(UnsuitablePersonImage):
            BodyAnalyzer(settings, detector=detector).analyze_one(image)


def test_small_but_valid_images_never_reach_hog_below_its_window(settings: Settings) -> None:
    tiny = np.full((64, 64, 3), 127, np.uint8)  # segfaulted inside detectMultiScale
    with pytest.raises(UnsuitablePersonImage, match="hog"):
        load_person_detector("hog", settings).detect([tiny])
    with pytest.raises(NoPersonFound):
        BodyAnalyzer(settings).analyze_one(tiny)  # the SSD default takes it and finds nobody
