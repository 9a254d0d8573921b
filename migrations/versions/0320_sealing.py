"""Biometric data sealed at rest, and erasure that reaches the gallery tables.

- ``data_keys``: one AES-256 data key per collection, wrapped by the key-encryption key
  (``identity.sealing``), named by ``kek_id``; goes with its collection.
- ``key_id`` on ``face_templates``, ``gallery_faces`` and ``body_templates``: the data key that
  sealed the row's embedding (and a gallery face's crop). Existing rows keep ``key_id`` NULL
  (plaintext): a migration cannot know the KEK, so the service's start-up pass
  (``services.sealed.seal_legacy_rows``, also run by ``identity db upgrade``) seals them, rewrites
  their thumbnail files sealed and VACUUMs the plaintext away.
- ``gallery_faces.template_id`` and ``gallery_clusters.identity_id`` become ON DELETE CASCADE
  (were SET NULL): an erased identity's gallery faces (embeddings, crops) and named clusters go
  with it, and a recluster cannot bring the person back. ``gallery_faces`` rows already orphaned
  by an earlier erase (a face named into a cluster whose template is gone) are deleted here.

Revision ID: 0320_sealing
Revises: 0310_job_cancel
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0320_sealing"
down_revision = "0310_job_cancel"
branch_labels = None
depends_on = None

_SEALED_TABLES = ("face_templates", "gallery_faces", "body_templates")


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "collection_id",
            sa.BigInteger(),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("kek_id", sa.String(16), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True)),
    )
    for table in _SEALED_TABLES:
        op.add_column(table, sa.Column("key_id", sa.BigInteger()))

    # Faces named into a cluster whose identity was erased before this revision: their template
    # is gone (SET NULL left template_id NULL) but the cluster still says "named". They are the
    # erased person's: delete them rather than let a recluster revive them.
    op.execute(
        "DELETE FROM gallery_faces f USING gallery_clusters c "
        "WHERE f.cluster_id = c.id AND c.status = 'named' AND c.identity_id IS NULL"
    )
    op.execute("DELETE FROM gallery_clusters WHERE status = 'named' AND identity_id IS NULL")

    op.drop_constraint("gallery_faces_template_id_fkey", "gallery_faces", type_="foreignkey")
    op.create_foreign_key(
        "gallery_faces_template_id_fkey",
        "gallery_faces",
        "face_templates",
        ["template_id"],
        ["id"],
        ondelete="CASCADE",
    )
    # the cascade from face_templates looks faces up by template id
    op.create_index("ix_gallery_faces_template", "gallery_faces", ["template_id"])
    op.drop_constraint("gallery_clusters_identity_id_fkey", "gallery_clusters", type_="foreignkey")
    op.create_foreign_key(
        "gallery_clusters_identity_id_fkey",
        "gallery_clusters",
        "identities",
        ["identity_id"],
        ["id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    # Sealed rows cannot be read without the service's keys: refuse rather than leave a schema
    # whose code would take ciphertext for float32.
    bind = op.get_bind()
    for table in _SEALED_TABLES:
        if bind.execute(sa.text(f"SELECT 1 FROM {table} WHERE key_id IS NOT NULL LIMIT 1")).first():
            raise RuntimeError(
                f"{table} holds sealed rows; downgrading past 0320 would leave them unreadable"
            )
    op.drop_constraint("gallery_clusters_identity_id_fkey", "gallery_clusters", type_="foreignkey")
    op.create_foreign_key(
        "gallery_clusters_identity_id_fkey",
        "gallery_clusters",
        "identities",
        ["identity_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.drop_index("ix_gallery_faces_template", "gallery_faces")
    op.drop_constraint("gallery_faces_template_id_fkey", "gallery_faces", type_="foreignkey")
    op.create_foreign_key(
        "gallery_faces_template_id_fkey",
        "gallery_faces",
        "face_templates",
        ["template_id"],
        ["id"],
        ondelete="SET NULL",
    )
    for table in _SEALED_TABLES:
        op.drop_column(table, "key_id")
    op.drop_table("data_keys")
