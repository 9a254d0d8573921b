"""The store's Python API without HTTP: removing one face, and the shared write transaction
(``IdentityStore.write``) that the gallery indexer and body templates build on. Real Postgres,
real models, real photos."""

from __future__ import annotations

import uuid

import pytest

from services.errors import NotFound
from services.sealed import EMBEDDING
from services.store import IdentityStore, NewTemplate
from services.tables import FaceTemplate

from svc_helpers import TRAIN


@pytest.fixture
def obama(store: IdentityStore) -> tuple[str, str]:
    """A fresh collection with Obama enrolled from his two training photos."""
    name = "s-" + uuid.uuid4().hex[:10]
    store.create_collection(name)
    iid = store.create_identity(name, "obama")["id"]
    images = [
        (p.name, p.read_bytes()) for p in (TRAIN / "obama/obama.jpg", TRAIN / "obama/obama2.jpg")
    ]
    result = store.enroll_images(name, iid, images)
    assert len(result["accepted"]) == 2, result
    return name, iid


def test_remove_face(store: IdentityStore, obama: tuple[str, str]) -> None:
    collection, iid = obama
    faces = store.get_identity(collection, iid)["faces"]
    keep, gone = faces[0]["id"], faces[1]["id"]
    thumb = store.thumbnail_path(collection, gone)
    assert thumb.exists()

    assert store.remove_face(collection, iid, gone, actor=None) == {"removed": gone}

    assert [f["id"] for f in store.get_identity(collection, iid)["faces"]] == [keep]
    assert not thumb.exists()
    status = store.index_status(collection)
    assert status["consistent"] and status["index_size"] == 1
    assert store.audit_events(1)[0]["action"] == "face.remove"
    # a search with the removed face's own photo finds only the face that is left
    probe = (TRAIN / "obama/obama2.jpg").read_bytes()
    top = store.identify(collection, probe)["faces"][0]["candidates"][0]
    assert top["template_id"] == keep

    with pytest.raises(NotFound):
        store.remove_face(collection, iid, gone)
    other = store.create_identity(collection, "someone-else")["id"]
    with pytest.raises(NotFound):  # a template of another identity is not this one's face
        store.remove_face(collection, other, keep)


def test_write_adds_templates_for_many_identities(
    store: IdentityStore, obama: tuple[str, str]
) -> None:
    collection, iid = obama
    with store.read(collection) as (s, c):
        src = s.query(FaceTemplate).filter_by(collection_id=c.id).first()
        assert src is not None
        emb, dim = store.sealer.open_row(src.embedding, src.key_id, EMBEDDING), src.dim
    jpeg = store.thumbnail_jpeg(collection, src.id)

    def record(identity_id: uuid.UUID, sha: str) -> NewTemplate:
        return NewTemplate(
            identity_id=identity_id,
            model_name=store.model_name,
            model_version=store.model_version,
            dim=dim,
            embedding=emb,
            quality=0.5,
            quality_reasons=[],
            det_score=0.9,
            bbox=[0.0, 0.0, 10.0, 10.0],
            landmarks=[[1.0, 1.0]] * 5,
            source_sha256=sha,
            thumbnail_jpeg=jpeg,
        )

    with store.write(collection) as w:
        ids, created = w.ensure_identities({"a", "b", "obama"}, {"source": "test"})
        assert created == 2 and str(ids["obama"]) == iid
        rows = w.add_templates([record(ids["a"], "1" * 64), record(ids["b"], "2" * 64)])
        assert all(r.id is not None and r.thumbnail for r in rows)
    status = store.index_status(collection)
    assert status["consistent"] and status["index_size"] == 4

    # a failed transaction leaves no rows, no index entries and no thumbnail files behind
    written: list[str] = []
    with pytest.raises(RuntimeError), store.write(collection) as w:
        w.add_templates([record(ids["a"], "3" * 64)])
        written = list(w.written_thumbnails)
        raise RuntimeError("abort")
    assert written and not any(
        (store.settings.thumbnails_dir / str(w.collection_id) / n).exists() for n in written
    )
    status = store.index_status(collection)
    assert status["consistent"] and status["templates"] == 4
