"""Paths to the shared photos and the problem-shape assertion used by the service tests."""

from __future__ import annotations

from pathlib import Path

from shared_data import SHARED_DIR

REPO = Path(__file__).resolve().parents[2]
SHARED = SHARED_DIR
DATA = SHARED / "data"
TRAIN = DATA / "face_recognition" / "knn_examples" / "train"
PROBES = DATA / "face_recognition" / "knn_examples" / "test"


def photo(rel: str) -> bytes:
    return (DATA / rel).read_bytes()


def assert_problem(r: object, status: int, code: str | None = None) -> dict:
    """The response is the one problem shape with this status (and code)."""
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]
