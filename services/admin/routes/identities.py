"""A collection's identities and their faces: the paged list, one identity's page, enrolling
photos, removing a face, erasing an identity, face thumbnails."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from identity.errors import CodedError, InvalidInput
from services.admin import queries
from services.admin.routes.deps import (
    Admin,
    AdminDep,
    CheckedAdminDep,
    collection_or_404,
    explained,
    flash,
    redirect,
    render,
    screen,
)
from services.deps import SessionsDep, SettingsDep, StoreDep
from services.errors import NotFound, check_file_count
from services.store import IdentityStore

PAGE_SIZE = 24

router = screen()


@router.get("/collections/{cid}")
def identities_page(
    request: Request,
    cid: str,
    admin: AdminDep,
    store: StoreDep,
    sessions: SessionsDep,
    q: str = "",
    page: int = 1,
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    page = max(page, 1)
    result = store.list_identities(
        cid, q=q.strip() or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    thumbs = queries.first_template_ids(sessions, [i["id"] for i in result["items"]])
    pages = max(1, math.ceil(result["total"] / PAGE_SIZE))
    return render(
        request,
        "identities.html",
        admin,
        collection=collection,
        result=result,
        thumbs=thumbs,
        q=q,
        page=page,
        pages=pages,
        tab="identities",
    )


@router.post("/collections/{cid}/identities")
def create_identity(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    external_id: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
) -> Response:
    try:
        collection_or_404(store, admin, cid)
        created = store.create_identity(
            cid, external_id.strip(), display_name.strip(), actor=admin.actor
        )
    except CodedError as exc:
        return flash(
            request, redirect(f"/admin/collections/{quote(cid)}"), exc.message, kind="error"
        )
    return flash(
        request,
        redirect(f"/admin/collections/{quote(cid)}/identities/{created['id']}"),
        f"Identity '{created['external_id']}' created: add photos to enroll faces.",
    )


def _identity_page(
    request: Request,
    store: IdentityStore,
    cid: str,
    iid: str,
    admin: Admin,
    upload: dict[str, Any] | None = None,
    flash: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    identity = store.get_identity(cid, iid)
    return render(
        request,
        "identity.html",
        admin,
        status_code=status_code,
        collection=collection,
        identity=identity,
        upload=upload,
        flash=flash,
        tab="identities",
    )


@router.get("/collections/{cid}/identities/{iid}")
def identity_page(
    request: Request, cid: str, iid: str, admin: AdminDep, store: StoreDep
) -> HTMLResponse:
    return _identity_page(request, store, cid, iid, admin)


@router.post("/collections/{cid}/identities/{iid}/faces")
async def upload_faces(
    request: Request,
    cid: str,
    iid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File()],
    liveness: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    try:
        collection_or_404(store, admin, cid)
        chosen = [f for f in files if f.filename]
        if not chosen:
            raise InvalidInput("choose one or more photos to enroll")
        check_file_count(len(chosen), settings.enroll_max_files)
        images = [(f.filename or "photo", await f.read()) for f in chosen]
        # Analysis runs the models for seconds: off the event loop, like the sync routes.
        result = await run_in_threadpool(
            store.enroll_images, cid, iid, images, actor=admin.actor, liveness=liveness
        )
    except CodedError as exc:
        return _identity_page(request, store, cid, iid, admin, **explained(exc))
    n_ok, n_bad = len(result["accepted"]), len(result["rejected"])
    message = f"{n_ok} photo{'s' if n_ok != 1 else ''} enrolled, {n_bad} rejected."
    return _identity_page(
        request,
        store,
        cid,
        iid,
        admin,
        upload=result,
        flash={
            "kind": "ok" if n_ok and not n_bad else ("warn" if n_ok else "error"),
            "message": message,
        },
    )


@router.post("/collections/{cid}/identities/{iid}/faces/{tid}/remove")
def remove_face(
    request: Request, cid: str, iid: str, tid: int, admin: CheckedAdminDep, store: StoreDep
) -> Response:
    try:
        collection_or_404(store, admin, cid)
        store.remove_face(cid, iid, tid, actor=admin.actor)
    except CodedError as exc:
        return _identity_page(request, store, cid, iid, admin, **explained(exc))
    return flash(
        request,
        redirect(f"/admin/collections/{quote(cid)}/identities/{quote(iid)}"),
        f"Face {tid} removed.",
    )


@router.post("/collections/{cid}/identities/{iid}/erase")
def erase_identity(
    request: Request,
    cid: str,
    iid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    try:
        collection_or_404(store, admin, cid)
        if confirm != "erase":
            raise InvalidInput("tick the box to confirm the erasure")
        identity = store.get_identity(cid, iid)
        result = store.erase_identity(cid, iid, actor=admin.actor)
    except CodedError as exc:
        return _identity_page(request, store, cid, iid, admin, **explained(exc))
    return flash(
        request,
        redirect(f"/admin/collections/{quote(cid)}"),
        f"Identity '{identity['external_id']}' erased with {result['templates']} faces; "
        "the audit log keeps the fact.",
    )


@router.get("/collections/{cid}/thumbnails/{tid}")
def thumbnail(cid: str, tid: int, admin: AdminDep, store: StoreDep) -> Response:
    try:
        if not admin.may_see(cid):
            raise NotFound("no such thumbnail")
        jpeg = store.thumbnail_jpeg(cid, tid)
    except CodedError:
        raise HTTPException(status_code=404, detail="no such thumbnail") from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
