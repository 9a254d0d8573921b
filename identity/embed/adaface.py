"""AdaFace (Kim, Jain, Liu, CVPR 2022) embedders: IR-18/50/101 backbones in PyTorch, built the
way the authors' ``net.py`` builds them so their checkpoints load unchanged.

Checkpoint format: a Lightning ``.ckpt`` whose ``state_dict`` keys start with ``model.`` (the
backbone) next to ``head.`` (the margin head, unused here); a bare state_dict with or without the
prefix loads too. Input: BGR 112x112 ArcFace-aligned crops, ``(x / 255 - 0.5) / 0.5`` (the
authors' ``to_input`` flips PIL's RGB to BGR, so the network expects BGR). The backbone returns
the unit embedding and the feature norm, which AdaFace trains to track image quality: the norm is
our ``embedding_norms`` and feeds ``identity.quality``.

Torch is an optional extra (``pip install identity-platform[torch]``) and imported lazily.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import numpy as np

from identity.embed import checked_crops
from identity.errors import ModelError
from identity.preprocess import to_tensor
from identity.registry import ResolvedModel
from identity.settings import Settings

# (units per stage) for the four stages of 64, 128, 256, 512 channels, as in AdaFace's get_blocks.
IR_STAGES: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}
ARCH_LAYERS = {"ir_18": 18, "ir_34": 34, "ir_50": 50, "ir_101": 100}


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "AdaFace needs PyTorch: pip install 'identity-platform[torch]' (torch==2.13.0)"
        ) from exc
    return torch


def build_ir(arch: str, embedding_size: int = 512) -> Any:
    """An AdaFace IR backbone (random weights) whose module names match the authors' checkpoints:
    ``input_layer``, ``body.<i>.{shortcut_layer,res_layer}``, ``output_layer``."""
    torch = _torch()
    nn = torch.nn
    if arch not in ARCH_LAYERS:
        raise ModelError(f"unknown AdaFace architecture '{arch}'; known: {sorted(ARCH_LAYERS)}")
    stages = IR_STAGES[ARCH_LAYERS[arch]]

    class BasicBlockIR(nn.Module):  # type: ignore[misc,name-defined]
        """BN-Conv-BN-PReLU-Conv(stride)-BN plus a shortcut (1x1 pool, or 1x1 conv + BN)."""

        def __init__(self, cin: int, depth: int, stride: int) -> None:
            super().__init__()
            if cin == depth:
                self.shortcut_layer: Any = nn.MaxPool2d(1, stride)
            else:
                self.shortcut_layer = nn.Sequential(
                    nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
                )
            self.res_layer = nn.Sequential(
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
                nn.BatchNorm2d(depth),
                nn.PReLU(depth),
                nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
                nn.BatchNorm2d(depth),
            )

        def forward(self, x: Any) -> Any:
            return self.res_layer(x) + self.shortcut_layer(x)

    class Backbone(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.input_layer = nn.Sequential(
                nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
            )
            blocks: list[Any] = []
            cin = 64
            for depth, units in zip((64, 128, 256, 512), stages, strict=False):
                for u in range(units):
                    blocks.append(BasicBlockIR(cin, depth, 2 if u == 0 else 1))
                    cin = depth
            self.body = nn.Sequential(*blocks)
            self.output_layer = nn.Sequential(
                nn.BatchNorm2d(512),
                nn.Dropout(0.4),
                nn.Flatten(),
                nn.Linear(512 * 7 * 7, embedding_size),
                nn.BatchNorm1d(embedding_size, affine=False),
            )

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = self.output_layer(self.body(self.input_layer(x)))
            norm = torch.norm(x, 2, 1, True)
            return x / norm, norm

    return Backbone()


def backbone_state_dict(checkpoint: Any) -> dict[str, Any]:
    """The backbone's weights from an AdaFace checkpoint (Lightning ``state_dict`` with
    ``model.``-prefixed keys, or a bare state dict)."""
    sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(sd, dict):
        raise ModelError("AdaFace checkpoint is not a state dict")
    if any(k.startswith("model.") for k in sd):
        return {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def _unpickling_reason(exc: Exception, path: Any) -> str:
    """A short reason for a refused checkpoint; torch's own message is a page of advice."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512).lstrip().lower()
    except OSError:
        head = b""
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return "the file is an HTML/XML page, not a PyTorch checkpoint (a failed download?)"
    text = str(exc)
    _, found, rest = text.partition("WeightsUnpickler error:")
    detail = (rest if found else text).strip().split("\n")[0].split(" Please use")[0][:200]
    return (
        "it holds objects other than tensors, which weights_only loading refuses "
        f"({detail or type(exc).__name__}); save the state_dict alone"
    )


class AdaFaceEmbedder:
    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        torch = _torch()
        m = resolved.manifest
        self.manifest = m
        self.name = m.name
        self.dim = int(m.output_dim or 512)
        self.template = m.alignment or "arcface_112"
        self.size = int(m.input_size[0]) if m.input_size else 112
        arch = str(m.extra.get("arch", "ir_101"))
        self.model = build_ir(arch, self.dim)
        if resolved.path is None:
            raise ModelError(f"'{m.name}': AdaFace weights must be a file", model=m.name)
        try:
            # weights_only: a checkpoint is data; refuse pickled code.
            ckpt = torch.load(str(resolved.path), map_location="cpu", weights_only=True)
            missing, unexpected = self.model.load_state_dict(
                backbone_state_dict(ckpt), strict=False
            )
        except pickle.UnpicklingError as exc:
            # weights_only refuses anything but tensors and plain containers: a Lightning
            # checkpoint with pickled objects (hyper-parameters, callbacks) fails here, and so
            # does an HTML error page saved as .ckpt by a failed download.
            reason = _unpickling_reason(exc, resolved.path)
            raise ModelError(
                f"could not load AdaFace checkpoint {resolved.path}: {reason}", model=m.name
            ) from exc
        except (RuntimeError, OSError, ValueError, KeyError, EOFError) as exc:
            # torch lists every mismatched tensor; the first two lines say enough.
            brief = " ".join(str(exc).split("\n")[:2])[:300]
            raise ModelError(
                f"could not load AdaFace checkpoint {resolved.path} as {arch}: {brief}",
                model=m.name,
            ) from exc
        # BatchNorm1d(affine=False) has only running stats; nothing may be missing.
        if missing or unexpected:
            raise ModelError(
                f"'{m.name}' checkpoint does not fit {arch}: missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}",
                model=m.name,
            )
        self.model.eval()
        self.batch_size = int(m.extra.get("batch_size", 32))
        self._lock = threading.Lock()

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = _torch()
        crops = checked_crops(crops_bgr, self.name, self.size)
        if not len(crops):
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        blob = to_tensor(crops, self.manifest)
        embs, norms = [], []
        with self._lock, torch.inference_mode():
            for start in range(0, len(blob), self.batch_size):
                e, n = self.model(torch.from_numpy(blob[start : start + self.batch_size]))
                embs.append(e.numpy())
                norms.append(n.numpy().reshape(-1))
        return np.concatenate(embs).astype(np.float32), np.concatenate(norms).astype(np.float32)
