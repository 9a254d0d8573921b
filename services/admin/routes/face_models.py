"""A collection's face models (docs/model-migration.md): status, start a migration job, switch
the active model, drop an unused model's templates; the same store calls as the
``/v1/collections/{cid}/face-models`` routes."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from identity.errors import CodedError
from services.admin.routes.deps import (
    AdminDep,
    CheckedAdminDep,
    collection_or_404,
    error_page,
    flash,
    redirect,
    render,
)
from services.deps import StoreDep, get_job_runner
from services.gallery import GalleryJobRunner

router = APIRouter(prefix="/admin", include_in_schema=False)
RunnerDep = Annotated[GalleryJobRunner, Depends(get_job_runner)]


def _choices(active: str) -> list[str]:
    from identity.registry import load_manifests

    return sorted(n for n, m in load_manifests().items() if m.task == "recognition" and n != active)


@router.get("/collections/{cid}/models")
def face_models_page(request: Request, cid: str, admin: AdminDep, store: StoreDep) -> HTMLResponse:
    try:
        admin.principal.require("admin", cid)
        collection = collection_or_404(store, admin, cid)
        models = store.face_models(cid)
    except CodedError as exc:
        return error_page(request, admin, exc)
    return render(
        request,
        "face_models.html",
        admin,
        collection=collection,
        tab="models",
        models=models,
        choices=_choices(models["active"]),
    )


@router.post("/collections/{cid}/models/migrate")
def migrate(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    runner: RunnerDep,
    model: Annotated[str, Form()] = "",
) -> Response:
    back = redirect(f"/admin/collections/{quote(cid)}/models")
    try:
        admin.principal.require("admin", cid)
        collection_or_404(store, admin, cid)
        job = runner.submit_migration(cid, model, actor=admin.actor)
    except CodedError as exc:
        return flash(request, back, exc.message, kind="error")
    to_job = redirect(f"/admin/collections/{quote(cid)}/jobs/{job['id']}")
    return flash(request, to_job, f"Migration to {model} started.")


@router.post("/collections/{cid}/models/switch")
def switch(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    model: Annotated[str, Form()] = "",
    force: Annotated[bool, Form()] = False,
) -> Response:
    back = redirect(f"/admin/collections/{quote(cid)}/models")
    try:
        admin.principal.require("admin", cid)
        collection_or_404(store, admin, cid)
        out = store.switch_model(cid, model, force=force, actor=admin.actor)
    except CodedError as exc:
        return flash(request, back, exc.message, kind="error")
    return flash(request, back, f"Active model: {out['active']} (was {out['previous']}).")


@router.post("/collections/{cid}/models/drop")
def drop(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    model: Annotated[str, Form()] = "",
) -> Response:
    back = redirect(f"/admin/collections/{quote(cid)}/models")
    try:
        admin.principal.require("admin", cid)
        collection_or_404(store, admin, cid)
        out = store.drop_model(cid, model, actor=admin.actor)
    except CodedError as exc:
        return flash(request, back, exc.message, kind="error")
    return flash(request, back, f"Dropped {out['dropped']} templates of {model}.")
