"""Audit hash chain: ``prev_hash`` and ``row_hash`` on every audit row (services/audit.py).

Rows written before this revision are chained here, in id order, exactly as new rows are
chained when written, so ``identity audit verify`` covers the whole log from the first row.

Revision ID: 0401_audit_chain
Revises: 0320_sealing
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0401_audit_chain"
down_revision = "0320_sealing"
branch_labels = None
depends_on = None

_BATCH = 2000


def upgrade() -> None:
    # The chain's hash is the one services.audit computes: a second copy here could drift from it.
    from services.audit import GENESIS, chain_hash

    op.add_column("audit_events", sa.Column("prev_hash", sa.String(64)))
    op.add_column("audit_events", sa.Column("row_hash", sa.String(64)))
    events = sa.table(
        "audit_events",
        sa.column("id", sa.BigInteger()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor_key_id", sa.BigInteger()),
        sa.column("action", sa.String()),
        sa.column("collection", sa.String()),
        sa.column("identity_id", postgresql.UUID(as_uuid=True)),
        sa.column("outcome", sa.String()),
        sa.column("details", postgresql.JSONB()),
        sa.column("prev_hash", sa.String()),
        sa.column("row_hash", sa.String()),
    )
    bind = op.get_bind()
    prev, last = GENESIS, 0
    while True:
        rows = bind.execute(
            sa.select(events).where(events.c.id > last).order_by(events.c.id).limit(_BATCH)
        ).all()
        if not rows:
            break
        updates = []
        for row in rows:
            row_hash = chain_hash(prev, row)
            updates.append({"rid": row.id, "p": prev, "h": row_hash})
            prev = row_hash
        bind.execute(
            events.update()
            .where(events.c.id == sa.bindparam("rid"))
            .values(prev_hash=sa.bindparam("p"), row_hash=sa.bindparam("h")),
            updates,
        )
        last = rows[-1].id
    op.alter_column("audit_events", "prev_hash", nullable=False)
    op.alter_column("audit_events", "row_hash", nullable=False)


def downgrade() -> None:
    op.drop_column("audit_events", "row_hash")
    op.drop_column("audit_events", "prev_hash")
