"""Cluster unlabelled face embeddings into proposed identities.

Two methods, both on L2-normalised embeddings (cosine similarity = dot product):

- ``graph``: connect faces whose similarity is at least a threshold (the embedder's calibrated
  threshold at a strict FAR, so an edge means "would be accepted as the same person"), then
  split the graph with Chinese whispers (Biemann 2006; dlib's ``chinese_whispers`` clustering of
  face descriptors does the same). Plain connected components chain different people through
  one bridging edge; Chinese whispers lets each node take the label with the most edge weight
  among its neighbours, so a single bridge does not merge two dense groups.
  ``method="components"`` gives the plain connected components for comparison.
- ``hdbscan``: density-based clustering (Campello et al. 2013), as in Immich's face grouping
  idea of "enough nearby faces make a person"; faces in no dense region stay noise (-1).
  Needs scikit-learn (>= 1.3 has ``HDBSCAN``) or the ``hdbscan`` package (dev extra).

Labels: ``-1`` = not clustered (a singleton or noise); otherwise ``0..K-1`` with clusters of
fewer than ``min_size`` faces turned into ``-1``, numbered by descending size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from identity.errors import FeatureUnavailable

Method = Literal["graph", "components", "hdbscan"]


def similarity_edges(
    embeddings: np.ndarray, threshold: float, block: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity) for every pair i < j with cosine similarity >= threshold.

    Computed in row blocks so memory is ``block x N`` floats, not ``N x N``.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    rows, cols, sims = [], [], []
    for start in range(0, n, block):
        s = x[start : start + block] @ x.T
        bi, bj = np.nonzero(s >= threshold)
        gi = bi + start
        keep = bj > gi
        rows.append(gi[keep])
        cols.append(bj[keep])
        sims.append(s[bi[keep], bj[keep]])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (
        np.concatenate(rows).astype(np.int64),
        np.concatenate(cols).astype(np.int64),
        np.concatenate(sims).astype(np.float32),
    )


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label per node (union-find with path halving)."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return int(a)

    for a, b in zip(i.tolist(), j.tolist(), strict=False):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(a) for a in range(n)], dtype=np.int64)


def chinese_whispers(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    weights: np.ndarray,
    iterations: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Chinese whispers on an undirected weighted graph; deterministic for a given seed."""
    labels = np.arange(n)
    if len(i) == 0:
        return labels
    # CSR adjacency of the symmetric graph
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    w = np.concatenate([weights, weights]).astype(np.float64)
    order = np.argsort(src, kind="stable")
    src, dst, w = src[order], dst[order], w[order]
    starts = np.searchsorted(src, np.arange(n + 1))
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for node in rng.permutation(n):
            lo, hi = starts[node], starts[node + 1]
            if lo == hi:
                continue
            votes: dict[int, float] = {}
            for nb, wt in zip(dst[lo:hi].tolist(), w[lo:hi].tolist(), strict=False):
                lab = int(labels[nb])
                votes[lab] = votes.get(lab, 0.0) + wt
            # ties go to the smallest label so the result does not depend on dict order
            best = min(votes, key=lambda k: (-votes[k], k))
            if best != labels[node]:
                labels[node] = best
                changed += 1
        if not changed:
            break
    return labels


def hdbscan_labels(embeddings: np.ndarray, min_size: int) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) < max(2, min_size):
        return np.full(len(x), -1, dtype=np.int64)
    try:
        from sklearn.cluster import HDBSCAN

        # on unit vectors euclidean distance is sqrt(2 - 2 cos): same order as cosine
        model = HDBSCAN(min_cluster_size=max(2, min_size), min_samples=1, metric="euclidean")
        return np.asarray(model.fit_predict(x), dtype=np.int64)
    except ImportError:
        try:
            import hdbscan  # type: ignore[import-not-found]
        except ImportError as exc:
            raise FeatureUnavailable(
                "HDBSCAN clustering needs scikit-learn>=1.3 or the hdbscan package "
                "(pip install 'identity-platform[dev]'); method='graph' needs neither",
                method="hdbscan",
            ) from exc
        clusterer = hdbscan.HDBSCAN(min_cluster_size=max(2, min_size), min_samples=1)
        return np.asarray(clusterer.fit_predict(x), dtype=np.int64)


def relabel_by_size(raw: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters numbered 0.. by descending size (ties: first member); small ones become -1."""
    out = np.full(len(raw), -1, dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for idx, lab in enumerate(raw.tolist()):
        if lab >= 0:
            groups.setdefault(lab, []).append(idx)
    ranked = sorted(
        (g for g in groups.values() if len(g) >= min_size), key=lambda g: (-len(g), g[0])
    )
    for k, members in enumerate(ranked):
        out[members] = k
    return out


@dataclass
class Clustering:
    labels: np.ndarray  # (N,) -1 = unclustered
    method: str
    threshold: float | None

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) and self.labels.max() >= 0 else 0

    def members(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.labels == k) for k in range(self.n_clusters)]


def cluster_embeddings(
    embeddings: np.ndarray,
    method: Method = "graph",
    threshold: float | None = None,
    min_size: int = 2,
    seed: int = 0,
) -> Clustering:
    """Proposed identities for ``embeddings`` (N, D), L2-normalised.

    ``threshold`` (cosine) is required for the graph methods; take it from
    ``identity.calibration.threshold_for(embedder, far, settings)``.
    """
    x = np.asarray(embeddings, dtype=np.float32).reshape(len(embeddings), -1)
    n = len(x)
    if method == "hdbscan":
        raw = hdbscan_labels(x, min_size)
        return Clustering(relabel_by_size(raw, min_size), method, None)
    if threshold is None:
        raise ValueError(f"method {method!r} needs a similarity threshold")
    i, j, s = similarity_edges(x, threshold)
    if method == "components":
        raw = connected_components(n, i, j)
    elif method == "graph":
        raw = chinese_whispers(n, i, j, s, seed=seed)
    else:
        raise ValueError(f"unknown clustering method {method!r}")
    return Clustering(relabel_by_size(raw, min_size), method, threshold)


# --- evaluation --------------------------------------------------------------------------
def _singletons(labels: np.ndarray) -> np.ndarray:
    """Noise (-1) counts as one cluster per face for the metrics."""
    out = np.asarray(labels, dtype=np.int64).copy()
    noise = np.flatnonzero(out < 0)
    out[noise] = out.max(initial=0) + 1 + np.arange(len(noise))
    return out


def _contingency(truth: list[str] | np.ndarray, predicted: np.ndarray) -> np.ndarray:
    _, t = np.unique(np.asarray(truth), return_inverse=True)
    _, p = np.unique(_singletons(predicted), return_inverse=True)
    table = np.zeros((t.max() + 1, p.max() + 1), dtype=np.int64)
    np.add.at(table, (t, p), 1)
    return table


def _pairs(counts: np.ndarray) -> int:
    return int((counts * (counts - 1) // 2).sum())


def pairwise_scores(truth: list[str] | np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Pairwise precision/recall/F1 (over all face pairs put together) and adjusted Rand index."""
    table = _contingency(truth, predicted)
    together_both = _pairs(table)
    together_pred = _pairs(table.sum(axis=0))
    together_true = _pairs(table.sum(axis=1))
    n = int(table.sum())
    total = n * (n - 1) // 2
    precision = together_both / together_pred if together_pred else 1.0
    recall = together_both / together_true if together_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    expected = together_true * together_pred / total if total else 0.0
    max_index = (together_true + together_pred) / 2
    ari = (together_both - expected) / (max_index - expected) if max_index != expected else 1.0
    return {
        "pairwise_precision": float(precision),
        "pairwise_recall": float(recall),
        "pairwise_f1": float(f1),
        "ari": float(ari),
    }
