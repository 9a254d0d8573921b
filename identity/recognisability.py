"""Recognisability: how likely a face is to match other photos of its person, read from the
embedder's own last feature map (the idea of CR-FIQA, without training a network).

An embedder whose manifest has ``extra.quality_head`` runs its graph with one more output, the
feature map before the global pooling (C x H x W). Each channel is pooled to its mean, standard
deviation and maximum, the unnormalised embedding's norm is put in front, and a ridge regression
from those 1 + 3C values predicts the face's share of genuine comparisons that pass the FMR 1e-3
threshold. The head (``mean``, ``scale``, ``weights``, ``bias``) is a small ``.npz`` in the
``models`` package, fitted on celeba500 by ``bench/quality_head.py --write`` and pinned by SHA-256
in the manifest, with the ``points`` through which ``identity.quality`` maps it to a factor.

Held out by identity on celeba500, ordering comparisons by this score cuts FNMR at FMR 1e-3 by a
third when the lowest 10% are rejected, where the embedding norm alone cuts a quarter
(docs/calibration.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from identity.errors import ModelError

HEAD_KEYS = ("mean", "scale", "weights", "bias")


def pooled(feature_map: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, 3C): each channel's mean, standard deviation and maximum."""
    return np.concatenate(
        [feature_map.mean((2, 3)), feature_map.std((2, 3)), feature_map.max((2, 3))], axis=1
    )


@dataclass(frozen=True)
class QualityHead:
    """A manifest's ``extra.quality_head``, loaded and checked."""

    feature_map: str  # the graph's tensor name to read beside the embedding
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    @classmethod
    def of(cls, model: str, spec: dict[str, Any]) -> QualityHead:
        """Load the head a manifest names (``file`` inside the ``models`` package, ``sha256``,
        ``feature_map``); a missing or altered file is a ``ModelError``."""
        try:
            found = importlib.util.find_spec("models")
            roots = list(found.submodule_search_locations or []) if found else []
            path = Path(roots[0]) / str(spec["file"])
            blob = path.read_bytes()
            feature_map = str(spec["feature_map"])
        except (KeyError, IndexError, OSError, ImportError) as exc:
            raise ModelError(f"'{model}': quality head not found: {exc}", model=model) from exc
        if hashlib.sha256(blob).hexdigest() != str(spec.get("sha256", "")).lower():
            raise ModelError(f"'{model}': quality head {path} fails its SHA-256", model=model)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: np.asarray(npz[k], np.float64) for k in HEAD_KEYS}
        except (KeyError, ValueError, OSError) as exc:  # pinned, yet not a head: a bad manifest
            raise ModelError(
                f"'{model}': {path} is not a quality head: {exc}", model=model
            ) from exc
        return cls(
            feature_map=feature_map,
            mean=arrays["mean"],
            scale=arrays["scale"],
            weights=arrays["weights"],
            bias=float(arrays["bias"]),
        )

    def __call__(self, feature_map: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """(N, C, H, W) feature maps and (N,) embedding norms -> (N,) recognisability in [0, 1]."""
        # pooled in float32, as bench/quality_head.py pooled the maps the head was fitted on
        return self.of_pooled(pooled(np.asarray(feature_map, np.float32)), norms)

    def of_pooled(self, pooled_maps: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """The same from maps already pooled (``pooled``)."""
        x = np.c_[np.asarray(norms, np.float64), np.asarray(pooled_maps, np.float64)]
        if x.shape[1] != len(self.weights):
            raise ModelError(
                f"quality head expects {len(self.weights) - 1} pooled values, got {x.shape[1] - 1}"
            )
        out = (x - self.mean) / self.scale @ self.weights + self.bias
        return np.clip(out, 0.0, 1.0).astype(np.float32)
