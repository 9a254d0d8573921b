"""A collection's face models over HTTP (docs/model-migration.md); admin keys only.

- ``GET /v1/collections/{cid}/face-models``: the active model and, per model, templates, kept
  source crops and how many of the active model's templates it does not cover yet.
- ``POST .../face-models/migrate`` ``{"to": MODEL}``: 202 with a ``migrate`` job (the gallery
  job machinery: ``GET .../jobs/{id}`` for progress and the report, ``.../cancel``).
- ``POST .../face-models/switch`` ``{"to": MODEL, "force": false}``: the active model, in one
  step; 409 ``migration_incomplete`` while templates are not covered.
- ``DELETE .../face-models/{model}``: drop an inactive model's templates; 409 ``active_model``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.api.schemas import CONFLICT_PROBLEMS, V1_PROBLEMS, Text
from services.auth import Principal
from services.deps import StoreDep, collection_access, get_job_runner
from services.gallery import GalleryJobRunner

router = APIRouter(
    prefix="/v1/collections/{cid}/face-models", tags=["face models"], responses=V1_PROBLEMS
)
Admin = Annotated[Principal, Depends(collection_access("admin"))]
RunnerDep = Annotated[GalleryJobRunner, Depends(get_job_runner)]


class MigrateBody(BaseModel):
    to: Text = Field(min_length=1, max_length=128, description="Face model manifest name")


class SwitchBody(MigrateBody):
    force: bool = Field(default=False, description="Switch although templates are uncovered")


@router.get("")
def face_models(cid: str, store: StoreDep, p: Admin) -> dict[str, Any]:
    return store.face_models(cid)


@router.post("/migrate", status_code=202, responses=CONFLICT_PROBLEMS)
def migrate(cid: str, body: MigrateBody, runner: RunnerDep, p: Admin) -> dict[str, Any]:
    """Queue the re-embedding of the collection's templates with ``to``; decisions keep the
    active model meanwhile."""
    return runner.submit_migration(cid, body.to, actor=p.key_id)


@router.post("/switch", responses=CONFLICT_PROBLEMS)
def switch(cid: str, body: SwitchBody, store: StoreDep, p: Admin) -> dict[str, Any]:
    return store.switch_model(cid, body.to, force=body.force, actor=p.key_id)


@router.delete("/{model}", responses=CONFLICT_PROBLEMS)
def drop(cid: str, model: Text, store: StoreDep, p: Admin) -> dict[str, Any]:
    return store.drop_model(cid, model, actor=p.key_id)
