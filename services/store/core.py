"""The store's core: construction, sessions, the ``read``/``write`` transactions, locks, audit.

``StoreCore`` holds what every resource module builds on (settings, engine, sessions, analyzer,
sealer, vector store); ``CollectionWrite`` is the one locked write transaction other modules (the
gallery indexer, body templates) share with the store.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sqlalchemy import Engine, Table, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from identity.faces import Faces
from identity.image import sha256_hex  # noqa: F401  (re-exported: the store's dedupe key)
from identity.pipeline import FaceAnalyzer
from identity.sealing import write_private
from identity.settings import Settings
from services import audit as audit_log
from services.db import make_sessionmaker, vacuum
from services.errors import NotFound
from services.liveness import stored_verdict
from services.sealed import EMBEDDING, THUMBNAIL, DataKeys
from services.tables import Collection, FaceTemplate, IdentityRow, IndexChange
from services.vector_store import VectorStore, make_vector_store

log = logging.getLogger(__name__)

# \Z, not $: "$" also matches before a trailing newline, so "staff\n" would pass as a name.
COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
MAX_TOP_K = 100
# An advisory-lock namespace so our per-collection locks never collide with anyone else's.
_LOCK_BASE = 727 << 40


def _round(values: Sequence[float] | np.ndarray, nd: int = 2) -> list[float]:
    return [round(float(v), nd) for v in values]


def face_summary(faces: Faces, i: int) -> dict[str, Any]:
    return {
        "bbox": _round(faces.boxes[i]),
        "det_score": round(float(faces.scores[i]), 4),
        "quality": None if faces.quality is None else round(float(faces.quality[i]), 4),
        "quality_reasons": list(faces.quality_reasons[i]) if faces.quality_reasons else [],
    }


@dataclass(frozen=True)
class NewTemplate:
    """One analysed face to store as a template of ``identity_id`` (``CollectionWrite.add_templates``).

    ``embedding`` is already ``embedding_to_bytes`` (plaintext: ``add_templates`` seals it);
    ``thumbnail_jpeg`` becomes a sealed file under ``thumbnails_dir`` when the settings keep
    thumbnails.
    """

    identity_id: uuid.UUID
    model_name: str
    model_version: str
    dim: int
    embedding: bytes
    quality: float | None
    quality_reasons: list[str]
    det_score: float | None
    bbox: list[float]
    landmarks: list[list[float]]
    source_sha256: str
    thumbnail_jpeg: bytes | None = None
    # The enrollment liveness verdict (services.liveness.verdicts), when a check ran.
    liveness: dict[str, Any] | None = None


class CollectionWrite:
    """One write transaction on one collection, made by ``IdentityStore.write``.

    It holds the collection's advisory lock until commit. Templates added here get their
    ``index_changes`` 'add' rows and thumbnail files; templates removed here their 'remove'
    rows. After the commit the store deletes the removed templates' thumbnails and brings the
    FAISS index of every touched model up to date; if the transaction fails, the thumbnail files
    it wrote are deleted instead, so a failed write leaves no files behind. A write that removed
    templates is an erasure: the store also rewrites the touched index snapshots and VACUUMs the
    biometric tables (``settings.erase_vacuum``), so no file keeps the removed bytes.
    """

    def __init__(
        self, store: StoreCore, session: Session, collection: Collection, actor: int | None
    ) -> None:
        self.store = store
        self.session = session
        self.collection = collection
        self.collection_id = collection.id
        self.actor = actor
        self.models: set[str] = set()  # models whose index must catch up after the commit
        self.written_thumbnails: list[str] = []
        self.dropped_thumbnails: list[str] = []
        self.erased = False  # templates (or rows cascading from them) deleted here

    def identity(self, identity_id: uuid.UUID | str) -> IdentityRow:
        """The identity in this collection, or NotFound."""
        return StoreCore._identity(self.session, self.collection, identity_id)

    def audit(
        self, action: str, outcome: str, identity_id: uuid.UUID | None = None, **details: Any
    ) -> None:
        StoreCore._audit(
            self.session,
            self.actor,
            action,
            outcome,
            collection=self.collection.name,
            identity_id=identity_id,
            **details,
        )

    def ensure_identities(
        self, external_ids: set[str], metadata: dict[str, Any]
    ) -> tuple[dict[str, uuid.UUID], int]:
        """external_id -> identity id, creating the missing ones (display name = external id).

        Returns (map, how many were created). Safe against a concurrent creator: the insert
        does nothing on the (collection, external_id) unique constraint.
        """
        if not external_ids:
            return {}, 0
        table = cast(Table, IdentityRow.__table__)
        created = 0
        for ext in sorted(external_ids):
            result = self.session.execute(
                pg_insert(table)
                .values(
                    id=uuid.uuid4(),
                    collection_id=self.collection_id,
                    external_id=ext,
                    display_name=ext,
                    metadata=metadata,
                )
                .on_conflict_do_nothing(constraint="uq_identities_collection_external")
                .returning(table.c.id)
            )
            created += len(result.all())  # a row back only when this insert created it
        rows = self.session.execute(
            select(IdentityRow.external_id, IdentityRow.id).where(
                IdentityRow.collection_id == self.collection_id,
                IdentityRow.external_id.in_(external_ids),
            )
        ).all()
        return dict(rows), created

    def add_templates(self, records: Sequence[NewTemplate]) -> list[FaceTemplate]:
        """Insert many templates (any identities of this collection) and log them for the index.

        Flushes, so the returned rows have their ids.
        """
        rows = []
        sealer = self.store.sealer
        for r in records:
            key_id, sealed = sealer.seal(self.collection_id, r.embedding, EMBEDDING)
            t = FaceTemplate(
                identity_id=r.identity_id,
                collection_id=self.collection_id,
                model_name=r.model_name,
                model_version=r.model_version,
                dim=r.dim,
                embedding=sealed,
                key_id=key_id,
                quality=r.quality,
                quality_reasons=r.quality_reasons,
                det_score=r.det_score,
                bbox=r.bbox,
                landmarks=r.landmarks,
                source_sha256=r.source_sha256,
                thumbnail=self._save_thumbnail(r.thumbnail_jpeg),
            )
            if r.liveness is not None:
                t.liveness, t.liveness_verdict = stored_verdict(r.liveness)
            self.session.add(t)
            rows.append(t)
        self.session.flush()
        for t in rows:
            self.session.add(
                IndexChange(
                    collection_id=self.collection_id,
                    model_name=t.model_name,
                    template_id=t.id,
                    op="add",
                )
            )
            self.models.add(t.model_name)
        return rows

    def template_removed(self, template_id: int, model_name: str, thumbnail: str | None) -> None:
        """Log that a template goes away in this transaction (the caller deletes the row, or a
        cascade does): its index entry is removed and its thumbnail deleted after the commit."""
        self.session.add(
            IndexChange(
                collection_id=self.collection_id,
                model_name=model_name,
                template_id=template_id,
                op="remove",
            )
        )
        self.models.add(model_name)
        self.erased = True
        if thumbnail:
            self.dropped_thumbnails.append(thumbnail)

    def _save_thumbnail(self, jpeg: bytes | None) -> str | None:
        if not jpeg or not self.store.settings.store_thumbnails:
            return None
        name = f"{uuid.uuid4().hex}.sealed"
        sealed = self.store.sealer.seal(self.collection_id, jpeg, THUMBNAIL)[1]
        # recorded before the write, so a half-written file is deleted too if anything fails
        self.written_thumbnails.append(name)
        write_private(self.store._thumb_path(self.collection_id, name), sealed)
        return name


class StoreCore:
    """What every part of ``IdentityStore`` builds on: settings, engine, sessions, analyzer,
    sealer and vector store; the transactions, locks and audit hook."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        analyzer: FaceAnalyzer | None = None,
        indexes: VectorStore | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self.analyzer = analyzer or FaceAnalyzer(settings)
        self.sealer = indexes.sealer if indexes is not None else DataKeys(settings, engine)
        self.indexes = indexes or make_vector_store(settings, engine, self.sealer)

    # model ----------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.analyzer.embedder_name

    @property
    def model_version(self) -> str:
        from identity.registry import get_manifest

        return get_manifest(self.model_name).version

    @property
    def detector_name(self) -> str:
        return self.analyzer.detector_name

    # helpers --------------------------------------------------------------------------------
    @staticmethod
    def _audit(
        s: Session,
        actor: int | None,
        action: str,
        outcome: str,
        collection: str | None = None,
        identity_id: uuid.UUID | None = None,
        **details: Any,
    ) -> None:
        audit_log.record(s, actor, action, outcome, collection, identity_id, **details)

    def audit(self, actor: int | None, action: str, outcome: str, **kw: Any) -> None:
        with self.sessions.begin() as s:
            self._audit(s, actor, action, outcome, **kw)

    @staticmethod
    def _lock_collection(s: Session, collection_id: int) -> None:
        # Held until commit: change-log seq order == commit order within a collection.
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_BASE + collection_id})

    @staticmethod
    def _collection(s: Session, name: str) -> Collection:
        if not isinstance(name, str) or not COLLECTION_NAME.match(name):
            raise NotFound(f"collection '{name}' not found", collection=name)
        row = s.execute(select(Collection).where(Collection.name == name)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"collection '{name}' not found", collection=name)
        return row

    @staticmethod
    def _identity(s: Session, collection: Collection, identity_id: uuid.UUID | str) -> IdentityRow:
        """An identity of the collection by its UUID or, failing that, by its ``external_id``
        (the caller's own key, unique per collection), so clients need not keep our UUIDs."""
        row: IdentityRow | None = None
        try:
            iid = identity_id if isinstance(identity_id, uuid.UUID) else uuid.UUID(str(identity_id))
        except ValueError:
            iid = None
        if iid is not None:
            row = s.get(IdentityRow, iid)
            if row is not None and row.collection_id != collection.id:
                row = None
        if row is None and not isinstance(identity_id, uuid.UUID):
            row = s.execute(
                select(IdentityRow).where(
                    IdentityRow.collection_id == collection.id,
                    IdentityRow.external_id == str(identity_id),
                )
            ).scalar_one_or_none()
        if row is None:
            raise NotFound(
                f"identity '{identity_id}' not found in '{collection.name}'",
                identity_id=str(identity_id),
            )
        return row

    def collection_id(self, name: str) -> int:
        with self.sessions() as s:
            return self._collection(s, name).id

    def require_identity(self, collection: str, identity_id: uuid.UUID | str) -> uuid.UUID:
        """The identity's id; NotFound for an unknown collection or identity (fail fast)."""
        with self.sessions() as s:
            return self._identity(s, self._collection(s, collection), identity_id).id

    @contextmanager
    def read(self, collection: str) -> Iterator[tuple[Session, Collection]]:
        """A session and the collection's row (NotFound if unknown), for read-only queries."""
        with self.sessions() as s:
            yield s, self._collection(s, collection)

    @contextmanager
    def write(
        self, collection: str, actor: int | None = None, lock: bool = True
    ) -> Iterator[CollectionWrite]:
        """One transaction on a collection (see ``CollectionWrite``); commits when the block ends.

        ``lock`` takes the collection's advisory lock, which every write that logs index changes
        needs: held until commit, it makes change-log order equal commit order.
        """
        w: CollectionWrite | None = None
        try:
            with self.sessions.begin() as s:
                c = self._collection(s, collection)
                if lock:
                    self._lock_collection(s, c.id)
                w = CollectionWrite(self, s, c, actor)
                yield w
        except BaseException:
            if w is not None:
                self._remove_thumbnails(w.collection_id, w.written_thumbnails)
            raise
        # Committed: from here on nothing may turn the write into a reported failure (a client
        # would retry an enroll that happened). The index is derived state: every search replays
        # the change log first and the background round retries, so a failed catch-up only
        # delays it; a thumbnail left behind is removed by the start-up orphan sweep.
        try:
            self._remove_thumbnails(w.collection_id, w.dropped_thumbnails)
        except OSError:
            log.exception("removing erased thumbnails of collection %d failed", w.collection_id)
        for model in sorted(w.models):
            try:
                self.indexes.catch_up(w.collection_id, model)
                if w.erased:
                    self.indexes.purge(w.collection_id, model)
            except Exception:
                log.exception(
                    "index catch-up after commit failed (collection %d, model %s); "
                    "the next search or background round retries it",
                    w.collection_id,
                    model,
                )
        if w.erased:
            vacuum(self.engine, mode=self.settings.erase_vacuum)

    # thumbnail files ------------------------------------------------------------------------
    def _thumb_path(self, collection_id: int, name: str) -> Any:
        return self.settings.thumbnails_dir / str(collection_id) / name

    def _remove_thumbnails(self, collection_id: int, names: Sequence[str]) -> None:
        for name in names:
            self._thumb_path(collection_id, name).unlink(missing_ok=True)
