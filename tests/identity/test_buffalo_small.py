"""InsightFace's small pack models: the int8 w600k MobileFaceNet embedder and the SCRFD-500MF
detector, each run by our manifest-driven runner and compared with ``insightface.model_zoo``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.align import align_faces
from identity.detect import RUNNERS as DETECTOR_RUNNERS
from identity.embed import load_embedder
from identity.preprocess import to_tensor
from identity.registry import get_manifest, resolve
from identity.runtime import build_runner
from identity.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT.parent / "shared" / "models"
DATA = ROOT.parent / "shared" / "data"
# img1/img2 one person, img3 another (deepface's PAIRS.csv); two celeba500 photos of celeb000.
PHOTOS = [
    "deepface/img1.jpg",
    "deepface/img2.jpg",
    "deepface/img3.jpg",
    "celeba500/images/000/000001.jpg",
    "celeba500/images/000/000404.jpg",
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(models_dir=MODELS, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [cv2.imread(str(DATA / p)) for p in PHOTOS]


@pytest.fixture(scope="module")
def crops(settings: Settings, images: list[np.ndarray]) -> np.ndarray:
    det = build_runner(DETECTOR_RUNNERS, "scrfd_500m_kps", settings)
    faces = det.detect(images).largest()
    assert len(faces) == len(PHOTOS)
    return align_faces(images, faces, "arcface_112")


@pytest.mark.parametrize("name", ["arcface_w600k_mbf_int8", "scrfd_500m_kps"])
def test_manifest_states_the_non_commercial_licence_and_weights_verify(name: str) -> None:
    m = get_manifest(name)
    assert "non-commercial" in m.licence and m.licence_url and m.source_url
    assert resolve(name, MODELS, None).manifest.name == name  # raises on a wrong SHA-256


def test_w600k_mbf_matches_insightface_on_the_same_crops(
    crops: np.ndarray, settings: Settings
) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX as Theirs

    theirs = Theirs(model_file=str(MODELS / "arcface_w600k_mbf_int8.onnx"))
    # InsightFace picks (x - 127.5) / 127.5 for this graph, as the manifest says
    assert (theirs.input_mean, theirs.input_std) == (127.5, 127.5)
    ours = load_embedder("arcface_w600k_mbf_int8", settings)
    assert ours.dim == 512 and ours.template == "arcface_112"
    # The int8 quantisation is dynamic (activation scales from the whole input tensor), so a
    # batch of several faces would change each face's embedding: the manifest says batch 1, our
    # runner feeds one crop at a time, and so is the reference fed here.
    assert ours.batch == 1
    expected = np.concatenate([theirs.get_feat([c]) for c in crops])  # BGR; it swaps to RGB
    # Same preprocessing: our tensor equals cv2.dnn.blobFromImages' to float rounding (we divide
    # by the std, OpenCV multiplies by its reciprocal: 1 ulp apart) ...
    ours_blob = to_tensor(crops, ours.manifest)
    theirs_blob = cv2.dnn.blobFromImages(
        list(crops), 1 / 127.5, (112, 112), (127.5,) * 3, swapRB=True
    )
    np.testing.assert_allclose(ours_blob, theirs_blob, rtol=0, atol=1e-6)
    # ... and on the very same tensor our session gives InsightFace's embedding bit for bit.
    for i in range(len(crops)):
        same = ours.session.run([ours.output_name], {ours.input_name: theirs_blob[i : i + 1]})[0]
        np.testing.assert_array_equal(same, expected[i : i + 1])
    # End to end, dynamic int8 rounding can amplify that 1 ulp (a quantised activation flips
    # bucket), so the embeddings agree in direction, not to the last digit.
    vectors, norms = ours.embed(crops)
    ref = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert ((vectors * ref).sum(1) > 0.99).all()
    np.testing.assert_allclose(norms, np.linalg.norm(expected, axis=1), rtol=0.05)
    sims = vectors @ vectors.T
    # same person beats different people, on deepface and on celeba500
    assert sims[0, 1] > sims[0, 2] + 0.2 and sims[1, 0] > sims[1, 2] + 0.2
    assert sims[3, 4] > max(sims[3, :3].max(), sims[4, :3].max()) + 0.2


def test_scrfd_500m_agrees_with_insightface(settings: Settings, images: list[np.ndarray]) -> None:
    from insightface.model_zoo.scrfd import SCRFD

    ref = SCRFD(model_file=str(MODELS / "scrfd_500m_kps.onnx"))
    ref.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    det = build_runner(DETECTOR_RUNNERS, "scrfd_500m_kps", settings)
    img = images[3]  # 178 x 218: both letterbox it onto the same 640 canvas, upscaled alike
    scale = 640 / max(img.shape[:2])
    canvas_img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)))
    boxes, kps = ref.detect(canvas_img)
    ours = det.detect([canvas_img])
    assert len(ours) == len(boxes) == 1
    assert np.abs(ours.boxes[0] - boxes[0, :4]).max() <= 2.0
    assert np.abs(ours.landmarks[0] - kps[0]).max() <= 2.0
