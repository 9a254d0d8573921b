"""``--engine ray``: the same batch analysis on Ray Data, locally or on a cluster.

The work items (image paths, or the bytes of archive members) become a Ray Dataset;
``map_batches`` runs ``BatchAnalyzer`` (the very class the local pool uses) in a pool of Ray
actors, each loading its models once; the driver streams the results back and the caller writes
them through the service's store layer exactly as with the local engine (one transaction per
batch, SHA-256 dedupe inside it).

Cluster: ``settings.ray_address`` (env ``RAY_ADDRESS`` or ``IDENTITY_RAY_ADDRESS``:
``ray://head:10001``, or ``auto`` on a cluster node) is passed to ``ray.init(address=...)``;
unset, a local Ray instance with ``workers`` CPUs is started.
Workers of a remote cluster must see the same image paths (a shared filesystem) and have this
package installed; archive members travel as bytes, so archives need no shared filesystem.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from identity.gallery.worker import BatchAnalyzer, ImageResult, WorkItem, worker_settings
from identity.settings import Settings


class RayBatchAnalyzer:
    """A Ray Data callable class: constructed once per actor, called per batch."""

    def __init__(self, settings: Settings, labelled: bool) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.analyze = BatchAnalyzer(settings, labelled)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            WorkItem(
                rel_path=str(batch["rel_path"][k]),
                label=_opt(batch["label"][k]),
                path=_opt(batch["path"][k]),
                data=_opt_bytes(batch["data"][k]),
                sha256=_opt(batch["sha256"][k]),
            )
            for k in range(len(batch["rel_path"]))
        ]
        results = self.analyze(items)
        # results cross the object store pickled: faces hold arrays and nested lists
        return {"result": np.array([pickle.dumps(r) for r in results], dtype=object)}


def _opt(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return str(value)


def _opt_bytes(value: Any) -> bytes | None:
    if value is None or (isinstance(value, (bytes, bytearray)) and len(value) == 0):
        return None
    return bytes(value)


def ensure_ray(settings: Settings, workers: int) -> Any:
    import ray

    if not ray.is_initialized():
        if settings.ray_address:
            ray.init(address=settings.ray_address, log_to_driver=False)
        else:
            ray.init(
                address="local",
                num_cpus=max(1, workers),
                include_dashboard=False,
                log_to_driver=False,
            )
    return ray


def analyze_batches_ray(
    batches: Iterable[list[WorkItem]],
    settings: Settings,
    labelled: bool,
    workers: int,
) -> Iterator[tuple[list[WorkItem], list[ImageResult]]]:
    """Same contract as ``worker.analyze_batches`` (results grouped per batch)."""
    ray = ensure_ray(settings, workers)
    rows: list[dict[str, Any]] = []
    batch_size = 8
    for batch in batches:
        batch_size = max(batch_size, len(batch))
        for w in batch:
            rows.append(
                {
                    "rel_path": w.rel_path,
                    "label": w.label or "",
                    "path": w.path or "",
                    "data": w.data or b"",
                    "sha256": w.sha256 or "",
                }
            )
    if not rows:
        return
    ds = ray.data.from_items(rows)
    out = ds.map_batches(
        RayBatchAnalyzer,
        fn_constructor_args=(worker_settings(settings), labelled),
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=max(1, workers),
        num_cpus=1,
    )
    for part in out.iter_batches(batch_size=batch_size, batch_format="numpy"):
        results = [pickle.loads(blob) for blob in part["result"]]  # our own actors wrote these
        yield [], results
