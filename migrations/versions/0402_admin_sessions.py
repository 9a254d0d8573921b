"""Dashboard sessions kept server-side: sign-out and key revocation end them in every worker.

- ``admin_sessions``: sha256 of the random session token the signed cookie carries (never the
  API key), the key it signed in with (the session goes with the key), expiry and end time.

Revision ID: 0402_admin_sessions
Revises: 0401_audit_chain
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0402_admin_sessions"
down_revision = "0401_audit_chain"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column(
            "key_id",
            sa.BigInteger(),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("ended_at", TZ),
        sa.UniqueConstraint("token_sha256", name="admin_sessions_token_sha256_key"),
    )
    op.create_index("ix_admin_sessions_key_id", "admin_sessions", ["key_id"])


def downgrade() -> None:
    op.drop_table("admin_sessions")
