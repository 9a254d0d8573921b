"""A real ``identity serve`` process on a loopback port, for the tests that must see the server
from outside: hostile inputs (a crash must show as a dead process, not kill pytest), the
schemathesis run and the memory soak (RSS of the process tree)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from identity.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process under it (workers, Postgres if it
        started one)."""
        root = psutil.Process(self.proc.pid)
        total = 0
        for p in [root, *root.children(recursive=True)]:
            with suppress(psutil.Error):  # a child that just exited
                total += p.memory_info().rss
        return total

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@contextmanager
def serve(settings: Settings, **env_settings: str) -> Iterator[Served]:
    """Start ``identity serve`` on the tests' Postgres and weights; ``env_settings`` are extra
    ``IDENTITY_*`` values (name without the prefix). Stopped with SIGTERM at the end."""
    data = Path(tempfile.mkdtemp(prefix="identity-served-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
    env.update(
        PYTHONPATH=str(REPO),
        IDENTITY_DATA_DIR=str(data),
        IDENTITY_MODELS_DIR=str(settings.models_dir),
        IDENTITY_DATABASE_URL=str(settings.database_url),
        **{f"IDENTITY_{k.upper()}": v for k, v in env_settings.items()},
    )
    log = data / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from services.cli import app; app()",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 180
        while not served.alive():
            assert proc.poll() is None, served.log_tail()
            assert time.monotonic() < deadline, served.log_tail()
            time.sleep(0.3)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _set_cookies(r: httpx.Response) -> dict[str, str]:
    out = {}
    for header in r.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        out[name.strip()] = rest.split(";", 1)[0]
    return out


def admin_session(url: str, key: str) -> tuple[httpx.Client, str]:
    """A dashboard session signed in with an admin key, and its CSRF token. The cookies are
    Secure (loopback counts as a secure context for browsers, not for httpx's jar), so they are
    sent as a header."""
    c = httpx.Client(base_url=url, timeout=120, follow_redirects=False)
    token = _set_cookies(c.get("/admin/login"))["identity_admin_login"]
    r = c.post(
        "/admin/login",
        data={"api_key": key, "login_token": token, "next": ""},
        headers={"cookie": f"identity_admin_login={token}"},
    )
    assert r.status_code in (302, 303), r.text[:500]
    c.headers["cookie"] = "; ".join(f"{k}={v}" for k, v in _set_cookies(r).items() if v)
    c.cookies.clear()
    page = c.get("/admin/collections").text
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    return c, m.group(1)
