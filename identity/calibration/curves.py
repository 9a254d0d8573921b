"""Measuring a pipeline on labelled pairs: pair scores, ROC, AUC, EER, the threshold at a FAR,
and the ``CalibrationReport`` with its evidence (the 3/FAR rule, Clopper-Pearson bounds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from identity.errors import CalibrationError

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
# FARs a large calibration set (millions of impostor pairs) can stand behind.
WIDE_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# A FAR needs this many expected impostor accepts behind it: with 3/FAR pairs the threshold sits
# above the 3rd highest impostor and the 95% upper bound of the FAR stays within ~2.5x of it.
MIN_IMPOSTORS_PER_FAR = 3


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
