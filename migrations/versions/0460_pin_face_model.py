"""Pin every existing collection to the face model its faces were embedded with.

The default embedder changed from ``dlib_resnet_v1`` to ``arcface_w600k_mbf_int8``. A collection
whose ``face_model`` is NULL follows ``IDENTITY_EMBEDDER``, so after an upgrade its enrolled
people would silently stop matching (their templates are of the old model). This revision writes
the model that holds most of the collection's templates and gallery faces into ``face_model``;
collections without faces stay NULL and follow the new default. Moving a pinned collection to the
new model is then an ordinary model migration (``identity templates migrate``, then ``switch``).

Revision ID: 0460_pin_face_model
Revises: 0430_template_liveness
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0460_pin_face_model"
down_revision = "0430_template_liveness"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE collections c SET face_model = pick.model_name
        FROM (
            SELECT DISTINCT ON (collection_id) collection_id, model_name
            FROM (
                SELECT collection_id, model_name FROM face_templates
                UNION ALL
                SELECT collection_id, model_name FROM gallery_faces
            ) faces
            GROUP BY collection_id, model_name
            ORDER BY collection_id, count(*) DESC, model_name
        ) pick
        WHERE c.id = pick.collection_id AND c.face_model IS NULL
        """
    )


def downgrade() -> None:
    # Which collections were NULL before is not recorded; a pin is harmless under either default.
    pass
