from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from services.api.schemas import (
    CONFLICT_PROBLEMS,
    MAX_OFFSET,
    UPLOAD_PROBLEMS,
    V1_PROBLEMS,
    EnrollResult,
    Erased,
    IdentityCreate,
    IdentityOut,
    IdentityPage,
    IdentityRef,
    Text,
    parse_bbox,
)
from services.auth import Principal
from services.deps import StoreDep, collection_access
from services.errors import EnrollmentRejected, check_file_count

router = APIRouter(
    prefix="/v1/collections/{cid}/identities", tags=["identities"], responses=V1_PROBLEMS
)


@router.post("", status_code=201, response_model=IdentityOut, responses=CONFLICT_PROBLEMS)
def create_identity(
    cid: str,
    body: IdentityCreate,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
) -> dict:
    return store.create_identity(
        cid, body.external_id, body.display_name, body.metadata, actor=p.key_id
    )


@router.get("", response_model=IdentityPage)
def list_identities(
    cid: str,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("read"))],
    q: Annotated[
        Text | None, Query(max_length=256, description="substring of name or external id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict:
    return store.list_identities(cid, q, limit, offset)


@router.get("/{iid}", response_model=IdentityOut)
def get_identity(
    cid: str,
    iid: IdentityRef,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("read"))],
) -> dict:
    return store.get_identity(cid, iid)


@router.delete("/{iid}", response_model=Erased)
def erase_identity(
    cid: str,
    iid: IdentityRef,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("admin"))],
) -> dict:
    """Erase the identity, its templates, thumbnails and index entries (the audit keeps the event)."""
    return store.erase_identity(cid, iid, actor=p.key_id)


@router.post(
    "/{iid}/faces", status_code=201, response_model=EnrollResult, responses=UPLOAD_PROBLEMS
)
def enroll_faces(
    cid: str,
    iid: IdentityRef,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
    files: Annotated[list[UploadFile], File(description="one or more images")],
    face_index: Annotated[
        int | None, Form(ge=0, description="which face when several (0 = largest)")
    ] = None,
    bbox: Annotated[str | None, Form(description="x1,y1,x2,y2 of the face to enroll")] = None,
    liveness: Annotated[
        bool, Form(description="check liveness even when the collection's policy is off")
    ] = False,
) -> dict:
    """Enroll each image or reject it with reasons; 422 when none was accepted, 413 when over
    ``enroll_max_files`` images."""
    check_file_count(len(files), store.settings.enroll_max_files)
    images = [(f.filename or f"file{i}", f.file.read()) for i, f in enumerate(files)]
    result = store.enroll_images(
        cid, iid, images, face_index, parse_bbox(bbox), actor=p.key_id, liveness=liveness
    )
    if not result["accepted"]:
        raise EnrollmentRejected("no image was enrolled", rejected=result["rejected"])
    return result
