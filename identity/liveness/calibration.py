"""Liveness thresholds named by BPCER, and the evidence behind each.

A deployment decides "live" with a threshold read from a calibration file, never from a magic
probability: ``<data_dir>/calibration/liveness.json`` when an operator calibrated on their own
cameras, else the one shipped in ``models/calibration/liveness.json`` (written by
``python -m bench.liveness --write-calibration``). The file holds one entry per model set (the
names joined by ``+``, in the order their scores are averaged), each with its thresholds by
operating point (``metrics.threshold_at_bpcer_bound``: BPCER met by its 95 % upper bound, not
just on the calibration faces) and where they come from: data set, subjects, live/spoof counts,
the error rates on that data with their 95 % upper bounds, and the held-out
(leave-one-subject-out) rates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import models
from identity.errors import CalibrationError
from identity.liveness.metrics import bpcer_key
from identity.settings import Settings

# Shipped as package data of the top-level ``models`` package, beside the manifests.
SHIPPED = Path(models.__file__).parent / "calibration" / "liveness.json"


def model_set_key(models: Sequence[str]) -> str:
    return "+".join(models)


def calibration_paths(settings: Settings) -> list[Path]:
    return [settings.calibration_dir / "liveness.json", SHIPPED]


@dataclass(frozen=True)
class LivenessThreshold:
    """The threshold that decides, and what it means, as responses and the audit report it."""

    threshold: float
    operating_point: str  # e.g. "bpcer_1e-02"
    models: tuple[str, ...]
    evidence: dict[str, Any]
    source: str

    @property
    def meaning(self) -> str:
        bpcer = self.operating_point.removeprefix("bpcer_")
        return (
            f"live when the mean live probability of {', '.join(self.models)} is >= "
            f"{self.threshold:.4g}; calibrated to refuse at most {float(bpcer):.0%} of live "
            "faces (BPCER) with 95 % confidence, as far as the calibration set allows (see "
            f"evidence), on {self.evidence.get('set', 'the calibration set')}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": round(self.threshold, 6),
            "operating_point": self.operating_point,
            "meaning": self.meaning,
            "models": list(self.models),
            "evidence": self.evidence,
            "source": self.source,
        }


def load_threshold(models: Sequence[str], bpcer: float, settings: Settings) -> LivenessThreshold:
    key, point = model_set_key(models), bpcer_key(bpcer)
    for path in calibration_paths(settings):
        if not path.is_file():
            continue
        try:
            entry = json.loads(path.read_text()).get(key)
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"liveness calibration {path} is unreadable: {exc}") from exc
        if entry is None:
            continue
        points = entry.get("thresholds", {})
        if point not in points:
            raise CalibrationError(
                f"liveness calibration {path} for {key} has no operating point {point} "
                f"(has {sorted(points)})",
                models=list(models),
                operating_point=point,
            )
        return LivenessThreshold(
            threshold=float(points[point]["threshold"]),
            operating_point=point,
            models=tuple(models),
            evidence={**entry.get("evidence", {}), **points[point]},
            source=str(path),
        )
    raise CalibrationError(
        f"no liveness calibration for models {key}: run `python -m bench.liveness "
        "--write-calibration` on labelled live/spoof photos",
        models=list(models),
    )
