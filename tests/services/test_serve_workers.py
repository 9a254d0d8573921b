"""``identity serve [--workers 2]`` on the embedded Postgres: the parent starts the cluster once,
every worker serves from it, and SIGTERM stops workers and cluster cleanly. A real process tree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

from svc_helpers import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_embedded_postgres(settings, workers: int) -> None:
    # Not under pytest's tmp dir, which is 0700 and would lock out the postgres user (conftest).
    data = Path(tempfile.mkdtemp(prefix="identity-workers-"))
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "IDENTITY_DATABASE_URL")
    }
    env.update(IDENTITY_DATA_DIR=str(data), IDENTITY_MODELS_DIR=str(settings.models_dir))
    log = data / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(REPO / ".venv/bin/identity"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 240
        ready = 0
        while time.monotonic() < deadline and ready < 10:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                # a new connection each time, so the kernel spreads them over both workers
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                ready = ready + 1 if r.status_code == 200 else 0
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready == 10, log.read_text()[-3000:]
        assert r.json()["checks"] == {"started": True, "database": True}
        spawned = [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]
        # one worker runs in the parent itself; more are spawned interpreters
        assert len(spawned) == (0 if workers == 1 else workers), [
            c.cmdline() for c in parent.children()
        ]
        # only the parent holds the cluster: no worker started or joined it
        holders = json.loads((data / "pg" / ".handle_pids.json").read_text())
        assert holders == [proc.pid], holders
        assert (data / "pg" / "postmaster.pid").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log.read_text()
    try:
        # One worker: uvicorn re-raises SIGTERM after its graceful shutdown and exit_on_sigterm
        # turns it into SystemExit(128 + 15); the supervisor of several returns normally.
        assert proc.returncode == (143 if workers == 1 else 0), text[-3000:]
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in spawned)
        assert not (data / "pg" / "postmaster.pid").exists(), "the cluster was stopped"
        assert "Traceback" not in text, text[-3000:]
        # start-up says what a person needs, not initdb's transcript or pg_ctl command lines
        assert "embedded Postgres running in" in text
        for noise in ("selecting default", "Running commandline", "setup plugin"):
            assert noise not in text, noise
    finally:
        shutil.rmtree(data, ignore_errors=True)
