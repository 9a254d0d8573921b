"""Every SQLAlchemy table of the service on one ``Base``: the Postgres schema that is the truth.

Alembic (``migrations/env.py``) autogenerates against ``Base.metadata``, so a table defined
anywhere else would be one it proposes to drop: new tables go here.

Tables:
- ``collections``: galleries (one per tenant or use), addressed by a unique ``name``.
- ``identities``: a person in a collection; ``external_id`` is the caller's key, unique per
  collection; ``id`` is a UUID (not enumerable) used in URLs.
- ``face_templates``: one embedding per enrolled face; ``id`` (bigint) is also the FAISS id.
  The embedding is raw little-endian float32 bytes (``dim`` values), L2-normalised.
  ``source_sha256`` makes the same image enrolled twice for one identity a duplicate.
  ``liveness``/``liveness_verdict`` keep the presentation-attack check of enrollment, if any ran.
- ``index_changes``: append-only change log (``seq`` grows) of template adds/removes per
  (collection, model), for face and body templates alike (``kind``: which table ``template_id``
  points into; migration 0410_index_kind). A restarted service loads its FAISS snapshot (which
  records the last ``seq`` it contains) and replays what came after. Writers take a per-collection advisory lock
  before writing a change, so ``seq`` order equals commit order within a collection.
- ``api_keys``: sha256 of the key (never the key), a short public prefix to find the row, scope
  ``admin|enroll|verify`` and an optional collection.
- ``data_keys``: one AES-256 data key per collection, wrapped by the key-encryption key
  (``identity.sealing``); ``kek_id`` names the KEK. Embeddings (``face_templates``,
  ``gallery_faces``, ``body_templates``), face crops and index snapshots are sealed with it and
  carry its ``key_id``. The row goes with its collection, which shreds what it sealed.
- ``admin_sessions``: one row per dashboard sign-in (sha256 of the cookie's session token, the
  key, expiry, end). Sign-out and key revocation set ``ended_at``, which every dashboard
  request checks, so a copied cookie dies with the session in every worker.
- ``audit_events``: who (key id), what, which collection/identity, outcome and scores; never
  embeddings, images or thumbnails. Ids are plain columns, not foreign keys, so an erased
  identity's events survive the erasure. ``prev_hash``/``row_hash`` chain every row to the one
  before it (``services/audit.py``).
- ``body_templates`` (migration 0201_body): one row per enrolled person crop and body model:
  the re-ID embedding (raw little-endian float32, L2-normalised, sealed: ``key_id``) of an
  identity that also has (or may have) face templates. ``id`` is the FAISS id in the
  (collection, body model) index. Rows go with their identity.
- 0450_model_migration: ``collections.face_model`` (the active face model),
  ``face_templates.crop``/``crop_geometry``/``migrated_from`` (the source crop a template can be
  re-embedded from) and ``gallery_jobs.kind`` (``ingest`` or ``migrate``).
- ``gallery_jobs``, ``gallery_clusters``, ``gallery_faces``, ``gallery_images`` (migration
  0101_gallery): batch indexing jobs, proposed identities, the unlabelled faces they group and
  every analysed image keyed by (collection, model, sha256) so a rerun skips it
  (``services.gallery``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column, relationship


class Base(DeclarativeBase):
    pass


# Column definitions several tables repeat. Functions, not mixins: each table keeps its own
# column order, which is the order its migration created.
def created_at_column() -> MappedColumn[Any]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def collection_id_column(primary_key: bool = False) -> MappedColumn[Any]:
    """The owning collection; the row goes with it (ON DELETE CASCADE)."""
    fk = ForeignKey("collections.id", ondelete="CASCADE")
    if primary_key:
        return mapped_column(BigInteger, fk, primary_key=True)
    return mapped_column(BigInteger, fk, nullable=False)


def identity_id_column() -> MappedColumn[Any]:
    """The owning identity; the row goes with it (ON DELETE CASCADE)."""
    return mapped_column(
        UUID(as_uuid=True), ForeignKey("identities.id", ondelete="CASCADE"), nullable=False
    )


def key_id_column() -> MappedColumn[Any]:
    """The ``data_keys`` row that sealed the row's biometric columns (NULL = plaintext from
    before migration 0320, sealed by the start-up pass)."""
    return mapped_column(BigInteger)


SCOPES = ("admin", "enroll", "verify")


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (
        CheckConstraint(
            "liveness_policy IN ('off', 'report', 'require')", name="ck_collections_liveness_policy"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # Presentation-attack policy: off, report or require (services/liveness.py).
    liveness_policy: Mapped[str] = mapped_column(String(16), nullable=False, server_default="off")
    created_at: Mapped[datetime] = created_at_column()
    # The active face model (0450_model_migration); NULL follows settings.embedder.
    face_model: Mapped[str | None] = mapped_column(String(128))


class IdentityRow(Base):
    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id", name="uq_identities_collection_external"),
        Index("ix_identities_collection_display_name", "collection_id", "display_name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    collection_id: Mapped[int] = collection_id_column()
    external_id: Mapped[str] = mapped_column(String(256), nullable=False)
    display_name: Mapped[str] = mapped_column(String(256), nullable=False, server_default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default="{}"
    )
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    templates: Mapped[list[FaceTemplate]] = relationship(
        back_populates="identity", passive_deletes=True, order_by="FaceTemplate.id"
    )


class FaceTemplate(Base):
    __tablename__ = "face_templates"
    __table_args__ = (
        UniqueConstraint(
            "identity_id", "model_name", "source_sha256", name="uq_face_templates_identity_source"
        ),
        Index("ix_face_templates_collection_model", "collection_id", "model_name"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    identity_id: Mapped[uuid.UUID] = identity_id_column()
    # Denormalised so the index for (collection, model) is one indexed scan without a join.
    collection_id: Mapped[int] = collection_id_column()
    model_name: Mapped[str] = mapped_column(String(128), nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    quality: Mapped[float | None] = mapped_column(Float)
    quality_reasons: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default="[]")
    det_score: Mapped[float | None] = mapped_column(Float)
    bbox: Mapped[list[float]] = mapped_column(JSONB, nullable=False)
    landmarks: Mapped[list[list[float]]] = mapped_column(JSONB, nullable=False)
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    # File name under settings.thumbnails_dir; files are easier to serve and to erase than
    # bytea, and keep the table small for the index scan.
    thumbnail: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = created_at_column()
    key_id: Mapped[int | None] = key_id_column()
    # 0450_model_migration: the sealed source crop file (beside the thumbnail), the face's box
    # and landmarks in its pixels, and the template this one was re-embedded from.
    crop: Mapped[str | None] = mapped_column(String(128))
    crop_geometry: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    migrated_from: Mapped[int | None] = mapped_column(BigInteger)
    # 0430_template_liveness: the presentation-attack check at enrollment, when one ran: the
    # fused live probability (null when not run or the face could not be judged) and the verdict
    # as it was given then (policy, live, reason, threshold, operating point, models), since the
    # threshold may be recalibrated later. Null verdict = no check ran. Kept by re-embedding.
    liveness: Mapped[float | None] = mapped_column(Float)
    liveness_verdict: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    identity: Mapped[IdentityRow] = relationship(back_populates="templates")


class DataKey(Base):
    __tablename__ = "data_keys"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("collections.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    kek_id: Mapped[str] = mapped_column(String(16), nullable=False)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    rewrapped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IndexChange(Base):
    __tablename__ = "index_changes"
    __table_args__ = (
        CheckConstraint("op IN ('add', 'remove')", name="ck_index_changes_op"),
        CheckConstraint("kind IN ('face', 'body')", name="ck_index_changes_kind"),
        Index("ix_index_changes_collection_model_seq", "collection_id", "model_name", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    collection_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    model_name: Mapped[str] = mapped_column(String(128), nullable=False)
    template_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    op: Mapped[str] = mapped_column(String(8), nullable=False)
    at: Mapped[datetime] = created_at_column()
    # 'face' (face_templates) or 'body' (body_templates): the two tables' ids overlap
    kind: Mapped[str] = mapped_column(String(8), nullable=False, server_default="face")


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("scope IN ('admin', 'enroll', 'verify')", name="ck_api_keys_scope"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    key_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    collection_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("collections.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(128), nullable=False, server_default="")
    created_at: Mapped[datetime] = created_at_column()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    collection: Mapped[Collection | None] = relationship()


class DashboardSession(Base):
    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    key_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = created_at_column()
    actor_key_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    collection: Mapped[str | None] = mapped_column(String(64))
    identity_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    # Scores, counts and error codes only: never embeddings, images or thumbnails.
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    row_hash: Mapped[str] = mapped_column(String(64), nullable=False)


# --- bodies (migration 0201_body) -------------------------------------------------------------
class BodyTemplate(Base):
    __tablename__ = "body_templates"
    __table_args__ = (
        UniqueConstraint(
            "identity_id", "model_name", "source_sha256", name="uq_body_templates_identity_source"
        ),
        Index("ix_body_templates_collection_model", "collection_id", "model_name"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    identity_id: Mapped[uuid.UUID] = identity_id_column()
    collection_id: Mapped[int] = collection_id_column()
    model_name: Mapped[str] = mapped_column(String(128), nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    det_score: Mapped[float | None] = mapped_column(Float)
    bbox: Mapped[list[float]] = mapped_column(JSONB, nullable=False)
    # SHA-256 of the image bytes and the person box: the same person of the same photo twice is
    # a duplicate, two people of one group photo are not.
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    key_id: Mapped[int | None] = key_id_column()


# --- batch gallery indexing (migration 0101_gallery) ---------------------------------------
class GalleryJob(Base):
    __tablename__ = "gallery_jobs"
    __table_args__ = (
        Index("ix_gallery_jobs_collection", "collection_id", "created_at"),
        CheckConstraint("kind IN ('ingest', 'migrate')", name="ck_gallery_jobs_kind"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    collection_id: Mapped[int] = collection_id_column()
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    source: Mapped[str] = mapped_column(Text, nullable=False)
    label_mode: Mapped[str] = mapped_column(String(16), nullable=False, default="none")
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    total: Mapped[int | None] = mapped_column(Integer)
    seen: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    skipped_known: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    enrolled: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rejected: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    unreadable: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # ingest (services/gallery/ingest.py) or migrate (services/gallery/migrate.py), 0450
    kind: Mapped[str] = mapped_column(String(16), nullable=False, server_default="ingest")


class GalleryCluster(Base):
    __tablename__ = "gallery_clusters"
    __table_args__ = (Index("ix_gallery_clusters_collection", "collection_id", "model_name"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = collection_id_column()
    model_name: Mapped[str] = mapped_column(String(128), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="proposed")
    # CASCADE since 0320: erasing the identity drops its named clusters with it.
    identity_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("identities.id", ondelete="CASCADE")
    )
    method: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    created_at: Mapped[datetime] = created_at_column()


class GalleryFace(Base):
    __tablename__ = "gallery_faces"
    __table_args__ = (
        UniqueConstraint(
            "collection_id", "model_name", "source_sha256", "bbox", name="uq_gallery_faces_source"
        ),
        Index("ix_gallery_faces_cluster", "cluster_id"),
        Index("ix_gallery_faces_template", "template_id"),
        Index("ix_gallery_faces_collection_model", "collection_id", "model_name"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = collection_id_column()
    model_name: Mapped[str] = mapped_column(String(128), nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    quality: Mapped[float | None] = mapped_column(Float)
    quality_reasons: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)
    det_score: Mapped[float | None] = mapped_column(Float)
    bbox: Mapped[list[float]] = mapped_column(JSONB, nullable=False)
    landmarks: Mapped[list[list[float]]] = mapped_column(JSONB, nullable=False)
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    rel_path: Mapped[str] = mapped_column(Text, nullable=False, default="")
    thumbnail_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)
    cluster_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("gallery_clusters.id", ondelete="SET NULL")
    )
    # CASCADE since 0320: a named face goes with its template (erase, remove face), so a
    # recluster can never bring an erased person back.
    template_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("face_templates.id", ondelete="CASCADE")
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("gallery_jobs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_at_column()
    key_id: Mapped[int | None] = key_id_column()


class GalleryImage(Base):
    __tablename__ = "gallery_images"

    collection_id: Mapped[int] = collection_id_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    rel_path: Mapped[str] = mapped_column(Text, nullable=False)
    label: Mapped[str | None] = mapped_column(String(256))
    faces_found: Mapped[int] = mapped_column(Integer, nullable=False)
    faces_enrolled: Mapped[int] = mapped_column(Integer, nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("gallery_jobs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_at_column()
