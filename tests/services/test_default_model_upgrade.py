"""Upgrading past the default-embedder change keeps every enrolled person findable: revision
0460 pins each existing collection to the model its faces were embedded with, so the new
default (``arcface_w600k_mbf_int8``) only applies to collections without faces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from identity.pipeline import FaceAnalyzer
from identity.settings import Settings
from services.db import make_engine, upgrade
from services.store import IdentityStore


@pytest.fixture()
def old_db(pg_url: str) -> Iterator[Engine]:
    name = "pin_" + uuid.uuid4().hex[:10]
    server = make_engine(pg_url)
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(make_url(pg_url).set(database=name).render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


def _collection(conn, name: str, templates: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    cid = conn.execute(
        text("INSERT INTO collections (name) VALUES (:n) RETURNING id"), {"n": name}
    ).scalar_one()
    for model, count in templates.items():
        for i in range(count):
            person = uuid.uuid4()
            conn.execute(
                text("INSERT INTO identities (id, collection_id, external_id) VALUES (:p, :c, :e)"),
                {"p": person, "c": cid, "e": f"{model}-{i}"},
            )
            conn.execute(
                text(
                    "INSERT INTO face_templates (identity_id, collection_id, model_name, "
                    "model_version, dim, embedding, bbox, landmarks, source_sha256) VALUES "
                    "(:p, :c, :m, 'v', 4, :b, '[]', '[]', :s)"
                ),
                {"p": person, "c": cid, "m": model, "b": b"\0" * 16, "s": f"{i:064x}"},
            )


def test_upgrade_pins_collections_to_the_model_of_their_faces(
    old_db: Engine, settings: Settings, analyzer: FaceAnalyzer
) -> None:
    upgrade(old_db, "0430_template_liveness")  # the schema of the dlib-default releases
    with old_db.begin() as conn:
        _collection(conn, "staff", {"dlib_resnet_v1": 3, "arcface_mobilefacenet_128": 1})
        _collection(conn, "visitors", {"arcface_mobilefacenet_128": 2})
        _collection(conn, "fresh", {})
    upgrade(old_db)
    with old_db.connect() as conn:
        pinned = dict(conn.execute(text("SELECT name, face_model FROM collections")).all())
    assert pinned == {
        "staff": "dlib_resnet_v1",
        "visitors": "arcface_mobilefacenet_128",
        "fresh": None,
    }

    store = IdentityStore(settings, old_db, analyzer)
    assert settings.embedder == "arcface_w600k_mbf_int8"  # the new default
    assert store.model_of("staff") == "dlib_resnet_v1"  # its people still decide
    assert store.model_of("fresh") == "arcface_w600k_mbf_int8"
