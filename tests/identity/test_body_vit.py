"""Our DINO ViT against timm's on the same random weights (ViT-S/16 and ViT-B/16, square 224 and
the 256x128 person crop with DINO's position-embedding resampling), key extraction, log binning
and best buddies. The official DINO weights are not reachable offline, so weights are random here
(that the registry finds and loads them is checked with a DINO-style state dict)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from shared_data import SHARED_DIR

torch = pytest.importorskip("torch")

from identity.body.evaluation import best_buddies_to_gallery
from identity.body.vit import (
    VIT_BASE,
    VIT_SMALL,
    DinoViTDescriptor,
    VisionTransformer,
    best_buddies,
    log_bin,
    timm_name,
)
from identity.errors import InvalidInput, ModelError, ModelNotFound
from identity.registry import get_manifest
from identity.runtime import resolve_model
from identity.settings import Settings


# timm 1.x imports torchvision at import time (timm.layers, timm.data), and PyPI's torchvision
# does not load beside the CPU build of torch used here ("operator torchvision::nms does not
# exist"). timm's ViT itself uses no torchvision code, so when the real torchvision fails, an
# import-only placeholder package lets `import timm` finish. Nothing of it runs in the forward
# pass compared below; with a working torchvision the real one is used.
class _Placeholder(type):
    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _TorchvisionPlaceholder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _import_timm() -> types.ModuleType:
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (pip install timm --no-deps; see docs/body.md)")
    try:
        return importlib.import_module("timm")
    except (ImportError, RuntimeError):
        for name in [n for n in sys.modules if n.split(".")[0] in ("timm", "torchvision")]:
            del sys.modules[name]
    sys.meta_path.insert(0, _TorchvisionPlaceholder())
    return importlib.import_module("timm")


@pytest.fixture(scope="module")
def timm_and_ours() -> tuple[torch.nn.Module, VisionTransformer]:
    timm = _import_timm()
    torch.manual_seed(0)
    reference = timm.create_model(timm_name(VIT_SMALL), pretrained=False).eval()
    ours = VisionTransformer(VIT_SMALL).eval()
    ours.load_checkpoint(
        reference.state_dict()
    )  # timm's head.* is ignored, everything else must fit
    return reference, ours


def _timm_with_weights_of(
    ours: VisionTransformer, img_size: tuple[int, int] | None = None, **overrides: torch.Tensor
) -> torch.nn.Module:
    """timm's ViT of the same architecture (for ``img_size`` (h, w) if given) holding ``ours``'s
    weights, ``overrides`` replacing some (pos_embed). Built on the meta device: timm's random
    init of ViT-B alone takes seconds on 2 cores, and every weight is replaced anyway."""
    timm = _import_timm()
    sizes = {} if img_size is None else {"img_size": img_size}
    with torch.device("meta"):
        reference = timm.create_model(
            timm_name(ours.config), pretrained=False, num_classes=0, **sizes
        )
    reference.load_state_dict({**ours.state_dict(), **overrides}, assign=True)
    return reference.eval()


@pytest.fixture(scope="module")
def ours_base() -> VisionTransformer:
    # PyTorch's default init (uniform weights and biases, none zero) rather than DINO's, so
    # that biases take part in the comparison too.
    torch.manual_seed(7)
    return VisionTransformer(VIT_BASE).eval()


def _timm_tokens_and_keys(
    reference: torch.nn.Module, x: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's tokens after the final norm and the keys of all heads of ``layer``, concatenated:
    the middle third of its qkv output ([q | k | v] on the last axis, heads contiguous inside)."""
    captured: dict[str, torch.Tensor] = {}
    handle = reference.blocks[layer].attn.qkv.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("qkv", out)
    )
    try:
        with torch.inference_mode():
            tokens = reference.forward_features(x)
    finally:
        handle.remove()
    d = captured["qkv"].shape[-1] // 3
    return tokens, captured["qkv"][..., d : 2 * d]


def dino_interpolate_pos_encoding(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """DINO's ``VisionTransformer.interpolate_pos_encoding`` (facebookresearch/dino,
    vision_transformer.py), step by step, with the patch grid (rows, cols) given directly: DINO
    computes it as H // 16, W // 16, Amir et al.'s extractor as 1 + (H - 16) // stride."""
    n = pos_embed.shape[1] - 1
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = rows + 0.1, cols + 0.1  # DINO's names: its "w" is the tensor's dim 2, the height
    patch_pos_embed = torch.nn.functional.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def test_forward_matches_timm_on_the_same_random_weights(timm_and_ours) -> None:
    reference, ours = timm_and_ours
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference.forward_features(x)  # (B, 1 + 196, 384) after the final norm
        got, _ = ours.forward_tokens(x)
    assert got.shape == expected.shape == (2, 197, 384)
    torch.testing.assert_close(got[:, 0], expected[:, 0], atol=1e-5, rtol=1e-5)  # CLS
    torch.testing.assert_close(got[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-5)  # patches


def test_keys_match_a_hook_on_timms_qkv(timm_and_ours) -> None:
    reference, ours = timm_and_ours
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        _, keys = ours.forward_tokens(x, key_layer=9, stop_at_keys=True)
    assert keys is not None and keys.shape == (1, 197, VIT_SMALL.embed_dim)
    torch.testing.assert_close(
        keys, _timm_tokens_and_keys(reference, x, 9)[1], atol=1e-5, rtol=1e-5
    )


def test_vit_base_matches_timm_on_the_same_random_weights(ours_base) -> None:
    reference = _timm_with_weights_of(ours_base)  # vit_base_patch16_224
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    expected, expected_keys = _timm_tokens_and_keys(reference, x, 9)
    with torch.inference_mode():
        got, keys = ours_base.forward_tokens(x, key_layer=9)
    assert got.shape == expected.shape == (1, 197, 768)
    torch.testing.assert_close(got[:, 0], expected[:, 0], atol=1e-5, rtol=1e-5)  # CLS
    torch.testing.assert_close(got[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-5)
    assert keys is not None and keys.shape == (1, 197, 768)
    torch.testing.assert_close(keys, expected_keys, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid", [(16, 8), (31, 15), (20, 20)])
def test_position_embeddings_resample_as_dino_does(grid: tuple[int, int]) -> None:
    # (16, 8): the 256x128 person crop at stride 16; (31, 15): the same at stride 8; (20, 20): a
    # square upsampling (320x320).
    model = VisionTransformer(VIT_SMALL)
    with torch.no_grad():
        model.pos_embed.normal_(generator=torch.Generator().manual_seed(4))
        got = model._pos_embed(*grid)
        expected = dino_interpolate_pos_encoding(model.pos_embed, *grid)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert got.shape == (1, 1 + grid[0] * grid[1], VIT_SMALL.embed_dim)


def test_dino_resampling_is_not_timms_default() -> None:
    # timm's dynamic_img_size resamples to a target size with antialiasing; DINO scales by
    # (n + 0.1) / 14 without it. Weights evaluated with DINO's rule should get DINO's rule.
    timm = _import_timm()
    from timm.layers import resample_abs_pos_embed

    model = VisionTransformer(VIT_SMALL)
    with torch.no_grad():
        ours = model._pos_embed(16, 8)
        timms = resample_abs_pos_embed(model.pos_embed, new_size=[16, 8], num_prefix_tokens=1)
    assert timm is not None and (ours - timms).abs().max() > 1e-3


@pytest.mark.parametrize("model", ["vit_s16", "vit_b16"])
def test_person_crop_256x128_matches_timm(model: str, timm_and_ours, ours_base) -> None:
    # The product's input: a 256x128 (h x w) crop, a 16x8 grid. timm's ViT is built for
    # img_size=(256, 128) with its own 16x8 position embeddings, which we set to DINO's
    # resampling of our 14x14 ones: non-square patching, token order, attention, the keys and
    # our resampling inside the forward pass are checked against timm in one go.
    ours = timm_and_ours[1] if model == "vit_s16" else ours_base
    pos = dino_interpolate_pos_encoding(ours.pos_embed.detach(), 16, 8)
    reference = _timm_with_weights_of(ours, img_size=(256, 128), pos_embed=pos)
    x = torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(5))
    expected, expected_keys = _timm_tokens_and_keys(reference, x, 9)
    with torch.inference_mode():
        got, keys = ours.forward_tokens(x, key_layer=9)
    assert got.shape == expected.shape == (1, 1 + 16 * 8, ours.config.embed_dim)
    torch.testing.assert_close(got[:, 0], expected[:, 0], atol=1e-5, rtol=1e-5)  # CLS
    torch.testing.assert_close(got[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(keys, expected_keys, atol=1e-5, rtol=1e-5)


def test_log_bin_layout_and_values() -> None:
    feats = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    binned = log_bin(feats, hierarchy=2)
    assert binned.shape == (1, 2 * 17, 5, 7)  # 9 bins at level 0 + 8 at level 1
    # Level 0, bin 4 (offset 0, 0) is the cell itself.
    torch.testing.assert_close(binned[:, 4 * 2 : 5 * 2], feats)
    # Level 0, bin 0 (offset -1, -1) of cell (2, 3) is cell (1, 2).
    torch.testing.assert_close(binned[0, 0:2, 2, 3], feats[0, :, 1, 2])
    # Level 1, first bin (offset -3, -3) of cell (4, 4): the 3x3 mean centred at (1, 1).
    expected = feats[0, :, 0:3, 0:3].mean(dim=(1, 2))
    torch.testing.assert_close(binned[0, 9 * 2 : 10 * 2, 4, 4], expected)
    # Off the grid: cell (0, 0)'s level-1 bin at (-3, -3) takes the nearest edge window,
    # the mean of the valid cells around (0, 0) (padding not counted).
    corner = feats[0, :, 0:2, 0:2].mean(dim=(1, 2))
    torch.testing.assert_close(binned[0, 9 * 2 : 10 * 2, 0, 0], corner)


def test_best_buddies_finds_parts_regardless_of_position() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 64)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    perm = rng.permutation(40)
    score, pairs = best_buddies(a, a[perm])
    assert score == 1.0
    assert np.array_equal(perm[pairs[:, 1]], pairs[:, 0])  # each part found where it moved
    # Half the parts replaced (occlusion): the rest still pair up; the score drops.
    b = a[perm].copy()
    b[:20] = rng.normal(size=(20, 64))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    partial, _ = best_buddies(a, b)
    assert 0.4 <= partial < 1.0
    with pytest.raises(InvalidInput):
        best_buddies(a, np.zeros((3, 5), np.float32))


def test_batched_best_buddies_equal_the_pairwise_ones() -> None:
    # The bench ranks galleries with best_buddies_to_gallery; it must be best_buddies, batched.
    rng = np.random.default_rng(6)
    descs = rng.normal(size=(5, 24, 32)).astype(np.float32)
    descs /= np.linalg.norm(descs, axis=2, keepdims=True)
    descs[3] = descs[0][rng.permutation(24)]  # crop 3: crop 0's parts, moved
    got = best_buddies_to_gallery(descs[0], descs)
    expected = [best_buddies(descs[0], d)[0] for d in descs]
    np.testing.assert_allclose(got, expected)
    assert got[0] == got[3] == 1.0


def test_descriptor_shapes_on_person_crops() -> None:
    desc = DinoViTDescriptor.random(get_manifest("dino_vits16"), seed=0)
    crops = np.random.default_rng(3).integers(0, 255, (2, 256, 128, 3), dtype=np.uint8)
    emb, norms = desc.embed(crops)
    assert emb.shape == (2, 384) and norms.shape == (2,)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    dense, grid = desc.dense(crops[:1])
    assert grid == (16, 8)  # 256x128 crop, 16 px patches, position embeddings resampled
    assert dense.shape == (1, 16 * 8, 384 * 17)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=2), 1.0, atol=1e-4)
    # Same crop in two batch positions gives the same descriptors (batching changes nothing).
    again, _ = desc.embed(crops[::-1])
    np.testing.assert_allclose(again[::-1], emb, atol=1e-5)
    with pytest.raises(InvalidInput):
        desc.embed(np.zeros((2, 64, 64), np.uint8))


def test_stride_8_gives_a_denser_grid() -> None:
    model = VisionTransformer(VIT_SMALL).eval()
    x = torch.zeros(1, 3, 256, 128)
    with torch.inference_mode():
        tokens, keys = model.forward_tokens(x, stride=8, key_layer=9, stop_at_keys=True)
    assert model.grid_size(256, 128, 8) == (31, 15)
    assert keys is not None and keys.shape == (1, 1 + 31 * 15, 384) and tokens.shape == keys.shape


def test_dino_checkpoint_loads_through_the_registry(tmp_path: Path) -> None:
    # A DINO training checkpoint wraps the backbone ("teacher", "backbone." prefix); the
    # pretrain .pth is the bare backbone. Both load; a wrong architecture is a ModelError.
    torch.manual_seed(5)
    source = VisionTransformer(VIT_SMALL)
    manifest = get_manifest("dino_vits16")
    wrapped = {"teacher": {f"backbone.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / manifest.file)
    settings = Settings(models_dir=tmp_path, data_dir=tmp_path / "data")
    desc = DinoViTDescriptor(resolve_model("dino_vits16", settings), settings)
    for name, value in source.state_dict().items():
        torch.testing.assert_close(desc.model.state_dict()[name], value)
    with pytest.raises(ModelError):
        VisionTransformer(VIT_SMALL).load_checkpoint({"blocks.0.nonsense": torch.zeros(1)})


def test_missing_dino_weights_say_how_to_get_them(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path, data_dir=tmp_path / "data")
    with pytest.raises(ModelNotFound, match="identity models pull dino_vitb16"):
        resolve_model("dino_vitb16", settings)


def test_dense_descriptors_fill_bodies_for_part_matching() -> None:
    import cv2

    from identity.body import Bodies, BodyAnalyzer

    seq = SHARED_DIR / "data" / "mot" / "MOT17-09-FRCNN"
    image = cv2.imread(str(seq / "img1" / "000001.jpg"))
    gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",")
    rows = gt[(gt[:, 0] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= 0.9)][:2]
    boxes = np.hstack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]])
    desc = DinoViTDescriptor.random(get_manifest("dino_vits16"), seed=0)
    bodies = BodyAnalyzer.add_dense_descriptors([image], Bodies.from_boxes(boxes), desc)
    assert bodies.descriptors is not None and bodies.descriptors.shape == (2, 128, 384 * 17)
    assert bodies.descriptor_grid == (16, 8)
    assert bodies[1:].descriptors.shape == (1, 128, 384 * 17)  # slicing keeps them aligned
    # A crop is its own best buddy everywhere; another person shares fewer parts.
    self_score, _ = best_buddies(bodies.descriptors[0], bodies.descriptors[0])
    other_score, _ = best_buddies(bodies.descriptors[0], bodies.descriptors[1])
    assert self_score == 1.0 and other_score < 1.0
