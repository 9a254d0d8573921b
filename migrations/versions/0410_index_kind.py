"""Body templates join the index change log: ``index_changes.kind`` says which table a row's
``template_id`` points into ('face' -> ``face_templates``, 'body' -> ``body_templates``; the two
id sequences overlap). Existing rows are all face changes; body indexes have no snapshot yet, so
the first start after this upgrade builds them from ``body_templates``.

Revision ID: 0410_index_kind
Revises: 0402_admin_sessions
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0410_index_kind"
down_revision = "0402_admin_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "index_changes",
        sa.Column("kind", sa.String(8), nullable=False, server_default="face"),
    )
    op.create_check_constraint("ck_index_changes_kind", "index_changes", "kind IN ('face', 'body')")


def downgrade() -> None:
    op.execute("DELETE FROM index_changes WHERE kind = 'body'")
    op.drop_constraint("ck_index_changes_kind", "index_changes", type_="check")
    op.drop_column("index_changes", "kind")
