"""AdaFace runner: the authors' IR backbone and checkpoint format, loaded through the registry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.errors import InvalidInput, ModelError
from identity.registry import ResolvedModel, get_manifest
from identity.settings import Settings

from shared_data import SHARED_DIR

torch = pytest.importorskip("torch")

from identity.embed.adaface import AdaFaceEmbedder, build_ir

DEEPFACE = SHARED_DIR / "data" / "deepface"


def _checkpoint(path: Path, wrap: bool = True) -> None:
    """A random-weight IR-18 saved the way AdaFace's Lightning training saves it."""
    torch.manual_seed(0)
    model = build_ir("ir_18")
    for mod in model.modules():
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd["head.kernel"] = torch.randn(512, 10)  # the margin head rides along and is ignored
    torch.save({"state_dict": sd, "epoch": 3} if wrap else sd, path)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> AdaFaceEmbedder:
    folder = tmp_path_factory.mktemp("models")
    manifest = get_manifest("adaface_ir18_webface4m")
    _checkpoint(folder / manifest.file)
    settings = Settings(models_dir=folder)
    return AdaFaceEmbedder(
        ResolvedModel(manifest, "models_dir", path=folder / manifest.file), settings
    )


def _crops() -> np.ndarray:
    out = []
    for name in ("img1.jpg", "img2.jpg", "img3.jpg"):
        img = cv2.imread(str(DEEPFACE / name))
        out.append(cv2.resize(img[: min(img.shape[:2]), : min(img.shape[:2])], (112, 112)))
    return np.stack(out)


def test_registry_resolves_tmp_models_dir(tmp_path):
    from identity.embed import RUNNERS
    from identity.runtime import build_runner

    manifest = get_manifest("adaface_ir18_webface4m")
    _checkpoint(tmp_path / manifest.file, wrap=False)  # bare "model."-prefixed state dict
    emb = build_runner(RUNNERS, "adaface_ir18_webface4m", Settings(models_dir=tmp_path))
    assert isinstance(emb, AdaFaceEmbedder) and emb.dim == 512 and emb.template == "arcface_112"


def test_outputs_unit_embeddings_and_feature_norm(embedder):
    crops = _crops()
    vectors, norms = embedder.embed(crops)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32 and norms.shape == (3,)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The norm is that of the raw backbone output, which the unit vector times norm rebuilds.
    with torch.inference_mode():
        x = (torch.from_numpy(crops.astype(np.float32)).permute(0, 3, 1, 2) / 255 - 0.5) / 0.5
        raw = embedder.model.output_layer(embedder.model.body(embedder.model.input_layer(x)))
    np.testing.assert_allclose(norms, raw.norm(dim=1).numpy(), rtol=1e-4)
    np.testing.assert_allclose(vectors * norms[:, None], raw.numpy(), rtol=1e-3, atol=1e-4)


def test_batch_equals_one_by_one(embedder):
    crops = _crops()
    vectors, norms = embedder.embed(crops)
    for i in range(3):
        v, n = embedder.embed(crops[i])
        np.testing.assert_allclose(v[0], vectors[i], atol=1e-5)
        np.testing.assert_allclose(n[0], norms[i], rtol=1e-5)


def test_input_is_bgr(embedder):
    crops = _crops()
    swapped = np.ascontiguousarray(crops[..., ::-1])
    assert np.abs(embedder.embed(crops)[0] - embedder.embed(swapped)[0]).max() > 1e-3


def test_bad_inputs_and_wrong_checkpoint(embedder, tmp_path):
    with pytest.raises(InvalidInput):
        embedder.embed(np.zeros((1, 150, 150, 3), np.uint8))
    manifest = get_manifest("adaface_ir101_webface12m")  # IR-101 manifest, IR-18 weights
    _checkpoint(tmp_path / manifest.file)
    with pytest.raises(ModelError, match="ir_101"):
        AdaFaceEmbedder(
            ResolvedModel(manifest, "models_dir", path=tmp_path / manifest.file), Settings()
        )


def test_an_html_page_saved_as_checkpoint_is_a_model_error(tmp_path):
    manifest = get_manifest("adaface_ir18_webface4m")
    page = tmp_path / manifest.file
    page.write_bytes(b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n")
    with pytest.raises(ModelError, match="HTML"):
        AdaFaceEmbedder(ResolvedModel(manifest, "models_dir", path=page), Settings())


class _Hparams:  # stands in for the Lightning hyper-parameter objects a checkpoint may pickle
    pass


def test_a_checkpoint_with_pickled_objects_is_a_model_error(tmp_path):
    manifest = get_manifest("adaface_ir18_webface4m")
    path = tmp_path / manifest.file
    torch.save({"state_dict": {}, "hyper_parameters": _Hparams()}, path)
    with pytest.raises(ModelError, match="objects other than tensors") as info:
        AdaFaceEmbedder(ResolvedModel(manifest, "models_dir", path=path), Settings())
    assert "\n" not in info.value.message and len(info.value.message) < 400


def test_an_empty_checkpoint_is_a_model_error(tmp_path):
    manifest = get_manifest("adaface_ir18_webface4m")
    path = tmp_path / manifest.file
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="could not load AdaFace checkpoint"):
        AdaFaceEmbedder(ResolvedModel(manifest, "models_dir", path=path), Settings())


def test_the_cli_reports_a_broken_checkpoint_once(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from identity.cli import app

    manifest = get_manifest("adaface_ir18_webface4m")
    (tmp_path / manifest.file).write_bytes(b"<html><body>rate limited</body></html>")
    monkeypatch.setenv("IDENTITY_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(tmp_path / "data"))
    photos = [str(DEEPFACE / "img1.jpg"), str(DEEPFACE / "img2.jpg")]
    result = CliRunner().invoke(app, ["analyze", "--embedder", manifest.name, *photos])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTML" in errors[0] and "model_error" in errors[0]
    assert "Traceback" not in result.output
