"""Cross-camera scoring on hand-made cases, and re-ranking against the authors' reference code."""

from __future__ import annotations

import numpy as np
import pytest

from identity.body.cross_camera import cross_camera_scores
from identity.body.rerank import RerankParams, average_query_expansion, k_reciprocal_rerank


def test_cross_camera_scores_known_answer() -> None:
    # people 1, 2 in cameras A and B; A1 is closest to B2 (a miss), the rest are hits.
    emb = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.1, 0.995]], np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    person = np.array([1, 2, 1, 2])
    camera = np.array(["A", "A", "B", "B"])
    s = cross_camera_scores(emb, person, camera)
    assert s["queries"] == 4
    # A1 -> [B1 .6, B2 .1]: hit. A2 -> [B1 .8, B2 .995]: hit. B1 -> [A1 .6, A2 .8]: miss (AP 1/2).
    # B2 -> [A1 .1, A2 .995]: hit.
    assert s["rank1"] == pytest.approx(3 / 4)
    assert s["mAP"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert s["rank5"] == 1.0


def _reference(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value):  # type: ignore[no-untyped-def]
    """zhunzhong07/person-re-ranking, python-version/re_ranking_feature.py (distances in)."""
    original_dist = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = query_num + q_g_dist.shape[1]
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            cf = initial_rank[candidate, : int(np.around(k1 / 2.0)) + 1]
            cb = initial_rank[cf, : int(np.around(k1 / 2.0)) + 1]
            fi_candidate = np.where(cb == candidate)[0]
            candidate_k_reciprocal_index = cf[fi_candidate]
            if len(
                np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)
            ) > 2.0 / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] += np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


@pytest.mark.parametrize(
    "params", [RerankParams(20, 6, 0.3), RerankParams(3, 1, 0.3), RerankParams(4, 2, 0.6)]
)
def test_k_reciprocal_rerank_equals_the_reference(params: RerankParams) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    x = np.repeat(centres, 5, axis=0) + 0.6 * rng.normal(size=(40, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q, g = x[::4], np.delete(x, np.s_[::4], axis=0)

    def d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(2 - 2 * a @ b.T, 0))

    want = 1 - _reference(d(q, g), d(q, q), d(g, g), params.k1, params.k2, params.lambda_value)
    got = k_reciprocal_rerank(q @ g.T, q @ q.T, g @ g.T, params)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_average_query_expansion_known_answer() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    g = np.array([[0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], np.float32)
    got = average_query_expansion(q, g, 1)  # q + its nearest (0.6, 0.8), renormalised
    np.testing.assert_allclose(got, [[1.6, 0.8] / np.hypot(1.6, 0.8)], atol=1e-6)
    np.testing.assert_array_equal(average_query_expansion(q, g, 0), q)
