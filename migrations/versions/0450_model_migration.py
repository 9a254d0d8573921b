"""Changing a collection's face model without re-enrolment (docs/model-migration.md).

- ``collections.face_model``: the collection's active face model; NULL follows the service's
  ``IDENTITY_EMBEDDER`` as before this revision. Set by ``identity templates switch``.
- ``face_templates.crop``: file name (under ``thumbnails_dir``, sealed like the thumbnail) of
  the template's source crop, a margin crop around the face that every supported alignment can
  be re-derived from; ``crop_geometry`` holds the face's box and 5 landmarks in that crop's
  pixels. ``migrated_from``: the template (of the previous model) this one was re-embedded from.
- ``gallery_jobs.kind``: ``ingest`` (batch gallery ingestion) or ``migrate`` (re-embedding a
  collection's templates with another model); both run on the same job machinery.

Revision ID: 0450_model_migration
Revises: 0402_admin_sessions
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0450_model_migration"
down_revision = "0402_admin_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("collections", sa.Column("face_model", sa.String(128)))
    op.add_column("face_templates", sa.Column("crop", sa.String(128)))
    op.add_column("face_templates", sa.Column("crop_geometry", JSONB))
    op.add_column("face_templates", sa.Column("migrated_from", sa.BigInteger()))
    op.add_column(
        "gallery_jobs",
        sa.Column("kind", sa.String(16), nullable=False, server_default="ingest"),
    )
    op.create_check_constraint(
        "ck_gallery_jobs_kind", "gallery_jobs", "kind IN ('ingest', 'migrate')"
    )


def downgrade() -> None:
    op.drop_constraint("ck_gallery_jobs_kind", "gallery_jobs")
    op.drop_column("gallery_jobs", "kind")
    op.drop_column("face_templates", "migrated_from")
    op.drop_column("face_templates", "crop_geometry")
    op.drop_column("face_templates", "crop")
    op.drop_column("collections", "face_model")
