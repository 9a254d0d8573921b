"""Crash consistency (issue 3, item 7): a real uvicorn process does random enrolls and erasures,
is killed with SIGKILL while writes are in flight, and is restarted. Afterwards the FAISS index
holds exactly the templates Postgres has, and identify answers as it did before the crash (and
as an exact search over Postgres says it must).
"""

from __future__ import annotations

import csv
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import func, select

from services.indexes import watermark_json
from services.sealed import DataKeys
from services.tables import Collection, FaceTemplate, IdentityRow, IndexChange

from svc_helpers import DATA, PROBES, REPO, TRAIN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _photo_pool() -> list[tuple[str, Path]]:
    pool = [(p.parent.name, p) for p in sorted(TRAIN.glob("*/*")) if p.suffix in {".jpg", ".jpeg"}]
    with open(DATA / "deepface" / "LABELS.csv") as fh:
        pool += [(row["identity"], DATA / "deepface" / row["path"]) for row in csv.DictReader(fh)]
    return pool


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "services.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("server did not become ready:\n" + log.read_text()[-3000:])


def _identify_all(
    client: httpx.Client, cid: str, probes: list[Path]
) -> dict[str, list[tuple[str, float]]]:
    out = {}
    for p in probes:
        r = client.post(
            f"/v1/collections/{cid}/identify",
            files={"file": (p.name, p.read_bytes())},
            data={"top_k": "100"},
        )
        assert r.status_code == 200, r.text
        out[p.name] = [
            (c["identity_id"], c["similarity"]) for c in r.json()["faces"][0]["candidates"]
        ]
    return out


def test_sigkill_mid_writes_then_restart(settings, engine, keys, analyzer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": str(settings.database_url),
        "IDENTITY_DATA_DIR": str(tmp_path / "data"),
        "IDENTITY_MODELS_DIR": str(settings.models_dir),
        "IDENTITY_INDEX_SNAPSHOT_EVERY": "7",
    }
    key, _ = keys.create("admin", name="consistency")
    headers = {"X-API-Key": key}
    rng = random.Random(20261124)
    pool = _photo_pool()
    rng.shuffle(pool)
    late_pool, pool = pool[:6], pool[6:]  # enrolled while the server is being killed

    server = Server(env, tmp_path / "server1.log")
    cid = "crash-" + str(rng.randrange(10**6))
    c = httpx.Client(base_url=server.url, headers=headers, timeout=60)
    assert c.post("/v1/collections", json={"name": cid}).status_code == 201
    identities: dict[str, str] = {}

    def identity_for(person: str) -> str:
        if person not in identities:
            r = c.post(f"/v1/collections/{cid}/identities", json={"external_id": person})
            assert r.status_code == 201, r.text
            identities[person] = r.json()["id"]
        return identities[person]

    # phase A: random enrolls and erasures, sequential, all committed
    enrolled = erased = 0
    for person, path in pool[:28]:
        if identities and rng.random() < 0.2:
            victim = rng.choice(sorted(identities))
            assert (
                c.delete(f"/v1/collections/{cid}/identities/{identities.pop(victim)}").status_code
                == 200
            )
            erased += 1
        r = c.post(
            f"/v1/collections/{cid}/identities/{identity_for(person)}/faces",
            files=[("files", (path.name, path.read_bytes()))],
        )
        assert r.status_code in (201, 422), r.text
        enrolled += r.status_code == 201
    assert enrolled >= 15 and erased >= 2
    probes = [PROBES / "obama1.jpg", PROBES / "johnsnow_test1.jpg", PROBES / "alex_lacamoire1.jpg"]
    probes += [p for _, p in pool[28:32]]
    before = _identify_all(c, cid, probes)
    assert any(cands for cands in before.values())

    # phase B: new identities (committed), then concurrent enrolls into them, SIGKILL mid-flight
    late = {
        f"late-{i}": c.post(
            f"/v1/collections/{cid}/identities", json={"external_id": f"late-{i}"}
        ).json()["id"]
        for i in range(len(late_pool))
    }
    outcomes: list[str] = []

    def post(iid: str, path: Path) -> None:
        try:
            r = httpx.post(
                f"{server.url}/v1/collections/{cid}/identities/{iid}/faces",
                headers=headers,
                files=[("files", (path.name, path.read_bytes()))],
                timeout=60,
            )
            outcomes.append(str(r.status_code))
        except httpx.HTTPError:
            outcomes.append("killed")

    threads = [
        threading.Thread(target=post, args=(iid, p))
        for iid, (_, p) in zip(late.values(), late_pool, strict=False)
    ]
    for t in threads:
        t.start()
    # kill right after the first answer: the others are still in flight however fast the machine
    deadline = time.monotonic() + 30
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    for t in threads:
        t.join(70)
    c.close()
    assert "killed" in outcomes, f"the kill did not land mid-flight: {outcomes}"
    snapshots = list((tmp_path / "data" / "indexes").glob("*/*.faiss"))
    assert snapshots, "periodic snapshots were written before the crash"

    # restart: the snapshot is loaded and the change log replayed
    server2 = Server(env, tmp_path / "server2.log")
    try:
        c2 = httpx.Client(base_url=server2.url, headers=headers, timeout=60)
        status = c2.get(f"/v1/collections/{cid}/index").json()
        with engine.connect() as conn:
            coll_id = conn.execute(select(Collection.id).where(Collection.name == cid)).scalar_one()
            rows = conn.execute(
                select(
                    FaceTemplate.id,
                    FaceTemplate.identity_id,
                    FaceTemplate.dim,
                    FaceTemplate.embedding,
                    FaceTemplate.key_id,
                ).where(FaceTemplate.collection_id == coll_id)
            ).all()
            n_identities = len(
                conn.execute(
                    select(IdentityRow.id).where(IdentityRow.collection_id == coll_id)
                ).all()
            )
        assert status["consistent"] is True, status
        assert status["index_size"] == status["templates"] == len(rows)
        assert n_identities == len(identities) + len(late)

        after = _identify_all(c2, cid, probes)
        late_ids = set(late.values())
        for name, cands in before.items():
            kept = [(i, s) for i, s in after[name] if i not in late_ids]
            assert [i for i, _ in kept] == [i for i, _ in cands], name
            np.testing.assert_allclose([s for _, s in kept], [s for _, s in cands], atol=1e-5)

        # and exactly what an exhaustive search over Postgres gives, late enrollments included
        # the server's KEK: the file its data dir made (not the session's IDENTITY_KEK)
        server_settings = settings.model_copy(update={"data_dir": tmp_path / "data", "kek": None})
        sealer = DataKeys(server_settings, engine)
        gallery = np.stack([sealer.embedding(r[3], r[4], r[2]) for r in rows])
        owners = np.array([str(r[1]) for r in rows])
        for p in probes:
            q = analyzer.analyze_bytes(p.read_bytes()).faces.largest().embeddings[0]
            sims = gallery @ q
            best = {o: float(sims[owners == o].max()) for o in set(owners)}
            expected = sorted(best.items(), key=lambda kv: -kv[1])
            got = after[p.name]
            assert [i for i, _ in got] == [i for i, _ in expected], p.name
            np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
        c2.close()
    finally:
        server2.proc.send_signal(signal.SIGTERM)
        server2.proc.wait(30)
    # a clean stop (SIGTERM: uvicorn shuts down, then re-raises the signal) snapshots every index,
    # so the next start has nothing to replay
    with engine.connect() as conn:
        last_seq = conn.execute(
            select(func.max(IndexChange.seq)).where(IndexChange.collection_id == coll_id)
        ).scalar_one()
    snapshot = tmp_path / "data" / "indexes" / str(coll_id) / f"{status['model']}.faiss"
    assert watermark_json(snapshot, sealer)["seq"] == last_seq
