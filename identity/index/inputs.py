"""Input checks for ``FaceIndex``: every bad vector or id becomes ``InvalidInput``, never a FAISS crash."""

from __future__ import annotations

from typing import Any

import numpy as np

from identity.errors import InvalidInput


def check_vectors(vectors: Any, dim: int, normalize: bool, what: str) -> np.ndarray:
    """A float32 (N, dim) C-contiguous array: unit rows (a new array) when ``normalize``, else
    possibly the caller's own array."""
    arr = np.asarray(vectors)
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidInput(
            f"{what} must have shape (N, {dim}), got {arr.shape}", shape=list(arr.shape)
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InvalidInput(f"{what} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{what} contain NaN or infinity")
    return _normalize(arr, what) if normalize else np.ascontiguousarray(arr)


def check_ids(ids: Any) -> np.ndarray:
    """A 1-D int64 array of template ids (-1 is reserved for an empty result slot)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInput("ids must be a 1-D sequence of integers")
    arr = arr.astype(np.int64, copy=False)
    if np.any(arr < 0):
        raise InvalidInput("ids must be non-negative (-1 marks an empty result slot)")
    return arr


def _normalize(vectors: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InvalidInput(f"{what} contain a zero vector, which has no direction for cosine")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)
