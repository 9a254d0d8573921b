"""ArcFace-family ONNX embedders (InsightFace packs, MobileFaceNet exports, ...).

Everything that differs between these graphs is data in the manifest: colour order, scale,
mean/std, layout (NCHW or NHWC) and batch (fixed or dynamic). A graph with a fixed batch is fed
in chunks of that size, the last one padded with zeros and the padding dropped from the output.
"""

from __future__ import annotations

import numpy as np

from identity.embed import Signals, checked_crops
from identity.errors import ModelError
from identity.preprocess import l2_normalise, to_tensor
from identity.recognisability import QualityHead
from identity.registry import ResolvedModel
from identity.runtime import onnx_session
from identity.settings import Settings


class ArcFaceONNX:
    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        m = resolved.manifest
        self.manifest = m
        self.name = m.name
        spec = m.extra.get("quality_head")
        self.head = QualityHead.of(m.name, spec) if spec else None
        try:
            self.session = onnx_session(
                resolved, settings, extra_outputs=[self.head.feature_map] if self.head else ()
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise ModelError(
                f"could not load '{m.name}' from {resolved.location}: {exc}", model=m.name
            ) from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = list(inp.shape)
        # A graph's own fixed batch wins over a manifest that forgot to say so.
        graph_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.batch: int | None = m.batch or graph_batch
        if m.input_size is None:
            raise ModelError(f"manifest '{m.name}' needs input_size", model=m.name)
        self.size = int(m.input_size[0])
        spatial = shape[2:4] if m.layout == "nchw" else shape[1:3]
        if all(isinstance(s, int) for s in spatial) and tuple(spatial) != (self.size, self.size):
            raise ModelError(
                f"'{m.name}': graph input {shape} does not match manifest input_size "
                f"{m.input_size} with layout {m.layout}",
                model=m.name,
            )
        out_shape = self.session.get_outputs()[0].shape
        graph_dim = out_shape[-1] if isinstance(out_shape[-1], int) else None
        dim = m.output_dim or graph_dim
        if dim is None:
            raise ModelError(f"'{m.name}': output_dim unknown", model=m.name)
        self.dim = int(dim)
        self.template = m.alignment or "arcface_112"

    def _run(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, D) float32 network outputs before normalisation, and the quality head's feature
        maps (N, C, H, W) when the manifest names a head."""
        crops = checked_crops(crops_bgr, self.name, self.size, any_size=True)
        n = len(crops)
        if n == 0:
            return np.zeros((0, self.dim), np.float32), None
        blob = to_tensor(crops, self.manifest)
        step = self.batch or n
        names = [self.output_name] + ([self.head.feature_map] if self.head else [])
        outs: list[np.ndarray] = []
        maps: list[np.ndarray] = []
        for start in range(0, n, step):
            chunk = blob[start : start + step]
            real = len(chunk)
            if self.batch and real < self.batch:
                pad = np.zeros((self.batch - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            out = self.session.run(names, {self.input_name: chunk})
            outs.append(np.asarray(out[0], np.float32).reshape(len(chunk), -1)[:real])
            maps.extend(m[:real] for m in out[1:2])
        fmaps = np.concatenate(maps) if maps else None
        return np.concatenate(outs), fmaps

    def raw_embeddings(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(N, D) float32 network outputs before normalisation."""
        return self._run(crops_bgr)[0]

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return l2_normalise(self.raw_embeddings(crops_bgr))

    def embed_signals(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, Signals]:
        """``embed`` and, from the same run, ``recognisability`` when the manifest has a head."""
        raw, fmaps = self._run(crops_bgr)
        embeddings, norms = l2_normalise(raw)
        if self.head is None or fmaps is None:
            return embeddings, norms, {}
        return embeddings, norms, {"recognisability": self.head(fmaps, norms)}
