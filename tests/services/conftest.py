"""Fixtures for the service tests: the real app through TestClient on the session's real Postgres
and real models (tests/conftest.py), an admin key, and fresh collections."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from identity.pipeline import FaceAnalyzer
from identity.settings import Settings
from services.app import create_app
from services.auth import KeyStore


@pytest.fixture(scope="session")
def client(settings: Settings, engine: Engine, analyzer: FaceAnalyzer) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, analyzer=analyzer)
    with TestClient(app) as c:
        yield c


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
