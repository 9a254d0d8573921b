"""Biometric data sealed at rest, and KEK rotation beside a running service.

Each test runs the real app on its own database of the session's embedded Postgres, with the
embedded default KEK (a file in a fresh data dir), enrolls real photos through the API and then
reads what an attacker with the disk would: the bytea columns, every file of the data dir and
every file of the Postgres cluster (WAL included). None holds the known embedding's float32 bytes
or a JPEG in the clear.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from data_search import JFIF, files_under, find_bytes, pg_data_dir, windows
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from identity.sealing import Keyring, SealingError, decode_key, is_sealed, kek_id
from services.app import create_app
from services.auth import KeyStore
from services.cli import app as cli
from services.db import make_engine, upgrade
from services.sealed import EMBEDDING
from services.store import IdentityStore

from svc_helpers import PROBES, TRAIN


@pytest.fixture
def own_db(pg_url: str, engine: Engine) -> Iterator[tuple[str, Engine]]:
    name = "seal_" + uuid.uuid4().hex[:8]
    admin = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    admin.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_url.replace("/identity?", f"/{name}?")
    eng = make_engine(url, pool_size=2)
    upgrade(eng)
    yield url, eng
    eng.dispose()
    admin.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.close()


def _app(settings, own_db, analyzer, data_dir: Path):  # type: ignore[no-untyped-def]
    url, eng = own_db
    s = settings.model_copy(update={"data_dir": data_dir, "database_url": url, "kek": None})
    key, _ = KeyStore(eng).create("admin", name="sealing")
    return (
        s,
        TestClient(create_app(s, engine=eng, analyzer=analyzer, warm_models=False)),
        {"X-API-Key": key},
    )


def _enroll_obama(c: TestClient, admin: dict, person: str = "obama") -> tuple[str, str]:
    cid = "c-" + uuid.uuid4().hex[:8]
    assert c.post("/v1/collections", json={"name": cid}, headers=admin).status_code == 201
    iid = c.post(
        f"/v1/collections/{cid}/identities", json={"external_id": person}, headers=admin
    ).json()["id"]
    photos = sorted((TRAIN / person).iterdir())
    r = c.post(
        f"/v1/collections/{cid}/identities/{iid}/faces",
        files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
        headers=admin,
    )
    assert r.status_code == 201 and len(r.json()["accepted"]) == 2, r.text
    return cid, iid


def _identify(c: TestClient, cid: str, admin: dict, probe: Path = PROBES / "obama1.jpg") -> dict:
    r = c.post(
        f"/v1/collections/{cid}/identify",
        files={"file": ("p.jpg", probe.read_bytes(), "image/jpeg")},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    return r.json()["faces"][0]["candidates"][0]


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_templates_crops_and_snapshots_are_sealed_at_rest(
    settings, own_db, analyzer, tmp_path: Path
) -> None:
    _, eng = own_db
    s, client, admin = _app(settings, own_db, analyzer, tmp_path / "data")
    with client as c:
        cid, iid = _enroll_obama(c, admin)
        buf = io.BytesIO()  # gallery faces keep their crops in a bytea column
        with zipfile.ZipFile(buf, "w") as zf:
            for p in sorted((TRAIN / "biden").iterdir()) + sorted(
                (TRAIN / "kit_harington").iterdir()
            ):
                zf.write(p, f"{p.parent.name}/{p.name}")
        r = c.post(
            f"/v1/collections/{cid}/jobs",
            files={"file": ("g.zip", buf.getvalue(), "application/zip")},
            data={"labels": "none"},
            headers=admin,
        )
        assert r.status_code == 202, r.text
        for _ in range(480):
            job = c.get(f"/v1/collections/{cid}/jobs/{r.json()['id']}", headers=admin).json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        assert job["status"] == "done" and job["counts"]["enrolled"] == 4, job
        store: IdentityStore = c.app.state.store
        tid = c.get(f"/v1/collections/{cid}/identities/{iid}", headers=admin).json()["faces"][0][
            "id"
        ]
        jpeg = store.thumbnail_jpeg(cid, tid)  # the dashboard still gets a JPEG
        assert jpeg.startswith(JFIF)
    # the shutdown wrote the index snapshot; the checkpoint puts every row in the table files
    with eng.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("CHECKPOINT"))
        rows = conn.execute(
            text(
                "SELECT embedding, key_id, NULL FROM face_templates UNION ALL "
                "SELECT embedding, key_id, thumbnail_jpeg FROM gallery_faces"
            )
        ).all()
        source = conn.execute(
            text("SELECT embedding, key_id FROM face_templates WHERE source_sha256 = :s"),
            {"s": hashlib.sha256((TRAIN / "obama/obama.jpg").read_bytes()).hexdigest()},
        ).one()

    known = (
        analyzer.analyze_bytes((TRAIN / "obama/obama.jpg").read_bytes())
        .faces.largest()
        .embeddings[0]
    )
    known_bytes = known.astype("<f4").tobytes()
    assert store.sealer.open_row(source[0], source[1], EMBEDDING) == known_bytes  # the real needle
    assert len(rows) == 6 and all(k is not None and is_sealed(bytes(e)) for e, k, _ in rows)
    assert all(t is None or (is_sealed(bytes(t)) and JFIF not in bytes(t)) for _, _, t in rows)
    assert all(known_bytes[:48] not in bytes(e) for e, _, _ in rows)

    needles = {f"embedding [{i}]": w for i, w in enumerate(windows(known_bytes))} | {"JFIF": JFIF}
    data = files_under(s.data_dir)
    snapshots = [p for p in data if p.suffix == ".faiss"]
    thumbs = [p for p in data if p.parent.parent == s.thumbnails_dir]
    source_crops = [p for p in thumbs if p.name.endswith(".crop.sealed")]
    assert snapshots and len(thumbs) == 4 and len(source_crops) == 2  # + a thumbnail each
    assert find_bytes(data, needles) == []
    assert find_bytes(files_under(pg_data_dir(eng)), needles) == []  # tables, TOAST, WAL
    assert all(not p.read_bytes().startswith(b"FACEIDX") for p in snapshots)

    kek = s.keys_dir / "kek"
    assert _mode(kek) == 0o600 and _mode(s.keys_dir) == 0o700
    for p in snapshots + thumbs:
        assert _mode(p) == 0o600 and _mode(p.parent) == 0o700, p
    assert _mode(s.thumbnails_dir) == 0o700 and _mode(s.index_dir) == 0o700


def test_rotate_kek_beside_a_running_service(
    settings, own_db, analyzer, tmp_path: Path, monkeypatch
) -> None:
    url, eng = own_db
    s, client, admin = _app(settings, own_db, analyzer, tmp_path / "data")
    kek_file = s.keys_dir / "kek"
    with client as c:
        cid, iid = _enroll_obama(c, admin)
        old = decode_key(kek_file.read_text(), "old")

        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("IDENTITY_DATA_DIR", str(s.data_dir))
        monkeypatch.delenv("IDENTITY_KEK", raising=False)
        result = CliRunner().invoke(cli, ["keys", "rotate-kek"])
        assert result.exit_code == 0, result.output
        new = decode_key(kek_file.read_text(), "new")
        assert new != old and not (s.keys_dir / "kek.next").exists()
        assert _mode(kek_file) == 0o600

        # the running service keeps answering, and a collection it creates after the rotation
        # gets a data key under the new KEK although it started with the old one
        best = _identify(c, cid, admin)
        assert best["identity_id"] == iid and best["match"]
        cid2, _ = _enroll_obama(c, admin)
        events = c.app.state.store.audit_events(20)
    with eng.connect() as conn:
        keks = conn.execute(text("SELECT DISTINCT kek_id FROM data_keys")).scalars().all()
        wrapped = conn.execute(text("SELECT kek_id, wrapped FROM data_keys LIMIT 1")).one()
    assert keks == [kek_id(new)]
    rotation = [e for e in events if e["action"] == "keys.rotate_kek"]
    assert rotation and rotation[0]["details"]["new_kek_id"] == kek_id(new)
    assert rotation[0]["details"]["old_kek_id"] == kek_id(old)
    with pytest.raises(SealingError):  # the old KEK no longer opens anything
        Keyring(old).unwrap(wrapped[0], bytes(wrapped[1]))

    # a process started after the rotation (nothing cached) builds its index with the new KEK
    with TestClient(create_app(s, engine=eng, analyzer=analyzer, warm_models=False)) as c:
        for collection in (cid, cid2):
            assert _identify(c, collection, admin)["match"]

    # a wrong KEK file is one error line, and nothing changes
    bad = tmp_path / "bad.kek"
    bad.write_text("not a key")
    result = CliRunner().invoke(cli, ["keys", "rotate-kek", "--new-kek-file", str(bad)])
    assert result.exit_code == 2 and "error:" in result.output
    assert decode_key(kek_file.read_text(), "new") == new


def test_rows_from_before_sealing_are_sealed_at_start(
    settings, own_db, analyzer, tmp_path: Path
) -> None:
    """A database from before migration 0320: plaintext embeddings (key_id NULL) and plaintext
    thumbnail files. The next start seals them, VACUUMs the plaintext away, and still matches."""
    from services.app import seal_at_rest
    from services.sealed import THUMBNAIL

    _, eng = own_db
    s, client, admin = _app(settings, own_db, analyzer, tmp_path / "data")
    with client as c:
        # Kit, whom no other test searches for: the plaintext this test writes on purpose reaches
        # the cluster-wide WAL, which the other tests search for their own people's bytes.
        cid, iid = _enroll_obama(c, admin, "kit_harington")
        store: IdentityStore = c.app.state.store
        coll_id = store.collection_id(cid)
        # turn the rows back into what an older version stored
        with eng.begin() as conn:
            rows = conn.execute(
                text("SELECT id, embedding, key_id, thumbnail FROM face_templates")
            ).all()
            for tid, blob, key_id, thumb in rows:
                old = s.thumbnails_dir / str(coll_id) / thumb
                plain = old.with_suffix(".jpg")
                plain.write_bytes(store.sealer.open(old.read_bytes(), THUMBNAIL))
                old.unlink()
                conn.execute(
                    text(
                        "UPDATE face_templates SET embedding = :e, key_id = NULL, thumbnail = :t WHERE id = :i"
                    ),
                    {
                        "e": store.sealer.open_row(blob, key_id, EMBEDDING),
                        "t": plain.name,
                        "i": tid,
                    },
                )
        plain_embeddings = [store.sealer.open_row(b, k, EMBEDDING) for _, b, k, _ in rows]
        with eng.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("CHECKPOINT"))
        needles = {
            f"embedding {i} [{j}]": w
            for i, e in enumerate(plain_embeddings)
            for j, w in enumerate(windows(e))
        }
        pg_files = files_under(pg_data_dir(eng), skip=["pg_wal"])
        assert find_bytes(pg_files, needles), "the simulated old rows are on disk in the clear"

        seal_at_rest(store.settings, eng, store.sealer)

        with eng.connect() as conn:
            after = conn.execute(
                text("SELECT embedding, key_id, thumbnail FROM face_templates")
            ).all()
        assert len(after) == 2 and all(k is not None and is_sealed(bytes(e)) for e, k, _ in after)
        assert all(t.endswith(".sealed") for _, _, t in after)
        data = files_under(s.data_dir)
        assert not [p for p in data if p.suffix == ".jpg"]
        assert find_bytes(data, {"JFIF": JFIF}) == []
        assert find_bytes(files_under(pg_data_dir(eng), skip=["pg_wal"]), needles) == []
        store.indexes.rebuild(coll_id, store.model_name)  # from the sealed rows
        best = _identify(c, cid, admin, PROBES / "johnsnow_test1.jpg")
        assert best["identity_id"] == iid and best["match"]
