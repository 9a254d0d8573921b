"""Face embedders. Every embedder takes aligned crops and returns L2-normalised embeddings."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from identity.settings import Settings


class Embedder(Protocol):
    name: str
    dim: int
    template: str  # alignment template name (identity.align.TEMPLATES), e.g. "arcface_112"

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 BGR crops aligned to ``template`` -> (embeddings (N, D) float32
        L2-normalised, norms (N,) float32 before normalisation)."""
        ...


RUNNERS: dict[str, str] = {
    "arcface_onnx": "identity.embed.arcface:ArcFaceONNX",
    "adaface": "identity.embed.adaface:AdaFaceEmbedder",
    "dlib_resnet": "identity.embed.dlib_resnet:DlibResNetEmbedder",
}


def load_embedder(name: str, settings: Settings) -> Embedder:
    from identity.runtime import POOL, build_runner

    return POOL.get("embedder", name, lambda: build_runner(RUNNERS, name, settings))
