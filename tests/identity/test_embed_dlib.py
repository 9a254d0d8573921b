"""dlib ResNet (the offline default): bundled weights, dlib_150 chips, cosine on unit vectors,
and agreement with dlib's own get_face_chip pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.embed import load_embedder
from identity.errors import InvalidInput
from identity.image import load_image
from identity.pipeline import FaceAnalyzer
from identity.settings import Settings

from shared_data import SHARED_DIR

DEEPFACE = SHARED_DIR / "data" / "deepface"


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(Settings(), detector="retinaface_mnet025", embedder="dlib_resnet_v1")


def test_default_embedder_resolves_from_package(analyzer):
    emb = analyzer.embedder
    assert emb.name == "dlib_resnet_v1" and emb.dim == 128 and emb.template == "dlib_150"
    # thresholds come from the pipeline's shipped celeba500 record, stricter FAR = higher bar
    from identity.calibration import pipeline_calibration

    cal = pipeline_calibration("dlib_resnet_v1", analyzer.settings, "retinaface_mnet025")
    assert cal.source == "shipped" and cal.set.startswith("celeba500")
    t = cal.thresholds
    assert t[1e-4] > t[1e-3] > t[1e-2]


def test_verifies_real_pairs_at_the_shipped_threshold(analyzer):
    """deepface: img1/img2 one person (genuine), img1/img3 and img2/img3 others (impostor)."""
    s = analyzer.settings
    faces = analyzer.analyze(
        [load_image(DEEPFACE / n, s) for n in ("img1.jpg", "img2.jpg", "img3.jpg")]
    )
    faces = faces.largest()
    assert len(faces) == 3 and faces.crops.shape[1:] == (150, 150, 3)
    e = faces.embeddings
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # Raw dlib descriptors are not unit length; we keep their norm.
    assert (faces.embedding_norms > 1.0).all()
    from identity.calibration import threshold_for

    thr = threshold_for("dlib_resnet_v1", 1e-3, s, "retinaface_mnet025")
    assert e[0] @ e[1] > thr
    assert e[0] @ e[2] < thr and e[1] @ e[2] < thr


def test_matches_dlib_own_chip_pipeline(analyzer):
    """Our dlib_150 chip from RetinaFace's 5 points gives nearly the descriptor dlib computes
    from its own 5-point shape predictor and get_face_chip(150, 0.25) on the same face."""
    import importlib.util

    import dlib

    resolved_net = analyzer.embedder
    spec = importlib.util.find_spec("face_recognition_models")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    sp = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    image = load_image(DEEPFACE / "img1.jpg", analyzer.settings)
    faces = analyzer.analyze([image]).largest()
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    x1, y1, x2, y2 = (int(v) for v in faces.boxes[0])
    shape = sp(rgb, dlib.rectangle(x1, y1, x2, y2))
    ref = np.asarray(
        net.compute_face_descriptor(dlib.get_face_chip(rgb, shape, size=150, padding=0.25))
    )
    ref /= np.linalg.norm(ref)
    ours = faces.embeddings[0]
    # Same person, same photo, two alignments: far above the 1e-4 threshold.
    assert ours @ ref > 0.97
    assert resolved_net.embed(faces.crops)[0][0] @ ours > 0.9999


def test_batch_and_bad_input():
    emb = load_embedder("dlib_resnet_v1", Settings())
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 255, size=(3, 150, 150, 3), dtype=np.uint8)
    chips = np.stack([cv2.GaussianBlur(c, (0, 0), 2) for c in chips])
    v, _n = emb.embed(chips)
    for i in range(3):
        np.testing.assert_allclose(emb.embed(chips[i])[0][0], v[i], atol=1e-5)
    with pytest.raises(InvalidInput):
        emb.embed(np.zeros((1, 112, 112, 3), np.uint8))
    assert emb.embed(np.zeros((0, 150, 150, 3), np.uint8))[0].shape == (0, 128)


def test_onnx_conversion_gives_dlib_own_descriptors(analyzer, tmp_path):
    """The default runtime (onnxruntime on the converted graph) and dlib's own loop agree on real
    faces to float rounding, so every threshold calibrated on one holds for the other."""
    from identity.embed.dlib_resnet import DlibResNetEmbedder
    from identity.runtime import resolve_model

    runners = {}
    for runtime in ("onnxruntime", "dlib"):
        s = Settings(data_dir=tmp_path / runtime, dlib_runtime=runtime)
        runners[runtime] = DlibResNetEmbedder(resolve_model("dlib_resnet_v1", s), s)
        assert runners[runtime].runtime == runtime
    images = [DEEPFACE / n for n in ("img1.jpg", "img2.jpg", "img3.jpg", "img4.jpg", "img5.jpg")]
    faces = analyzer.analyze([load_image(p, analyzer.settings) for p in images])
    assert len(faces) >= 5
    a, a_norms = runners["onnxruntime"].embed(faces.crops)
    b, b_norms = runners["dlib"].embed(faces.crops)
    assert np.abs(a - b).max() < 1e-5
    np.testing.assert_allclose(a_norms, b_norms, rtol=1e-5)
    # converted once, cached under the source's checksum
    cached = list((tmp_path / "onnxruntime" / "models").glob("dlib_resnet_v1.*.onnx"))
    assert len(cached) == 1 and cached[0].stat().st_size > 20_000_000


def test_conversion_refuses_a_file_that_is_not_the_network() -> None:
    from identity.embed.dlib_onnx import convert
    from identity.errors import ModelError

    with pytest.raises(
        ModelError, match="not a dlib face descriptor network|unexpected dlib layer"
    ):
        convert(b"\x01\x01\x01\rloss_metric_2 garbage")
