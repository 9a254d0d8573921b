"""A collection's face models (docs/model-migration.md): status, start a migration job, switch
the active model, drop an unused model's templates; the same store calls as the
``/v1/collections/{cid}/face-models`` routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from identity.errors import CodedError
from services.admin.routes.deps import (
    Admin,
    AdminDep,
    CheckedAdminDep,
    collection_or_404,
    flash,
    redirect,
    render,
    screen,
)
from services.deps import StoreDep, get_job_runner
from services.gallery import GalleryJobRunner
from services.store import IdentityStore

router = screen()
RunnerDep = Annotated[GalleryJobRunner, Depends(get_job_runner)]


def _choices(active: str) -> list[str]:
    from identity.registry import load_manifests

    return sorted(n for n, m in load_manifests().items() if m.task == "recognition" and n != active)


@router.get("/collections/{cid}/models")
def face_models_page(request: Request, cid: str, admin: AdminDep, store: StoreDep) -> HTMLResponse:
    admin.principal.require("admin", cid)
    collection = collection_or_404(store, admin, cid)
    models = store.face_models(cid)
    return render(
        request,
        "face_models.html",
        admin,
        collection=collection,
        tab="models",
        models=models,
        choices=_choices(models["active"]),
    )


def _act(
    request: Request,
    cid: str,
    admin: Admin,
    store: IdentityStore,
    act: Callable[[], tuple[str, str]],
) -> Response:
    """Run one admin action on the collection's models; ``act`` returns (where to go, what to
    say). A refusal (``CodedError``) is flashed on the Face models page."""
    try:
        admin.principal.require("admin", cid)
        collection_or_404(store, admin, cid)
        where, message = act()
    except CodedError as exc:
        return flash(request, redirect(_models_url(cid)), exc.message, kind="error")
    return flash(request, redirect(where), message)


def _models_url(cid: str) -> str:
    return f"/admin/collections/{quote(cid)}/models"


@router.post("/collections/{cid}/models/migrate")
def migrate(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    runner: RunnerDep,
    model: Annotated[str, Form()] = "",
) -> Response:
    def act() -> tuple[str, str]:
        job = runner.submit_migration(cid, model, actor=admin.actor)
        return f"/admin/collections/{quote(cid)}/jobs/{job['id']}", f"Migration to {model} started."

    return _act(request, cid, admin, store, act)


@router.post("/collections/{cid}/models/switch")
def switch(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    model: Annotated[str, Form()] = "",
    force: Annotated[bool, Form()] = False,
) -> Response:
    def act() -> tuple[str, str]:
        out = store.switch_model(cid, model, force=force, actor=admin.actor)
        return _models_url(cid), f"Active model: {out['active']} (was {out['previous']})."

    return _act(request, cid, admin, store, act)


@router.post("/collections/{cid}/models/drop")
def drop(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    model: Annotated[str, Form()] = "",
) -> Response:
    def act() -> tuple[str, str]:
        out = store.drop_model(cid, model, actor=admin.actor)
        return _models_url(cid), f"Dropped {out['dropped']} templates of {model}."

    return _act(request, cid, admin, store, act)
