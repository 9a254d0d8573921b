"""ArcFace-family ONNX runner: manifest-driven preprocessing, fixed and dynamic batches, and
parity with InsightFace's own ArcFaceONNX on an IResNet-50 graph exported here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.align import align_faces
from identity.detect import load_detector
from identity.embed import load_embedder
from identity.embed.arcface import ArcFaceONNX
from identity.errors import InvalidInput
from identity.registry import Manifest, ResolvedModel, get_manifest
from identity.settings import Settings

from shared_data import SHARED_DIR

MODELS = SHARED_DIR / "models"
DEEPFACE = SHARED_DIR / "data" / "deepface"
# img1/img2 show one person, img3 another (deepface's PAIRS.csv).
PHOTOS = ["img1.jpg", "img2.jpg", "img3.jpg"]


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    settings = Settings()
    det = load_detector("retinaface_mnet025", settings)
    images = [cv2.imread(str(DEEPFACE / p)) for p in PHOTOS]
    faces = det.detect(images).largest()
    assert len(faces) == 3
    return align_faces(images, faces, "arcface_112")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(models_dir=MODELS)


@pytest.mark.parametrize(
    "name,dim", [("arcface_mobilefacenet_128", 128), ("arcface_mobilefacenet_192_batch2", 192)]
)
def test_real_models_embed_batches(name, dim, crops, settings):
    emb = load_embedder(name, settings)
    assert emb.dim == dim and emb.template == "arcface_112"
    vectors, norms = emb.embed(crops)
    assert vectors.shape == (3, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (norms > 0).all()
    # Batch of 3 (a padded pair for the fixed-batch graph) equals one at a time.
    for i in range(3):
        one, one_norm = emb.embed(crops[i : i + 1])
        np.testing.assert_allclose(one[0], vectors[i], atol=1e-4)
        np.testing.assert_allclose(one_norm[0], norms[i], rtol=1e-4)
    # Same person scores higher than different people.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_manifest_preprocessing_is_data(crops, settings):
    """The same graph with a wrong colour order in its manifest gives a different embedding:
    preprocessing really comes from the manifest."""
    m = get_manifest("arcface_mobilefacenet_128")
    resolved = ResolvedModel(m, "models_dir", path=MODELS / m.file)
    right = ArcFaceONNX(resolved, settings).embed(crops)[0]
    wrong_m = m.model_copy(update={"colour": "bgr"})
    wrong = ArcFaceONNX(ResolvedModel(wrong_m, "models_dir", path=MODELS / m.file), settings)
    diff = np.abs(wrong.embed(crops)[0] - right).max()
    assert diff > 1e-2


def test_bad_crops_raise_typed_error(settings):
    emb = load_embedder("arcface_mobilefacenet_128", settings)
    with pytest.raises(InvalidInput):
        emb.embed(np.zeros((2, 112, 112), np.uint8))
    with pytest.raises(InvalidInput):
        emb.embed(np.zeros((1, 112, 112, 3), np.float32))
    v, n = emb.embed(np.zeros((0, 112, 112, 3), np.uint8))
    assert v.shape == (0, 128) and n.shape == (0,)


# --- IResNet-50 parity with insightface.model_zoo.ArcFaceONNX -------------------------------


def _iresnet50():
    """InsightFace's iresnet50 (arcface_torch/backbones/iresnet.py) in plain torch: IBasicBlock
    BN-conv3x3-BN-PReLU-conv3x3(stride)-BN with a 1x1 conv+BN downsample, stages [3, 4, 14, 3],
    then BN2d-flatten-dropout-FC(512*7*7 -> 512)-BN1d."""
    import torch
    from torch import nn

    class IBasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
            self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
            self.prelu = nn.PReLU(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                    nn.BatchNorm2d(planes, eps=1e-5),
                )

        def forward(self, x):
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return out + (self.downsample(x) if self.downsample is not None else x)

    class IResNet(nn.Module):
        def __init__(self, layers=(3, 4, 14, 3)) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
            self.prelu = nn.PReLU(64)
            stages, inplanes = [], 64
            for planes, n in zip((64, 128, 256, 512), layers, strict=False):
                blocks = [IBasicBlock(inplanes, planes, 2)]
                blocks += [IBasicBlock(planes, planes, 1) for _ in range(n - 1)]
                stages.append(nn.Sequential(*blocks))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
            self.dropout = nn.Dropout(0.0)
            self.fc = nn.Linear(512 * 7 * 7, 512)
            self.features = nn.BatchNorm1d(512, eps=1e-5)

        def forward(self, x):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.fc(self.dropout(torch.flatten(self.bn2(x), 1)))
            return self.features(x)

    torch.manual_seed(0)
    model = IResNet()
    # Random BatchNorm statistics too, so every layer's arithmetic matters.
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def r50_onnx(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("r50") / "w600k_r50.onnx"
    torch.onnx.export(
        _iresnet50(),
        torch.zeros(1, 3, 112, 112),
        str(path),
        input_names=["input.1"],
        output_names=["fc1"],
        dynamic_axes={"input.1": {0: "N"}, "fc1": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def test_w600k_r50_convention_matches_insightface(r50_onnx, crops, settings):
    insightface = pytest.importorskip("insightface.model_zoo.arcface_onnx")
    theirs = insightface.ArcFaceONNX(model_file=str(r50_onnx))
    # The exported graph must take InsightFace's (x - 127.5) / 127.5 branch, like w600k_r50.
    assert (theirs.input_mean, theirs.input_std) == (127.5, 127.5)
    manifest: Manifest = get_manifest("w600k_r50").model_copy(update={"sha256": None})
    ours = ArcFaceONNX(ResolvedModel(manifest, "models_dir", path=r50_onnx), settings)
    assert ours.dim == 512
    expected = theirs.get_feat(list(crops))  # BGR crops; insightface swaps to RGB itself
    got_raw = ours.raw_embeddings(crops)
    np.testing.assert_allclose(got_raw, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    vectors, norms = ours.embed(crops)
    np.testing.assert_allclose(norms, np.linalg.norm(expected, axis=1), rtol=1e-4)
    ref = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, ref, atol=1e-5)
