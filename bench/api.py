"""Bounded load on loopback against a running service: verify and identify latency/throughput.

    identity keys create --scope admin        # prints KEY
    identity serve --port 8000 &
    python bench/api.py --url http://127.0.0.1:8000 --key KEY [--seconds 20 --concurrency 2]

Sets up a collection ``bench-api`` (the 5 people of face_recognition's knn_examples and the 13
people of deepface's labelled set, 70 templates), then for each operation runs ``concurrency``
client threads for ``seconds`` with probes cycling over real photos, and prints one table:
requests, errors (anything not 200), p50/p99 latency and throughput. The peer row is the same work
done in-process by the library (``FaceAnalyzer`` + numpy), i.e. what the HTTP layer, Postgres and
FAISS add on top of the face pipeline.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TRAIN = DATA / "face_recognition" / "knn_examples" / "train"
PROBES = DATA / "face_recognition" / "knn_examples" / "test"


def gallery() -> list[tuple[str, Path]]:
    people = [(p.parent.name, p) for p in sorted(TRAIN.glob("*/*")) if p.suffix in {".jpg", ".jpeg"}]
    with open(DATA / "deepface" / "LABELS.csv") as fh:
        people += [(r["identity"], DATA / "deepface" / r["path"]) for r in csv.DictReader(fh)]
    return people


def setup(c: httpx.Client, name: str) -> dict[str, str]:
    c.delete(f"/v1/collections/{name}")
    r = c.post("/v1/collections", json={"name": name})
    r.raise_for_status()
    ids: dict[str, str] = {}
    for person, path in gallery():
        if person not in ids:
            ids[person] = c.post(f"/v1/collections/{name}/identities", json={"external_id": person}).json()["id"]
        c.post(f"/v1/collections/{name}/identities/{ids[person]}/faces",
               files=[("files", (path.name, path.read_bytes()))])
    return ids


def load(url: str, key: str, path: str, forms: list[tuple[bytes, dict]], seconds: float, conc: int):
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(offset: int) -> None:
        i = offset
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
            while time.monotonic() < stop:
                data, form = forms[i % len(forms)]
                i += conc
                t0 = time.perf_counter()
                r = c.post(path, files={"file": ("p.jpg", data)}, data=form)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    errors[0] += r.status_code != 200
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(lat), errors[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", required=True)
    ap.add_argument("--collection", default="bench-api")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="skip the in-process library row")
    args = ap.parse_args()

    with httpx.Client(base_url=args.url, headers={"X-API-Key": args.key}, timeout=120) as c:
        ids = setup(c, args.collection)
    probes = [PROBES / n for n in ("obama1.jpg", "johnsnow_test1.jpg", "alex_lacamoire1.jpg")]
    probes += [TRAIN / "biden" / "biden2.jpg"]
    claims = ["obama", "kit_harington", "alex_lacamoire", "biden"]
    verify_forms = [(p.read_bytes(), {"identity_id": ids[w]}) for p, w in zip(probes, claims, strict=False)]
    identify_forms = [(p.read_bytes(), {"top_k": "5"}) for p in probes]

    rows = []
    for op, forms in (("verify", verify_forms), ("identify", identify_forms)):
        lat, errors, wall = load(args.url, args.key, f"/v1/collections/{args.collection}/{op}",
                                 forms, args.seconds, args.concurrency)
        rows.append((f"service {op} (HTTP, c={args.concurrency})", len(lat), errors,
                     1000 * np.percentile(lat, 50), 1000 * np.percentile(lat, 99), len(lat) / wall))

    if not args.no_peer:
        from identity.pipeline import FaceAnalyzer
        from identity.settings import Settings

        settings = Settings(models_dir=REPO.parent / "shared" / "models")
        fa = FaceAnalyzer(settings)
        gal = np.stack([fa.analyze_bytes(p.read_bytes()).faces.largest().embeddings[0]
                        for _, p in gallery()[:70]])
        lat = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            for data, _ in identify_forms:
                s = time.perf_counter()
                q = fa.analyze_bytes(data).faces.largest().embeddings[0]
                np.argsort(-(gal @ q))[:5]
                lat.append(time.perf_counter() - s)
        lat_a = np.array(lat)
        rows.append(("library in-process identify (peer, c=1)", len(lat_a), 0,
                     1000 * np.percentile(lat_a, 50), 1000 * np.percentile(lat_a, 99),
                     len(lat_a) / (time.perf_counter() - t0)))

    argv = ["***" if prev == "--key" else a for prev, a in zip(["", *sys.argv], sys.argv, strict=False)]
    print(f"# {' '.join(['python', *argv])}")
    print(f"# {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"gallery {len(ids)} identities")
    print("| operation | requests | errors | p50 ms | p99 ms | req/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, err, p50, p99, rps in rows:
        print(f"| {name} | {n} | {err} | {p50:.1f} | {p99:.1f} | {rps:.2f} |")


if __name__ == "__main__":
    main()
