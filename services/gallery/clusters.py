"""Proposed identities: cluster the unlabelled gallery faces, list, merge and name clusters."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from identity.errors import InvalidInput
from services.errors import Conflict, NotFound
from services.gallery.base import GalleryBase
from services.sealed import EMBEDDING, THUMBNAIL
from services.store import NewTemplate
from services.tables import GalleryCluster, GalleryFace, IdentityRow


class GalleryClusters(GalleryBase):
    def cluster_threshold(self, model: str) -> float:
        from identity.calibration import threshold_for

        return float(threshold_for(model, self.settings.cluster_far, self.settings))

    def recluster(
        self,
        collection: str,
        method: Literal["graph", "components", "hdbscan"] = "graph",
        threshold: float | None = None,
        min_size: int = 2,
    ) -> dict[str, Any]:
        """Replace the proposed clusters of the collection's unassigned faces with a fresh
        clustering (named clusters are untouched: their faces are templates already)."""
        from identity.gallery.cluster import cluster_embeddings

        model = self.store.model_of(collection)
        if method != "hdbscan" and threshold is None:
            threshold = self.cluster_threshold(model)
        with self.store.write(collection) as w:
            s, c = w.session, w.collection
            rows = s.execute(
                select(GalleryFace.id, GalleryFace.dim, GalleryFace.embedding, GalleryFace.key_id)
                .where(
                    GalleryFace.collection_id == c.id,
                    GalleryFace.model_name == model,
                    GalleryFace.template_id.is_(None),
                )
                .order_by(GalleryFace.id)
            ).all()
            s.execute(
                update(GalleryFace)
                .where(GalleryFace.collection_id == c.id, GalleryFace.template_id.is_(None))
                .values(cluster_id=None)
            )
            s.execute(
                delete(GalleryCluster).where(
                    GalleryCluster.collection_id == c.id,
                    GalleryCluster.model_name == model,
                    GalleryCluster.status == "proposed",
                )
            )
            if not rows:
                return {"clusters": 0, "clustered_faces": 0, "unclustered_faces": 0}
            x = np.stack([self.store.sealer.embedding(r[2], r[3], r[1]) for r in rows])
            result = cluster_embeddings(x, method=method, threshold=threshold, min_size=min_size)
            face_ids = np.array([r[0] for r in rows], dtype=np.int64)
            for members in result.members():
                cl = GalleryCluster(collection_id=c.id, model_name=model, method=method)
                s.add(cl)
                s.flush()
                s.execute(
                    update(GalleryFace)
                    .where(GalleryFace.id.in_(face_ids[members].tolist()))
                    .values(cluster_id=cl.id)
                )
            clustered = int((result.labels >= 0).sum())
            return {
                "clusters": result.n_clusters,
                "clustered_faces": clustered,
                "unclustered_faces": len(rows) - clustered,
                "method": method,
                "threshold": threshold,
            }

    def list_clusters(
        self, collection: str, status: str | None = "proposed", limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise InvalidInput("limit must be 1-1000 and offset >= 0")
        with self.store.read(collection) as (s, c):
            where = [GalleryCluster.collection_id == c.id]
            if status:
                where.append(GalleryCluster.status == status)
            size = func.count(GalleryFace.id).label("size")
            rows = s.execute(
                select(GalleryCluster, size)
                .outerjoin(GalleryFace, GalleryFace.cluster_id == GalleryCluster.id)
                .where(*where)
                .group_by(GalleryCluster.id)
                .order_by(size.desc(), GalleryCluster.id)
                .limit(limit)
                .offset(offset)
            ).all()
            ids = [cl.id for cl, _ in rows]
            faces: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
            for f in s.execute(
                select(
                    GalleryFace.id,
                    GalleryFace.cluster_id,
                    GalleryFace.rel_path,
                    GalleryFace.quality,
                    GalleryFace.bbox,
                )
                .where(GalleryFace.cluster_id.in_(ids))
                .order_by(GalleryFace.quality.desc().nulls_last(), GalleryFace.id)
            ).all():
                faces[f.cluster_id].append(
                    {"face_id": f.id, "path": f.rel_path, "quality": f.quality, "bbox": f.bbox}
                )
            unclustered = s.execute(
                select(func.count()).where(
                    GalleryFace.collection_id == c.id,
                    GalleryFace.cluster_id.is_(None),
                    GalleryFace.template_id.is_(None),
                )
            ).scalar_one()
        return {
            "items": [
                {
                    "id": cl.id,
                    "status": cl.status,
                    "size": n,
                    "identity_id": None if cl.identity_id is None else str(cl.identity_id),
                    "method": cl.method,
                    "faces": faces[cl.id][:20],
                }
                for cl, n in rows
            ],
            "unclustered_faces": unclustered,
        }

    def _cluster(self, s: Session, collection_id: int, cluster_id: int) -> GalleryCluster:
        cl = s.get(GalleryCluster, int(cluster_id))
        if cl is None or cl.collection_id != collection_id:
            raise NotFound(f"cluster {cluster_id} not found", cluster_id=cluster_id)
        return cl

    def merge_clusters(
        self, collection: str, target: int, sources: list[int], actor: int | None = None
    ) -> dict[str, Any]:
        """Move every face of ``sources`` into ``target`` (all proposed) and drop the sources."""
        sources = [int(x) for x in sources if int(x) != int(target)]
        if not sources:
            raise InvalidInput("give at least one cluster to merge into the target")
        with self.store.write(collection, actor) as w:
            s, c = w.session, w.collection
            tgt = self._cluster(s, c.id, target)
            for src_id in sources:
                src = self._cluster(s, c.id, src_id)
                if src.status != "proposed" or tgt.status != "proposed":
                    raise Conflict("only proposed clusters can be merged; name the result after")
            s.execute(
                update(GalleryFace)
                .where(GalleryFace.cluster_id.in_(sources))
                .values(cluster_id=tgt.id)
            )
            s.execute(delete(GalleryCluster).where(GalleryCluster.id.in_(sources)))
            size = s.execute(
                select(func.count()).where(GalleryFace.cluster_id == tgt.id)
            ).scalar_one()
            w.audit("gallery.cluster.merge", "ok", target=tgt.id, merged=sources)
        return {"id": int(target), "size": int(size), "merged": sources}

    def name_cluster(
        self,
        collection: str,
        cluster_id: int,
        external_id: str | None = None,
        display_name: str = "",
        identity_id: str | None = None,
        actor: int | None = None,
    ) -> dict[str, Any]:
        """Turn a proposed cluster into an identity: a new one (``external_id``) or an existing
        one (``identity_id``); its faces become templates, searchable from then on."""
        if (external_id is None) == (identity_id is None):
            raise InvalidInput("give exactly one of external_id (new identity) or identity_id")
        if external_id is not None and not 1 <= len(external_id) <= 256:
            raise InvalidInput("external_id must be 1-256 characters")
        with self.store.write(collection, actor) as w:
            s, c = w.session, w.collection
            cl = self._cluster(s, c.id, cluster_id)
            if cl.status != "proposed":
                raise Conflict(f"cluster {cluster_id} is already named", cluster_id=cluster_id)
            if identity_id is not None:
                ident = w.identity(identity_id)
            else:
                exists = s.execute(
                    select(IdentityRow.id).where(
                        IdentityRow.collection_id == c.id,
                        IdentityRow.external_id == external_id,
                    )
                ).first()
                if exists is not None:
                    raise Conflict(
                        f"external_id '{external_id}' already exists; pass its identity_id "
                        "to add this cluster to it",
                        identity_id=str(exists[0]),
                    )
                ident = IdentityRow(
                    collection_id=c.id,
                    external_id=external_id,
                    display_name=display_name or external_id or "",
                    metadata_={"source": "gallery_cluster"},
                )
                s.add(ident)
                s.flush()
            faces = (
                s.execute(select(GalleryFace).where(GalleryFace.cluster_id == cl.id))
                .scalars()
                .all()
            )
            opened = self.store.sealer.open_row
            templates = w.add_templates(
                [
                    NewTemplate(
                        identity_id=ident.id,
                        model_name=f.model_name,
                        model_version=f.model_version,
                        dim=f.dim,
                        embedding=opened(f.embedding, f.key_id, EMBEDDING),
                        quality=f.quality,
                        quality_reasons=f.quality_reasons,
                        det_score=f.det_score,
                        bbox=f.bbox,
                        landmarks=f.landmarks,
                        source_sha256=f.source_sha256,
                        thumbnail_jpeg=None
                        if f.thumbnail_jpeg is None
                        else opened(f.thumbnail_jpeg, f.key_id, THUMBNAIL),
                    )
                    for f in faces
                ]
            )
            for f, t in zip(faces, templates, strict=True):
                f.template_id = t.id
            cl.status = "named"
            cl.identity_id = ident.id
            iid = ident.id
            w.audit(
                "gallery.cluster.name",
                "ok",
                identity_id=iid,
                cluster=cl.id,
                templates=len(templates),
            )
        return {"cluster_id": int(cluster_id), "identity_id": str(iid), "templates": len(templates)}

    def face_thumbnail(self, collection: str, face_id: int) -> bytes:
        with self.store.read(collection) as (s, c):
            f = s.get(GalleryFace, int(face_id))
            if f is None or f.collection_id != c.id or not f.thumbnail_jpeg:
                raise NotFound(f"no thumbnail for gallery face {face_id}")
            return self.store.sealer.open_row(f.thumbnail_jpeg, f.key_id, THUMBNAIL)
