"""Face embedders. Every embedder takes aligned crops and returns L2-normalised embeddings."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from identity.errors import InvalidInput
from identity.settings import Settings

# Per-face arrays an embedder reads from its own run, for Faces.extra (identity.quality.SIGNALS).
Signals = dict[str, np.ndarray]


class Embedder(Protocol):
    name: str
    dim: int
    template: str  # alignment template name (identity.align.TEMPLATES), e.g. "arcface_112"

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 BGR crops aligned to ``template`` -> (embeddings (N, D) float32
        L2-normalised, norms (N,) float32 before normalisation)."""
        ...


def checked_crops(
    crops_bgr: np.ndarray, name: str, size: int, any_size: bool = False
) -> np.ndarray:
    """``crops_bgr`` as an (N, size, size, 3) uint8 array (one crop may come without the N), else
    an ``InvalidInput`` saying what embedder ``name`` needs. ``any_size``: a runner that resizes
    takes any square or not."""
    crops = np.asarray(crops_bgr)
    if crops.ndim == 3:
        crops = crops[None]
    shape_ok = crops.ndim == 4 and crops.shape[-1] == 3
    shape_ok = shape_ok and (any_size or crops.shape[1:3] == (size, size))
    if not shape_ok or crops.dtype != np.uint8:
        raise InvalidInput(
            f"{name} needs (N, {size}, {size}, 3) uint8 BGR crops, got {crops.shape} {crops.dtype}"
        )
    return crops


def embed_with_signals(
    embedder: Embedder, crops_bgr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Signals]:
    """``embedder.embed`` plus the quality signals an embedder offers from the same run
    (``embed_signals``, e.g. an ArcFace graph with a quality head); none for the others."""
    own = getattr(embedder, "embed_signals", None)
    if own is None:
        return (*embedder.embed(crops_bgr), {})
    embeddings, norms, signals = own(crops_bgr)
    return embeddings, norms, signals


RUNNERS: dict[str, str] = {
    "arcface_onnx": "identity.embed.arcface:ArcFaceONNX",
    "adaface": "identity.embed.adaface:AdaFaceEmbedder",
    "dlib_resnet": "identity.embed.dlib_resnet:DlibResNetEmbedder",
}


def load_embedder(name: str, settings: Settings) -> Embedder:
    from identity.runtime import POOL, build_runner

    return POOL.get("embedder", name, lambda: build_runner(RUNNERS, name, settings))
