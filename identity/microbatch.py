"""``MicroBatcher``: concurrent callers' items run through one function a batch at a time.

The face pipeline is batch in, batch out (detectors letterbox every image onto one canvas, the
embedders take a stack of crops), so images of concurrent requests can share one model call
instead of running side by side, each pool of intra-op threads fighting the other for the
cores. Batching is greedy: one worker thread takes everything waiting when it becomes free (up
to ``max_batch``), waiting up to ``window_s`` for more only if asked to. A lone request therefore
runs at once; under load the queue that forms while a batch runs becomes the next batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T, R]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None


class MicroBatcher(Generic[T, R]):
    def __init__(
        self, run: Callable[[list[T]], list[R]], max_batch: int = 8, window_s: float = 0.0
    ) -> None:
        self.run = run
        self.max_batch = max(1, max_batch)
        self.window_s = max(0.0, window_s)
        self._cv = threading.Condition()
        self._pending: list[_Slot[T, R]] = []
        self._thread: threading.Thread | None = None
        self.batches = 0  # batches run, and items in them: what a benchmark reports
        self.items = 0

    def submit(self, item: T) -> R:
        """``run([item, ...])``'s result for ``item``, computed in a batch with whatever other
        items are waiting; its exception if the item alone fails."""
        slot: _Slot[T, R] = _Slot(item)
        with self._cv:
            self._pending.append(slot)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="microbatch", daemon=True)
                self._thread.start()
            self._cv.notify()
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _take(self) -> list[_Slot[T, R]]:
        with self._cv:
            while not self._pending:
                self._cv.wait()
            deadline = time.monotonic() + self.window_s
            while len(self._pending) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            self.batches += 1
            self.items += len(batch)
            try:
                results = self.run([s.item for s in batch])
                for slot, result in zip(batch, results, strict=True):
                    slot.result = result
            except BaseException as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    # one bad item must fail only itself: run each on its own
                    for slot in batch:
                        try:
                            slot.result = self.run([slot.item])[0]
                        except BaseException as one:
                            slot.error = one
            finally:
                for slot in batch:
                    slot.done.set()
