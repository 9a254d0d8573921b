"""Deciding with the calibration: the threshold for a FAR (interpolated, never extrapolated to a
stricter FAR), the service's policy that a caller may tighten but never loosen, and the estimated
FAR of a similarity."""

from __future__ import annotations

import math

import numpy as np

from identity.calibration.curves import MIN_IMPOSTORS_PER_FAR
from identity.calibration.records import Calibration, pipeline_calibration
from identity.errors import CalibrationError, InvalidInput, LooserThanPolicy
from identity.settings import Settings


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
