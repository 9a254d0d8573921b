"""Person re-identification embedders: OSNet on ONNX, Intel's re-ID networks on OpenVINO.

One image tensor in, one (N, D) feature out; everything about the input (size, colour order,
mean/std) comes from the manifest through ``identity.preprocess.to_tensor``. The two runners
differ only in the session they call.

Flip averaging (``Settings.body_flip_average``): each crop is embedded as seen and mirrored
left-right and the two features are summed before normalisation. A person seen from the other
side is roughly the mirror image, and re-ID networks are trained with random flips, so the sum
is a steadier descriptor (bench/reid.py measures what it adds on cuhk01).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from identity.errors import InvalidInput, ModelError
from identity.preprocess import l2_normalise, to_tensor
from identity.registry import ResolvedModel
from identity.runtime import onnx_session, openvino_model
from identity.settings import Settings

# Chunk size for dynamic-batch models: large enough to amortise the call overhead, small
# enough that a gallery of thousands of crops does not allocate one giant tensor.
_MAX_BATCH = 64


class _ReIDRunner:
    """Batch re-ID embedder: (N, H, W, 3) uint8 BGR person crops -> L2-normalised (N, D)."""

    dim: int
    fixed_batch: int | None = None

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        self.manifest = resolved.manifest
        self.name = self.manifest.name
        if self.manifest.input_size is None:
            raise ModelError(f"re-ID model '{self.name}' has no input_size in its manifest")
        self.input_size: tuple[int, int] = self.manifest.input_size
        self.flip_average = settings.body_flip_average

    def _check_dim(self, out_dim: Any) -> None:
        self.dim = int(out_dim) if isinstance(out_dim, int) else int(self.manifest.output_dim or 0)
        if self.manifest.output_dim and self.dim != self.manifest.output_dim:
            raise ModelError(
                f"re-ID model '{self.name}' outputs {self.dim} values, manifest says "
                f"{self.manifest.output_dim}"
            )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _features(self, crops: np.ndarray) -> np.ndarray:
        step = self.fixed_batch or _MAX_BATCH
        feats = []
        for start in range(0, len(crops), step):
            chunk = to_tensor(crops[start : start + step], self.manifest)
            n = len(chunk)
            if self.fixed_batch and n < self.fixed_batch:  # pad a fixed-batch graph, drop after
                pad = np.zeros((self.fixed_batch - n,) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            out = self._run(chunk)
            feats.append(np.asarray(out, np.float32).reshape(len(chunk), -1)[:n])
        return np.concatenate(feats)

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, D) float32 L2-normalised, norms (N,) before normalisation)."""
        crops = np.asarray(crops_bgr)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise InvalidInput(f"expected (N, H, W, 3) person crops, got shape {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        feats = self._features(crops)
        if self.flip_average:
            feats = l2_normalise(feats)[0] + l2_normalise(self._features(crops[:, :, ::-1]))[0]
        return l2_normalise(feats)


class ReIDONNX(_ReIDRunner):
    """OSNet and any ONNX network with one image input and a feature output."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        super().__init__(resolved, settings)
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
        self._check_dim(outputs[0].shape[-1])
        batch = inputs[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else self.manifest.batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]  # type: ignore[no-any-return]


class ReIDOpenVINO(_ReIDRunner):
    """Intel Open Model Zoo re-ID networks (person-reidentification-retail-0287/0288) on OpenVINO."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        super().__init__(resolved, settings)
        self.compiled = openvino_model(resolved, settings)
        if len(self.compiled.inputs) != 1 or len(self.compiled.outputs) < 1:
            raise ModelError(f"re-ID model '{self.name}' should have one image input")
        self._check_dim(self.compiled.outputs[0].get_partial_shape()[-1].get_length())

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # a fresh infer request per call: the compiled model is shared across threads
        return self.compiled.create_infer_request().infer([batch])[0]  # type: ignore[no-any-return]
