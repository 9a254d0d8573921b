"""The presentation-attack check of enrollment kept with each face template.

- ``face_templates.liveness``: the fused live probability of the enrolled face (null when no
  check ran, or the face could not be judged);
- ``face_templates.liveness_verdict``: the verdict as the collection's policy gave it then
  (policy, live, reason, threshold, operating point, models); null when no check ran.

Existing templates get nulls: nothing was checked when they were enrolled, or it was not kept.
It follows 0450_model_migration (which landed first) so the chain keeps one head.

Revision ID: 0430_template_liveness
Revises: 0450_model_migration
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0430_template_liveness"
down_revision = "0450_model_migration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("face_templates", sa.Column("liveness", sa.Float()))
    op.add_column("face_templates", sa.Column("liveness_verdict", JSONB()))


def downgrade() -> None:
    op.drop_column("face_templates", "liveness_verdict")
    op.drop_column("face_templates", "liveness")
