"""Top-k selection for ``FaceIndex``: over FAISS past tombstones, over the exact buffer, merged.

Every function returns ``(similarities (Q,k) float32, ids (Q,k) int64)``, best first, with
missing slots holding id -1 and similarity -inf.
"""

from __future__ import annotations

import faiss
import numpy as np


def search_live(
    index: faiss.Index, q: np.ndarray, k: int, tombstones: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of unit queries ``q`` over a FAISS index, never returning a tombstoned id."""
    nq = len(q)
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    ntotal = int(index.ntotal)
    if ntotal == 0:
        return out_s, out_i
    if not tombstones:
        s, i = index.search(q, min(k, ntotal))
        s = np.where(i < 0, -np.inf, s).astype(np.float32)
        out_s[:, : s.shape[1]], out_i[:, : i.shape[1]] = s, i
        return out_s, out_i
    # Over-fetch past tombstones; rows still short of k live hits retry with a larger k.
    want = min(k, ntotal - len(tombstones))
    fetch = min(ntotal, k + min(len(tombstones), max(k, 16)))
    rows = np.arange(nq)
    dead = np.fromiter(tombstones, dtype=np.int64, count=len(tombstones))
    while len(rows):
        s, i = index.search(q[rows], fetch)
        i = np.where(np.isin(i, dead), -1, i)
        done = []
        for r, (srow, irow) in enumerate(zip(s, i, strict=False)):
            keep = irow >= 0
            hits = int(keep.sum())
            if hits >= want or fetch >= ntotal:
                n = min(hits, k)
                out_s[rows[r], :n] = srow[keep][:n]
                out_i[rows[r], :n] = irow[keep][:n]
                done.append(r)
        rows = np.delete(rows, done)
        fetch = min(ntotal, fetch * 4)
    return out_s, out_i


def exact_topk(
    q: np.ndarray, ids_all: np.ndarray, vecs_all: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k of unit queries over the buffer of vectors not yet in FAISS."""
    sims = q @ vecs_all.T
    kk = min(k, len(ids_all))
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    top_s = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_s, axis=1, kind="stable")
    out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(q), k), -1, dtype=np.int64)
    out_s[:, :kk] = np.take_along_axis(top_s, order, axis=1)
    out_i[:, :kk] = ids_all[np.take_along_axis(top, order, axis=1)]
    return out_s, out_i


def merge_topk(
    s1: np.ndarray, i1: np.ndarray, s2: np.ndarray, i2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best k of two padded result sets, row by row (stable: ties keep the first set first)."""
    s = np.concatenate([s1, s2], axis=1)
    i = np.concatenate([i1, i2], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
