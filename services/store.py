"""The identity store: the service layer's Python API (no HTTP needed).

Routes, the admin dashboard, the batch gallery indexer and the CLI all call these methods on one
``IdentityStore``. Every write is one Postgres transaction; the FAISS index (``IndexRegistry``)
is brought up to date right after the commit, from the ``index_changes`` log the transaction
wrote. Errors are ``identity.errors`` types (NotFound, Conflict, InvalidInput, NoFaceFound...),
which the HTTP layer maps once.

Collections (addressed by ``name``):
- ``create_collection(name, description="")``, ``list_collections(only=None)``,
  ``get_collection(name)``, ``delete_collection(name)`` (templates, thumbnails, index snapshots).

Identities (addressed by UUID ``identity_id`` within a collection):
- ``create_identity(collection, external_id, display_name="", metadata=None)``
- ``list_identities(collection, q=None, limit=50, offset=0)``: paged, ``q`` searches display
  name and external id (case-insensitive substring).
- ``get_identity(collection, identity_id)``: with its templates (no embeddings).
- ``erase_identity(collection, identity_id)``: templates (face, body, the gallery faces named
  into it), thumbnails, index entries and snapshot, then VACUUM (docs/security.md); the audit
  log keeps that it happened (never what was erased).
- ``remove_face(collection, identity_id, template_id)``: one template, the same way.

Faces:
- ``enroll_images(collection, identity_id, images, face_index=None, bbox=None)``: analyse each
  ``(filename, bytes)`` and enroll it or reject it with reasons (no face, several faces with none
  chosen, quality gate, duplicate image); returns ``{"accepted": [...], "rejected": [...]}``.
- ``enroll_faces(collection, identity_id, faces, source_sha256)``: enroll already-analysed
  faces (``Faces`` with embeddings); returns the new template ids. No quality gate: the caller
  decided.
- ``verify(collection, probe, identity_id=None, other=None, far=None, threshold=None)``: probe
  bytes against every template of an identity (max similarity), or against a second image.
- ``identify(collection, probe, top_k=5, far=None, threshold=None, all_faces=False,
  matches_only=False)`` and ``identify_faces(collection, faces, ...)`` for already-analysed probes.

Other modules' transactions (the gallery indexer, body templates): ``write(collection)`` is one
locked transaction yielding a ``CollectionWrite`` (``identity``, ``ensure_identities``,
``add_templates`` for many identities at once, ``template_removed``, ``audit``); the store
handles thumbnails and index catch-up around it. ``read(collection)`` yields a session and the
collection row; ``require_identity`` fails fast on an unknown identity.

Decisions use ``identity.calibration.decision_threshold``: the policy (``default_far``) or a
stricter FAR/threshold asked for; a looser one is refused (``LooserThanPolicy``, 422).
Every method takes ``actor`` (the API key id, or None for the CLI) for the audit log.
Housekeeping: ``audit_events(limit)``, ``sweep_orphan_thumbnails()``, ``reindex()``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sqlalchemy import Engine, Table, delete, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.errors import BadImage, CodedError, InvalidInput, MultipleFaces, NoFaceFound
from identity.faces import Faces, check_bbox_xyxy
from identity.pipeline import FaceAnalyzer
from identity.sealing import write_private
from identity.settings import Settings
from services import audit as audit_log
from services.db import make_sessionmaker, vacuum
from services.errors import Conflict, DuplicateImage, NoTemplates, NotFound
from services.indexes import embedding_to_bytes
from services.liveness import audit_fields, check_policy, refusal, verdicts, wanted
from services.metrics import record_stages
from services.sealed import EMBEDDING, THUMBNAIL, DataKeys
from services.tables import AuditEvent, Collection, FaceTemplate, IdentityRow, IndexChange
from services.vector_store import VectorStore, make_vector_store

log = logging.getLogger(__name__)

# \Z, not $: "$" also matches before a trailing newline, so "staff\n" would pass as a name.
COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
MAX_TOP_K = 100
# An advisory-lock namespace so our per-collection locks never collide with anyone else's.
_LOCK_BASE = 727 << 40



def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _round(values: Sequence[float] | np.ndarray, nd: int = 2) -> list[float]:
    return [round(float(v), nd) for v in values]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` (4,) with boxes ``b`` (N,4), xyxy."""
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[2], b[:, 2])
    y2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = max(float((a[2] - a[0]) * (a[3] - a[1])), 0.0)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


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
        self, store: IdentityStore, session: Session, collection: Collection, actor: int | None
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
        return IdentityStore._identity(self.session, self.collection, identity_id)

    def audit(
        self, action: str, outcome: str, identity_id: uuid.UUID | None = None, **details: Any
    ) -> None:
        IdentityStore._audit(
            self.session, self.actor, action, outcome,
            collection=self.collection.name, identity_id=identity_id, **details,
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
            self.session.add(t)
            rows.append(t)
        self.session.flush()
        for t in rows:
            self.session.add(
                IndexChange(
                    collection_id=self.collection_id, model_name=t.model_name, template_id=t.id, op="add"
                )
            )
            self.models.add(t.model_name)
        return rows

    def template_removed(self, template_id: int, model_name: str, thumbnail: str | None) -> None:
        """Log that a template goes away in this transaction (the caller deletes the row, or a
        cascade does): its index entry is removed and its thumbnail deleted after the commit."""
        self.session.add(
            IndexChange(
                collection_id=self.collection_id, model_name=model_name, template_id=template_id, op="remove"
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


class IdentityStore:
    """Postgres-backed identities and templates plus their FAISS indexes (see module docstring)."""

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

    def threshold(self, far: float | None, threshold: float | None) -> tuple[float, float | None]:
        """(threshold, far) of the policy or a stricter one asked for (``decision_threshold``)."""
        from identity.calibration import decision_threshold

        return decision_threshold(self.model_name, self.settings, far, threshold, self.detector_name)

    @property
    def detector_name(self) -> str:
        return self.analyzer.detector_name

    def calibration_evidence(self, far: float | None) -> dict[str, Any] | None:
        """Which calibration a decision at ``far`` used (None for a caller's own threshold)."""
        if far is None:
            return None
        from identity.calibration import pipeline_calibration

        return pipeline_calibration(self.model_name, self.settings, self.detector_name).evidence(far)

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
                    "the next search or background round retries it", w.collection_id, model,
                )
        if w.erased:
            vacuum(self.engine, mode=self.settings.erase_vacuum)

    @staticmethod
    def _collection_dict(c: Collection, identities: int = 0, templates: int = 0) -> dict[str, Any]:
        return {
            "name": c.name,
            "description": c.description,
            "liveness_policy": c.liveness_policy,
            "created_at": c.created_at.isoformat(),
            "identities": identities,
            "templates": templates,
        }

    @staticmethod
    def _identity_dict(i: IdentityRow, templates: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(i.id),
            "external_id": i.external_id,
            "display_name": i.display_name,
            "metadata": i.metadata_,
            "created_at": i.created_at.isoformat(),
            "updated_at": i.updated_at.isoformat(),
        }
        if templates is not None:
            out["templates"] = templates
        return out

    # collections ----------------------------------------------------------------------------
    def create_collection(
        self, name: str, description: str = "", actor: int | None = None,
        liveness_policy: str = "off",
    ) -> dict[str, Any]:
        if not COLLECTION_NAME.match(name or ""):
            raise InvalidInput(
                "collection name: 1-64 of a-z 0-9 _ -, starting with a letter or digit", name=name
            )
        check_policy(liveness_policy)
        try:
            with self.sessions.begin() as s:
                c = Collection(name=name, description=description or "", liveness_policy=liveness_policy)
                s.add(c)
                s.flush()
                s.refresh(c)
                self._audit(
                    s, actor, "collection.create", "ok", collection=name,
                    liveness_policy=liveness_policy,
                )
        except IntegrityError:
            raise Conflict(f"collection '{name}' already exists", collection=name) from None
        return self._collection_dict(c)

    def list_collections(self, only: str | None = None) -> list[dict[str, Any]]:
        with self.sessions() as s:
            q = select(Collection).order_by(Collection.name)
            if only is not None:
                q = q.where(Collection.name == only)
            rows = s.execute(q).scalars().all()
            ids = [c.id for c in rows]
            n_ident = dict(
                s.execute(
                    select(IdentityRow.collection_id, func.count())
                    .where(IdentityRow.collection_id.in_(ids))
                    .group_by(IdentityRow.collection_id)
                ).all()
            )
            n_tmpl = dict(
                s.execute(
                    select(FaceTemplate.collection_id, func.count())
                    .where(FaceTemplate.collection_id.in_(ids))
                    .group_by(FaceTemplate.collection_id)
                ).all()
            )
        return [self._collection_dict(c, n_ident.get(c.id, 0), n_tmpl.get(c.id, 0)) for c in rows]

    def update_collection(
        self, name: str, description: str | None = None, liveness_policy: str | None = None,
        actor: int | None = None,
    ) -> dict[str, Any]:
        """Change a collection's description and/or liveness policy (None = keep)."""
        if liveness_policy is not None:
            check_policy(liveness_policy)
        with self.sessions.begin() as s:
            c = self._collection(s, name)
            changes: dict[str, Any] = {}
            if description is not None and description != c.description:
                c.description = changes["description"] = description
            if liveness_policy is not None and liveness_policy != c.liveness_policy:
                changes["liveness_policy"] = [c.liveness_policy, liveness_policy]
                c.liveness_policy = liveness_policy
            self._audit(s, actor, "collection.update", "ok", collection=name, **changes)
        return self.get_collection(name)

    def liveness_policy(self, name: str) -> str:
        with self.sessions() as s:
            return self._collection(s, name).liveness_policy

    def _liveness_gate(
        self, faces: Faces, policy: str, action: str, actor: int | None, collection: str,
        identity_id: uuid.UUID | None = None,
    ) -> list[dict[str, Any]]:
        """Verdicts for ``faces`` (analysed with liveness); a ``require`` refusal is audited
        (outcome ``presentation_attack`` or ``liveness_undetermined``) and raised."""
        found = verdicts(faces, policy, self.settings)
        for v in found:
            err = refusal(v)
            if err is not None:
                self.audit(
                    actor, action, err.code, collection=collection, identity_id=identity_id,
                    **audit_fields(v),
                )
                raise err
        return found

    def get_collection(self, name: str) -> dict[str, Any]:
        with self.sessions() as s:
            self._collection(s, name)
        return self.list_collections(only=name)[0]

    def delete_collection(self, name: str, actor: int | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            c = self._collection(s, name)
            self._lock_collection(s, c.id)
            thumbs = s.execute(
                select(FaceTemplate.thumbnail).where(FaceTemplate.collection_id == c.id)
            ).scalars().all()
            n_ident = s.execute(
                select(func.count()).where(IdentityRow.collection_id == c.id)
            ).scalar_one()
            # The change log of a deleted collection is meaningless; its index is dropped whole.
            s.execute(delete(IndexChange).where(IndexChange.collection_id == c.id))
            s.delete(c)  # identities, templates and scoped keys cascade in Postgres
            self._audit(
                s, actor, "collection.delete", "ok", collection=name,
                identities=n_ident, templates=len(thumbs),
            )
            cid = c.id
        self._remove_thumbnails(cid, [t for t in thumbs if t])
        self.indexes.drop(cid)
        vacuum(self.engine, mode=self.settings.erase_vacuum)
        return {"deleted": name, "identities": n_ident, "templates": len(thumbs)}

    # identities -----------------------------------------------------------------------------
    def create_identity(
        self,
        collection: str,
        external_id: str,
        display_name: str = "",
        metadata: dict[str, Any] | None = None,
        actor: int | None = None,
    ) -> dict[str, Any]:
        if not external_id or len(external_id) > 256:
            raise InvalidInput("external_id must be 1-256 characters")
        if len(display_name or "") > 256:
            raise InvalidInput("display_name must be at most 256 characters")
        try:
            with self.sessions.begin() as s:
                c = self._collection(s, collection)
                row = IdentityRow(
                    collection_id=c.id,
                    external_id=external_id,
                    display_name=display_name or "",
                    metadata_=metadata or {},
                )
                s.add(row)
                s.flush()
                s.refresh(row)
                self._audit(s, actor, "identity.create", "ok", collection=collection, identity_id=row.id)
        except IntegrityError:
            raise Conflict(
                f"external_id '{external_id}' already exists in '{collection}'",
                external_id=external_id,
            ) from None
        return self._identity_dict(row, templates=0)

    def list_identities(
        self, collection: str, q: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise InvalidInput("limit must be 1-1000 and offset >= 0", limit=limit, offset=offset)
        with self.sessions() as s:
            c = self._collection(s, collection)
            where = [IdentityRow.collection_id == c.id]
            if q:
                pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where.append(
                    or_(IdentityRow.display_name.ilike(pattern), IdentityRow.external_id.ilike(pattern))
                )
            total = s.execute(select(func.count()).select_from(IdentityRow).where(*where)).scalar_one()
            rows = s.execute(
                select(IdentityRow)
                .where(*where)
                .order_by(IdentityRow.created_at, IdentityRow.id)
                .limit(limit)
                .offset(offset)
            ).scalars().all()
            counts = dict(
                s.execute(
                    select(FaceTemplate.identity_id, func.count())
                    .where(FaceTemplate.identity_id.in_([r.id for r in rows]))
                    .group_by(FaceTemplate.identity_id)
                ).all()
            )
        return {
            "items": [self._identity_dict(r, counts.get(r.id, 0)) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    def get_identity(self, collection: str, identity_id: uuid.UUID | str) -> dict[str, Any]:
        with self.sessions() as s:
            c = self._collection(s, collection)
            row = self._identity(s, c, identity_id)
            templates = [
                {
                    "id": t.id,
                    "model": t.model_name,
                    "model_version": t.model_version,
                    "quality": t.quality,
                    "quality_reasons": t.quality_reasons,
                    "bbox": t.bbox,
                    "source_sha256": t.source_sha256,
                    "thumbnail": t.thumbnail is not None,
                    "created_at": t.created_at.isoformat(),
                }
                for t in row.templates
            ]
            out = self._identity_dict(row, templates=len(templates))
        out["faces"] = templates
        return out

    def erase_identity(
        self, collection: str, identity_id: uuid.UUID | str, actor: int | None = None
    ) -> dict[str, Any]:
        with self.write(collection, actor) as w:
            row = w.identity(identity_id)
            templates = w.session.execute(
                select(FaceTemplate.id, FaceTemplate.model_name, FaceTemplate.thumbnail).where(
                    FaceTemplate.identity_id == row.id
                )
            ).all()
            for tid, model, thumb in templates:
                w.template_removed(tid, model, thumb)
            iid = row.id
            w.session.delete(row)  # templates cascade
            w.audit("identity.erase", "ok", identity_id=iid, templates=len(templates))
        return {"erased": str(iid), "templates": len(templates)}

    def remove_face(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        template_id: int,
        actor: int | None = None,
    ) -> dict[str, Any]:
        """Delete one template of an identity: row, thumbnail and index entry, like an erase."""
        with self.write(collection, actor) as w:
            row = w.identity(identity_id)
            t = w.session.get(FaceTemplate, template_id)
            if t is None or t.identity_id != row.id:
                raise NotFound(
                    f"face {template_id} not found on identity '{row.id}'", template_id=template_id
                )
            w.template_removed(t.id, t.model_name, t.thumbnail)
            w.session.delete(t)
            w.audit("face.remove", "ok", identity_id=row.id, template_id=template_id)
        return {"removed": template_id}

    # enrollment -----------------------------------------------------------------------------
    def _thumb_path(self, collection_id: int, name: str) -> Any:
        return self.settings.thumbnails_dir / str(collection_id) / name

    def _remove_thumbnails(self, collection_id: int, names: Sequence[str]) -> None:
        for name in names:
            self._thumb_path(collection_id, name).unlink(missing_ok=True)

    def thumbnail_path(self, collection: str, template_id: int) -> Any:
        """Path of a template's sealed thumbnail file; NotFound if none."""
        with self.sessions() as s:
            c = self._collection(s, collection)
            t = s.get(FaceTemplate, template_id)
            if t is None or t.collection_id != c.id or not t.thumbnail:
                raise NotFound(f"no thumbnail for template {template_id}")
            return self._thumb_path(c.id, t.thumbnail)

    def thumbnail_jpeg(self, collection: str, template_id: int) -> bytes:
        """A template's thumbnail JPEG, unsealed (for the dashboard); NotFound if none."""
        path = self.thumbnail_path(collection, template_id)
        try:
            blob = path.read_bytes()
        except OSError:
            raise NotFound(f"no thumbnail for template {template_id}") from None
        return self.sealer.open(blob, THUMBNAIL) if path.suffix == ".sealed" else blob

    def _thumbnail_jpeg(self, faces: Faces, i: int) -> bytes | None:
        if not self.settings.store_thumbnails or faces.crops is None:
            return None
        import cv2

        ok, buf = cv2.imencode(".jpg", faces.crops[i], [cv2.IMWRITE_JPEG_QUALITY, 85])
        return buf.tobytes() if ok else None

    def enroll_faces(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        faces: Faces,
        source_sha256: str,
        actor: int | None = None,
    ) -> list[int]:
        """Store already-analysed faces as templates of one identity; returns template ids.

        Raises Conflict if this image (by SHA-256) is already enrolled for the identity.
        """
        if faces.embeddings is None or not len(faces):
            raise InvalidInput("enroll_faces needs faces with embeddings")
        thumbs = [self._thumbnail_jpeg(faces, i) for i in range(len(faces))]
        try:
            with self.write(collection, actor) as w:
                row = w.identity(identity_id)
                dup = w.session.execute(
                    select(FaceTemplate.id).where(
                        FaceTemplate.identity_id == row.id,
                        FaceTemplate.model_name == self.model_name,
                        FaceTemplate.source_sha256 == source_sha256,
                    )
                ).first()
                if dup is not None:
                    raise DuplicateImage(
                        "this image is already enrolled for this identity", template_id=dup[0]
                    )
                new = w.add_templates(
                    [
                        NewTemplate(
                            identity_id=row.id,
                            model_name=self.model_name,
                            model_version=self.model_version,
                            dim=int(faces.embeddings.shape[1]),
                            embedding=embedding_to_bytes(faces.embeddings[i]),
                            quality=None if faces.quality is None else float(faces.quality[i]),
                            quality_reasons=list(faces.quality_reasons[i]) if faces.quality_reasons else [],
                            det_score=float(faces.scores[i]),
                            bbox=_round(faces.boxes[i]),
                            landmarks=[_round(p) for p in faces.landmarks[i]],
                            source_sha256=source_sha256,
                            thumbnail_jpeg=thumbs[i],
                        )
                        for i in range(len(faces))
                    ]
                )
                w.audit(
                    "face.enroll", "accepted", identity_id=row.id,
                    templates=[t.id for t in new],
                    quality=[t.quality for t in new],
                )
        except IntegrityError:
            raise DuplicateImage("this image is already enrolled for this identity") from None
        return [t.id for t in new]

    def _choose_face(
        self, faces: Faces, face_index: int | None, bbox: Sequence[float] | None
    ) -> Faces:
        if not len(faces):
            raise NoFaceFound("no face found in the image")
        faces = faces.sorted_by_area()
        if face_index is not None:
            if not 0 <= face_index < len(faces):
                raise InvalidInput(
                    f"face_index {face_index} out of range: the image has {len(faces)} faces",
                    faces=[face_summary(faces, i) for i in range(len(faces))],
                )
            return faces[face_index]
        if bbox is not None:
            ious = _iou(np.asarray(bbox, dtype=np.float32), faces.boxes)
            best = int(np.argmax(ious))
            if ious[best] < 0.3:
                raise NoFaceFound(
                    "no detected face overlaps the given bbox",
                    faces=[face_summary(faces, i) for i in range(len(faces))],
                )
            return faces[best]
        if len(faces) > 1:
            from identity.errors import MultipleFaces

            raise MultipleFaces(
                f"{len(faces)} faces found; choose one with face_index (largest first) or bbox",
                faces=[face_summary(faces, i) for i in range(len(faces))],
            )
        return faces

    def _quality_gate(self, face: Faces) -> list[str]:
        from identity.quality import enrollment_rejections

        return list(enrollment_rejections(face, self.settings)[0])

    def enroll_images(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        images: Sequence[tuple[str, bytes]],
        face_index: int | None = None,
        bbox: Sequence[float] | None = None,
        actor: int | None = None,
        liveness: bool = False,
    ) -> dict[str, list[dict[str, Any]]]:
        """Analyse and enroll each ``(filename, bytes)``; every image is accepted or rejected.

        ``liveness`` opts in to the presentation-attack score when the collection's policy is
        ``off``; under ``require`` a spoof is rejected with code ``presentation_attack``.
        """
        if not images:
            raise InvalidInput("no images given")
        if bbox is not None:
            bbox = check_bbox_xyxy(bbox)
        identity_id = self.require_identity(collection, identity_id)  # fail fast; UUID or external id
        policy = self.liveness_policy(collection)
        live_check = wanted(policy, liveness)
        accepted: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        seen: set[str] = set()
        for filename, data in images:
            digest = sha256_hex(data)
            try:
                if digest in seen:
                    raise DuplicateImage("the same image was sent twice in this request")
                seen.add(digest)
                analyzed = self.analyzer.analyze_bytes(data, liveness=live_check)
                record_stages(analyzed.faces.timings)
                face = self._choose_face(analyzed.faces, face_index, bbox)
                extra: dict[str, Any] = {}
                if live_check:
                    (extra["liveness"],) = self._liveness_gate(
                        face, policy, "face.enroll", actor, collection, uuid.UUID(str(identity_id))
                    )
                reasons = self._quality_gate(face)
                if reasons:
                    from identity.errors import LowQuality

                    raise LowQuality(
                        "face below the enrollment quality gate: " + ", ".join(reasons),
                        reasons=reasons,
                        face=face_summary(face, 0),
                    )
                (tid,) = self.enroll_faces(collection, identity_id, face, digest, actor=actor)
                accepted.append(
                    {"filename": filename, "template_id": tid, **face_summary(face, 0), **extra}
                )
            except CodedError as exc:
                if isinstance(exc, NotFound) or exc.http_status >= 500:
                    # The identity vanished, or a model is broken: the request failed, not the image.
                    raise
                rejected.append(
                    {
                        "filename": filename,
                        "code": exc.code,
                        "message": exc.message,
                        "reasons": exc.details.get("reasons", [exc.code]),
                        "details": exc.details,
                    }
                )
        if rejected:
            self.audit(
                actor, "face.enroll", "rejected", collection=collection,
                identity_id=uuid.UUID(str(identity_id)), codes=[r["code"] for r in rejected],
            )
        return {"accepted": accepted, "rejected": rejected}

    # decisions ------------------------------------------------------------------------------
    def _probe(self, data: bytes, what: str = "probe", liveness: bool = False) -> Faces:
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise BadImage(f"{what} image is empty")
        faces = self.analyzer.analyze_bytes(bytes(data), liveness=liveness).faces
        record_stages(faces.timings)
        if not len(faces):
            raise NoFaceFound(f"no face found in the {what} image")
        return faces

    def verify(
        self,
        collection: str,
        probe: bytes,
        identity_id: uuid.UUID | str | None = None,
        other: bytes | None = None,
        far: float | None = None,
        threshold: float | None = None,
        actor: int | None = None,
        single_face: bool = False,
        liveness: bool = False,
    ) -> dict[str, Any]:
        """1:1: a claim about an identity checks every face of the probe against every template
        (the best face answers, so a group photo does not silently compare the wrong person);
        ``single_face`` refuses a probe with several faces instead. Against ``other``, the two
        images' largest faces are compared.

        The liveness of the face that answers is checked per the collection's policy (or the
        ``liveness`` opt-in) before the decision is made or audited.
        """
        if (identity_id is None) == (other is None):
            raise InvalidInput("give exactly one of identity_id or a second image")
        thr, far_used = self.threshold(far, threshold)
        with self.sessions() as s:
            c = self._collection(s, collection)
            policy = c.liveness_policy
            if identity_id is not None:
                row = self._identity(s, c, identity_id)
                templates = s.execute(
                    select(
                        FaceTemplate.id, FaceTemplate.dim, FaceTemplate.embedding, FaceTemplate.key_id
                    ).where(
                        FaceTemplate.identity_id == row.id,
                        FaceTemplate.model_name == self.model_name,
                    )
                ).all()
                if not templates:
                    raise NoTemplates(
                        f"identity '{row.id}' has no enrolled faces for model {self.model_name}"
                    )
        live_check = wanted(policy, liveness)
        probe_faces = self._probe(probe, liveness=live_check).sorted_by_area()  # face 0 is the largest
        if single_face and len(probe_faces) > 1:
            raise MultipleFaces(
                f"the probe holds {len(probe_faces)} faces and one was required",
                faces=len(probe_faces),
            )
        out: dict[str, Any] = {"faces_in_probe": len(probe_faces)}
        if identity_id is not None:
            gallery = np.stack([self.sealer.embedding(t[2], t[3], t[1]) for t in templates])
            sims = probe_faces.embeddings @ gallery.T  # (faces, templates)
            face, best = (int(v) for v in np.unravel_index(int(np.argmax(sims)), sims.shape))
            similarity = float(sims[face, best])
            out.update(
                identity_id=str(row.id),
                templates_compared=len(templates),
                best_template_id=int(templates[best][0]),
            )
        else:
            face = 0
            other_faces = self._probe(other, "second").largest()  # type: ignore[arg-type]
            assert other_faces.embeddings is not None and probe_faces.embeddings is not None
            similarity = float(other_faces.embeddings[0] @ probe_faces.embeddings[0])
            out["other_face"] = face_summary(other_faces, 0)
        if live_check:
            (out["liveness"],) = self._liveness_gate(
                probe_faces[int(face)], policy, "verify", actor, collection,
                None if identity_id is None else row.id,
            )
        match = similarity >= thr
        self.audit(
            actor, "verify", "match" if match else "no_match", collection=collection,
            identity_id=None if identity_id is None else row.id,
            similarity=round(similarity, 4), threshold=round(thr, 4),
            **(audit_fields(out["liveness"]) if "liveness" in out else {}),
        )
        return {
            "similarity": round(similarity, 6),
            "threshold": round(thr, 6),
            "far": far_used,
            "calibration": self.calibration_evidence(far_used),
            "match": bool(match),
            "model": self.model_name,
            "probe_face": face_summary(probe_faces, int(face)),
            "probe_face_index": int(face),
            **out,
        }

    def identify(
        self,
        collection: str,
        probe: bytes,
        top_k: int = 5,
        far: float | None = None,
        threshold: float | None = None,
        all_faces: bool = False,
        actor: int | None = None,
        liveness: bool = False,
        matches_only: bool = False,
    ) -> dict[str, Any]:
        """1:N: the largest face (or every face) of a probe image against the collection.

        Under a ``require`` policy every face searched must be judged live.
        """
        cid = self.collection_id(collection)
        policy = self.liveness_policy(collection)
        live_check = wanted(policy, liveness)
        faces = self._probe(probe, liveness=live_check)
        faces = faces.sorted_by_area() if all_faces else faces.largest()
        if not live_check:
            return self.identify_faces(
                collection, faces, top_k, far, threshold, actor, cid, matches_only=matches_only
            )
        found = self._liveness_gate(faces, policy, "identify", actor, collection)
        result = self.identify_faces(
            collection, faces, top_k, far, threshold, actor, cid,
            audit_extra={"liveness": [audit_fields(v)["liveness"] for v in found]},
            matches_only=matches_only,
        )
        for face, verdict in zip(result["faces"], found, strict=True):
            face["liveness"] = verdict
        return result

    def identify_faces(
        self,
        collection: str,
        faces: Faces,
        top_k: int = 5,
        far: float | None = None,
        threshold: float | None = None,
        actor: int | None = None,
        collection_id: int | None = None,
        audit_extra: dict[str, Any] | None = None,
        matches_only: bool = False,
    ) -> dict[str, Any]:
        """1:N for analysed faces. ``matches_only`` drops the candidates below the threshold:
        a verify-scoped key learns who matched, never who came close (the names of near
        misses would let it enumerate the collection)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be 1-{MAX_TOP_K}", top_k=top_k)
        if faces.embeddings is None:
            raise InvalidInput("identify_faces needs faces with embeddings")
        thr, far_used = self.threshold(far, threshold)
        cid = collection_id if collection_id is not None else self.collection_id(collection)
        # Several templates per identity: over-fetch so top_k distinct identities survive.
        k = max(top_k * 5, 20)
        sims, tids = self.indexes.search(cid, self.model_name, faces.embeddings, k)
        wanted = {int(t) for t in tids.ravel() if t >= 0}
        owners: dict[int, tuple[uuid.UUID, str, str]] = {}
        if wanted:
            with self.sessions() as s:
                for tid, iid, ext, name in s.execute(
                    select(
                        FaceTemplate.id, IdentityRow.id, IdentityRow.external_id, IdentityRow.display_name
                    )
                    .join(IdentityRow, IdentityRow.id == FaceTemplate.identity_id)
                    .where(FaceTemplate.id.in_(wanted))
                ).all():
                    owners[tid] = (iid, ext, name)
        results, top = [], []
        for f in range(len(faces)):
            best: dict[uuid.UUID, dict[str, Any]] = {}
            for sim, tid in zip(sims[f] if sims.size else [], tids[f] if tids.size else [], strict=False):
                owner = owners.get(int(tid))
                if owner is None or owner[0] in best:
                    continue  # results are sorted, so the first hit per identity is its max
                best[owner[0]] = {
                    "identity_id": str(owner[0]),
                    "external_id": owner[1],
                    "display_name": owner[2],
                    "similarity": round(float(sim), 6),
                    "template_id": int(tid),
                    "match": bool(float(sim) >= thr),
                }
            candidates = list(best.values())[:top_k]
            top.extend(candidates[:1])  # the audit keeps the best score, shown or not
            if matches_only:
                candidates = [c for c in candidates if c["match"]]
            results.append({**face_summary(faces, f), "candidates": candidates})
        self.audit(
            actor, "identify", "match" if any(c["match"] for c in top) else "no_match",
            collection=collection, faces=len(results),
            best=[round(c["similarity"], 4) for c in top], **(audit_extra or {}),
        )
        return {
            "faces": results,
            "threshold": round(thr, 6),
            "far": far_used,
            "calibration": self.calibration_evidence(far_used),
            "model": self.model_name,
        }

    # housekeeping ---------------------------------------------------------------------------
    def audit_events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).scalars()
            return [audit_log.event_dict(e) for e in rows]

    def sweep_orphan_thumbnails(self) -> int:
        """Delete thumbnail files no template references (left by a crash mid-erase/enroll)."""
        root = self.settings.thumbnails_dir
        if not root.exists():
            return 0
        with self.sessions() as s:
            known = {
                (str(c), t)
                for c, t in s.execute(
                    select(FaceTemplate.collection_id, FaceTemplate.thumbnail).where(
                        FaceTemplate.thumbnail.is_not(None)
                    )
                ).all()
            }
        removed = 0
        for path in root.glob("*/*"):
            if path.is_file() and (path.parent.name, path.name) not in known:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def index_status(self, collection: str) -> dict[str, Any]:
        """The index for the current model next to Postgres: its FAISS type, sizes, id-set digests.

        ``consistent`` is true when the index holds exactly the templates Postgres has.
        """
        with self.sessions() as s:
            cid = self._collection(s, collection).id
        index_ids = sorted(self.indexes.ids(cid, self.model_name))
        with self.sessions() as s:
            db_ids = sorted(
                s.execute(
                    select(FaceTemplate.id).where(
                        FaceTemplate.collection_id == cid, FaceTemplate.model_name == self.model_name
                    )
                ).scalars()
            )

        def digest(ids: list[int]) -> str:
            return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()

        return {
            "model": self.model_name,
            "index_factory": self.indexes.factory(cid, self.model_name),
            "index_size": len(index_ids),
            "templates": len(db_ids),
            "index_digest": digest(index_ids),
            "templates_digest": digest(db_ids),
            "consistent": index_ids == db_ids,
        }

    def reindex(self) -> dict[str, int]:
        """Rebuild every (collection, model) index from Postgres; returns sizes."""
        with self.sessions() as s:
            pairs = s.execute(
                select(Collection.id, Collection.name, FaceTemplate.model_name)
                .join(FaceTemplate, FaceTemplate.collection_id == Collection.id)
                .distinct()
            ).all()
        return {f"{name}/{model}": self.indexes.rebuild(cid, model) for cid, name, model in pairs}
