"""Rank-1 / mAP on hand-made cases with known answers, and the re-ID models on real pedestrians."""

from __future__ import annotations

import numpy as np
import pytest

from identity.body import load_body_embedder
from identity.body.evaluation import (
    average_precision,
    colour_histograms,
    cross_frame_scores,
    load_mot,
    retrieval_scores,
)
from identity.errors import InvalidInput
from identity.settings import Settings

from shared_data import SHARED_DIR

SHARED = SHARED_DIR
MOT = SHARED / "data" / "mot"


def test_average_precision_known_answer() -> None:
    # Ranked: pos, neg, pos, neg -> precisions at the positives 1/1 and 2/3.
    sim = np.array([0.9, 0.8, 0.7, 0.1])
    pos = np.array([True, False, True, False])
    assert average_precision(sim, pos) == pytest.approx((1 + 2 / 3) / 2)
    # Order of the gallery does not matter, only the scores.
    assert average_precision(sim[::-1], pos[::-1]) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(InvalidInput):
        average_precision(sim, np.zeros(4, bool))


def test_rank1_and_map_known_answer() -> None:
    gallery = np.array([1, 2, 1, 3])
    queries = np.array([1, 2, 3, 4])
    sim = np.array(
        [
            [
                0.9,
                0.5,
                0.1,
                0.0,
            ],  # label 1: right first (rank-1 hit); positives at ranks 1, 3 -> AP (1 + 2/3)/2
            [0.9, 0.05, 0.3, 0.1],  # label 2: wrong first; its one positive is last of 4 -> AP 1/4
            [0.1, 0.2, 0.3, 0.9],  # label 3: hit, AP 1
            [0.5, 0.5, 0.5, 0.5],  # label 4: no positive in the gallery -> skipped
        ]
    )
    scores = retrieval_scores(sim, queries, gallery)
    assert scores["queries"] == 3
    assert scores["rank1"] == pytest.approx(2 / 3)
    assert scores["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 4 + 1) / 3)
    # Masking the first gallery item away from query 0 leaves its other positive at rank 2
    # (behind 0.5): rank-1 miss, AP 1/2.
    valid = np.ones_like(sim, bool)
    valid[0, 0] = False
    masked = retrieval_scores(sim, queries, gallery, valid)
    assert masked["rank1"] == pytest.approx(1 / 3)
    assert masked["mAP"] == pytest.approx((1 / 2 + 1 / 4 + 1) / 3)
    with pytest.raises(InvalidInput):
        retrieval_scores(sim[:, :2], queries, gallery)
    with pytest.raises(InvalidInput):
        retrieval_scores(sim, np.array([7, 8, 9, 10]), gallery)


def test_load_mot_keeps_visible_pedestrians_of_present_frames() -> None:
    data = load_mot(MOT / "MOT17-09-FRCNN")
    gt = np.loadtxt(MOT / "MOT17-09-FRCNN" / "gt" / "gt.txt", delimiter=",")
    frames = len(list((MOT / "MOT17-09-FRCNN" / "img1").glob("*.jpg")))
    expected = (gt[:, 0] <= frames) & (gt[:, 6] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= 0.5)
    expected &= gt[:, 5] >= 32
    assert len(data) == int(expected.sum())
    assert data.crops.shape[1:] == (256, 128, 3) and data.crops.dtype == np.uint8
    with pytest.raises(InvalidInput):
        load_mot(SHARED / "data" / "deepface")


def test_colour_histograms_are_unit_length() -> None:
    crops = np.random.default_rng(0).integers(0, 255, (3, 256, 128, 3), dtype=np.uint8)
    feats = colour_histograms(crops)
    assert feats.shape == (3, 6 * 8 * 4 * 4)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


def test_osnet_beats_the_random_weight_vit_on_real_pedestrians() -> None:
    torch = pytest.importorskip("torch")
    from identity.body.vit import DinoViTDescriptor
    from identity.registry import get_manifest

    torch.manual_seed(0)
    # MOT17-10, three frames: a crowded street where random features confuse some people.
    data = load_mot(MOT / "MOT17-10-FRCNN", max_frames=3)
    settings = Settings(models_dir=SHARED / "models")
    osnet = cross_frame_scores(
        load_body_embedder("osnet_x0_25_msmt17", settings).embed(data.crops)[0], data
    )
    vit = DinoViTDescriptor.random(get_manifest("dino_vits16"), seed=0)
    control = cross_frame_scores(vit.embed(data.crops)[0], data)
    assert osnet["queries"] == control["queries"] >= 40
    assert osnet["rank1"] >= 0.95
    assert osnet["mAP"] > control["mAP"]
