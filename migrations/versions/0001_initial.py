"""Initial schema: collections, identities, face templates, index change log, API keys, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("name", name="collections_name_key"),
    )
    op.create_table(
        "identities",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "collection_id",
            sa.BigInteger(),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("metadata", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint(
            "collection_id", "external_id", name="uq_identities_collection_external"
        ),
    )
    op.create_index(
        "ix_identities_collection_display_name", "identities", ["collection_id", "display_name"]
    )
    op.create_table(
        "face_templates",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "identity_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("identities.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "collection_id",
            sa.BigInteger(),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
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
        sa.Column("thumbnail", sa.String(128)),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint(
            "identity_id", "model_name", "source_sha256", name="uq_face_templates_identity_source"
        ),
    )
    op.create_index(
        "ix_face_templates_collection_model", "face_templates", ["collection_id", "model_name"]
    )
    op.create_table(
        "index_changes",
        sa.Column("seq", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("collection_id", sa.BigInteger(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("template_id", sa.BigInteger(), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("op IN ('add', 'remove')", name="ck_index_changes_op"),
    )
    op.create_index(
        "ix_index_changes_collection_model_seq",
        "index_changes",
        ["collection_id", "model_name", "seq"],
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column(
            "collection_id", sa.BigInteger(), sa.ForeignKey("collections.id", ondelete="CASCADE")
        ),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("last_used_at", TZ),
        sa.Column("revoked_at", TZ),
        sa.UniqueConstraint("prefix", name="api_keys_prefix_key"),
        sa.CheckConstraint("scope IN ('admin', 'enroll', 'verify')", name="ck_api_keys_scope"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("actor_key_id", sa.BigInteger()),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64)),
        sa.Column("identity_id", postgresql.UUID(as_uuid=True)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    for table in (
        "audit_events",
        "api_keys",
        "index_changes",
        "face_templates",
        "identities",
        "collections",
    ):
        op.drop_table(table)
