"""Failed API-key checks, throttled per client address and per key prefix (in process).

One token bucket per client address and one per key prefix (``idk_`` + 8 characters): each may
fail ``burst`` times at once, then once more every ``60 / per_minute`` seconds. While either
bucket is empty, every attempt from that address or with that prefix is refused before the key
is looked at (a right key too: otherwise a refusal would tell a guess was wrong just as a 401
does). Successful checks cost nothing, so a client with a valid key never meets the throttle.

In process: each worker of ``serve --workers N`` counts on its own, so an attacker spread over
the workers gets up to N times the rate; the limit stays a small multiple of the setting, where
a shared counter would put a database write on every failed request.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

_MAX_BUCKETS = 100_000  # bounds memory under a flood of distinct addresses or prefixes


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureThrottle:
    def __init__(self, burst: int, per_minute: float) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0  # tokens per second
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.burst > 0 and self.rate > 0

    def _level(self, name: str, now: float) -> float:
        b = self._buckets.get(name)
        return self.burst if b is None else min(self.burst, b.tokens + (now - b.at) * self.rate)

    def retry_after(self, names: list[str]) -> int | None:
        """Whole seconds until all of ``names`` may try again; None when they may now."""
        if not self.enabled:
            return None
        now = time.monotonic()
        with self._lock:
            waits = [(1.0 - lvl) / self.rate for n in names if (lvl := self._level(n, now)) < 1.0]
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, names: list[str]) -> bool:
        """Count one failure against each name; True when this one used up a bucket."""
        if not self.enabled:
            return False
        now = time.monotonic()
        emptied = False
        with self._lock:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._prune(now)
            for n in names:
                level = self._level(n, now) - 1.0
                self._buckets[n] = _Bucket(level, now)
                emptied |= level < 1.0
        return emptied

    def _prune(self, now: float) -> None:
        full = [n for n in self._buckets if self._level(n, now) >= self.burst]
        for n in full:
            del self._buckets[n]
        if len(self._buckets) >= _MAX_BUCKETS:  # still full of live buckets: keep the newest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1].at)[len(self._buckets) // 2 :]
            self._buckets = dict(keep)
