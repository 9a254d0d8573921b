"""Liveness policy per collection: ``collections.liveness_policy`` (off, report, require).

Existing collections get ``off``, which keeps their behaviour (no presentation-attack check
unless a request opts in).

Revision ID: 0301_liveness
Revises: 0201_body
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0301_liveness"
down_revision = "0201_body"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "collections",
        sa.Column("liveness_policy", sa.String(16), nullable=False, server_default="off"),
    )
    op.create_check_constraint(
        "ck_collections_liveness_policy",
        "collections",
        "liveness_policy IN ('off', 'report', 'require')",
    )


def downgrade() -> None:
    op.drop_constraint("ck_collections_liveness_policy", "collections", type_="check")
    op.drop_column("collections", "liveness_policy")
