"""The real Milvus standalone server of the ``milvus`` package ("embedded Milvus", 2.3.x) for
tests and ``bench/search.py``: the same server binary a deployment runs, started locally on
loopback ports with its data in one folder. Production points ``IDENTITY_MILVUS_URI`` at its own
Milvus (deploy/compose.milvus.yaml); nothing in the service starts this."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedMilvus:
    """The real Milvus standalone server of the ``milvus`` package (2.3.x), on loopback ports,
    data under ``root``. ``kill()`` is SIGKILL; ``start()`` again resumes from the same data
    (on fresh ports: the killed server's sockets may linger, so read ``uri`` after it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server: Any = None
        self.uri = ""

    def start(self) -> str:
        from milvus import MilvusServer

        server = MilvusServer(wait_for_started=False)
        server.set_base_dir(str(self.root))
        for role in (
            "rootCoord",
            "proxy",
            "queryCoord",
            "queryNode",
            "indexNode",
            "dataCoord",
            "dataNode",
        ):
            server.config.set(f"{role}.ip", "127.0.0.1")
        # The embedded etcd would take the fixed ports 2379/2380 (a second server or one still
        # dying would clash): its own config file puts it on free loopback ports.
        peer, client = _free_port(), _free_port()
        etcd_yaml = self.root / "etcd-embed.yaml"
        etcd_yaml.write_text(
            f"name: default\nlisten-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\n"
            f"listen-client-urls: http://127.0.0.1:{client}\n"
            f"advertise-client-urls: http://127.0.0.1:{client}\n"
        )
        server.config.template_text = server.config.template_text.replace(
            "\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_yaml}\n", 1
        )
        server.start()
        proc = server.server_proc
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                log = (self.root / "logs" / "milvus-stdout.log").read_text()[-3000:]
                raise RuntimeError(f"Milvus did not start (exit {proc.returncode}):\n{log}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{server.webservice_port}/healthz", timeout=5
                ) as r:
                    if b"OK" in r.read():
                        break
            except OSError:
                pass
            time.sleep(0.3)
        self.server = server
        self.uri = f"http://127.0.0.1:{server.listen_port}"
        return self.uri

    def kill(self) -> None:
        assert self.server is not None and self.server.server_proc is not None
        self.server.server_proc.send_signal(signal.SIGKILL)
        self.server.server_proc.wait(30)
        self.server.server_proc = None
        self.server.stop()  # closes its log files

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
