"""Prometheus metrics: requests and latency per route, index sizes, model load times, and the
seconds each face-pipeline stage took per request.

Each app gets its own ``CollectorRegistry`` (several apps in one test process must not clash).
The route label is the route's path template (``/v1/collections/{cid}/identify``), never the raw
path, so ids do not explode the label space.

Stage timings: the middleware gives every request an empty holder (a context variable, which
the thread running a sync route sees too); the store adds each analysed image's
``Faces.timings`` to it (``record_stages``). A request that ran the pipeline (verify, identify,
enroll, ...) then gets a ``Server-Timing`` header (milliseconds, W3C format, plus ``total``)
and one observation per stage in ``identity_stage_seconds``. Around the pipeline, the serving
stages ``auth`` (the API-key check), ``search`` (identify's vector index) and ``audit`` (the
decision's hash-chained audit row) are timed too (``timed_stage``), so what a request cost
beyond the models is in the same header.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity.pipeline import timed

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A stage takes from about a millisecond (align) to seconds (a big decode on a busy machine).
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_stages: ContextVar[dict[str, float] | None] = ContextVar("identity_request_stages", default=None)


def record_stages(timings: Mapping[str, float]) -> None:
    """Add one analysed image's stage seconds to the current request's total (no-op outside one)."""
    holder = _stages.get()
    if holder is None:
        return
    for stage, seconds in timings.items():
        holder[stage] = holder.get(stage, 0.0) + seconds


SERVING_STAGES = frozenset({"auth", "search", "audit"})


@contextmanager
def timed_stage(name: str) -> Iterator[None]:
    """Add the seconds the block took to the current request's stage ``name`` (outside a
    request, to nothing)."""
    holder = _stages.get()
    with timed(holder if holder is not None else {}, name):
        yield


def server_timing(stages: Mapping[str, float], total: float) -> str:
    """``Server-Timing`` value: ``decode;dur=12.3, detect;dur=45.6, total;dur=80.1`` (ms)."""
    return ", ".join(
        f"{name};dur={1000 * s:.1f}" for name, s in [*stages.items(), ("total", total)]
    )


class _StateCollector(Collector):
    def __init__(self, index_sizes: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.index_sizes = index_sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from identity.runtime import POOL

        sizes = GaugeMetricFamily(
            "identity_index_templates",
            "Templates in each FAISS index",
            labels=["collection", "model"],
        )
        for (collection, model), n in self.index_sizes().items():
            sizes.add_metric([collection, model], n)
        yield sizes
        loads = GaugeMetricFamily(
            "identity_model_load_seconds",
            "Seconds the model took to load",
            labels=["kind", "model"],
        )
        for (kind, name), seconds in dict(POOL.load_seconds).items():
            loads.add_metric([kind, name], seconds)
        yield loads


class Metrics:
    def __init__(self, index_sizes: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "identity_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "identity_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "identity_stage_seconds",
            "Seconds per face-pipeline stage, summed per request",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(index_sizes))


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        stages: dict[str, float] = {}
        token = _stages.set(stages)

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if stages.keys() - SERVING_STAGES:  # the route ran the face pipeline
                    self._observe_stages(message, stages, time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            _stages.reset(token)
            route: Any = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, label, str(status["code"])).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - start)

    def _observe_stages(self, start: Message, stages: dict[str, float], total: float) -> None:
        for stage, seconds in stages.items():
            self.metrics.stages.labels(stage).observe(seconds)
        headers = list(start.get("headers", []))
        headers.append((b"server-timing", server_timing(stages, total).encode("latin-1")))
        start["headers"] = headers
