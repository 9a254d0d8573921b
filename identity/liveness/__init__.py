"""Presentation-attack detection (liveness): is the face in front of the camera a live one, or a
printed photo held up to it?

``assess_liveness(images, faces, settings)`` adds ``Faces.liveness`` (N,) float32, the mean over
the configured models (``IDENTITY_LIVENESS_MODELS``) of each one's probability of a live face,
NaN where a face was not judged, and ``Faces.liveness_reasons`` saying why
(``face_too_small``, ``face_cut_by_border``). ``liveness_threshold`` gives the calibrated
threshold for the configured BPCER (``identity.liveness.calibration``). What it covers and what
it does not: docs/liveness.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from identity.faces import Faces
from identity.liveness.calibration import LivenessThreshold, load_threshold
from identity.liveness.crops import unfit_reasons
from identity.liveness.runner import PADModel
from identity.settings import Settings

RUNNERS: dict[str, str] = {"pad_onnx": "identity.liveness.runner:PADModel"}

__all__ = ["LivenessThreshold", "assess_liveness", "liveness_threshold", "load_pad_model"]


def load_pad_model(name: str, settings: Settings) -> PADModel:
    from identity.runtime import POOL, build_runner

    return POOL.get("liveness", name, lambda: build_runner(RUNNERS, name, settings))


def live_probabilities(
    images_bgr: Sequence[np.ndarray], faces: Faces, models: Sequence[str], settings: Settings
) -> np.ndarray:
    """(N, M) live probability of each face by each model (no fitness check: benchmarks)."""
    cols = [
        load_pad_model(m, settings).live_probability(images_bgr, faces.boxes, faces.image_index)
        for m in models
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(faces), 0), np.float32)


def assess_liveness(
    images_bgr: Sequence[np.ndarray],
    faces: Faces,
    settings: Settings,
    models: Sequence[str] | None = None,
) -> Faces:
    """``faces`` with ``liveness`` and ``liveness_reasons`` filled in (one row per face)."""
    models = list(models or settings.liveness_models)
    reasons = unfit_reasons(
        [im.shape for im in images_bgr],
        faces.boxes,
        faces.image_index,
        settings.liveness_min_face_px,
        settings.liveness_border_margin,
    )
    scores = np.full(len(faces), np.nan, np.float32)
    fit = np.array([r is None for r in reasons], dtype=bool)
    if fit.any():
        scores[fit] = live_probabilities(images_bgr, faces[fit], models, settings).mean(axis=1)
    return faces.with_(liveness=scores, liveness_reasons=reasons)


def liveness_threshold(
    settings: Settings, models: Sequence[str] | None = None
) -> LivenessThreshold:
    return load_threshold(
        list(models or settings.liveness_models), settings.liveness_bpcer, settings
    )
