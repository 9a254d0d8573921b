"""Prometheus metrics: requests and latency per route, index sizes, model load times.

Each app gets its own ``CollectorRegistry`` (several apps in one test process must not clash).
The route label is the route's path template (``/v1/collections/{cid}/identify``), never the raw
path, so ids do not explode the label space.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    def __init__(self, index_sizes: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.index_sizes = index_sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from identity.runtime import POOL

        sizes = GaugeMetricFamily(
            "identity_index_templates", "Templates in each FAISS index", labels=["collection", "model"]
        )
        for (collection, model), n in self.index_sizes().items():
            sizes.add_metric([collection, model], n)
        yield sizes
        loads = GaugeMetricFamily(
            "identity_model_load_seconds", "Seconds the model took to load", labels=["kind", "model"]
        )
        for (kind, name), seconds in dict(POOL.load_seconds).items():
            loads.add_metric([kind, name], seconds)
        yield loads


class Metrics:
    def __init__(self, index_sizes: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "identity_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "identity_http_request_seconds", "HTTP request latency", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
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

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, label, str(status["code"])).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - start)
