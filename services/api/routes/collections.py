from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.api.schemas import (
    CONFLICT_PROBLEMS,
    V1_PROBLEMS,
    CollectionCreate,
    CollectionDeleted,
    CollectionList,
    CollectionOut,
    CollectionUpdate,
)
from services.auth import Principal
from services.deps import StoreDep, access, collection_access

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=V1_PROBLEMS)


@router.post("", status_code=201, response_model=CollectionOut, responses=CONFLICT_PROBLEMS)
def create_collection(
    body: CollectionCreate, store: StoreDep, p: Annotated[Principal, Depends(access("admin"))]
) -> dict:
    return store.create_collection(
        body.name, body.description, actor=p.key_id, liveness_policy=body.liveness_policy
    )


@router.get("", response_model=CollectionList)
def list_collections(store: StoreDep, p: Annotated[Principal, Depends(access("any"))]) -> dict:
    """All collections for an unbound key; only its own for a collection-bound key."""
    return {"items": store.list_collections(only=p.collection)}


@router.get("/{cid}", response_model=CollectionOut)
def get_collection(
    cid: str, store: StoreDep, p: Annotated[Principal, Depends(collection_access("any"))]
) -> dict:
    return store.get_collection(cid)


@router.patch("/{cid}", response_model=CollectionOut)
def update_collection(
    cid: str,
    body: CollectionUpdate,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("admin"))],
) -> dict:
    """Change the description and/or the liveness policy (fields left out are kept)."""
    return store.update_collection(cid, body.description, body.liveness_policy, actor=p.key_id)


@router.get("/{cid}/index")
def index_status(
    cid: str, store: StoreDep, p: Annotated[Principal, Depends(collection_access("admin"))]
) -> dict:
    """The FAISS index next to Postgres: its type, sizes, id digests and whether they agree."""
    return store.index_status(cid)


@router.get("/{cid}/quality-report")
def quality_report(
    cid: str,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("admin"))],
    min_quality: Annotated[
        float | None, Query(ge=0, le=1, description="gate to apply (default the enrollment's)")
    ] = None,
) -> dict:
    """The enrollment gate re-run on the stored templates: who falls below it (reports only)."""
    return store.quality_report(cid, min_quality)


@router.delete("/{cid}", response_model=CollectionDeleted)
def delete_collection(
    cid: str, store: StoreDep, p: Annotated[Principal, Depends(collection_access("admin"))]
) -> dict:
    return store.delete_collection(cid, actor=p.key_id)
