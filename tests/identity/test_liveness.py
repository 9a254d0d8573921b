"""Presentation-attack detection with the real PAD models on real NUAA photos.

The shipped threshold (models/calibration/liveness.json) was calibrated on NUAA subjects
0001-0006 only; every photo scored here is of subjects 0007-0009, held out from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from identity.cli import app
from identity.faces import Faces
from identity.liveness import assess_liveness, liveness_threshold, load_pad_model
from identity.liveness.crops import minifasnet_box, square_box, unfit_reasons
from identity.liveness.metrics import (
    clopper_pearson_upper,
    pad_errors,
    threshold_at_bpcer,
    threshold_at_bpcer_bound,
)
from identity.pipeline import FaceAnalyzer
from identity.settings import Settings

from shared_data import SHARED_DIR

SHARED = SHARED_DIR
NUAA = SHARED / "data" / "nuaa"
LIVE = ["live/0007/0007_01_00_01_336.jpg", "live/0009/0009_01_00_02_217.jpg"]
SPOOF = [
    "spoof/0007/0007_01_00_01_33.jpg",
    "spoof/0008/0008_00_00_01_145.jpg",
    "spoof/0009/0009_01_00_01_184.jpg",
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        models_dir=SHARED / "models", data_dir=tmp_path_factory.mktemp("data"), quality_mesh=False
    )


@pytest.fixture(scope="module")
def analyzer(settings: Settings) -> FaceAnalyzer:
    return FaceAnalyzer(settings)


def load(rel: str) -> np.ndarray:
    image = cv2.imread(str(NUAA / rel))
    assert image is not None, rel
    return image


# crop geometry --------------------------------------------------------------------------------
def test_minifasnet_box_matches_hand_computed_upstream_geometry() -> None:
    # 640x480 image, box 100x120 at (100, 100). Scale 2.7: 270x324 about (150, 160) runs 2 px
    # over the top edge, so it shifts down by 2 instead of shrinking.
    assert minifasnet_box((640, 480), [100, 100, 200, 220], 2.7) == (15, 0, 285, 324)
    # Scale 4.0 would be 480 px tall: capped at (480-1)/120, then shifted inside on both axes.
    assert minifasnet_box((640, 480), [100, 100, 200, 220], 4.0) == (0, 0, 399, 479)
    # Near the right edge: 189 px wide about x=595 ends at 689.5 and shifts left by 50.5.
    assert minifasnet_box((640, 480), [560, 200, 630, 280], 2.7) == (450, 132, 639, 348)


def test_square_box_is_the_long_side_times_the_scale() -> None:
    assert square_box([100, 100, 200, 220], 1.5) == (60, 70, 180)


def test_model_crops_are_80px_bgr_of_the_scaled_region(settings: Settings) -> None:
    image = load(LIVE[0])
    box = np.array([[250, 150, 350, 270]], np.float32)
    crops = load_pad_model("pad_minifasnet_v2_2.7_80", settings).crops([image], box, np.array([0]))
    x1, y1, x2, y2 = minifasnet_box((640, 480), box[0], 2.7)
    expected = cv2.resize(image[y1 : y2 + 1, x1 : x2 + 1], (80, 80))
    assert crops.shape == (1, 80, 80, 3) and np.array_equal(crops[0], expected)


# which faces are judged -----------------------------------------------------------------------
def test_unfit_reasons_for_small_and_border_faces() -> None:
    boxes = np.array(
        [[100, 100, 200, 220], [0, 100, 90, 210], [300, 300, 340, 345], [500, 10, 639.5, 150]],
        np.float32,
    )
    reasons = unfit_reasons([(480, 640, 3)], boxes, np.zeros(4, np.int32), 64, 0.02)
    assert reasons == [None, "face_cut_by_border", "face_too_small", "face_cut_by_border"]


def test_a_face_cut_by_the_image_border_gets_null_with_a_reason(
    analyzer: FaceAnalyzer, settings: Settings
) -> None:
    image = load(LIVE[0])
    faces = analyzer.detect([image]).largest()
    x1, _, x2, _ = faces.boxes[0]
    cut_at = int(x1 + (x2 - x1) / 3)  # a third of the face is outside the picture
    cut = np.ascontiguousarray(image[:, cut_at:])
    box = faces.boxes.copy()
    box[:, [0, 2]] = np.clip(box[:, [0, 2]] - cut_at, 0, None)
    cut_faces = faces.with_(boxes=box)
    judged = assess_liveness([cut], cut_faces, settings)
    assert math.isnan(float(judged.liveness[0]))
    assert judged.liveness_reasons == ["face_cut_by_border"]
    row = judged.to_dicts()[0]
    assert row["liveness"] is None and row["liveness_reason"] == "face_cut_by_border"


# scores on held-out subjects ------------------------------------------------------------------
def test_held_out_live_and_spoof_photos_fall_on_the_right_side(
    analyzer: FaceAnalyzer, settings: Settings
) -> None:
    thr = liveness_threshold(settings)
    assert thr.operating_point == "bpcer_1e-02"
    assert thr.evidence["subjects"] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    images = [load(p) for p in LIVE + SPOOF]
    faces = analyzer.analyze(images, liveness=True).largest()
    assert len(faces) == len(images) and faces.liveness is not None
    scores = faces.liveness[np.argsort(faces.image_index)]
    assert np.all(scores[: len(LIVE)] >= thr.threshold), scores
    assert np.all(scores[len(LIVE) :] < thr.threshold), scores
    # Not a coin flip near the threshold: prints are scored close to 0, live faces well above.
    assert scores[len(LIVE) :].max() < 0.05 and scores[: len(LIVE)].min() > 0.5


def test_mirrored_view_scores_the_flipped_crop(analyzer: FaceAnalyzer, settings: Settings) -> None:
    """The test-time-augmentation view (bench/liveness_variants.py) scores the same crop flipped
    left-right: a different input, yet live and print stay far apart and each score stays near
    its unflipped one."""
    model = load_pad_model("pad_minifasnet_v2_2.7_80", settings)
    images = [load(p) for p in (LIVE[0], SPOOF[0])]
    faces = analyzer.detect(images).largest()
    mirrored = model.live_probability(images, faces.boxes, faces.image_index, mirrored=True)
    plain = model.live_probability(images, faces.boxes, faces.image_index)
    order = np.argsort(faces.image_index)
    assert mirrored[order][0] > 0.5 > 0.05 > mirrored[order][1], mirrored
    crops = model.crops(images, faces.boxes, faces.image_index)
    assert not np.array_equal(crops, crops[:, :, ::-1])  # a real flip, not a symmetric face
    assert np.all(np.abs(mirrored - plain) < 0.5), (mirrored, plain)


def test_liveness_is_not_computed_unless_asked(analyzer: FaceAnalyzer) -> None:
    faces = analyzer.analyze([load(LIVE[1])])
    assert faces.liveness is None and "liveness" not in faces.to_dicts()[0]


def test_faces_slice_and_concatenate_keep_liveness(
    analyzer: FaceAnalyzer, settings: Settings
) -> None:
    faces = analyzer.analyze([load(LIVE[1]), load(SPOOF[0])], liveness=True)
    both = Faces.concatenate([faces[1:], faces[:1]])
    assert both.liveness is not None and both.liveness_reasons is not None
    assert both.liveness[0] == faces.liveness[1] and len(both.liveness_reasons) == len(both)


# metrics --------------------------------------------------------------------------------------
def test_pad_errors_count_as_iso_30107_3_defines_them() -> None:
    live = np.array([0.9, 0.8, 0.2, 0.95])
    spoof = np.array([0.1, 0.6, 0.0, 0.05, 0.01])
    e = pad_errors(live, spoof, 0.5)
    assert (e.apcer, e.bpcer) == (1 / 5, 1 / 4) and e.acer == pytest.approx((0.2 + 0.25) / 2)
    # 1 % of 4 live scores is 0 faces, so the threshold is the lowest live score.
    assert threshold_at_bpcer(live, 0.01) == 0.2
    assert threshold_at_bpcer(live, 0.25) == 0.8


def test_threshold_at_bpcer_bound_refuses_only_as_many_as_the_bound_allows() -> None:
    live = np.linspace(0.0, 1.0, 1000)
    t = threshold_at_bpcer_bound(live, 0.01)
    refused = int(np.sum(live < t))
    # the most refusals whose 95 % upper bound still meets 1 %: one more would exceed it
    assert clopper_pearson_upper(refused, 1000) <= 0.01 < clopper_pearson_upper(refused + 1, 1000)
    assert 0 < refused < math.floor(0.01 * 1000)  # stricter than the plain quantile
    assert t < threshold_at_bpcer(live, 0.01)
    # too few live faces for any refusal to be bounded by 1 %: none is refused
    few = np.array([0.3, 0.9, 0.5])
    assert threshold_at_bpcer_bound(few, 0.01) == 0.3


def test_clopper_pearson_upper_bound_of_zero_errors_is_the_rule_of_three() -> None:
    assert clopper_pearson_upper(0, 300) == pytest.approx(1 - 0.05 ** (1 / 300), rel=1e-6)
    assert clopper_pearson_upper(300, 300) == 1.0


# command line ---------------------------------------------------------------------------------
def test_cli_analyze_liveness_json_and_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDENTITY_MODELS_DIR", str(SHARED / "models"))
    runner = CliRunner()
    live, spoof = str(NUAA / LIVE[0]), str(NUAA / SPOOF[1])
    result = runner.invoke(app, ["analyze", "--json", "--liveness", live, spoof])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    thr = rows[0]["liveness_threshold"]
    assert thr["operating_point"] == "bpcer_1e-02" and "BPCER" in thr["meaning"]
    assert rows[0]["faces"][0]["liveness"] >= thr["threshold"] > rows[1]["faces"][0]["liveness"]
    text = runner.invoke(app, ["analyze", "--liveness", live, spoof])
    assert text.exit_code == 0, text.output
    # the largest face of each image is listed first ([0]); the print's photo also holds a
    # small false detection, which is reported as not judged instead of scored
    lines = [ln for ln in text.stdout.splitlines() if "liveness=" in ln]
    largest = [ln for ln in lines if ln.lstrip().startswith("[0]")]
    assert len(largest) == 2 and "(live at" in largest[0] and "(SPOOF at" in largest[1]
    assert all("(live at" in ln or "(SPOOF at" in ln or "liveness=null (" in ln for ln in lines)
