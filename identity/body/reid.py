"""Person re-identification embedder on ONNX (OSNet and any network with the same signature).

One image tensor in, one (N, D) feature out; everything about the input (size, colour order,
mean/std) comes from the manifest through ``identity.preprocess.to_tensor``.
"""

from __future__ import annotations

import numpy as np

from identity.errors import InvalidInput, ModelError
from identity.preprocess import l2_normalise, to_tensor
from identity.registry import ResolvedModel
from identity.runtime import onnx_session
from identity.settings import Settings

# Chunk size for dynamic-batch models: large enough to amortise the call overhead, small
# enough that a gallery of thousands of crops does not allocate one giant tensor.
_MAX_BATCH = 64


class ReIDONNX:
    """Batch re-ID embedder: (N, H, W, 3) uint8 BGR person crops -> L2-normalised (N, D)."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        self.manifest = resolved.manifest
        self.name = self.manifest.name
        if self.manifest.input_size is None:
            raise ModelError(f"re-ID model '{self.name}' has no input_size in its manifest")
        self.input_size: tuple[int, int] = self.manifest.input_size
        self.session = onnx_session(resolved, settings)
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(
                f"re-ID model '{self.name}' should have one image input and a feature output, "
                f"has {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        out_dim = outputs[0].shape[-1]
        self.dim = int(out_dim) if isinstance(out_dim, int) else int(self.manifest.output_dim or 0)
        if self.manifest.output_dim and self.dim != self.manifest.output_dim:
            raise ModelError(
                f"re-ID model '{self.name}' outputs {self.dim} values, manifest says "
                f"{self.manifest.output_dim}"
            )
        batch = inputs[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else self.manifest.batch

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, D) float32 L2-normalised, norms (N,) before normalisation)."""
        crops = np.asarray(crops_bgr)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise InvalidInput(f"expected (N, H, W, 3) person crops, got shape {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        step = self.fixed_batch or _MAX_BATCH
        feats = []
        for start in range(0, len(crops), step):
            chunk = to_tensor(crops[start : start + step], self.manifest)
            n = len(chunk)
            if self.fixed_batch and n < self.fixed_batch:  # pad a fixed-batch graph, drop after
                pad = np.zeros((self.fixed_batch - n,) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            out = self.session.run([self.output_name], {self.input_name: chunk})[0]
            feats.append(np.asarray(out, np.float32).reshape(len(chunk), -1)[:n])
        return l2_normalise(np.concatenate(feats))
