"""Threshold calibration on labelled faces: ROC, EER, TAR at FAR, and the threshold per FAR.

Verification decides by a named false-accept rate, never by a magic similarity: a threshold for a
FAR is read from ``<data_dir>/calibration/<model>.json`` (written by ``identity calibrate``) or,
failing that, from the model manifest's ``thresholds`` table.

A FAR below ``1 / n_impostor_pairs`` cannot be measured on the data at hand; such rows are
reported with ``reliable: false`` instead of pretending to a precision the data lacks.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from identity.errors import CalibrationError, InvalidInput
from identity.settings import Settings

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def far_key(far: float) -> str:
    """Canonical text of a FAR, e.g. 0.001 -> '1e-03', as used in calibration files."""
    return f"{far:.0e}"


@dataclass
class FarPoint:
    far: float
    threshold: float
    tar: float
    reliable: bool  # enough impostor pairs to measure this FAR


@dataclass
class CalibrationReport:
    model: str
    n_images: int
    n_identities: int
    n_genuine: int
    n_impostor: int
    auc: float
    eer: float
    eer_threshold: float
    points: list[FarPoint]
    # A compact impostor-score distribution for estimating the FAR of any similarity later.
    impostor_quantiles: list[float] = field(default_factory=list)
    failed_images: list[str] = field(default_factory=list)

    def thresholds(self) -> dict[str, float]:
        return {far_key(p.far): p.threshold for p in self.points}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# scores and curves
# ---------------------------------------------------------------------------------------------
def pair_scores(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of all genuine and all impostor pairs among unit embeddings."""
    emb = np.asarray(embeddings, dtype=np.float32)
    lab = np.asarray(labels)
    sims = emb @ emb.T
    iu = np.triu_indices(len(emb), k=1)
    same = lab[iu[0]] == lab[iu[1]]
    values = sims[iu]
    return values[same].astype(np.float64), values[~same].astype(np.float64)


def roc_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, threshold) at every distinct score, thresholds descending, decision sim >= t."""
    scores = np.concatenate([genuine, impostor])
    is_gen = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_gen = scores[order], is_gen[order]
    tp = np.cumsum(is_gen)
    fp = np.cumsum(1 - is_gen)
    # keep the last index of each run of equal scores so ties are decided together
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tar = np.r_[0.0, tp[last] / max(len(genuine), 1)]
    far = np.r_[0.0, fp[last] / max(len(impostor), 1)]
    thr = np.r_[np.inf, scores[last]]
    return far, tar, thr


def auc_of(far: np.ndarray, tar: np.ndarray) -> float:
    return float(np.trapezoid(tar, far))


def eer_of(far: np.ndarray, tar: np.ndarray, thr: np.ndarray) -> tuple[float, float]:
    frr = 1 - tar
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2), float(thr[i])


def threshold_at_far(
    genuine: np.ndarray, impostor: np.ndarray, far: float
) -> tuple[float, float]:
    """Smallest threshold whose measured FAR does not exceed ``far``; returns (threshold, tar).

    A threshold just above the k-th highest impostor score, with k = floor(far * n_impostor),
    so that at most k impostors pass.
    """
    imp = np.sort(np.asarray(impostor))[::-1]
    k = math.floor(far * len(imp))
    if len(imp) == 0:
        raise CalibrationError("no impostor pairs: need at least two identities")
    t = float(np.nextafter(imp[k], np.inf)) if k < len(imp) else float(imp[-1])
    tar = float(np.mean(np.asarray(genuine) >= t)) if len(genuine) else float("nan")
    return t, tar


def evaluate(
    model: str,
    genuine: np.ndarray,
    impostor: np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
    n_images: int = 0,
    n_identities: int = 0,
) -> CalibrationReport:
    if len(genuine) == 0:
        raise CalibrationError("no genuine pairs: need at least one identity with two images")
    if len(impostor) == 0:
        raise CalibrationError("no impostor pairs: need at least two identities")
    far, tar, thr = roc_curve(genuine, impostor)
    eer, eer_thr = eer_of(far, tar, thr)
    points = []
    for f in fars:
        t, t_tar = threshold_at_far(genuine, impostor, f)
        points.append(FarPoint(far=f, threshold=t, tar=t_tar, reliable=f * len(impostor) >= 1))
    quantiles = np.quantile(impostor, np.linspace(0, 1, 201)).tolist()
    return CalibrationReport(
        model=model,
        n_images=n_images,
        n_identities=n_identities,
        n_genuine=len(genuine),
        n_impostor=len(impostor),
        auc=auc_of(far, tar),
        eer=eer,
        eer_threshold=eer_thr,
        points=points,
        impostor_quantiles=quantiles,
    )


# ---------------------------------------------------------------------------------------------
# labelled data
# ---------------------------------------------------------------------------------------------
def read_labelled(path: Path, csv_file: Path | None = None) -> list[tuple[Path, str]]:
    """(image path, identity) from a folder per identity, or a CSV of path,identity."""
    if csv_file is not None:
        if not csv_file.is_file():
            raise InvalidInput(f"labels CSV not found: {csv_file}")
        rows: list[tuple[Path, str]] = []
        try:
            with csv_file.open(newline="", encoding="utf-8-sig") as fh:
                for row in csv.reader(fh):
                    if len(row) < 2 or row[0].strip().lower() == "path":
                        continue
                    p = Path(row[0].strip())
                    rows.append(((p if p.is_absolute() else path / p), row[1].strip()))
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"labels CSV {csv_file} is not UTF-8 text (byte {exc.start}): save it as UTF-8",
                path=str(csv_file),
            ) from exc
        except csv.Error as exc:
            raise InvalidInput(f"labels CSV {csv_file} is not valid CSV: {exc}") from exc
        return rows
    if not path.is_dir():
        raise InvalidInput(f"not a folder of identities: {path}")
    return [
        (img, person.name)
        for person in sorted(p for p in path.iterdir() if p.is_dir())
        for img in sorted(person.rglob("*"))
        if img.suffix.lower() in IMAGE_SUFFIXES
    ]


def embed_labelled(
    items: Sequence[tuple[Path, str]], analyzer: Any, settings: Settings
) -> tuple[np.ndarray, list[str], list[str]]:
    """Embeddings of the largest face of each image; returns (embeddings, labels, failures)."""
    from identity.errors import IdentityError
    from identity.image import load_image

    embs, labels, failed = [], [], []
    for path, label in items:
        try:
            image = load_image(path, settings)
        except (IdentityError, OSError) as exc:
            failed.append(f"{path}: {exc}")
            continue
        faces = analyzer.analyze([image])
        if not len(faces):
            failed.append(f"{path}: no face found")
            continue
        faces = faces.largest()
        embs.append(faces.embeddings[0])
        labels.append(label)
    dim = embs[0].shape[0] if embs else 0
    return np.asarray(embs, np.float32).reshape(-1, dim), labels, failed


def calibrate_from_labelled(
    items: Sequence[tuple[Path, str]],
    analyzer: Any,
    settings: Settings,
    fars: Sequence[float] = DEFAULT_FARS,
) -> tuple[CalibrationReport, np.ndarray, np.ndarray]:
    """Report plus the genuine and impostor scores it came from (for plots)."""
    embs, labels, failed = embed_labelled(items, analyzer, settings)
    genuine, impostor = pair_scores(embs, labels)
    report = evaluate(
        analyzer.embedder_name, genuine, impostor, fars, len(labels), len(set(labels))
    )
    report.failed_images = failed
    return report, genuine, impostor


# ---------------------------------------------------------------------------------------------
# stored thresholds
# ---------------------------------------------------------------------------------------------
def calibration_path(model: str, settings: Settings) -> Path:
    return settings.calibration_dir / f"{model}.json"


def save_calibration(report: CalibrationReport, settings: Settings) -> Path:
    path = calibration_path(report.model, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**report.to_dict(), "thresholds": report.thresholds()}, indent=2))
    tmp.replace(path)
    return path


def load_calibration(model: str, settings: Settings) -> dict[str, Any] | None:
    path = calibration_path(model, settings)
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data


def known_thresholds(model: str, settings: Settings) -> tuple[dict[float, float], str]:
    """FAR -> threshold for a model, and where they came from ('calibrated' or 'manifest')."""
    from identity.registry import get_manifest

    data = load_calibration(model, settings)
    if data and data.get("thresholds"):
        return {float(k): float(v) for k, v in data["thresholds"].items()}, "calibrated"
    manifest = get_manifest(model)
    return {float(k): float(v) for k, v in manifest.thresholds.items()}, "manifest"


def threshold_for(model: str, far: float, settings: Settings) -> float:
    """Similarity threshold that keeps the false-accept rate at ``far`` for ``model``.

    Between calibrated FARs the threshold is interpolated linearly in log10(FAR). A FAR looser
    than any calibrated one gets the loosest calibrated threshold (stricter than asked, so the
    promise still holds). A FAR stricter than any calibrated one is refused: the strictest known
    threshold would accept more impostors than asked while the answer claimed the stricter FAR.
    """
    if not 0 < far < 1:
        raise InvalidInput(f"far must be between 0 and 1, got {far}")
    table, source = known_thresholds(model, settings)
    if not table:
        raise CalibrationError(
            f"model '{model}' has no calibrated thresholds: run `identity calibrate` on labelled "
            "faces, or add a [thresholds] table to its manifest",
            model=model,
        )
    fars = sorted(table)
    if far < fars[0] * (1 - 1e-9):
        raise CalibrationError(
            f"FAR {far:g} is stricter than any threshold known for model '{model}' "
            f"({source}: strictest FAR {fars[0]:g}); run `identity calibrate --far {far:g}` on "
            "enough labelled identities, or ask for a looser FAR",
            model=model,
            far=far,
            strictest_far=fars[0],
            source=source,
        )
    if far <= fars[0]:
        return table[fars[0]]
    if far >= fars[-1]:
        return table[fars[-1]]
    x = [math.log10(f) for f in fars]
    y = [table[f] for f in fars]
    return float(np.interp(math.log10(far), x, y))


def far_at(model: str, similarity: float, settings: Settings) -> float | None:
    """Estimated FAR of accepting at ``similarity``, from the stored impostor distribution or
    by inverting the threshold table; None when nothing is known."""
    data = load_calibration(model, settings)
    if data and data.get("impostor_quantiles"):
        q = np.asarray(data["impostor_quantiles"])
        frac_above = 1.0 - float(np.interp(similarity, q, np.linspace(0, 1, len(q))))
        # below one impostor pair the data cannot tell, so the estimate floors at 1/n
        return max(frac_above, 1.0 / max(int(data.get("n_impostor") or 1), 1))
    table, _ = known_thresholds(model, settings)
    if not table:
        return None
    fars = sorted(table, key=lambda f: table[f])  # ascending threshold = descending FAR
    ts = [table[f] for f in fars]
    logf = [math.log10(f) for f in fars]
    return float(10 ** np.interp(similarity, ts, logf))


def save_roc_plot(genuine: np.ndarray, impostor: np.ndarray, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar, _ = roc_curve(genuine, impostor)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    positive = far > 0
    ax.semilogx(far[positive], tar[positive], lw=2)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(0, 1.01)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
