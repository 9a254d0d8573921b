"""SQLAlchemy model of ``body_templates`` (migration 0201_body), on the service's one ``Base``.

One row per enrolled person crop and body model: the re-ID embedding (raw little-endian float32,
L2-normalised, sealed with
the collection's data key: ``key_id``) of an identity that also has (or may have) face templates. ``id`` is the FAISS id
in the (collection, body model) index. Rows go with their identity (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.schema import (
    Base,
    collection_id_column,
    created_at_column,
    identity_id_column,
    key_id_column,
)


class BodyTemplate(Base):
    __tablename__ = "body_templates"
    __table_args__ = (
        UniqueConstraint(
            "identity_id", "model_name", "source_sha256", name="uq_body_templates_identity_source"
        ),
        Index("ix_body_templates_collection_model", "collection_id", "model_name"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    identity_id: Mapped[uuid.UUID] = identity_id_column()
    collection_id: Mapped[int] = collection_id_column()
    model_name: Mapped[str] = mapped_column(String(128), nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    det_score: Mapped[float | None] = mapped_column(Float)
    bbox: Mapped[list[float]] = mapped_column(JSONB, nullable=False)
    # SHA-256 of the image bytes and the person box: the same person of the same photo twice is
    # a duplicate, two people of one group photo are not.
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    key_id: Mapped[int | None] = key_id_column()
