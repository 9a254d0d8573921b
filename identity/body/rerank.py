"""Re-ranking a body gallery: k-reciprocal encoding (Zhong et al., CVPR 2017) and average
query expansion.

Both use the gallery's own structure. Two crops of one person seen by another camera are often
not each other's nearest neighbour, but they share neighbours: k-reciprocal re-ranking replaces
the plain distance with a mix of it and the Jaccard distance between the two crops' (expanded)
k-reciprocal neighbour sets. Query expansion averages the query with its top gallery matches.

Inputs are cosine similarities of L2-normalised embeddings (higher = more alike); outputs are
similarities too (``1 - distance``), so every ranking and scoring function reads them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from identity.errors import InvalidInput


@dataclass(frozen=True)
class RerankParams:
    """The paper's k1, k2 and lambda (its Market-1501 values are 20, 6, 0.3)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


def _k_reciprocal(initial_rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = initial_rank[i, : k + 1]
    backward = initial_rank[forward, : k + 1]
    return forward[np.flatnonzero((backward == i).any(axis=1))]


def k_reciprocal_rerank(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, params: RerankParams = RerankParams()
) -> np.ndarray:
    """(Q, G) re-ranked similarities from the query-gallery, query-query and gallery-gallery
    cosine similarities, following the authors' reference code (layumi/Person_reID_baseline,
    zhunzhong07/person-re-ranking): squared Euclidean distances of unit vectors, each column
    scaled by its maximum, Gaussian-weighted k-reciprocal sets expanded by their half-size
    neighbours that overlap by more than 2/3, local query expansion over k2, then
    ``(1 - lambda) * jaccard + lambda * distance``.
    """
    q_g, q_q, g_g = (np.asarray(a, np.float32) for a in (q_g, q_q, g_g))
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise InvalidInput(
            f"re-ranking needs (Q,G), (Q,Q), (G,G); got {q_g.shape}, {q_q.shape}, {g_g.shape}"
        )
    if params.k1 < 1 or params.k2 < 1 or not 0 <= params.lambda_value <= 1:
        raise InvalidInput("re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1")
    sim = np.block([[q_q, q_g], [q_g.T, g_g]])
    dist = np.maximum(2.0 - 2.0 * sim, 0.0)
    dist = (dist / np.maximum(dist.max(axis=0), 1e-12)).T
    n = len(dist)
    k1 = min(params.k1, n - 1)
    initial_rank = np.argsort(dist, axis=1, kind="stable").astype(np.int32)
    v = np.zeros_like(dist)
    half = int(np.around(k1 / 2.0))
    for i in range(n):
        recip = _k_reciprocal(initial_rank, i, k1)
        expansion = recip
        for candidate in recip:
            c_recip = _k_reciprocal(initial_rank, int(candidate), half)
            if len(np.intersect1d(c_recip, recip)) > 2.0 / 3.0 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if params.k2 > 1:
        v = v[initial_rank[:, : params.k2]].mean(axis=1)
    jaccard = np.empty((nq, n), np.float32)
    for i in range(nq):
        nz = np.flatnonzero(v[i])
        overlap = np.minimum(v[i, nz][None, :], v[:, nz]).sum(axis=1)
        jaccard[i] = 1.0 - overlap / (2.0 - overlap)
    final = (1 - params.lambda_value) * jaccard + params.lambda_value * dist[:nq]
    return 1.0 - final[:, nq:]


def average_query_expansion(queries: np.ndarray, gallery: np.ndarray, top_k: int) -> np.ndarray:
    """Each L2-normalised query averaged with its ``top_k`` most similar gallery embeddings
    (Chum et al. 2007's average query expansion), renormalised; ``top_k`` 0 returns the queries."""
    q = np.asarray(queries, np.float32)
    g = np.asarray(gallery, np.float32)
    if top_k <= 0 or not len(g):
        return q
    k = min(top_k, len(g))
    top = np.argpartition(-(q @ g.T), k - 1, axis=1)[:, :k]
    expanded = q + g[top].sum(axis=1)
    return expanded / np.maximum(np.linalg.norm(expanded, axis=1, keepdims=True), 1e-12)
