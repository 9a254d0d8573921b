"""Threshold calibration on labelled faces: ROC, EER, TAR at FAR, and the threshold per FAR.

Verification decides by a named false-accept rate, never by a magic similarity. Thresholds depend
on the whole pipeline (detector and alignment as much as embedder), so a calibration record
belongs to a ``<detector>+<embedder>`` pair. A threshold for a FAR is read, first found wins, from
1. ``<data_dir>/calibration/<detector>+<embedder>.json`` (written by ``identity calibrate``, or
   the older ``<embedder>.json``);
2. the record shipped for that pipeline, ``models/calibration/<detector>+<embedder>.json``
   (celeba500, ``bench/calibrate.py``), or else the one shipped for the embedder with another
   detector;
3. the model manifest's ``thresholds`` table.

Every record carries its evidence: the set it was measured on, identities, genuine and impostor
pair counts and, per FAR, the impostors above the threshold and the upper limit of the 95%
Clopper-Pearson interval of the FAR. A FAR is offered only where at least
``MIN_IMPOSTORS_PER_FAR / FAR`` impostor pairs stand behind it (``reliable``); a stricter one is
refused with ``CalibrationError`` rather than extrapolated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from identity.errors import CalibrationError, InvalidInput, LooserThanPolicy
from identity.settings import Settings

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
# FARs a large calibration set (millions of impostor pairs) can stand behind.
WIDE_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# A FAR needs this many expected impostor accepts behind it: with 3/FAR pairs the threshold sits
# above the 3rd highest impostor and the 95% upper bound of the FAR stays within ~2.5x of it.
MIN_IMPOSTORS_PER_FAR = 3
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models" / "calibration"


def far_key(far: float) -> str:
    """Canonical text of a FAR, e.g. 0.001 -> '1e-03', as used in calibration files."""
    return f"{far:.0e}"


def enough_impostors(far: float, n_impostor: int) -> bool:
    """The 3/FAR rule: may a FAR be offered from ``n_impostor`` impostor pairs?"""
    return n_impostor * far >= MIN_IMPOSTORS_PER_FAR * (1 - 1e-9)


@dataclass
class FarPoint:
    far: float
    threshold: float
    tar: float
    reliable: bool  # at least MIN_IMPOSTORS_PER_FAR / far impostor pairs behind it
    impostors_above: int = 0  # impostor pairs scoring >= threshold
    far_upper_95: float | None = None  # upper limit of the 95% Clopper-Pearson interval
    tar_ci_95: tuple[float, float] | None = None


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
    detector: str | None = None
    set: str = "unnamed"  # what the pairs came from, e.g. "celeba500"
    # (FAR, threshold) down to the smallest FAR the 3/FAR rule allows: the tail the quantiles miss
    impostor_tail: list[tuple[float, float]] = field(default_factory=list)

    def thresholds(self) -> dict[str, float]:
        """Thresholds of the FARs the data can stand behind (the 3/FAR rule)."""
        return {far_key(p.far): p.threshold for p in self.points if p.reliable}

    @property
    def pipeline(self) -> str:
        return f"{self.detector}+{self.model}" if self.detector else self.model

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


def roc_curve(
    genuine: np.ndarray, impostor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def threshold_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float]:
    """Smallest threshold whose measured FAR does not exceed ``far``; returns (threshold, tar).

    A threshold just above the k-th highest impostor score, with k = floor(far * n_impostor),
    so that at most k impostors pass.
    """
    if len(impostor) == 0:
        raise CalibrationError("no impostor pairs: need at least two identities")
    t = threshold_in_sorted(np.sort(np.asarray(impostor))[::-1], far)
    tar = float(np.mean(np.asarray(genuine) >= t)) if len(genuine) else float("nan")
    return t, tar


def threshold_in_sorted(impostor_desc: np.ndarray, far: float) -> float:
    """``threshold_at_far`` on impostor scores already sorted high to low (sorted once for
    the many FARs of a large set)."""
    k = math.floor(far * len(impostor_desc))
    if k < len(impostor_desc):
        return float(np.nextafter(impostor_desc[k], np.inf))
    return float(impostor_desc[-1])


def evaluate(
    model: str,
    genuine: np.ndarray,
    impostor: np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
    n_images: int = 0,
    n_identities: int = 0,
    detector: str | None = None,
    set_name: str = "unnamed",
) -> CalibrationReport:
    from identity.binomial import clopper_pearson

    if len(genuine) == 0:
        raise CalibrationError("no genuine pairs: need at least one identity with two images")
    if len(impostor) == 0:
        raise CalibrationError("no impostor pairs: need at least two identities")
    genuine = np.asarray(genuine, np.float64)
    impostor = np.asarray(impostor, np.float64)
    far, tar, thr = roc_curve(genuine, impostor)
    eer, eer_thr = eer_of(far, tar, thr)
    n_imp, n_gen = len(impostor), len(genuine)
    desc = np.sort(impostor)[::-1]
    points = []
    for f in fars:
        t = threshold_in_sorted(desc, f)
        t_tar = float(np.mean(genuine >= t))
        k = int(np.searchsorted(-desc, -t, side="right"))  # impostors scoring >= t
        points.append(
            FarPoint(
                far=f,
                threshold=t,
                tar=t_tar,
                reliable=enough_impostors(f, n_imp),
                impostors_above=k,
                far_upper_95=clopper_pearson(k, n_imp)[1],
                tar_ci_95=clopper_pearson(round(t_tar * n_gen), n_gen),
            )
        )
    tail_fars = [10 ** (-i / 4) for i in range(4, 40) if enough_impostors(10 ** (-i / 4), n_imp)]
    tail = [(f, threshold_in_sorted(desc, f)) for f in tail_fars]
    return CalibrationReport(
        model=model,
        n_images=n_images,
        n_identities=n_identities,
        n_genuine=n_gen,
        n_impostor=n_imp,
        auc=auc_of(far, tar),
        eer=eer,
        eer_threshold=eer_thr,
        points=points,
        impostor_quantiles=np.quantile(impostor, np.linspace(0, 1, 201)).tolist(),
        detector=detector,
        set=set_name,
        impostor_tail=tail,
    )


# ---------------------------------------------------------------------------------------------
# stored thresholds and the evidence behind them
# ---------------------------------------------------------------------------------------------
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


def pipeline_calibration(
    model: str, settings: Settings, detector: str | None = None
) -> Calibration:
    """The calibration a decision of ``detector+model`` uses (see the module docstring)."""
    from identity.registry import get_manifest

    detector = detector or settings.detector
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


def threshold_for(model: str, far: float, settings: Settings, detector: str | None = None) -> float:
    """Similarity threshold that keeps the false-accept rate at ``far`` for ``model``.

    Between calibrated FARs the threshold is interpolated linearly in log10(FAR). A FAR looser
    than any calibrated one gets the loosest calibrated threshold (stricter than asked, so the
    promise still holds). A FAR stricter than any calibrated one is refused: the strictest known
    threshold would accept more impostors than asked while the answer claimed the stricter FAR.
    """
    return calibrated_threshold(model, far, settings, detector)[0]


def calibrated_threshold(
    model: str, far: float, settings: Settings, detector: str | None = None
) -> tuple[float, Calibration]:
    """(threshold, the calibration behind it) for a decision at ``far``."""
    if not 0 < far < 1:
        raise InvalidInput(f"far must be between 0 and 1, got {far}")
    cal = pipeline_calibration(model, settings, detector)
    table = cal.thresholds
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
            f"({cal.source}, {cal.set}: strictest FAR {fars[0]:g}, which needs "
            f"{MIN_IMPOSTORS_PER_FAR}/FAR impostor pairs); run `identity calibrate --far {far:g}` "
            "on enough labelled identities, or ask for a looser FAR",
            model=model,
            far=far,
            strictest_far=fars[0],
            source=cal.source,
            impostor_pairs=cal.n_impostor,
        )
    if far <= fars[0]:
        return table[fars[0]], cal
    if far >= fars[-1]:
        return table[fars[-1]], cal
    x = [math.log10(f) for f in fars]
    y = [table[f] for f in fars]
    return float(np.interp(math.log10(far), x, y)), cal


def decision_threshold(
    model: str,
    settings: Settings,
    far: float | None = None,
    threshold: float | None = None,
    detector: str | None = None,
) -> tuple[float, float | None]:
    """(similarity threshold, FAR) to decide a match at: the policy's, or a stricter one asked for.

    The policy is ``settings.default_far``. A caller may ask for a stricter decision (a lower
    FAR, a higher threshold), never a looser one: a FAR above the policy's or a threshold below
    the policy's threshold is refused with ``LooserThanPolicy``, so a client cannot turn a
    non-match into a match (or list near misses as matches) by asking. An explicit threshold has
    no FAR to report (None).
    """
    policy_far = settings.default_far
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:  # also refuses NaN
            raise InvalidInput("threshold is a cosine similarity in [-1, 1]", threshold=threshold)
        policy = threshold_for(model, policy_far, settings, detector)
        if threshold < policy - 1e-9:
            raise LooserThanPolicy(
                f"threshold {threshold:g} is looser than this service's policy: ask for "
                f"{policy:.4f} (FAR {policy_far:g}) or higher",
                threshold=threshold,
                policy_threshold=round(policy, 6),
                policy_far=policy_far,
            )
        return float(threshold), None
    far = policy_far if far is None else far
    if not 0.0 < far < 1.0:
        raise InvalidInput("far must be in (0, 1)", far=far)
    if far > policy_far * (1 + 1e-9):
        raise LooserThanPolicy(
            f"FAR {far:g} is looser than this service's policy: ask for {policy_far:g} or lower",
            far=far,
            policy_far=policy_far,
        )
    return float(threshold_for(model, far, settings, detector)), float(far)


def far_at(
    model: str, similarity: float, settings: Settings, detector: str | None = None
) -> float | None:
    """Estimated FAR of accepting at ``similarity``, from the stored impostor distribution or
    by inverting the threshold table; None when nothing is known."""
    cal = pipeline_calibration(model, settings, detector)
    data = cal.record
    n = max(int(data.get("n_impostor") or 1), 1)
    tail = data.get("impostor_tail") or []
    if tail and similarity >= float(tail[0][1]):
        # log-linear in FAR over the tail; past its strictest point the data cannot tell
        ts = [float(t) for _, t in tail]
        logf = [math.log10(float(f)) for f, _ in tail]
        if similarity >= ts[-1]:
            return float(tail[-1][0])
        return float(10 ** np.interp(similarity, ts, logf))
    if data.get("impostor_quantiles"):
        q = np.asarray(data["impostor_quantiles"])
        frac_above = 1.0 - float(np.interp(similarity, q, np.linspace(0, 1, len(q))))
        # below one impostor pair the data cannot tell, so the estimate floors at 1/n
        return max(frac_above, 1.0 / n)
    table = cal.thresholds
    if not table:
        return None
    fars = sorted(table, key=lambda f: table[f])  # ascending threshold = descending FAR
    ts = [table[f] for f in fars]
    logf = [math.log10(f) for f in fars]
    return float(10 ** np.interp(similarity, ts, logf))
