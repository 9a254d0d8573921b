"""``identity serve --workers 2`` on the Milvus backend (issue 15): both workers search one shared
Milvus collection (no per-worker copy, no snapshot files, no rebuild at restart), and a SIGKILL of
the whole service mid-batch ends, after a restart, with Milvus holding exactly Postgres's templates.
A real process tree on the session's Postgres and Milvus servers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from services.tables import Collection

from svc_helpers import PROBES, REPO, TRAIN

pytestmark = pytest.mark.milvus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    self.url.rsplit(":", 1)[1],
                    "--workers",
                    "2",
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: SIGKILL reaches every worker
            )
        deadline, ready = time.monotonic() + 300, 0
        while time.monotonic() < deadline and ready < 6:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):  # a new connection each time: both workers
                ready = (
                    ready + 1
                    if httpx.get(self.url + "/readyz", timeout=2).status_code == 200
                    else 0
                )
            time.sleep(0.3)
        assert ready == 6, log.read_text()[-3000:]

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def test_two_workers_share_milvus_and_survive_sigkill(
    settings, engine, keys, milvus_server, tmp_path
) -> None:
    prefix = "s" + uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": str(settings.database_url),
        "IDENTITY_DATA_DIR": str(tmp_path / "data"),
        "IDENTITY_MODELS_DIR": str(settings.models_dir),
        "IDENTITY_VECTOR_STORE": "milvus",
        "IDENTITY_MILVUS_URI": milvus_server.uri,
        "IDENTITY_MILVUS_COLLECTION_PREFIX": prefix,
    }
    key, _ = keys.create("admin", name="milvus-serve")
    headers = {"X-API-Key": key}
    people = sorted(p for p in TRAIN.iterdir() if p.is_dir())
    photos = [(p.name, sorted(p.glob("*.jp*g"))) for p in people]
    name = "mserve-" + uuid.uuid4().hex[:6]

    server = Serve(env, tmp_path / "serve1.log")
    try:
        c = httpx.Client(base_url=server.url, headers=headers, timeout=120)
        assert c.post("/v1/collections", json={"name": name}).status_code == 201
        ids = {}
        for person, files in photos:
            ids[person] = c.post(
                f"/v1/collections/{name}/identities", json={"external_id": person}
            ).json()["id"]
            r = c.post(
                f"/v1/collections/{name}/identities/{ids[person]}/faces",
                files=[("files", (files[0].name, files[0].read_bytes()))],
            )
            assert r.status_code == 201, r.text
        probe = (PROBES / "obama1.jpg").read_bytes()
        tops = set()
        for _ in range(6):  # fresh connections: answered by either worker, from the one collection
            r = httpx.post(
                f"{server.url}/v1/collections/{name}/identify",
                headers=headers,
                files={"file": ("p.jpg", probe)},
                timeout=120,
            )
            assert r.status_code == 200, r.text
            tops.add(r.json()["faces"][0]["candidates"][0]["identity_id"])
        assert tops == {ids["obama"]}

        # a batch of enrolls in flight, then SIGKILL of the parent and both workers
        outcomes: list[str] = []

        def post(person: str, path: Path) -> None:
            try:
                r = httpx.post(
                    f"{server.url}/v1/collections/{name}/identities/{ids[person]}/faces",
                    headers=headers,
                    files=[("files", (path.name, path.read_bytes()))],
                    timeout=120,
                )
                outcomes.append(str(r.status_code))
            except httpx.HTTPError:
                outcomes.append("killed")

        # Three rounds of the same photos (repeats answer 409 duplicate_image): enough requests
        # that, killed right after the first answer, most are still in flight on a fast machine.
        batch = [(person, f) for person, files in photos for f in files[1:3]] * 3
        threads = [threading.Thread(target=post, args=job) for job in batch]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while not outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        for t in threads:
            t.join(130)
        assert "killed" in outcomes, f"the kill did not land mid-batch: {outcomes}"
    finally:
        server.stop()

    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_server.uri)
    with engine.connect() as conn:
        cid = conn.execute(select(Collection.id).where(Collection.name == name)).scalar_one()
    with_id = f"{prefix}_{cid}_"  # the session's database holds other tests' collections too
    mine = [n for n in client.list_collections() if n.startswith(with_id)]
    assert len(mine) == 1, mine  # one shared collection for both workers

    server = Serve(env, tmp_path / "serve2.log")
    try:
        c = httpx.Client(base_url=server.url, headers=headers, timeout=120)
        for _ in range(4):  # both workers agree with Postgres
            status = httpx.get(
                f"{server.url}/v1/collections/{name}/index", headers=headers, timeout=60
            ).json()
            assert status["consistent"] is True, status
            assert status["index_factory"] == "milvus:HNSW"
        assert [n for n in client.list_collections() if n.startswith(with_id)] == mine  # no rebuild
        assert not list((tmp_path / "data" / "indexes").glob("**/*.faiss"))  # no per-worker copy
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "serve2.log").read_text()
