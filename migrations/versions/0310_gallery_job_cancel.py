"""Gallery jobs can be cancelled: ``cancelling`` (asked, the job stops at its next check) and
``cancelled`` (stopped; what was committed before stays). Old job errors quoting SQL are replaced.

Revision ID: 0310_job_cancel
Revises: 0301_liveness
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0310_job_cancel"
down_revision = "0301_liveness"
branch_labels = None
depends_on = None

OLD = "status IN ('queued', 'running', 'done', 'failed', 'interrupted')"
NEW = "status IN ('queued', 'running', 'cancelling', 'done', 'failed', 'interrupted', 'cancelled')"


def upgrade() -> None:
    op.drop_constraint("ck_gallery_jobs_status", "gallery_jobs", type_="check")
    op.create_check_constraint("ck_gallery_jobs_status", "gallery_jobs", NEW)
    # Errors recorded before job errors were made safe to show may quote SQL and its parameters
    # (SQLAlchemy appends "[SQL: ...]"): replace them by the message clients now get.
    op.execute(
        "UPDATE gallery_jobs SET error = 'internal error while indexing; the server log has the "
        "details (job ' || id::text || ')' WHERE error LIKE '%[SQL:%'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE gallery_jobs SET status = 'interrupted' WHERE status IN ('cancelling', 'cancelled')"
    )
    op.drop_constraint("ck_gallery_jobs_status", "gallery_jobs", type_="check")
    op.create_check_constraint("ck_gallery_jobs_status", "gallery_jobs", OLD)
