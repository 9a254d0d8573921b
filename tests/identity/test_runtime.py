"""Model sessions: on the CPU, every core for a run alone and one thread for a run beside others,
with the same results either way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from identity.registry import resolve
from identity.runtime import IN_FLIGHT, AdaptiveSession, on_cpu, onnx_session
from identity.settings import Settings

from shared_data import SHARED_DIR

MODEL = "arcface_w600k_mbf_int8"


def _session(**overrides: object) -> object:
    settings = Settings(models_dir=SHARED_DIR / "models", **overrides)
    return onnx_session(resolve(MODEL, settings.models_dir, settings.model_cache_dir), settings)


def _crops() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)


@contextmanager
def _another_thread_busy() -> Iterator[None]:
    """Another thread in the middle of image work (as a second request decoding its upload)."""
    busy, done = threading.Event(), threading.Event()

    def neighbour() -> None:
        with IN_FLIGHT.working():
            busy.set()
            done.wait(30)

    t = threading.Thread(target=neighbour)
    t.start()
    busy.wait(30)
    try:
        yield
    finally:
        done.set()
        t.join()


def test_a_run_alone_uses_every_core_and_a_run_beside_others_one_thread() -> None:
    session = _session()
    assert isinstance(session, AdaptiveSession)
    name = session.get_inputs()[0].name
    x = _crops()

    with IN_FLIGHT.working():  # this thread's own analysis around its run is not a neighbour
        alone = session.run(None, {name: x})[0]
    assert session._narrow is None  # nothing else ran: no second session was made

    with _another_thread_busy():
        beside = session.run(None, {name: x})[0]
    narrow = session._narrow
    assert narrow is not None
    assert narrow.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(beside, alone, rtol=1e-5, atol=1e-5)
    assert IN_FLIGHT.busy == 0


def test_image_work_is_counted_per_thread() -> None:
    """An analysis marks decoding and alignment as image work and then runs its models inside
    that mark: its own runs must still count as alone; another thread's work must not."""
    with IN_FLIGHT.working() as others:
        assert others == 0
        with IN_FLIGHT.working() as nested:
            assert nested == 0
        with _another_thread_busy(), IN_FLIGHT.working() as beside:
            assert beside == 1
    assert IN_FLIGHT.busy == 0


def test_concurrent_runs_agree_and_leave_no_run_counted() -> None:
    session = _session()
    name = session.get_inputs()[0].name
    x = _crops()
    expected = session.run(None, {name: x})[0]
    results: list[np.ndarray] = []

    def worker() -> None:
        for _ in range(3):
            results.append(session.run(None, {name: x})[0])

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 9
    for r in results:
        np.testing.assert_allclose(r, expected, rtol=1e-5, atol=1e-5)
    assert IN_FLIGHT.busy == 0


def test_a_fixed_thread_count_is_one_plain_session() -> None:
    session = _session(intra_op_threads=1)
    assert not isinstance(session, AdaptiveSession)
    assert session.get_session_options().intra_op_num_threads == 1
    assert on_cpu(session) and on_cpu(_session())
