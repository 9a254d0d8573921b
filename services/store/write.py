"""One locked write transaction on a collection (``CollectionWrite``) and the template rows it
adds (``NewTemplate``): what ``IdentityStore.write`` hands to the store's resource modules, the
gallery indexer, the model migration and body templates."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from identity.sealing import write_private
from services.change_log import Kind
from services.sealed import CROP, EMBEDDING, THUMBNAIL
from services.tables import Collection, FaceTemplate, IdentityRow, IndexChange

if TYPE_CHECKING:
    from services.store.core import StoreCore


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
    # the source crop (``identity.crops``) kept for re-embedding with another model
    crop_jpeg: bytes | None = None
    crop_geometry: dict[str, Any] | None = None
    migrated_from: int | None = None
    # the presentation-attack check of enrollment (``services.liveness.stored_verdict``), if any
    liveness: float | None = None
    liveness_verdict: dict[str, Any] | None = None


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
        self.models: set[str] = set()  # face models whose index must catch up after the commit
        self.body_models: set[str] = set()  # body models likewise
        self.written_thumbnails: list[str] = []
        self.dropped_thumbnails: list[str] = []
        self.erased = False  # templates (or rows cascading from them) deleted here

    def identity(self, identity_id: uuid.UUID | str) -> IdentityRow:
        """The identity in this collection, or NotFound."""
        return self.store._identity(self.session, self.collection, identity_id)

    def audit(
        self, action: str, outcome: str, identity_id: uuid.UUID | None = None, **details: Any
    ) -> None:
        self.store._audit(
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
                crop=self._save_crop(r.crop_jpeg),
                crop_geometry=r.crop_geometry if r.crop_jpeg else None,
                migrated_from=r.migrated_from,
                liveness=r.liveness,
                liveness_verdict=r.liveness_verdict,
            )
            self.session.add(t)
            rows.append(t)
        self.session.flush()
        for t in rows:
            self.template_added(t.id, t.model_name)
        return rows

    def _log_change(self, template_id: int, model_name: str, op: str, kind: Kind) -> None:
        self.session.add(
            IndexChange(
                collection_id=self.collection_id,
                model_name=model_name,
                template_id=template_id,
                op=op,
                kind=kind,
            )
        )
        (self.models if kind == "face" else self.body_models).add(model_name)

    def template_added(self, template_id: int, model_name: str, kind: Kind = "face") -> None:
        """Log a template inserted (and flushed) in this transaction for its index."""
        self._log_change(template_id, model_name, "add", kind)

    def template_removed(
        self, template_id: int, model_name: str, *files: str | None, kind: Kind = "face"
    ) -> None:
        """Log that a template goes away in this transaction (the caller deletes the row, or a
        cascade does): its index entry is removed and its files (thumbnail, source crop)
        deleted after the commit."""
        self._log_change(template_id, model_name, "remove", kind)
        self.erased = True
        self.dropped_thumbnails.extend(f for f in files if f)

    def _save_thumbnail(self, jpeg: bytes | None) -> str | None:
        if not self.store.settings.store_thumbnails:
            return None
        return self._save_sealed_file(jpeg, THUMBNAIL, "")

    def _save_crop(self, jpeg: bytes | None) -> str | None:
        if not self.store.settings.keep_face_crops:
            return None
        return self._save_sealed_file(jpeg, CROP, ".crop")

    def _save_sealed_file(self, data: bytes | None, purpose: bytes, kind: str) -> str | None:
        """A sealed file beside the thumbnails (same directory, same erasure and sweep)."""
        if not data:
            return None
        name = f"{uuid.uuid4().hex}{kind}.sealed"
        sealed = self.store.sealer.seal(self.collection_id, data, purpose)[1]
        # recorded before the write, so a half-written file is deleted too if anything fails
        self.written_thumbnails.append(name)
        write_private(self.store._thumb_path(self.collection_id, name), sealed)
        return name
