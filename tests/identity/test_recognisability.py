"""The default embedder's quality head (identity/recognisability.py) on real photos: pinned, read
from the same run as the embedding, falling as a face stops matching, and leading the score."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from identity.calibration import threshold_for
from identity.errors import ModelError
from identity.faces import Faces
from identity.pipeline import FaceAnalyzer
from identity.recognisability import QualityHead
from identity.registry import get_manifest
from identity.settings import Settings

from shared_data import SHARED_DIR

DATA = SHARED_DIR / "data"
EMBEDDER = "arcface_w600k_mbf_int8"
HEADS = (EMBEDDER, "arcface_mobilefacenet_128")  # the embedders that ship a quality head


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(models_dir=SHARED_DIR / "models")


@pytest.fixture(scope="module")
def analyzer(settings) -> FaceAnalyzer:
    assert settings.embedder == EMBEDDER  # the default pipeline carries the head
    return FaceAnalyzer(settings)


@pytest.fixture(scope="module", params=HEADS)
def headed(request, settings) -> FaceAnalyzer:
    return FaceAnalyzer(settings, embedder=request.param)


@pytest.fixture(scope="module")
def obama() -> np.ndarray:
    return cv2.imread(str(DATA / "face_recognition" / "obama-480p.jpg"))


def reference(analyzer: FaceAnalyzer) -> np.ndarray:
    faces = analyzer.analyze([cv2.imread(str(DATA / "face_recognition" / "obama-1080p.jpg"))])
    return faces.embeddings[int(np.argmax(faces.inter_ocular))]


def largest(faces: Faces) -> int:
    assert len(faces) >= 1
    return int(np.argmax(faces.inter_ocular))


def head_points(embedder: str = EMBEDDER) -> tuple[float, float]:
    """(recognisability at which the factor reaches the gate 0.1, and 1)."""
    _, gate, full = get_manifest(embedder).extra["quality_head"]["points"]
    assert gate[1] == Settings.model_fields["enroll_min_quality"].default and full[1] == 1.0
    return float(gate[0]), float(full[0])


@pytest.mark.parametrize("embedder", HEADS)
def test_head_is_pinned_by_its_checksum(embedder):
    spec = dict(get_manifest(embedder).extra["quality_head"])
    head = QualityHead.of(embedder, spec)
    assert len(head.weights) == 1 + 3 * 512
    with pytest.raises(ModelError, match="SHA-256"):
        QualityHead.of(embedder, {**spec, "sha256": "0" * 64})
    with pytest.raises(ModelError, match="not found"):
        QualityHead.of(embedder, {**spec, "file": "weights/missing.npz"})
    onnx = get_manifest(EMBEDDER)  # a pinned file that is not a head
    with pytest.raises(ModelError, match="not a quality head"):
        QualityHead.of(embedder, {**spec, "file": onnx.package_path, "sha256": onnx.sha256})


def test_recognisability_falls_as_the_face_stops_matching(headed, obama, settings):
    embedder = headed.embedder_name
    at_gate, full = head_points(embedder)
    ref = reference(headed)
    rows = []
    for sigma in (0, 2, 4, 8):
        image = cv2.GaussianBlur(obama, (0, 0), sigma) if sigma else obama
        faces = headed.analyze([image])
        i = largest(faces)
        rows.append(
            (
                faces.quality_details[i]["recognisability"],
                float(faces.embeddings[i] @ ref),
                float(faces.quality[i]),
                faces.quality_reasons[i],
            )
        )
    recog, sims, quality, reasons = zip(*rows, strict=True)
    assert list(recog) == sorted(recog, reverse=True), rows
    assert list(sims) == sorted(sims, reverse=True), rows
    # clean: past the head's last point, full score, nothing to say
    assert recog[0] > full and quality[0] == 1.0 and reasons[0] == [], rows
    # sigma 8 no longer matches at FAR 1e-3, and the head has said so: below the gate
    assert sims[3] < threshold_for(embedder, 1e-3, settings), rows
    assert recog[3] < at_gate and quality[3] < settings.enroll_min_quality, rows
    assert "low_recognisability" in reasons[3], rows


def test_score_follows_the_head_and_blur_is_a_reason(analyzer, obama, settings):
    """A slightly soft face that still matches keeps its score; 'blurry' stays as a reason."""
    faces = analyzer.analyze([cv2.GaussianBlur(obama, (0, 0), 2)])
    i = largest(faces)
    assert float(faces.embeddings[i] @ reference(analyzer)) > threshold_for(
        EMBEDDER, 1e-4, settings
    )
    assert "blurry" in faces.quality_reasons[i]
    assert float(faces.quality[i]) == 1.0, faces.quality_details[i]


def test_recognisability_does_not_depend_on_batch_neighbours(analyzer, obama):
    other = cv2.imread(str(DATA / "deepface" / "img1.jpg"))
    alone = analyzer.analyze([obama])
    together = analyzer.analyze([other, obama])
    a = alone.extra["recognisability"][largest(alone)]
    mine = together[together.image_index == 1]
    b = mine.extra["recognisability"][largest(mine)]
    assert a == pytest.approx(b, abs=1e-6)


def test_an_embedder_without_a_head_keeps_the_factor_formula(settings, obama):
    analyzer = FaceAnalyzer(settings, embedder="arcface_mobilefacenet_192_batch2")
    faces = analyzer.analyze([cv2.GaussianBlur(obama, (0, 0), 4)])
    i = largest(faces)
    assert "recognisability" not in faces.extra
    assert "recognisability" not in faces.quality_details[i]
    # the sharpness factor lowers the score of a blurry face
    assert "blurry" in faces.quality_reasons[i] and float(faces.quality[i]) < 1.0


def test_factor_is_linear_between_the_manifest_points():
    from identity.quality import recognisability_factor

    points = get_manifest(EMBEDDER).extra["quality_head"]["points"]
    at_gate, full = head_points()
    f = recognisability_factor(np.array([-0.2, 0.0, at_gate / 2, at_gate, full, 1.0]), points)
    assert f == pytest.approx([0.0, 0.0, 0.05, 0.1, 1.0, 1.0])
