"""A bounded queue in front of image analysis: ``InferenceLimit``, an ASGI middleware.

Every multipart request (the only kind that carries images: probes, enrollments, the dashboard's
upload forms, archives for jobs) needs one of ``inference_workers`` slots before the app reads its
body. Up to ``inference_queue`` more wait for a slot as coroutines on the event loop, holding no
thread and no upload (the body stays in the socket until admitted); beyond that, or after
``inference_queue_timeout_s`` in the queue, the answer is a 503 problem with ``Retry-After``. So
the memory of concurrent analyses is bounded by workers x one request's budget, whatever the
number of clients, and a burst gets a fast, honest refusal instead of a pile of threads.
"""

from __future__ import annotations

import asyncio
import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from services.errors import ServiceBusy, problem

# Seed of the service-time estimate behind Retry-After, before any request has finished.
_FIRST_GUESS_S = 1.0


class InferenceLimit:
    def __init__(self, app: ASGIApp, workers: int, queue: int, timeout_s: float) -> None:
        self.app = app
        self.workers = workers
        self.queue = queue
        self.timeout_s = timeout_s
        self._slots: asyncio.Semaphore | None = None  # made on the serving loop, on first use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = 0
        self._busy = 0
        self._mean_s = _FIRST_GUESS_S  # moving average of one admitted request's duration

    @staticmethod
    def _carries_images(scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return False
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                return value.lower().startswith(b"multipart/")
        return False

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, served ``workers`` at a time."""
        rounds = (self._waiting + self._busy) / self.workers
        return max(1, min(60, math.ceil(rounds * self._mean_s)))

    def _refusal(self, why: str) -> ServiceBusy:
        return ServiceBusy(
            f"the service is at capacity ({why}); retry after {self.retry_after_s()} s",
            workers=self.workers,
            queue=self.queue,
            retry_after_s=self.retry_after_s(),
        )

    async def _refuse(self, exc: ServiceBusy, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(exc.http_status, exc.code, exc.message, **exc.details)
        response.headers["Retry-After"] = str(exc.details["retry_after_s"])
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._carries_images(scope):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # a test client may bring a new loop
            self._slots, self._loop = asyncio.Semaphore(self.workers), loop
        # Counted before the first await, so a burst arriving in one loop tick is counted whole.
        if self._busy + self._waiting >= self.workers + self.queue:
            await self._refuse(
                self._refusal(f"{self.queue} requests already waiting"), scope, receive, send
            )
            return
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.timeout_s)
        except TimeoutError:
            await self._refuse(self._refusal(f"waited {self.timeout_s:g} s"), scope, receive, send)
            return
        finally:
            self._waiting -= 1
        slots = self._slots
        self._busy += 1
        start = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self._busy -= 1
            slots.release()
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - start)
