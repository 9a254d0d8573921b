"""DINO ViT descriptors in plain PyTorch: a global descriptor and dense part-level descriptors.

The network is the Vision Transformer of the DINO paper (Caron et al. 2021, ViT-S/16 and ViT-B/16:
pre-norm blocks, LayerNorm eps 1e-6, exact GELU, qkv with bias, a CLS token and learned absolute
position embeddings). Parameter names follow timm's ``VisionTransformer``, which is also how the
official DINO checkpoints name them, so ``dino_deitsmall16_pretrain.pth`` loads as is.

- Global descriptor: the last layer's CLS token after the final LayerNorm (DINO's k-NN feature).
- Dense descriptors, after Amir et al. 2021, "Deep ViT Features as Dense Visual Descriptors": the
  *keys* of a late layer (layer 9 of 12 for ViT-S; keys carry more positional and part-level
  information than the layer's output tokens), all heads concatenated, then log-binned: each
  patch is described by its own key plus averages of its neighbourhood over 3x3 cells of growing
  size (1, 3, 9 patches wide), so a descriptor sees context that grows logarithmically with
  distance. Two crops are compared part by part with best buddies (mutual nearest neighbours).

torch is an optional dependency (the ``torch`` extra); importing this module needs it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from identity.errors import InvalidInput, ModelError
from identity.preprocess import l2_normalise, to_tensor
from identity.registry import Manifest, ResolvedModel
from identity.settings import Settings


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 16
    mlp_ratio: float = 4.0
    pretrain_size: int = 224  # the square size the position embeddings were learned at

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ViTConfig:
        known = {k: manifest.extra[k] for k in cls.__dataclass_fields__ if k in manifest.extra}
        return cls(**known)


VIT_SMALL = ViTConfig(embed_dim=384, depth=12, num_heads=6)
VIT_BASE = ViTConfig(embed_dim=768, depth=12, num_heads=12)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output tokens, keys (B, N, dim) with heads concatenated)."""
        b, n, c = x.shape
        qkv = (
            self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj(out), k.transpose(1, 2).reshape(b, n, c)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn_out, keys = self.attn(self.norm1(x))
        x = x + attn_out
        return x + self.mlp(self.norm2(x)), keys


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)


class VisionTransformer(nn.Module):
    """DINO/timm ViT backbone (no classifier head). ``stride`` < patch size gives overlapping
    patches, a denser grid with the same weights (Amir et al. use stride 8 or 4 with /16 and /8)."""

    def __init__(self, config: ViTConfig = VIT_SMALL) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        grid = config.pretrain_size // config.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        self.blocks = nn.ModuleList(
            [Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth)]
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def grid_size(self, height: int, width: int, stride: int | None = None) -> tuple[int, int]:
        s = stride or self.config.patch_size
        p = self.config.patch_size
        return (height - p) // s + 1, (width - p) // s + 1

    def _pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = math.isqrt(patch_pos.shape[1])
        if (rows, cols) == (side, side):
            return self.pos_embed
        # DINO's interpolate_pos_encoding (facebookresearch/dino, vision_transformer.py), which the
        # checkpoints were evaluated with and Amir et al.'s extractor keeps (with the grid counted
        # for the stride): bicubic, no antialiasing, and a *scale factor* of (n + 0.1) / side
        # rather than a target size. PyTorch maps output to input coordinates by that factor,
        # so this is not F.interpolate(size=(rows, cols)) nor timm's resample_abs_pos_embed
        # (antialiased): on random 256x128 embeddings they differ from DINO's by a quarter to half the
        # largest value. The 0.1 only keeps floor(side * factor) == n (DINO issue #8).
        grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid,
            scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
            mode="bicubic",
            align_corners=False,
        )
        if grid.shape[-2:] != (rows, cols):  # DINO asserts the same
            raise ModelError(
                f"position embeddings resampled to {tuple(grid.shape[-2:])}, not {(rows, cols)}"
            )
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)

    def forward_tokens(
        self,
        x: torch.Tensor,
        stride: int | None = None,
        key_layer: int | None = None,
        stop_at_keys: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3, H, W) -> (tokens (B, 1 + P, D) after the final norm, keys of ``key_layer``
        (B, 1 + P, D) or None). Layers count from 0. ``stop_at_keys`` skips the layers after
        ``key_layer`` (dense descriptors need nothing later), returning that layer's tokens."""
        s = stride or self.config.patch_size
        proj = self.patch_embed.proj
        patches = F.conv2d(x, proj.weight, proj.bias, stride=s)
        b, _d, rows, cols = patches.shape
        tokens = torch.cat(
            [self.cls_token.expand(b, -1, -1), patches.flatten(2).transpose(1, 2)], 1
        )
        tokens = tokens + self._pos_embed(rows, cols)
        keys = None
        for i, block in enumerate(self.blocks):
            tokens, k = block(tokens)
            if i == key_layer:
                keys = k
                if stop_at_keys:
                    return tokens, keys
        return self.norm(tokens), keys

    def load_checkpoint(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a DINO or timm state dict; classifier heads and DINO wrappers are ignored."""
        cleaned: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            for prefix in ("module.", "backbone."):
                key = key.removeprefix(prefix)
            if key.startswith(("head.", "head_dist.", "fc_norm.")) and key not in self.state_dict():
                continue
            cleaned[key] = value
        missing, unexpected = self.load_state_dict(cleaned, strict=False)
        if missing or unexpected:
            raise ModelError(
                "ViT checkpoint does not match the architecture",
                missing=sorted(missing)[:10],
                unexpected=sorted(unexpected)[:10],
            )


def log_bin(features: torch.Tensor, hierarchy: int = 2) -> torch.Tensor:
    """Log-binned neighbourhood descriptors (Amir et al. 2021, section 3.2).

    (B, C, H, W) -> (B, C * (1 + 8 * hierarchy), H, W). Level k averages windows 3**k wide and
    samples them at the 3x3 offsets {-3**k, 0, 3**k} around each cell (the centre only at level
    0, where it is the cell itself). Windows that fall off the grid take the nearest edge value,
    so border patches keep the same descriptor length.
    """
    bins = []
    _, _, h, w = features.shape
    for k in range(hierarchy):
        win = 3**k
        pooled = (
            features
            if win == 1
            else F.avg_pool2d(features, win, stride=1, padding=win // 2, count_include_pad=False)
        )
        # Replicate-pad by the offset so every shifted read stays on the grid (clamped index).
        padded = F.pad(pooled, (win, win, win, win), mode="replicate")
        for dy in (-win, 0, win):
            for dx in (-win, 0, win):
                if k > 0 and dy == 0 and dx == 0:
                    continue
                bins.append(padded[:, :, win + dy : win + dy + h, win + dx : win + dx + w])
    return torch.cat(bins, dim=1)


def best_buddies(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """Best-buddies similarity of two sets of L2-normalised patch descriptors (P, C), (Q, C).

    A pair (i, j) are best buddies when each is the other's nearest neighbour (cosine). The
    score is the fraction of buddies, ``pairs / min(P, Q)`` in [0, 1]: robust to background and
    occlusion because unmatched parts simply do not vote (Dekel et al. 2015; Amir et al. use the
    same mutual-NN rule for part correspondences). Returns (score, (K, 2) index pairs).
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise InvalidInput(
            f"best_buddies needs (P, C) and (Q, C) descriptors, got {a.shape}, {b.shape}"
        )
    sim = a @ b.T
    ab = sim.argmax(axis=1)
    ba = sim.argmax(axis=0)
    i = np.flatnonzero(ba[ab] == np.arange(len(a)))
    pairs = np.stack([i, ab[i]], axis=1)
    return len(pairs) / min(len(a), len(b)), pairs


class DinoViTDescriptor:
    """Global (CLS) and dense (log-binned keys) descriptors of person crops.

    Preprocessing (input size, colour, mean/std) comes from the manifest; architecture, key layer
    and stride from its ``extra`` table. ``embed`` has the re-ID embedders' signature, so the
    global descriptor can be ranked, indexed and benchmarked the same way as OSNet.
    """

    def __init__(self, resolved: ResolvedModel, settings: Settings | None = None) -> None:
        if resolved.path is None:
            raise ModelError(f"ViT model '{resolved.manifest.name}' must be a file (.pth)")
        state = torch.load(Path(resolved.path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "teacher" in state:  # a full DINO training checkpoint
            state = state["teacher"]
        self._setup(resolved.manifest, state)

    @classmethod
    def random(cls, manifest: Manifest, seed: int = 0) -> DinoViTDescriptor:
        """Randomly initialised weights (the control in benchmarks, and offline tests)."""
        obj = cls.__new__(cls)
        torch.manual_seed(seed)
        obj._setup(manifest, None)
        obj.name = f"{manifest.name}_random"
        return obj

    def _setup(self, manifest: Manifest, state: Mapping[str, torch.Tensor] | None) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.input_size = manifest.input_size
        self.config = ViTConfig.from_manifest(manifest)
        self.model = VisionTransformer(self.config)
        if state is None:
            self.model.apply(_init_linear)
        else:
            self.model.load_checkpoint(state)
        self.model.eval()
        self.dim = self.config.embed_dim
        self.key_layer = int(manifest.extra.get("key_layer", 9))
        self.stride = int(manifest.extra.get("stride", self.config.patch_size))
        self.hierarchy = int(manifest.extra.get("log_bin_hierarchy", 2))
        self.batch = int(manifest.extra.get("batch", 32))

    def _tensor(self, crops_bgr: np.ndarray) -> torch.Tensor:
        crops = np.asarray(crops_bgr)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise InvalidInput(f"expected (N, H, W, 3) person crops, got shape {crops.shape}")
        return torch.from_numpy(to_tensor(crops, self.manifest))

    @torch.inference_mode()
    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global descriptors: (CLS (N, D) L2-normalised, norms (N,) before normalisation)."""
        x = self._tensor(crops_bgr)
        if not len(x):
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        cls_tokens = [
            self.model.forward_tokens(x[i : i + self.batch])[0][:, 0]
            for i in range(0, len(x), self.batch)
        ]
        return l2_normalise(torch.cat(cls_tokens).numpy())

    @torch.inference_mode()
    def dense(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Dense descriptors: ((N, P, C) L2-normalised log-binned keys, (rows, cols) grid)."""
        x = self._tensor(crops_bgr)
        rows, cols = self.model.grid_size(x.shape[2], x.shape[3], self.stride)
        out = []
        for i in range(0, len(x), self.batch):
            _, keys = self.model.forward_tokens(
                x[i : i + self.batch], self.stride, self.key_layer, stop_at_keys=True
            )
            assert keys is not None
            grid = keys[:, 1:].transpose(1, 2).reshape(len(keys), -1, rows, cols)
            binned = log_bin(grid, self.hierarchy).flatten(2).transpose(1, 2)  # (B, P, C')
            out.append(F.normalize(binned, dim=-1))
        if not out:
            return np.zeros((0, rows * cols, 0), np.float32), (rows, cols)
        return torch.cat(out).numpy(), (rows, cols)


def _init_linear(module: nn.Module) -> None:
    # timm/DINO's init: truncated normal weights, zero biases, unit LayerNorm. Random weights are
    # the control of the benchmark, so they should be the untrained network, not pure noise.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def timm_name(config: ViTConfig) -> str:
    """The timm model with the same architecture (for cross-checks), e.g. vit_small_patch16_224."""
    size = {384: "small", 768: "base"}.get(config.embed_dim)
    if size is None:
        raise ModelError(f"no timm name for a ViT of width {config.embed_dim}")
    return f"vit_{size}_patch{config.patch_size}_{config.pretrain_size}"
