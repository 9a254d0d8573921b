"""Verify and identify over HTTP against the same work done in-process, side by side, in one run.

    python bench/api.py [--requests 96] [--concurrency 1,2,8]
    python bench/api.py --url http://127.0.0.1:8000 --key KEY   # an already running service

Without ``--url`` the script starts a real ``identity serve`` on loopback (a free port, the
embedded Postgres in a temporary data dir, an admin key made with ``identity keys create``) and
stops it and removes the data dir at the end. It enrolls a collection ``bench-api`` (deepface's
13 people, up to 3 photos each that are not probes, plus face_recognition's 5 people), and the
library side analyses the same gallery photos in-process (``FaceAnalyzer`` + numpy).

Probes: one further photo of 8 of deepface's people, full size (up to 2048 px, ~1 MB), and the
same photos downscaled so the long side is 640 px (selfie-sized, JPEG q90). Each cell sends a
fixed number of requests (``--requests``) from ``c`` client threads, probes cycling; the library
runs the same calls on ``c`` threads. The table prints p50/p99 latency, throughput and errors
(anything not 200, or a probe without a face) for both, and the service's own p50 time from its
``Server-Timing`` total (the rest is HTTP and the client).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import FACE_RECOGNITION, MODELS, REPO, command_line, deepface_labels

N_PROBES = 8
GALLERY_PER_PERSON = 3
SELFIE_SIDE = 640


# data -----------------------------------------------------------------------------------------
def split() -> tuple[dict[str, list[Path]], list[tuple[str, Path]]]:
    """Gallery photos per person and (person, probe photo); a probe is never enrolled."""
    by_person: dict[str, list[Path]] = {}
    for path, person in sorted(deepface_labels().items(), key=lambda kv: (kv[1], kv[0].name)):
        by_person.setdefault(person, []).append(path)
    probes = [(p, paths[0]) for p, paths in by_person.items() if len(paths) >= 2][:N_PROBES]
    gallery = {
        p: [x for x in paths if (p, x) not in probes][:GALLERY_PER_PERSON]
        for p, paths in by_person.items()
    }
    for path in sorted((FACE_RECOGNITION / "knn_examples" / "train").glob("*/*.jp*g")):
        gallery.setdefault(path.parent.name, []).append(path)
    return gallery, probes


def selfie(path: Path) -> bytes:
    """The photo upright and downscaled so its long side is 640 px, as a phone app would send it."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    image.thumbnail((SELFIE_SIDE, SELFIE_SIDE), Image.Resampling.LANCZOS)
    buf = BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# the service ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def started_service() -> Iterator[tuple[str, str]]:
    """``identity serve`` on loopback with its own embedded Postgres; yields (url, admin key)."""
    # Not under a 0700 temp parent: the embedded Postgres may run as another user (tests/conftest).
    data = Path(tempfile.mkdtemp(prefix="identity-bench-api-"))
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "IDENTITY_DATABASE_URL")
    }
    env.update(IDENTITY_DATA_DIR=str(data), IDENTITY_MODELS_DIR=str(MODELS), PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "services.cli"]
    proc = None
    try:
        key = subprocess.run(
            [*cli, "keys", "create", "--scope", "admin", "--name", "bench"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        port = _free_port()
        log = open(data / "serve.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [*cli, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "error: identity serve did not become ready:\n"
                    + (data / "serve.log").read_text()[-2000:]
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url, key
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def enroll_service(c: httpx.Client, name: str, gallery: dict[str, list[Path]]) -> dict[str, str]:
    c.delete(f"/v1/collections/{name}")
    c.post("/v1/collections", json={"name": name}).raise_for_status()
    ids: dict[str, str] = {}
    for person, paths in gallery.items():
        iid = c.post(f"/v1/collections/{name}/identities", json={"external_id": person}).json()[
            "id"
        ]
        r = c.post(
            f"/v1/collections/{name}/identities/{iid}/faces",
            files=[("files", (p.name, p.read_bytes())) for p in paths],
        )
        if r.status_code == 201:
            ids[person] = iid
    return ids


# load -----------------------------------------------------------------------------------------
def run_cell(
    call: Callable[[int], tuple[bool, float | None]], n: int, conc: int
) -> dict[str, float]:
    """``n`` calls on ``conc`` threads; latency percentiles, throughput, errors, server p50."""
    lat: list[float] = []
    server: list[float] = []
    errors = [0]
    next_i = [0]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n:
                return
            t0 = time.perf_counter()
            try:
                ok, server_s = call(i)
            except Exception:  # a failed request is an error in the table, not a crash
                ok, server_s = False, None
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                errors[0] += not ok
                if server_s is not None:
                    server.append(server_s)

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "p50": 1000 * float(np.percentile(lat, 50)),
        "p99": 1000 * float(np.percentile(lat, 99)),
        "rps": len(lat) / wall,
        "errors": errors[0],
        "server": 1000 * float(np.percentile(server, 50)) if server else float("nan"),
    }


def server_total(r: httpx.Response) -> float | None:
    for entry in r.headers.get("server-timing", "").split(","):
        name, _, dur = entry.strip().partition(";dur=")
        if name == "total":
            return float(dur) / 1000
    return None


def service_calls(
    url: str, key: str, name: str, ids: dict[str, str], probes: list[tuple[str, bytes]]
):
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120)
        return local.c  # type: ignore[no-any-return]

    def verify(i: int) -> tuple[bool, float | None]:
        person, data = probes[i % len(probes)]
        r = client().post(
            f"/v1/collections/{name}/verify",
            files={"file": ("p.jpg", data)},
            data={"identity_id": ids[person]},
        )
        return r.status_code == 200, server_total(r)

    def identify(i: int) -> tuple[bool, float | None]:
        r = client().post(
            f"/v1/collections/{name}/identify",
            files={"file": ("p.jpg", probes[i % len(probes)][1])},
            data={"top_k": "5"},
        )
        return r.status_code == 200, server_total(r)

    return {"verify": verify, "identify": identify}


def library_peer(gallery: dict[str, list[Path]]):
    """The same gallery analysed in-process; returns ``calls(probes)`` like ``service_calls``."""
    from identity.pipeline import FaceAnalyzer
    from identity.settings import Settings

    fa = FaceAnalyzer(Settings(models_dir=MODELS))
    owners, rows = [], []
    for person, paths in gallery.items():
        for p in paths:
            faces = fa.analyze_bytes(p.read_bytes()).faces
            if len(faces):
                owners.append(person)
                rows.append(faces.largest().embeddings[0])
    templates = np.stack(rows)
    owner = np.array(owners)
    return lambda probes: _library_calls(fa, templates, owner, probes)


def _library_calls(
    fa: Any, templates: np.ndarray, owner: np.ndarray, probes: list[tuple[str, bytes]]
):
    def probe(i: int) -> tuple[str, np.ndarray | None]:
        person, data = probes[i % len(probes)]
        faces = fa.analyze_bytes(data).faces
        return person, (faces.embeddings if len(faces) else None)

    def verify(i: int) -> tuple[bool, float | None]:
        person, emb = probe(i)
        if emb is None:
            return False, None
        float(np.max(emb @ templates[owner == person].T))
        return True, None

    def identify(i: int) -> tuple[bool, float | None]:
        _, emb = probe(i)
        if emb is None:
            return False, None
        np.argsort(-(templates @ emb[0]))[:5]
        return True, None

    return {"verify": verify, "identify": identify}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", help="an already running service (default: start one)")
    ap.add_argument("--key", help="admin key for --url")
    ap.add_argument("--collection", default="bench-api")
    # 96: at 8 clients, 12 rounds; with 24 (3 rounds) the start and the tail weighed on req/s
    ap.add_argument("--requests", type=int, default=96, help="requests per cell")
    ap.add_argument("--concurrency", default="1,2,8")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    gallery, probe_paths = split()
    sizes = {
        "full": [(person, p.read_bytes()) for person, p in probe_paths],
        "640px": [(person, selfie(p)) for person, p in probe_paths],
    }

    @contextmanager
    def service() -> Iterator[tuple[str, str]]:
        if args.url:
            yield args.url, args.key
        else:
            with started_service() as found:
                yield found

    results: dict[tuple[str, str, int, str], dict[str, float]] = {}
    with service() as (url, key):
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=300) as c:
            ids = enroll_service(c, args.collection, gallery)
        for size, probes in sizes.items():
            probes = [(person, data) for person, data in probes if person in ids]
            calls = service_calls(url, key, args.collection, ids, probes)
            for op, call in calls.items():
                run_cell(call, len(probes), 2)  # warm-up, not reported
                for conc in levels:
                    results[size, op, conc, "service"] = run_cell(call, args.requests, conc)
    peer = library_peer(gallery)
    for size, probes in sizes.items():
        calls = peer([(person, data) for person, data in probes if person in ids])
        for op, call in calls.items():
            run_cell(call, len(probes), 2)
            for conc in levels:
                results[size, op, conc, "library"] = run_cell(call, args.requests, conc)

    print(f"# {command_line()}")
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, gallery {len(ids)} identities, "
        f"{len(sizes['full'])} probes, {args.requests} requests per cell"
    )
    print(
        "| probes | operation | c | service p50 ms | p99 ms | req/s | errors | server p50 ms "
        "| library p50 ms | p99 ms | req/s | errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for op in ("verify", "identify"):
            for conc in levels:
                s, lib = results[size, op, conc, "service"], results[size, op, conc, "library"]
                print(
                    f"| {size} | {op} | {conc} | {s['p50']:.0f} | {s['p99']:.0f} | {s['rps']:.2f} "
                    f"| {s['errors']} | {s['server']:.0f} | {lib['p50']:.0f} | {lib['p99']:.0f} "
                    f"| {lib['rps']:.2f} | {lib['errors']} |"
                )


if __name__ == "__main__":
    main()
