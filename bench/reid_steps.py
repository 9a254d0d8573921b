"""The matching steps of ``bench/reid.py --labels``: each chosen on cuhk01's train half only,
then reported on the test half, cumulatively, and kept only when it helped on the train half.

Steps, in the order they apply (feature transforms before gallery-level ones):
flip averaging; optionally zoom averaging (multi-scale test-time augmentation); fusion with each
partner model in turn (concatenated L2-normalised features, weight chosen on train); camera-mean
centring, within-person whitening and discriminant dimensions (linear maps *fitted* on labelled
train people: a deployment can do this only with labelled people of its own cameras, so the
service does not); average query expansion (k chosen on train); k-reciprocal re-ranking (k1,
k2, lambda chosen on train).
Learned maps are selected on a nested split of the train half (fit on one part, scored on the
other) because their score on the people they were fitted to says nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from identity.body.cross_camera import Scorer, cosine, cross_camera_scores, split_people
from identity.body.rerank import RerankParams, average_query_expansion, k_reciprocal_rerank


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class Features:
    """Per model: L2-normalised features of the crops as seen and mirrored, all people."""

    plain: dict[str, np.ndarray]
    flipped: dict[str, np.ndarray]
    person: np.ndarray
    camera: np.ndarray
    # the base model's features of the crops zoomed in by ZOOM (as seen, mirrored), when given
    zoomed: tuple[np.ndarray, np.ndarray] | None = None


# multi-scale test-time augmentation: the central ZOOM x ZOOM of the crop resized back
ZOOM = 0.9


def zoom_crops(crops: np.ndarray, zoom: float = ZOOM) -> np.ndarray:
    import cv2

    h, w = crops.shape[1:3]
    dh, dw = int(h * (1 - zoom) / 2), int(w * (1 - zoom) / 2)
    return np.stack([cv2.resize(c[dh : h - dh, dw : w - dw], (w, h)) for c in crops])


def camera_centring(emb: np.ndarray, camera: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Subtract each camera's mean feature over the ``fit`` rows (lighting and viewpoint bias)."""
    out = emb.copy()
    for cam in np.unique(camera):
        out[camera == cam] -= emb[fit & (camera == cam)].mean(axis=0)
    return normalise(out)


def within_person_whitening(
    emb: np.ndarray, person: np.ndarray, fit: np.ndarray, reg: float
) -> np.ndarray:
    """Whiten by the within-person covariance of the ``fit`` rows, ridge ``reg`` x its mean
    eigenvalue: directions along which one person's crops vary (camera, pose) are shrunk."""
    x, p = emb[fit], person[fit]
    dev = np.concatenate([x[p == q] - x[p == q].mean(axis=0) for q in np.unique(p)])
    values, vectors = np.linalg.eigh(dev.T @ dev / len(dev))
    return normalise(emb @ (vectors / np.sqrt(values + reg * values.mean())))


def discriminant_projection(
    emb: np.ndarray, person: np.ndarray, fit: np.ndarray, dims: int
) -> np.ndarray:
    """Keep the ``dims`` directions along which the ``fit`` people's mean features spread most
    (LDA's between-person scatter; after within-person whitening this is LDA itself): the rest
    of the space separates no one it was fitted on and only carries noise."""
    x, p = emb[fit], person[fit]
    ids, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    means = np.zeros((len(ids), x.shape[1]))
    np.add.at(means, inverse, x)
    means /= counts[:, None]
    centre = x.mean(axis=0)
    spread = (means - centre) * np.sqrt(counts)[:, None]
    _, vectors = np.linalg.eigh(spread.T @ spread)
    return normalise((emb - centre) @ vectors[:, ::-1][:, :dims])


def qe_scorer(k: int) -> Scorer:
    return lambda q, g: cosine(average_query_expansion(q, g, k), g)


def rerank_scorer(params: RerankParams, qe_k: int = 0) -> Scorer:
    def scorer(q: np.ndarray, g: np.ndarray) -> np.ndarray:
        q = average_query_expansion(q, g, qe_k)
        return k_reciprocal_rerank(cosine(q, g), cosine(q, q), cosine(g, g), params)

    return scorer


def run_steps(
    f: Features,
    base: str,
    partners: list[str],
    report: Callable[[str, str, dict, dict, bool], None],
) -> None:
    """Greedy: each step with its best train-half setting; kept when train rank-1 + mAP rose.
    ``report(step, setting, train_scores, test_scores, kept)`` prints one table row."""
    train, test = split_people(f.person)
    in_train, in_test = np.isin(f.person, train), np.isin(f.person, test)
    fit_a, fit_b = split_people(train)  # nested split for fitted maps
    in_a, in_b = np.isin(f.person, fit_a), np.isin(f.person, fit_b)

    def score(emb: np.ndarray, rows: np.ndarray, scorer: Scorer = cosine) -> dict[str, float]:
        return cross_camera_scores(emb[rows], f.person[rows], f.camera[rows], scorer)

    def total(s: dict[str, float]) -> float:
        return s["rank1"] + s["mAP"]

    emb = f.plain[base]
    best = score(emb, in_train)
    report(f"{base}, as its docs feed it", "-", best, score(emb, in_test), True)

    flipped = normalise(f.plain[base] + f.flipped[base])
    tried = score(flipped, in_train)
    keep = total(tried) > total(best)
    report("+ flip averaging", "as seen + mirrored", tried, score(flipped, in_test), keep)
    if keep:
        emb, best = flipped, tried
    use_flip = keep

    if f.zoomed is not None:
        views = (f.plain[base], *f.zoomed) + ((f.flipped[base],) if use_flip else ())
        scaled = normalise(sum(views[1:], views[0]))
        tried = score(scaled, in_train)
        keep = total(tried) > total(best)
        report(f"+ zoom averaging (x{ZOOM})", "both scales", tried, score(scaled, in_test), keep)
        if keep:
            emb, best = scaled, tried

    for partner in partners:
        other = normalise(f.plain[partner] + f.flipped[partner]) if use_flip else f.plain[partner]
        options = {w: normalise(np.hstack([emb, w * other])) for w in (0.25, 0.5, 0.75, 1.0)}
        w, tried = max(
            ((w, score(e, in_train)) for w, e in options.items()), key=lambda t: total(t[1])
        )
        keep = total(tried) > total(best)
        report(f"+ fusion with {partner}", f"weight {w}", tried, score(options[w], in_test), keep)
        if keep:
            emb, best = options[w], tried

    # fitted maps: chosen on the nested split (fit on part a of the train half, scored on part b),
    # then refitted on the whole train half for the test half; the gallery-level steps after
    # them are tuned on part b with maps fitted on part a, so no score flatters itself
    nested = emb
    centred_b = camera_centring(nested, f.camera, in_a)
    keep = total(score(centred_b, in_b)) > total(score(nested, in_b))
    centred = camera_centring(emb, f.camera, in_train)
    report(
        "+ camera-mean centring (fitted on train)",
        "per-camera mean",
        score(centred_b, in_b),
        score(centred, in_test),
        keep,
    )
    if keep:
        emb, nested = centred, centred_b
    fitted = keep
    reg, whitened_b = max(
        ((r, within_person_whitening(nested, f.person, in_a, r)) for r in (0.3, 1.0, 3.0)),
        key=lambda t: total(score(t[1], in_b)),
    )
    keep = total(score(whitened_b, in_b)) > total(score(nested, in_b))
    whitened = within_person_whitening(emb, f.person, in_train, reg)
    report(
        "+ within-person whitening (fitted on train)",
        f"ridge {reg}",
        score(whitened_b, in_b),
        score(whitened, in_test),
        keep,
    )
    if keep:
        emb, nested = whitened, whitened_b
    fitted = fitted or keep
    dims, projected_b = max(
        (
            (d, discriminant_projection(nested, f.person, in_a, d))
            for d in (64, 128, 192, 256, 384)
            if d < emb.shape[1]
        ),
        key=lambda t: total(score(t[1], in_b)),
    )
    keep = total(score(projected_b, in_b)) > total(score(nested, in_b))
    projected = discriminant_projection(emb, f.person, in_train, dims)
    report(
        "+ discriminant dimensions (fitted on train)",
        f"{dims} of {emb.shape[1]}",
        score(projected_b, in_b),
        score(projected, in_test),
        keep,
    )
    if keep:
        emb, nested = projected, projected_b
    fitted = fitted or keep
    tune, rows_tune = (nested, in_b) if fitted else (emb, in_train)
    best = score(tune, rows_tune)
    qe_k = 0

    k, tried = max(
        ((k, score(tune, rows_tune, qe_scorer(k))) for k in (1, 2, 3)), key=lambda t: total(t[1])
    )
    keep = total(tried) > total(best)
    report("+ average query expansion", f"top {k}", tried, score(emb, in_test, qe_scorer(k)), keep)
    if keep:
        qe_k, best = k, tried
    grid = [RerankParams(k1, k2, lam) for k1 in (2, 3, 4, 6) for k2 in (1, 2) for lam in (0.3, 0.6)]
    params, tried = max(
        ((p, score(tune, rows_tune, rerank_scorer(p, qe_k))) for p in grid),
        key=lambda t: total(t[1]),
    )
    keep = total(tried) > total(best)
    report(
        "+ k-reciprocal re-ranking",
        f"k1 {params.k1}, k2 {params.k2}, lambda {params.lambda_value}",
        tried,
        score(emb, in_test, rerank_scorer(params, qe_k)),
        keep,
    )
