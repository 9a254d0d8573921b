"""Batch gallery indexing: jobs, processed images (SHA-256 dedupe), unassigned faces, clusters.

- ``gallery_jobs``: one row per indexing run (CLI or API) with progress counters, updated in the
  same transaction as each batch's data, so the counts always match what is stored.
- ``gallery_images``: one row per image analysed into a collection for a model; the primary key
  (collection, model, sha256) is what makes a rerun skip it.
- ``gallery_faces``: faces from unlabelled galleries, not yet anyone's template (so they are not
  searchable as an identity); ``cluster_id`` is the proposed identity; ``template_id`` is set once
  an operator names the cluster and the face becomes a ``face_templates`` row.
- ``gallery_clusters``: proposed identities (``proposed``) and the ones already named (``named``).

Revision ID: 0101_gallery
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0101_gallery"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _collection_fk() -> sa.Column:
    return sa.Column(
        "collection_id",
        sa.BigInteger(),
        sa.ForeignKey("collections.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "gallery_jobs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        _collection_fk(),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("label_mode", sa.String(16), nullable=False, server_default="none"),
        sa.Column("params", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("total", sa.Integer()),
        sa.Column("seen", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped_known", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("enrolled", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("unreadable", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("report", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'interrupted')",
            name="ck_gallery_jobs_status",
        ),
    )
    op.create_index("ix_gallery_jobs_collection", "gallery_jobs", ["collection_id", "created_at"])
    op.create_table(
        "gallery_clusters",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        _collection_fk(),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="proposed"),
        sa.Column(
            "identity_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("identities.id", ondelete="SET NULL"),
        ),
        sa.Column("method", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('proposed', 'named')", name="ck_gallery_clusters_status"),
    )
    op.create_index(
        "ix_gallery_clusters_collection", "gallery_clusters", ["collection_id", "model_name"]
    )
    op.create_table(
        "gallery_faces",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        _collection_fk(),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("quality", sa.Float()),
        sa.Column("quality_reasons", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("det_score", sa.Float()),
        sa.Column("bbox", postgresql.JSONB(), nullable=False),
        sa.Column("landmarks", postgresql.JSONB(), nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("rel_path", sa.Text(), nullable=False, server_default=""),
        sa.Column("thumbnail_jpeg", sa.LargeBinary()),
        sa.Column(
            "cluster_id",
            sa.BigInteger(),
            sa.ForeignKey("gallery_clusters.id", ondelete="SET NULL"),
        ),
        sa.Column(
            "template_id",
            sa.BigInteger(),
            sa.ForeignKey("face_templates.id", ondelete="SET NULL"),
        ),
        sa.Column(
            "job_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("gallery_jobs.id", ondelete="SET NULL"),
        ),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint(
            "collection_id", "model_name", "source_sha256", "bbox", name="uq_gallery_faces_source"
        ),
    )
    op.create_index("ix_gallery_faces_cluster", "gallery_faces", ["cluster_id"])
    op.create_index(
        "ix_gallery_faces_collection_model", "gallery_faces", ["collection_id", "model_name"]
    )
    op.create_table(
        "gallery_images",
        _collection_fk(),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rel_path", sa.Text(), nullable=False),
        sa.Column("label", sa.String(256)),
        sa.Column("faces_found", sa.Integer(), nullable=False),
        sa.Column("faces_enrolled", sa.Integer(), nullable=False),
        sa.Column(
            "job_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("gallery_jobs.id", ondelete="SET NULL"),
        ),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("collection_id", "model_name", "sha256", name="pk_gallery_images"),
    )


def downgrade() -> None:
    for table in ("gallery_images", "gallery_faces", "gallery_clusters", "gallery_jobs"):
        op.drop_table(table)
