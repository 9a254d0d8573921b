"""Body templates: person re-ID embeddings of the same identities as the face templates.

- ``body_templates``: one embedding per enrolled person crop, per body model; ``id`` (bigint) is
  also the FAISS id in the (collection, body model) index. Same identity rows as faces, so an
  erased identity loses its body templates by cascade. ``bbox`` is the person box in the source
  image; ``source_sha256`` makes the same image and box enrolled twice a duplicate.

Revision ID: 0201_body
Revises: 0101_gallery
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0201_body"
down_revision = "0101_gallery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "body_templates",
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
        sa.Column("det_score", sa.Float()),
        sa.Column("bbox", postgresql.JSONB(), nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint(
            "identity_id", "model_name", "source_sha256", name="uq_body_templates_identity_source"
        ),
    )
    op.create_index(
        "ix_body_templates_collection_model", "body_templates", ["collection_id", "model_name"]
    )


def downgrade() -> None:
    op.drop_index("ix_body_templates_collection_model", table_name="body_templates")
    op.drop_table("body_templates")
