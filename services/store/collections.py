"""Collections: create, list, update, get and delete (templates, thumbnails, index snapshots)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from identity.errors import InvalidInput
from services.db import vacuum
from services.errors import Conflict
from services.liveness import check_policy
from services.store.core import COLLECTION_NAME, StoreCore
from services.tables import Collection, FaceTemplate, IdentityRow, IndexChange


class CollectionsMixin(StoreCore):
    """Collections, addressed by ``name``."""

    @staticmethod
    def _collection_dict(c: Collection, identities: int = 0, templates: int = 0) -> dict[str, Any]:
        return {
            "name": c.name,
            "description": c.description,
            "liveness_policy": c.liveness_policy,
            "created_at": c.created_at.isoformat(),
            "identities": identities,
            "templates": templates,
        }

    def create_collection(
        self,
        name: str,
        description: str = "",
        actor: int | None = None,
        liveness_policy: str = "off",
    ) -> dict[str, Any]:
        if not COLLECTION_NAME.match(name or ""):
            raise InvalidInput(
                "collection name: 1-64 of a-z 0-9 _ -, starting with a letter or digit", name=name
            )
        check_policy(liveness_policy)
        try:
            with self.sessions.begin() as s:
                c = Collection(
                    name=name, description=description or "", liveness_policy=liveness_policy
                )
                s.add(c)
                s.flush()
                s.refresh(c)
                self._audit(
                    s,
                    actor,
                    "collection.create",
                    "ok",
                    collection=name,
                    liveness_policy=liveness_policy,
                )
        except IntegrityError:
            raise Conflict(f"collection '{name}' already exists", collection=name) from None
        return self._collection_dict(c)

    def list_collections(self, only: str | None = None) -> list[dict[str, Any]]:
        with self.sessions() as s:
            q = select(Collection).order_by(Collection.name)
            if only is not None:
                q = q.where(Collection.name == only)
            rows = s.execute(q).scalars().all()
            ids = [c.id for c in rows]
            n_ident = dict(
                s.execute(
                    select(IdentityRow.collection_id, func.count())
                    .where(IdentityRow.collection_id.in_(ids))
                    .group_by(IdentityRow.collection_id)
                ).all()
            )
            n_tmpl = dict(
                s.execute(
                    select(FaceTemplate.collection_id, func.count())
                    .where(FaceTemplate.collection_id.in_(ids))
                    .group_by(FaceTemplate.collection_id)
                ).all()
            )
        return [self._collection_dict(c, n_ident.get(c.id, 0), n_tmpl.get(c.id, 0)) for c in rows]

    def update_collection(
        self,
        name: str,
        description: str | None = None,
        liveness_policy: str | None = None,
        actor: int | None = None,
    ) -> dict[str, Any]:
        """Change a collection's description and/or liveness policy (None = keep)."""
        if liveness_policy is not None:
            check_policy(liveness_policy)
        with self.sessions.begin() as s:
            c = self._collection(s, name)
            changes: dict[str, Any] = {}
            if description is not None and description != c.description:
                c.description = changes["description"] = description
            if liveness_policy is not None and liveness_policy != c.liveness_policy:
                changes["liveness_policy"] = [c.liveness_policy, liveness_policy]
                c.liveness_policy = liveness_policy
            self._audit(s, actor, "collection.update", "ok", collection=name, **changes)
        return self.get_collection(name)

    def get_collection(self, name: str) -> dict[str, Any]:
        with self.sessions() as s:
            self._collection(s, name)
        return self.list_collections(only=name)[0]

    def delete_collection(self, name: str, actor: int | None = None) -> dict[str, Any]:
        """Delete a collection with its templates, thumbnails and index snapshots."""
        with self.sessions.begin() as s:
            c = self._collection(s, name)
            self._lock_collection(s, c.id)
            files = s.execute(
                select(FaceTemplate.thumbnail, FaceTemplate.crop).where(
                    FaceTemplate.collection_id == c.id
                )
            ).all()
            n_ident = s.execute(
                select(func.count()).where(IdentityRow.collection_id == c.id)
            ).scalar_one()
            # The change log of a deleted collection is meaningless; its index is dropped whole.
            s.execute(delete(IndexChange).where(IndexChange.collection_id == c.id))
            s.delete(c)  # identities, templates and scoped keys cascade in Postgres
            self._audit(
                s,
                actor,
                "collection.delete",
                "ok",
                collection=name,
                identities=n_ident,
                templates=len(files),
            )
            cid = c.id
        self._remove_thumbnails(cid, [f for pair in files for f in pair if f])
        self.indexes.drop(cid)
        vacuum(self.engine, mode=self.settings.erase_vacuum)
        return {"deleted": name, "identities": n_ident, "templates": len(files)}
