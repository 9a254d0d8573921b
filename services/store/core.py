"""The store's core: construction, sessions, the ``read``/``write`` transactions, locks, audit.

``StoreCore`` holds what every resource module builds on (settings, engine, sessions, analyzer
per face model, sealer, vector store); ``write`` opens the one locked write transaction
(``services/store/write.py``: ``CollectionWrite``) other modules share with the store.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from identity.image import sha256_hex  # noqa: F401  (re-exported: the store's dedupe key)
from identity.pipeline import FaceAnalyzer
from identity.settings import Settings
from services import audit as audit_log
from services.db import make_sessionmaker, vacuum
from services.errors import NotFound
from services.indexes import IndexRegistry
from services.metrics import timed_stage
from services.sealed import DataKeys
from services.store.write import CollectionWrite
from services.tables import Collection, IdentityRow
from services.vector_store import VectorStore, make_vector_store

log = logging.getLogger(__name__)

# \Z, not $: "$" also matches before a trailing newline, so "staff\n" would pass as a name.
COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
MAX_TOP_K = 100
# An advisory-lock namespace so our per-collection locks never collide with anyone else's.
_LOCK_BASE = 727 << 40


class StoreCore:
    """What every part of ``IdentityStore`` builds on: settings, engine, sessions, analyzer per
    face model, sealer and the indexes (faces: the configured vector store; bodies: always an
    ``IndexRegistry`` of kind "body"); the transactions, locks and audit hook."""

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
        self._analyzers: dict[str, FaceAnalyzer] = {self.analyzer.embedder_name: self.analyzer}
        self.sealer = indexes.sealer if indexes is not None else DataKeys(settings, engine)
        self.indexes = indexes or make_vector_store(settings, engine, self.sealer)
        self.body_indexes = IndexRegistry(settings, engine, self.sealer, kind="body")

    # model ----------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.analyzer.embedder_name

    @property
    def model_version(self) -> str:
        from identity.registry import get_manifest

        return get_manifest(self.model_name).version

    @staticmethod
    def model_version_of(model: str) -> str:
        from identity.registry import get_manifest

        return get_manifest(model).version

    @property
    def detector_name(self) -> str:
        return self.analyzer.detector_name

    def face_model(self, collection: Collection) -> str:
        """The collection's active face model: the one switched to (``identity templates
        switch``), else the service's configured embedder."""
        return collection.face_model or self.model_name

    def model_of(self, collection: str) -> str:
        with self.sessions() as s:
            return self.face_model(self._collection(s, collection))

    def analyzer_for(self, model: str) -> FaceAnalyzer:
        """The pipeline with ``model`` as embedder (same detector), made once per model."""
        found = self._analyzers.get(model)
        if found is None:
            found = FaceAnalyzer(self.settings, self.analyzer.detector_name, model)
            # dict.setdefault is atomic: two threads racing keep one analyzer
            found = self._analyzers.setdefault(model, found)
        return found

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
        """An audit row in a transaction of its own (a decision, a refusal, a sign-in)."""
        with timed_stage("audit"), self.sessions.begin() as s:
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
        touched: list[tuple[VectorStore, str]] = [(self.indexes, m) for m in sorted(w.models)]
        touched += [(self.body_indexes, m) for m in sorted(w.body_models)]
        for indexes, model in touched:
            try:
                indexes.catch_up(w.collection_id, model)
                if w.erased:
                    indexes.purge(w.collection_id, model)
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
