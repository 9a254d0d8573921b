"""The Milvus vector store (issue 15) on ONE real Milvus server per session (tests/conftest.py)
and the session's real Postgres: the same answers as FAISS, writes through the change log,
several workers on one shared collection, erasure with compaction, rebuilds, and a Milvus process
killed with SIGKILL in the middle of a write."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from sqlalchemy import select

from identity.errors import IdentityError
from services.change_log import embedding_to_bytes
from services.store import IdentityStore, NewTemplate
from services.tables import FaceTemplate

from svc_helpers import PROBES, REPO, TRAIN

pytestmark = pytest.mark.milvus


@pytest.fixture
def msettings(settings, milvus_server):  # type: ignore[no-untyped-def]
    """The session's settings on the Milvus backend, with collection names of this test only."""
    return settings.model_copy(
        update={
            "vector_store": "milvus",
            "milvus_uri": milvus_server.uri,
            "milvus_collection_prefix": "t" + uuid.uuid4().hex[:8],
        }
    )


def _client(uri: str):  # type: ignore[no-untyped-def]
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri)


def _add_random(store: IdentityStore, collection: str, n: int, seed: int) -> list[int]:
    """n templates (random unit vectors, 10 identities) through the store's own write path."""
    rng = np.random.default_rng(seed)
    with store.write(collection) as w:
        owners, _ = w.ensure_identities({f"p{i}" for i in range(10)}, {})
        vecs = rng.normal(size=(n, 128)).astype(np.float32)
        rows = w.add_templates(
            [
                NewTemplate(
                    identity_id=owners[f"p{i % 10}"],
                    model_name=store.model_name,
                    model_version=store.model_version,
                    dim=128,
                    embedding=embedding_to_bytes(v / np.linalg.norm(v)),
                    quality=None,
                    quality_reasons=[],
                    det_score=None,
                    bbox=[0.0, 0.0, 1.0, 1.0],
                    landmarks=[],
                    source_sha256=uuid.uuid4().hex,
                )
                for i, v in enumerate(vecs)
            ]
        )
    return [t.id for t in rows]


def _vector(store: IdentityStore, template_id: int) -> np.ndarray:
    """A stored template's vector (sealed at rest: opened with the store's data keys)."""
    with store.engine.connect() as conn:
        blob, key_id, dim = conn.execute(
            select(FaceTemplate.embedding, FaceTemplate.key_id, FaceTemplate.dim).where(
                FaceTemplate.id == template_id
            )
        ).one()
    return store.sealer.embedding(blob, key_id, dim)[None, :]


def test_identify_as_faiss_and_erasure_compacts(msettings, store, engine, analyzer) -> None:
    m = IdentityStore(msettings, engine, analyzer)
    name = "mv-" + uuid.uuid4().hex[:8]
    m.create_collection(name)
    people = sorted(p for p in TRAIN.iterdir() if p.is_dir())[:3]
    ids = {}
    for person in people:
        ids[person.name] = m.create_identity(name, person.name)["id"]
        photos = sorted(person.glob("*.jp*g"))[:2]
        m.enroll_images(name, ids[person.name], [(p.name, p.read_bytes()) for p in photos])
    status = m.index_status(name)
    assert status["consistent"] and status["index_size"] >= 4, status
    assert status["index_factory"] == "milvus:HNSW"

    probes = [PROBES / "obama1.jpg", PROBES / "alex_lacamoire1.jpg", PROBES / "johnsnow_test1.jpg"]

    def answers(s: IdentityStore) -> list[list[tuple[str, float]]]:
        out = []
        for p in probes:
            faces = s.identify(name, p.read_bytes(), top_k=5)["faces"]
            out.append([(c["identity_id"], c["similarity"]) for c in faces[0]["candidates"]])
        return out

    # The FAISS store (the session's default) reads the same Postgres: same ranking, same scores.
    got, want = answers(m), answers(store)
    assert [[i for i, _ in r] for r in got] == [[i for i, _ in r] for r in want]
    np.testing.assert_allclose(
        [s for r in got for _, s in r], [s for r in want for _, s in r], atol=1e-4
    )

    victim = ids[people[0].name]
    with engine.connect() as conn:
        erased = (
            conn.execute(
                select(FaceTemplate.id).where(FaceTemplate.identity_id == uuid.UUID(victim))
            )
            .scalars()
            .all()
        )
    m.erase_identity(name, victim)
    status = m.index_status(name)
    assert status["consistent"] and status["index_size"] == status["templates"], status
    client = _client(msettings.milvus_uri)
    alias = m.indexes.alias(m.collection_id(name), m.model_name)
    assert client.query(alias, filter=f"id in {list(erased)}", consistency_level="Strong") == []
    job = m.indexes.last_compaction
    assert job is not None, "the erasure started a compaction"
    deadline = time.monotonic() + 120
    while client.get_compaction_state(job) != "Completed" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get_compaction_state(job) == "Completed"
    assert all(victim not in [i for i, _ in r] for r in answers(m))
    assert answers(m) == answers(store)


def test_workers_share_one_collection_and_replay_is_idempotent(msettings, engine, analyzer) -> None:
    a = IdentityStore(msettings, engine, analyzer)  # two service workers on one Milvus
    b = IdentityStore(msettings, engine, analyzer)
    name = "mv-" + uuid.uuid4().hex[:8]
    a.create_collection(name)
    cid = a.collection_id(name)
    ids = _add_random(a, name, 300, seed=1)
    # b never built anything: its first search sees a's committed writes (read-your-writes)
    sims, tids = b.indexes.search(cid, b.model_name, _vector(b, ids[5]), 3)
    assert tids[0, 0] == ids[5] and sims[0, 0] == pytest.approx(1.0, abs=1e-4)
    client = _client(msettings.milvus_uri)
    mine = [
        c for c in client.list_collections() if c.startswith(msettings.milvus_collection_prefix)
    ]
    assert len(mine) == 1, mine  # one shared copy, not one per worker

    # concurrent writers and erasers through both workers; appliers take turns per collection
    def work(s: IdentityStore, seed: int) -> None:
        new = _add_random(s, name, 40, seed=seed)
        s.remove_face(name, _owner(engine, new[0]), new[0])

    threads = [threading.Thread(target=work, args=(s, 10 + i)) for i, s in enumerate([a, b, a, b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert a.index_status(name)["consistent"] and b.index_status(name)["consistent"]

    # a crash after the upserts but before the watermark moved: the next process replays the
    # whole log again, and the upserts by primary key leave exactly one row per template
    client.alter_collection_properties(
        a.indexes.alias(cid, a.model_name), properties={"identity.seq": "0"}
    )
    c = IdentityStore(msettings, engine, analyzer)
    status = c.index_status(name)
    assert status["consistent"], status
    assert c.indexes.count(cid, c.model_name) == status["templates"] == 300 + 4 * 39


def _owner(engine, template_id: int) -> str:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return str(
            conn.execute(
                select(FaceTemplate.identity_id).where(FaceTemplate.id == template_id)
            ).scalar_one()
        )


def test_reindex_and_changed_index_settings_rebuild(msettings, settings, engine, analyzer) -> None:
    m = IdentityStore(msettings, engine, analyzer)
    name = "mv-" + uuid.uuid4().hex[:8]
    m.create_collection(name)
    cid = m.collection_id(name)
    ids = _add_random(m, name, 2000, seed=2)
    client = _client(msettings.milvus_uri)
    alias = m.indexes.alias(cid, m.model_name)
    before = client.describe_alias(alias)["collection_name"]
    client.delete(alias, ids=ids[:10])  # damage Milvus behind the service's back
    assert not m.index_status(name)["consistent"]

    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": str(settings.database_url),
        "IDENTITY_DATA_DIR": str(settings.data_dir),
        "IDENTITY_MODELS_DIR": str(settings.models_dir),
        "IDENTITY_VECTOR_STORE": "milvus",
        "IDENTITY_MILVUS_URI": msettings.milvus_uri,
        "IDENTITY_MILVUS_COLLECTION_PREFIX": msettings.milvus_collection_prefix,
        # the session's key-encryption key: the templates are sealed with it
        "IDENTITY_KEK": settings.kek.get_secret_value() if settings.kek else "",
    }
    out = subprocess.run(
        # one collection: others in the shared test database were sealed by other servers' KEKs
        [sys.executable, "-m", "services.cli", "db", "reindex", "--collection", name],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'"{name}/{m.model_name}": 2000' in out.stdout
    assert m.index_status(name)["consistent"]
    after = client.describe_alias(alias)["collection_name"]
    assert after != before and not client.has_collection(before)  # swapped, old copy dropped

    # another index type in the settings: the first use rebuilds the collection with it
    ivf = IdentityStore(
        msettings.model_copy(
            update={"milvus_index_type": "IVF_FLAT", "milvus_index_params": {"nlist": 16}}
        ),
        engine,
        analyzer,
    )
    _, tids = ivf.indexes.search(cid, ivf.model_name, _vector(ivf, ids[100]), 1)
    assert tids[0, 0] == ids[100]
    assert ivf.index_status(name)["index_factory"] == "milvus:IVF_FLAT"
    assert client.describe_index(alias, "vec")["index_type"] == "IVF_FLAT"
    ivf.delete_collection(name)


def test_bad_index_type_fails_at_start(msettings) -> None:
    from services.vector_store import check_vector_store_settings

    with pytest.raises(IdentityError, match="IDENTITY_MILVUS_INDEX_TYPE"):
        check_vector_store_settings(msettings.model_copy(update={"milvus_index_type": "IVF9"}))


def test_milvus_killed_mid_write_then_restart(
    msettings, store, engine, analyzer, milvus_server
) -> None:
    m = IdentityStore(msettings, engine, analyzer)
    name = "mv-" + uuid.uuid4().hex[:8]
    m.create_collection(name)
    cid = m.collection_id(name)
    _add_random(m, name, 10, seed=3)  # the Milvus collection exists; what follows are upserts
    # 30k templates committed by a FAISS-backed process; the Milvus side catches up below
    total = 10 + len(_add_random(store, name, 30_000, seed=4))
    errors: list[BaseException] = []

    def catch_up() -> None:
        try:
            m.indexes.catch_up(cid, m.model_name)
        except BaseException as exc:
            errors.append(exc)

    client = _client(msettings.milvus_uri)
    alias = m.indexes.alias(cid, m.model_name)
    worker = threading.Thread(target=catch_up)
    worker.start()
    while worker.is_alive():  # kill once part of the batch has landed
        n = client.query(alias, filter="", output_fields=["count(*)"])[0]["count(*)"]
        if n > 10:
            break
        time.sleep(0.05)
    milvus_server.kill()
    worker.join(180)
    assert errors, "the kill did not land mid-write"

    uri = milvus_server.start()  # the same data, as after a crash
    restarted = IdentityStore(msettings.model_copy(update={"milvus_uri": uri}), engine, analyzer)
    status = restarted.index_status(name)
    assert status["consistent"] and status["index_size"] == total, status
    restarted.delete_collection(name)  # 30k rows: keep the session's database small for others
    assert not [n for n in _client(uri).list_collections() if n.startswith(alias)]


def test_a_collection_the_server_has_not_loaded_is_loaded_on_read(
    msettings, engine, analyzer
) -> None:
    """After a restart Milvus reloads collections in the background and answers "collection not
    loaded" meanwhile; a released collection is in that state for good, so reads must load it."""
    m = IdentityStore(msettings, engine, analyzer)
    name = "mv-" + uuid.uuid4().hex[:8]
    m.create_collection(name)
    cid, model = m.collection_id(name), m.model_name
    ids = _add_random(m, name, 20, seed=6)
    client = _client(msettings.milvus_uri)
    physical = client.describe_collection(m.indexes.alias(cid, model))["collection_name"]
    client.release_collection(physical)
    assert str(client.get_load_state(physical)["state"]) == "NotLoad"

    status = m.index_status(name)  # a query for every id
    assert status["consistent"] and status["index_size"] == 20, status
    assert str(client.get_load_state(physical)["state"]) == "Loaded"
    assert m.indexes.search(cid, model, _vector(m, ids[7]), 1)[1][0, 0] == ids[7]


def test_strong_until_writes_are_older_than_the_staleness_bound(
    msettings, engine, analyzer
) -> None:
    m = IdentityStore(msettings, engine, analyzer)
    name = "mv-" + uuid.uuid4().hex[:8]
    m.create_collection(name)
    cid, model = m.collection_id(name), m.model_name
    ids = _add_random(m, name, 50, seed=5)
    assert m.indexes._consistency(cid, model) == "Strong"
    time.sleep(msettings.milvus_graceful_time_s + 1.5)  # the embedded server's gracefulTime: 5 s
    assert m.indexes._consistency(cid, model) == "Bounded"  # no wait for the next time tick
    for i in (0, 25, 49):  # and it still sees every row
        assert m.indexes.search(cid, model, _vector(m, ids[i]), 1)[1][0, 0] == ids[i]
    new = _add_random(m, name, 1, seed=6)  # a write: Strong again, and visible at once
    assert m.indexes._consistency(cid, model) == "Strong"
    assert m.indexes.search(cid, model, _vector(m, new[0]), 1)[1][0, 0] == new[0]
