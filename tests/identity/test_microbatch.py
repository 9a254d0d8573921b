"""Micro-batching (``identity.microbatch``): concurrent callers share model calls and each gets
exactly its own answer; a failing item fails only its caller."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from identity.errors import BadImage
from identity.microbatch import MicroBatcher
from identity.pipeline import FaceAnalyzer
from identity.settings import Settings

from shared_data import SHARED_DIR

DEEPFACE = SHARED_DIR / "data" / "deepface"


def test_waiting_items_share_a_batch_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, window_s=2.0)
    start = threading.Barrier(6)

    def one(i: int) -> int:
        start.wait()
        return batcher.submit(i)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert results == [i * 10 for i in range(6)]
    assert sorted(len(c) for c in calls) == [2, 4]  # max_batch, then the rest
    assert batcher.items == 6 and batcher.batches == 2


def test_a_failing_item_fails_only_its_caller() -> None:
    def run(items: list[int]) -> list[int]:
        if 3 in items:
            raise BadImage("item 3 is bad")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8, window_s=1.0)
    start = threading.Barrier(5)

    def one(i: int) -> int | str:
        start.wait()
        try:
            return batcher.submit(i)
        except BadImage as exc:
            return exc.message

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(one, range(5)))
    assert results == [0, 1, 2, "item 3 is bad", 4]


def test_batched_analysis_equals_one_at_a_time(settings: Settings) -> None:
    names = ["img1.jpg", "img2.jpg", "couple.jpg", "img10.jpg", "img11.jpg", "img12.jpg"]
    photos = [(DEEPFACE / n).read_bytes() for n in names]
    alone = FaceAnalyzer(settings.model_copy(update={"micro_batch": False}))
    expected = [alone.analyze_bytes(p).faces for p in photos]
    batched = FaceAnalyzer(settings.model_copy(update={"micro_batch": True}))
    start = threading.Barrier(len(photos))

    def one(p: bytes):  # type: ignore[no-untyped-def]
        start.wait()
        return batched.analyze_bytes(p).faces

    with ThreadPoolExecutor(len(photos)) as pool:
        got = list(pool.map(one, photos))
    for e, g in zip(expected, got, strict=True):
        assert len(e) == len(g) >= 1
        assert list(g.image_index) == [0] * len(g)
        assert np.allclose(e.boxes, g.boxes, atol=0.5)
        assert e.embeddings is not None and g.embeddings is not None
        assert np.min(np.sum(e.embeddings * g.embeddings, axis=1)) > 0.999
    (batcher,) = batched._batchers.values()
    assert batcher.items == len(photos) and batcher.batches <= len(photos)


@pytest.mark.parametrize("bad", [b"", b"not an image"])
def test_batched_bad_image_is_the_usual_error(settings: Settings, bad: bytes) -> None:
    batched = FaceAnalyzer(settings.model_copy(update={"micro_batch": True}))
    with pytest.raises(BadImage):
        batched.analyze_bytes(bad)
