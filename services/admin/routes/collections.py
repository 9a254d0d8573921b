"""The collections list: create a collection, delete one (typed confirmation), set its
liveness policy."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from identity.errors import CodedError
from services.admin.routes.deps import (
    AdminDep,
    CheckedAdminDep,
    collection_or_404,
    explained,
    flash,
    redirect,
    render,
    screen,
)
from services.deps import StoreDep

router = screen()


@router.get("/collections")
def collections_page(request: Request, admin: AdminDep, store: StoreDep) -> HTMLResponse:
    items = [c for c in store.list_collections() if admin.may_see(c["name"])]
    return render(request, "collections.html", admin, collections=items)


@router.post("/collections")
def create_collection(
    request: Request,
    admin: CheckedAdminDep,
    store: StoreDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    liveness_policy: Annotated[str, Form()] = "off",
) -> Response:
    try:
        admin.principal.require("admin")
        created = store.create_collection(
            name.strip(), description.strip(), actor=admin.actor, liveness_policy=liveness_policy
        )
    except CodedError as exc:
        items = [c for c in store.list_collections() if admin.may_see(c["name"])]
        return render(
            request,
            "collections.html",
            admin,
            collections=items,
            **explained(exc),
            form={"name": name, "description": description},
        )
    return flash(
        request, redirect("/admin/collections"), f"Collection '{created['name']}' created."
    )


@router.get("/collections/{cid}/delete")
def confirm_delete_collection(
    request: Request, cid: str, admin: AdminDep, store: StoreDep
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    return render(request, "collection_delete.html", admin, collection=collection)


@router.post("/collections/{cid}/delete")
def delete_collection(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    collection = collection_or_404(store, admin, cid)
    admin.principal.require("admin")
    if confirm.strip() != cid:
        return render(
            request,
            "collection_delete.html",
            admin,
            status_code=400,
            collection=collection,
            flash={
                "kind": "error",
                "message": f"type the collection name '{cid}' to confirm the deletion",
            },
        )
    result = store.delete_collection(cid, actor=admin.actor)
    return flash(
        request,
        redirect("/admin/collections"),
        f"Collection '{cid}' deleted with {result['identities']} identities and "
        f"{result['templates']} faces.",
    )


@router.post("/collections/{cid}/liveness")
def set_liveness_policy(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    liveness_policy: Annotated[str, Form()] = "",
) -> Response:
    back = redirect(f"/admin/collections/{quote(cid)}")
    try:
        admin.principal.require("admin")
        collection_or_404(store, admin, cid)
        store.update_collection(cid, liveness_policy=liveness_policy, actor=admin.actor)
    except CodedError as exc:
        return flash(request, back, exc.message, kind="error")
    return flash(request, back, f"Liveness policy set to '{liveness_policy}'.")
