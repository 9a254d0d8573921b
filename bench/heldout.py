"""Identity-disjoint folds of celeba500 and the pair scores within them: the evaluation protocol
shared by bench/accuracy.py (TAR at FAR) and bench/quality.py (error-versus-reject curves).

Fold of a photo = (rank of its identity in sorted order) mod 5, so every person lies in exactly
one fold and the folds hold 100 people each. Thresholds are always fitted on folds != k and
applied to the pairs of fold k, never tuned on what is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from identity.binomial import clopper_pearson
from identity.calibration import eer_of, roc_curve, threshold_in_sorted

N_FOLDS = 5


def folds_of(ids: np.ndarray, n_folds: int = N_FOLDS) -> np.ndarray:
    people = {p: i for i, p in enumerate(sorted(set(ids.tolist())))}
    return np.asarray([people[p] % n_folds for p in ids.tolist()])


def score_matrix(emb: np.ndarray, rows: np.ndarray, cols: np.ndarray, distance: bool) -> np.ndarray:
    """Similarity (higher = same) between photos ``rows`` x ``cols``: cosine of our unit
    embeddings, or minus the Euclidean distance (face_recognition's raw dlib descriptors)."""
    a, b = emb[rows].astype(np.float64), emb[cols].astype(np.float64)
    dots = a @ b.T
    if not distance:
        return dots
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * dots
    return -np.sqrt(np.maximum(sq, 0.0))


@dataclass
class PairSet:
    """Upper-triangle pairs of a set of photos: score, same person, and the photos (i, j)."""

    scores: np.ndarray
    same: np.ndarray
    i: np.ndarray
    j: np.ndarray


def pairs_within(
    emb: np.ndarray,
    found: np.ndarray,
    ids: np.ndarray,
    photos: np.ndarray,
    distance: bool,
    found_only: bool = False,
) -> PairSet:
    """All pairs among ``photos`` (indices); a pair with a missed face scores -inf, so it is a
    rejection at any threshold (or is left out with ``found_only``)."""
    if found_only:
        photos = photos[found[photos]]
    scores, same, ii, jj = [], [], [], []
    for s in range(0, len(photos), 512):
        rows = photos[s : s + 512]
        block = score_matrix(emb, rows, photos, distance)
        for r, i in enumerate(rows):
            start = s + r + 1
            row = block[r, start:]
            cols = photos[start:]
            if not found[i]:
                row = np.full(len(cols), -np.inf)
            else:
                row = np.where(found[cols], row, -np.inf)
            scores.append(row)
            same.append(ids[cols] == ids[i])
            ii.append(np.full(len(cols), i))
            jj.append(cols)
    return PairSet(
        np.concatenate(scores), np.concatenate(same), np.concatenate(ii), np.concatenate(jj)
    )


@dataclass
class HeldOut:
    """Decisions on held-out folds pooled over the folds."""

    far_targets: tuple[float, ...]
    gen_accepted: dict[float, int]
    imp_accepted: dict[float, int]
    n_genuine: int
    n_impostor: int
    eers: list[float]
    default_gen_accepted: int = 0
    default_imp_accepted: int = 0

    def tar(self, far: float) -> tuple[float, float, float]:
        k, n = self.gen_accepted[far], self.n_genuine
        lo, hi = clopper_pearson(k, n)
        return k / n, lo, hi

    def far_reached(self, far: float) -> tuple[float, float]:
        k, n = self.imp_accepted[far], self.n_impostor
        return k / n, clopper_pearson(k, n)[1]


def held_out(
    emb: np.ndarray,
    found: np.ndarray,
    ids: np.ndarray,
    fars: tuple[float, ...],
    distance: bool,
    default: float | None = None,
    default_far: float = 1e-3,
) -> HeldOut:
    """TAR / FAR at thresholds fitted on the other folds, pooled over 5 identity-disjoint folds.

    ``default``: a fixed decision threshold (face_recognition's -0.6 distance); None = ours, the
    threshold at ``default_far`` fitted on the other folds.
    """
    fold = folds_of(ids)
    out = HeldOut(fars, dict.fromkeys(fars, 0), dict.fromkeys(fars, 0), 0, 0, [])
    for k in range(N_FOLDS):
        train = pairs_within(emb, found, ids, np.flatnonzero(fold != k), distance, found_only=True)
        test = pairs_within(emb, found, ids, np.flatnonzero(fold == k), distance)
        imp_tr = np.sort(train.scores[~train.same])[::-1]
        gen_te, imp_te = test.scores[test.same], test.scores[~test.same]
        out.n_genuine += len(gen_te)
        out.n_impostor += len(imp_te)
        for f in fars:
            t = threshold_in_sorted(imp_tr, f)
            out.gen_accepted[f] += int((gen_te >= t).sum())
            out.imp_accepted[f] += int((imp_te >= t).sum())
        t_default = default if default is not None else threshold_in_sorted(imp_tr, default_far)
        out.default_gen_accepted += int((gen_te >= t_default).sum())
        out.default_imp_accepted += int((imp_te >= t_default).sum())
        finite_gen = np.where(np.isfinite(gen_te), gen_te, -1e9)
        finite_imp = np.where(np.isfinite(imp_te), imp_te, -1e9)
        far_c, tar_c, thr_c = roc_curve(finite_gen, finite_imp)
        out.eers.append(eer_of(far_c, tar_c, thr_c)[0])
    return out
