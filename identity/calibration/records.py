"""Stored thresholds and the evidence behind them: where a pipeline's calibration record is read
from (this install's own, else shipped, else the manifest) and how one is written."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity.calibration.curves import CalibrationReport, enough_impostors
from identity.settings import Settings

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "models" / "calibration"


@dataclass(frozen=True)
class Calibration:
    """The thresholds one pipeline decides with, where they came from and what stands behind them."""

    pipeline: str  # "<detector>+<embedder>" (or the embedder alone for older records)
    source: str  # "calibrated" (this install's own data), "shipped" or "manifest"
    set: str
    n_identities: int | None
    n_genuine: int | None
    n_impostor: int | None
    thresholds: dict[float, float]  # only FARs the 3/FAR rule allows
    record: dict[str, Any] = field(default_factory=dict, compare=False)

    def evidence(self, far: float) -> dict[str, Any]:
        """``{set, impostor_pairs, far_upper_95, pipeline, source}`` of a decision at ``far``."""
        from identity.binomial import clopper_pearson

        upper = None
        if self.n_impostor:
            k = next(
                (
                    int(p["impostors_above"])
                    for p in self.record.get("points", [])
                    if math.isclose(float(p["far"]), far) and "impostors_above" in p
                ),
                math.floor(far * self.n_impostor),
            )
            upper = clopper_pearson(min(k, self.n_impostor), self.n_impostor)[1]
        return {
            "set": self.set,
            "impostor_pairs": self.n_impostor,
            "far_upper_95": None if upper is None else float(f"{upper:.3g}"),
            "pipeline": self.pipeline,
            "source": self.source,
        }


def calibration_path(model: str, settings: Settings, detector: str | None = None) -> Path:
    name = f"{detector}+{model}" if detector else model
    return settings.calibration_dir / f"{name}.json"


def save_calibration(report: CalibrationReport, settings: Settings) -> Path:
    path = calibration_path(report.model, settings, report.detector)
    return write_record(report, path)


def write_record(report: CalibrationReport, path: Path) -> Path:
    """The record as JSON, written atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**report.to_dict(), "thresholds": report.thresholds()}, indent=1))
    tmp.replace(path)
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data


def load_calibration(
    model: str, settings: Settings, detector: str | None = None
) -> dict[str, Any] | None:
    """This install's own record for the pipeline (or, older, for the embedder alone)."""
    detector = detector or settings.detector
    return _read_json(calibration_path(model, settings, detector)) or _read_json(
        calibration_path(model, settings)
    )


def shipped_calibration(model: str, detector: str) -> dict[str, Any] | None:
    """The record shipped for ``detector+model``, else one shipped for the embedder with
    another detector (the record names its own pipeline, so the answer says which)."""
    exact = _read_json(SHIPPED_DIR / f"{detector}+{model}.json")
    if exact is not None:
        return exact
    for path in sorted(SHIPPED_DIR.glob(f"*+{model}.json")):
        data = _read_json(path)
        if data is not None:
            return data
    return None


def _from_record(data: dict[str, Any], source: str) -> Calibration:
    n_imp = int(data.get("n_impostor") or 0) or None
    table = {float(k): float(v) for k, v in (data.get("thresholds") or {}).items()}
    if n_imp:  # older records kept FARs the data could not stand behind: drop them here
        table = {f: t for f, t in table.items() if enough_impostors(f, n_imp)}
    detector, model = data.get("detector"), data.get("model", "")
    return Calibration(
        pipeline=f"{detector}+{model}" if detector else model,
        source=source,
        set=str(data.get("set", "unnamed")),
        n_identities=data.get("n_identities"),
        n_genuine=data.get("n_genuine"),
        n_impostor=n_imp,
        thresholds=table,
        record=data,
    )


# per pipeline and calibration folder: (the record files' stamps, the calibration they gave)
_LOADED: dict[tuple[str, str, Path], tuple[tuple[Any, ...], Calibration]] = {}


def _stamp(path: Path) -> tuple[Any, ...]:
    """What changes when the file at ``path`` is written, replaced or removed."""
    try:
        st = path.stat()
    except OSError:
        return (str(path),)
    return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)


def pipeline_calibration(
    model: str, settings: Settings, detector: str | None = None
) -> Calibration:
    """The calibration a decision of ``detector+model`` uses (the order in ``identity.calibration``).

    Every decision asks, so the answer is kept until this install's record files change (a
    ``identity calibrate`` run, a removal): two stats instead of reading and parsing JSON."""
    detector = detector or settings.detector
    own = (calibration_path(model, settings, detector), calibration_path(model, settings))
    stamps = tuple(_stamp(p) for p in own)
    key = (model, detector, settings.calibration_dir)
    kept = _LOADED.get(key)
    if kept is None or kept[0] != stamps:
        kept = _LOADED[key] = (stamps, _pipeline_calibration(model, settings, detector))
    return kept[1]


def _pipeline_calibration(model: str, settings: Settings, detector: str) -> Calibration:
    from identity.registry import get_manifest

    data = load_calibration(model, settings, detector)
    if data and data.get("thresholds"):
        return _from_record(data, "calibrated")
    data = shipped_calibration(model, detector)
    if data and data.get("thresholds"):
        return _from_record(data, "shipped")
    manifest = get_manifest(model)
    extra = manifest.extra
    return _from_record(
        {
            "model": model,
            "set": extra.get("calibration_set", "manifest"),
            "n_impostor": extra.get("calibration_impostor_pairs"),
            "thresholds": manifest.thresholds,
        },
        "manifest",
    )


def known_thresholds(
    model: str, settings: Settings, detector: str | None = None
) -> tuple[dict[float, float], str]:
    """FAR -> threshold for a pipeline, and where they came from."""
    cal = pipeline_calibration(model, settings, detector)
    return cal.thresholds, cal.source
