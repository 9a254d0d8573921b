"""The Milvus rows of ``bench/search.py --store milvus``: the same gallery and probes, searched on a
real Milvus server (the embedded standalone server of the ``milvus`` extra unless ``--milvus-uri``
names one), with the index types and search params the service would use
(``services.milvus_store.index_spec``: HNSW ef 256, IVF nprobe = half of the lists).

Build time is insert + flush + index build + load, as ``identity db reindex`` does. Memory is
where the vectors live: the Milvus server's resident memory growth per template, and the bench
process's growth while it searches (what an API worker does; it holds no vectors).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from identity.settings import Settings
from services.milvus_index import index_spec, milvus_rows


@contextmanager
def milvus_server(uri: str | None) -> Iterator[tuple[str, int | None]]:
    """(uri, server pid or None): the given server, or an embedded one for the run."""
    if uri:
        yield uri, None
        return
    from services.embedded_milvus import EmbeddedMilvus

    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as root:
        server = EmbeddedMilvus(Path(root))
        try:
            yield server.start(), server.server.server_proc.pid
        finally:
            server.stop()


def _rss(pid: int | None) -> int:
    if pid is None:
        return 0
    proc = psutil.Process(pid)
    return int(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))


def run(
    uri: str,
    server_pid: int | None,
    index_type: str,
    nlist: int,
    gallery: np.ndarray,
    probes: np.ndarray,
    budget_s: float,
) -> list[dict[str, Any]]:
    """Build one collection and measure it; one result per consistency level."""
    from pymilvus import DataType, MilvusClient

    build: dict[str, Any] = {"nlist": nlist} if "IVF" in index_type else {}
    spec = index_spec(Settings(milvus_index_type=index_type, milvus_index_params=build))
    client = MilvusClient(uri=uri)
    name = f"bench_{index_type.lower()}_{len(gallery)}_{gallery.shape[1]}"
    if client.has_collection(name):
        client.drop_collection(name)
    server_before = _rss(server_pid)
    t0 = time.perf_counter()
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=gallery.shape[1])
    client.create_collection(name, schema=schema, consistency_level="Strong")
    ids = np.arange(len(gallery), dtype=np.int64)
    for rows in milvus_rows(ids, gallery):
        client.insert(name, rows)
    client.flush(name)
    params = client.prepare_index_params()
    params.add_index(
        field_name="vec", index_type=spec.index_type, metric_type="IP", params=spec.build
    )
    client.create_index(name, params)
    while True:
        d = client.describe_index(name, "vec")
        if d.get("indexed_rows", 0) >= len(gallery) and d.get("pending_index_rows", 1) == 0:
            break
        time.sleep(1.0)
    client.load_collection(name, timeout=3600)
    t_build = time.perf_counter() - t0
    server_growth = _rss(server_pid) - server_before
    own_before = _rss(psutil.Process().pid)  # from here on the process does what a worker does
    search_params = {"metric_type": "IP", "params": dict(spec.search)}
    out = []
    for consistency in ("Strong", "Bounded"):
        t0 = time.perf_counter()
        batch_ids = []
        for s in range(0, len(probes), 100):
            hits = client.search(
                name,
                data=probes[s : s + 100].tolist(),
                limit=10,
                search_params=search_params,
                consistency_level=consistency,
            )
            batch_ids += [[h["id"] for h in row] for row in hits]
        qps_batch = len(probes) / (time.perf_counter() - t0)
        done, t0 = 0, time.perf_counter()
        for q in probes:
            client.search(
                name,
                data=[q.tolist()],
                limit=10,
                search_params=search_params,
                consistency_level=consistency,
            )
            done += 1
            if time.perf_counter() - t0 > budget_s:
                break
        out.append(
            {
                "label": f"Milvus {spec.index_type}",
                "params": ", ".join(f"{k}={v}" for k, v in {**spec.build, **spec.search}.items())
                + f", {consistency}",
                "build_s": t_build,
                "server_bytes_per_template": server_growth / len(gallery) if server_pid else None,
                "ids": np.array([r + [-1] * (10 - len(r)) for r in batch_ids], dtype=np.int64),
                "qps_single": done / (time.perf_counter() - t0),
                "qps_batch": qps_batch,
                "client_growth_mb": (_rss(psutil.Process().pid) - own_before) / 2**20,
            }
        )
    client.drop_collection(name)
    client.close()
    return out
