"""Changing IDENTITY_INDEX_FACTORY takes effect on restart: a snapshot written with another
FAISS factory string is not loaded but rebuilt from Postgres, and the index reports its real
type. Apps restarted on the session's Postgres with their own data dir (snapshots)."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi.testclient import TestClient

from identity.index import FaceIndex
from services.app import create_app
from services.sealed import SNAPSHOT, DataKeys

from svc_helpers import PROBES, TRAIN

REBUILD = "rebuilding from Postgres"


def _restart(settings, engine, analyzer, data_dir: Path, factory: str) -> TestClient:
    changed = settings.model_copy(update={"data_dir": data_dir, "index_factory": factory})
    return TestClient(create_app(changed, engine=engine, analyzer=analyzer, warm_models=False))


def _unseal(settings, engine):  # type: ignore[no-untyped-def]
    return DataKeys(settings, engine).opener(SNAPSHOT)


def test_snapshot_of_another_factory_is_rebuilt(
    client: TestClient,
    admin: dict,
    collection: str,
    settings,
    engine,
    analyzer,
    tmp_path: Path,
    caplog,
) -> None:
    cid = collection
    iid = client.post(
        f"/v1/collections/{cid}/identities", json={"external_id": "obama"}, headers=admin
    ).json()["id"]
    r = client.post(
        f"/v1/collections/{cid}/identities/{iid}/faces",
        files=[
            ("files", (p.name, p.read_bytes(), "image/jpeg"))
            for p in (TRAIN / "obama/obama.jpg", TRAIN / "obama/obama2.jpg")
        ],
        headers=admin,
    )
    assert r.status_code == 201, r.text
    collection_id = client.app.state.store.collection_id(cid)
    model = client.app.state.store.model_name
    snapshot = tmp_path / "indexes" / str(collection_id) / f"{model}.faiss"
    probe = {"file": ("p.jpg", (PROBES / "obama1.jpg").read_bytes(), "image/jpeg")}

    with _restart(settings, engine, analyzer, tmp_path, "Flat") as c:
        status = c.get(f"/v1/collections/{cid}/index", headers=admin).json()
        assert (
            status["index_factory"] == "Flat" and status["consistent"] and status["index_size"] == 2
        )
    assert (
        FaceIndex.load(snapshot, unseal=_unseal(settings, engine)).factory == "Flat"
    )  # written on shutdown

    caplog.set_level(logging.INFO, logger="services.indexes")
    with _restart(settings, engine, analyzer, tmp_path, "HNSW32") as c:
        status = c.get(f"/v1/collections/{cid}/index", headers=admin).json()
        assert status["index_factory"] == "HNSW32", status
        assert status["consistent"] and status["index_size"] == 2, status
        described = {(d["collection"], d["model"]): d for d in c.app.state.store.indexes.describe()}
        assert described[(cid, model)]["factory"] == "HNSW32"
        r = c.post(f"/v1/collections/{cid}/identify", files=probe, headers=admin)
        assert r.status_code == 200, r.text
        best = r.json()["faces"][0]["candidates"][0]
        assert best["identity_id"] == iid and best["match"] is True
    mismatch = [m for m in caplog.messages if REBUILD in m and str(snapshot) in m]
    assert mismatch and "'Flat'" in mismatch[0] and "'HNSW32'" in mismatch[0], caplog.messages
    assert FaceIndex.load(snapshot, unseal=_unseal(settings, engine)).factory == "HNSW32"

    # the same factory again: the snapshot is used as it is
    caplog.clear()
    with _restart(settings, engine, analyzer, tmp_path, "HNSW32") as c:
        status = c.get(f"/v1/collections/{cid}/index", headers=admin).json()
        assert status["index_factory"] == "HNSW32" and status["consistent"], status
    assert not [m for m in caplog.messages if REBUILD in m and str(snapshot) in m], caplog.messages
    assert any(f"index {cid}/{model} loaded from snapshot" in m for m in caplog.messages), (
        caplog.messages
    )


def test_search_knobs_from_settings_reach_every_index(
    client: TestClient, admin: dict, collection: str, settings, engine, analyzer, tmp_path: Path
) -> None:
    cid = collection
    iid = client.post(
        f"/v1/collections/{cid}/identities", json={"external_id": "biden"}, headers=admin
    ).json()["id"]
    r = client.post(
        f"/v1/collections/{cid}/identities/{iid}/faces",
        files=[("files", ("b.jpg", (TRAIN / "biden/biden.jpg").read_bytes(), "image/jpeg"))],
        headers=admin,
    )
    assert r.status_code == 201, r.text

    def knobs(c: TestClient) -> dict:
        described = {d["collection"]: d for d in c.app.state.store.indexes.describe()}
        return described[cid]["params"]

    base = {"data_dir": tmp_path, "index_factory": "HNSW32"}
    with TestClient(
        create_app(
            settings.model_copy(update=base), engine=engine, analyzer=analyzer, warm_models=False
        )
    ) as c:
        assert c.get(f"/v1/collections/{cid}/index", headers=admin).json()["consistent"]
        assert knobs(c) == {"efSearch": 256}  # identity.index's default, not FAISS's 16
    # a changed knob applies to the snapshot written on the last shutdown, too
    tuned = {**base, "index_params": {"efSearch": 200}}
    with TestClient(
        create_app(
            settings.model_copy(update=tuned), engine=engine, analyzer=analyzer, warm_models=False
        )
    ) as c:
        assert c.get(f"/v1/collections/{cid}/index", headers=admin).json()["consistent"]
        assert knobs(c) == {"efSearch": 200}


def test_bad_index_settings_fail_at_start_not_in_a_request(
    settings, engine, analyzer, tmp_path
) -> None:
    import pytest

    from identity.errors import InvalidInput

    for bad in (
        {"index_factory": "IVF4096,NotAThing"},
        {"index_factory": "Flat", "index_params": {"nprobe": 32}},
    ):
        with pytest.raises(InvalidInput):
            create_app(
                settings.model_copy(update={"data_dir": tmp_path, **bad}),
                engine=engine,
                analyzer=analyzer,
                warm_models=False,
            )
