"""Proposed clusters of a gallery job's faces (docs/batch.md): name one (a new identity or an
existing one), merge two, and the gallery faces' thumbnails. Same ``GalleryStore`` calls as the
/v1 gallery routes."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from identity.errors import CodedError, InvalidInput
from services.admin.routes.deps import (
    Admin,
    AdminDep,
    CheckedAdminDep,
    collection_or_404,
    explained,
    flash,
    identity_choices,
    redirect,
    render,
    screen,
)
from services.deps import GalleryDep, StoreDep
from services.errors import NotFound
from services.gallery import GalleryStore
from services.store import IdentityStore

router = screen()


def _clusters_page(
    request: Request,
    store: IdentityStore,
    gallery: GalleryStore,
    cid: str,
    admin: Admin,
    flash: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    clusters = gallery.list_clusters(cid, "proposed")
    return render(
        request,
        "clusters.html",
        admin,
        status_code=status_code,
        collection=collection,
        tab="clusters",
        clusters=clusters,
        choices=identity_choices(store, cid),
        flash=flash,
    )


@router.get("/collections/{cid}/clusters")
def clusters_page(
    request: Request, cid: str, admin: AdminDep, store: StoreDep, gallery: GalleryDep
) -> HTMLResponse:
    return _clusters_page(request, store, gallery, cid, admin)


@router.post("/collections/{cid}/clusters/{clid}/name")
def name_cluster(
    request: Request,
    cid: str,
    clid: int,
    admin: CheckedAdminDep,
    store: StoreDep,
    gallery: GalleryDep,
    external_id: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    identity_id: Annotated[str, Form()] = "",
) -> Response:
    try:
        collection_or_404(store, admin, cid)
        if identity_id:  # the form's "add to an existing identity" choice wins over a new id
            result = gallery.name_cluster(cid, clid, identity_id=identity_id, actor=admin.actor)
        else:
            if not external_id.strip():
                raise InvalidInput("type an external id for the new identity, or choose one")
            result = gallery.name_cluster(
                cid,
                clid,
                external_id=external_id.strip(),
                display_name=display_name.strip(),
                actor=admin.actor,
            )
        identity = store.get_identity(cid, result["identity_id"])
    except CodedError as exc:
        return _clusters_page(request, store, gallery, cid, admin, **explained(exc))
    return flash(
        request,
        redirect(f"/admin/collections/{quote(cid)}/clusters"),
        f"Cluster {clid} named '{identity['external_id']}': {result['templates']} faces enrolled "
        "and searchable.",
    )


@router.post("/collections/{cid}/clusters/{clid}/merge")
def merge_cluster(
    request: Request,
    cid: str,
    clid: int,
    admin: CheckedAdminDep,
    store: StoreDep,
    gallery: GalleryDep,
    source: Annotated[str, Form()] = "",
) -> Response:
    try:
        collection_or_404(store, admin, cid)
        if not source.isdigit():
            raise InvalidInput("choose the cluster to merge into this one")
        result = gallery.merge_clusters(cid, clid, [int(source)], actor=admin.actor)
    except CodedError as exc:
        return _clusters_page(request, store, gallery, cid, admin, **explained(exc))
    return flash(
        request,
        redirect(f"/admin/collections/{quote(cid)}/clusters"),
        f"Cluster {source} merged into cluster {clid}: {result['size']} faces.",
    )


@router.get("/collections/{cid}/gallery-faces/{face_id}/thumbnail")
def gallery_face_thumbnail(
    cid: str, face_id: int, admin: AdminDep, gallery: GalleryDep
) -> Response:
    try:
        if not admin.may_see(cid):
            raise NotFound("no such thumbnail")
        jpeg = gallery.face_thumbnail(cid, face_id)
    except CodedError:
        raise HTTPException(status_code=404, detail="no such thumbnail") from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
