"""Body templates: insert one (sealed, logged for the body index), and the reads the body store's
identification needs (index search, exact best template per identity, owners, names).

The analysis and the face + body fusion live in ``services.body_store``; this module only
touches the tables and the indexes, so nothing outside ``services/store/`` reaches into them.
Reads that serve both modalities take ``kind`` ('face' | 'body', ``TEMPLATE_TABLES``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from identity.faces import Faces
from services.change_log import TEMPLATE_TABLES, Kind, embedding_to_bytes
from services.errors import DuplicateImage
from services.sealed import EMBEDDING
from services.store.core import StoreCore
from services.tables import BodyTemplate, IdentityRow
from services.vector_store import VectorStore


class BodiesMixin(StoreCore):
    """Body template rows and the per-kind reads of 1:N by body (and the face fused with it)."""

    def add_body_template(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        model_name: str,
        model_version: str,
        embedding: np.ndarray,
        det_score: float,
        bbox: list[float],
        source_sha256: str,
        actor: int | None = None,
    ) -> int:
        """Store one person crop's embedding as a body template; DuplicateImage when this
        identity already has this person of this image for this model."""
        try:
            with self.write(collection, actor) as w:
                s, c = w.session, w.collection
                row = w.identity(identity_id)
                dup = s.execute(
                    select(BodyTemplate.id).where(
                        BodyTemplate.identity_id == row.id,
                        BodyTemplate.model_name == model_name,
                        BodyTemplate.source_sha256 == source_sha256,
                    )
                ).first()
                if dup is not None:
                    raise DuplicateImage(
                        "this person in this image is already enrolled for this identity",
                        template_id=dup[0],
                    )
                key_id, sealed = self.sealer.seal(c.id, embedding_to_bytes(embedding), EMBEDDING)
                t = BodyTemplate(
                    identity_id=row.id,
                    collection_id=c.id,
                    model_name=model_name,
                    model_version=model_version,
                    dim=int(embedding.shape[0]),
                    embedding=sealed,
                    key_id=key_id,
                    det_score=det_score,
                    bbox=bbox,
                    source_sha256=source_sha256,
                )
                s.add(t)
                s.flush()
                w.template_added(t.id, t.model_name, kind="body")
                w.audit("body.enroll", "accepted", identity_id=row.id, templates=[t.id])
                return int(t.id)
        except IntegrityError as exc:
            raise DuplicateImage("this person in this image is already enrolled") from exc

    def body_models(self, collection_id: int, configured: str) -> list[str]:
        """``configured`` first, then every other body model with templates in the collection."""
        with self.sessions() as s:
            found = s.execute(
                select(BodyTemplate.model_name)
                .where(BodyTemplate.collection_id == collection_id)
                .distinct()
            ).scalars()
            return [configured] + sorted(m for m in found if m != configured)

    def detect_faces(self, image: np.ndarray, model: str | None = None) -> Faces:
        """The faces of one decoded image with embeddings of ``model`` (default: the service's
        embedder)."""
        return self.analyzer_for(model or self.model_name).analyze([image])

    def _indexes_of(self, kind: Kind) -> VectorStore:
        return self.indexes if kind == "face" else self.body_indexes

    def search_templates(
        self, kind: Kind, collection_id: int, model: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, template ids) from the (collection, model) index of that kind."""
        return self._indexes_of(kind).search(collection_id, model, queries, k)

    def template_vectors(
        self, kind: Kind, collection_id: int, model: str, template_ids: Sequence[int]
    ) -> tuple[list[uuid.UUID], np.ndarray]:
        """(owner identity per row, (n, dim) vectors) of these templates of (collection, model)."""
        table = TEMPLATE_TABLES[kind]
        with self.sessions() as s:
            rows = s.execute(
                select(table.identity_id, table.dim, table.embedding, table.key_id).where(
                    table.id.in_(list(template_ids)),
                    table.collection_id == collection_id,
                    table.model_name == model,
                )
            ).all()
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        vectors = np.stack(
            [self.sealer.embedding(blob, key_id, dim) for _, dim, blob, key_id in rows]
        )
        return [r[0] for r in rows], vectors

    def best_template_per_identity(
        self, kind: Kind, model: str, identity_ids: set[uuid.UUID], query: np.ndarray
    ) -> dict[uuid.UUID, tuple[float, int]]:
        """Exact max similarity (and its template id) per identity, from Postgres."""
        if not identity_ids:
            return {}
        table = TEMPLATE_TABLES[kind]
        with self.sessions() as s:
            rows = s.execute(
                select(table.identity_id, table.id, table.dim, table.embedding, table.key_id).where(
                    table.identity_id.in_(identity_ids), table.model_name == model
                )
            ).all()
        best: dict[uuid.UUID, tuple[float, int]] = {}
        for iid, tid, dim, blob, key_id in rows:
            sim = float(self.sealer.embedding(blob, key_id, dim) @ query)
            if iid not in best or sim > best[iid][0]:
                best[iid] = (sim, int(tid))
        return best

    def template_owners(self, kind: Kind, template_ids: np.ndarray) -> set[uuid.UUID]:
        """The identities owning these template ids (-1, no hit, ignored)."""
        wanted = {int(t) for t in np.asarray(template_ids).ravel() if t >= 0}
        if not wanted:
            return set()
        table = TEMPLATE_TABLES[kind]
        with self.sessions() as s:
            return {r[0] for r in s.execute(select(table.identity_id).where(table.id.in_(wanted)))}

    def identity_names(self, identity_ids: set[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        """identity id -> (external id, display name); erased identities are absent."""
        if not identity_ids:
            return {}
        with self.sessions() as s:
            rows = s.execute(
                select(IdentityRow.id, IdentityRow.external_id, IdentityRow.display_name).where(
                    IdentityRow.id.in_(identity_ids)
                )
            ).all()
        return {iid: (ext, name) for iid, ext, name in rows}
