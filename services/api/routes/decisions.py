from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from services.api.schemas import (
    CONFLICT_PROBLEMS,
    UPLOAD_PROBLEMS,
    V1_PROBLEMS,
    IdentifyResult,
    Text,
    VerifyResult,
)
from services.auth import Principal
from services.deps import StoreDep, collection_access

router = APIRouter(prefix="/v1/collections/{cid}", tags=["decisions"], responses=V1_PROBLEMS)


@router.post(
    "/verify", response_model=VerifyResult, responses={**UPLOAD_PROBLEMS, **CONFLICT_PROBLEMS}
)
def verify(
    cid: str,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("verify"))],
    file: Annotated[UploadFile, File(description="probe image")],
    identity_id: Annotated[
        Text | None,
        Form(min_length=1, max_length=256, description="claimed identity: its id or external_id"),
    ] = None,
    file2: Annotated[
        UploadFile | None, File(description="second image (instead of identity_id)")
    ] = None,
    far: Annotated[
        float | None, Form(gt=0, lt=1, description="false-accept rate to decide at")
    ] = None,
    threshold: Annotated[
        float | None, Form(ge=-1, le=1, description="explicit similarity threshold")
    ] = None,
    single_face: Annotated[
        bool, Form(description="refuse (422 multiple_faces) a probe with more than one face")
    ] = False,
    liveness: Annotated[
        bool, Form(description="check liveness even when the collection's policy is off")
    ] = False,
) -> dict:
    """1:1 — every face of the probe against every template of the claimed identity; the best
    face answers and is named (``probe_face``, ``probe_face_index``). With a second image, the
    two largest faces are compared. A FAR above, or a threshold below, the service's policy is
    refused (422 ``looser_than_policy``); stricter ones are honoured."""
    other = file2.file.read() if file2 is not None else None
    return store.verify(
        cid,
        file.file.read(),
        identity_id=identity_id,
        other=other,
        far=far,
        threshold=threshold,
        actor=p.key_id,
        single_face=single_face,
        liveness=liveness,
    )


@router.post("/identify", response_model=IdentifyResult, responses=UPLOAD_PROBLEMS)
def identify(
    cid: str,
    store: StoreDep,
    p: Annotated[Principal, Depends(collection_access("verify"))],
    file: Annotated[UploadFile, File(description="probe image")],
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    far: Annotated[float | None, Form(gt=0, lt=1)] = None,
    threshold: Annotated[float | None, Form(ge=-1, le=1)] = None,
    all_faces: Annotated[bool, Form(description="every face instead of the largest")] = False,
    liveness: Annotated[
        bool, Form(description="check liveness even when the collection's policy is off")
    ] = False,
) -> dict:
    """1:N — candidates best first for the largest face (or every face).

    A verify-scoped key gets only the candidates that match; admin and enroll keys also see
    the near misses below the threshold. A FAR above, or a threshold below, the service's
    policy is refused (422 ``looser_than_policy``); stricter ones are honoured."""
    return store.identify(
        cid,
        file.file.read(),
        top_k=top_k,
        far=far,
        threshold=threshold,
        all_faces=all_faces,
        actor=p.key_id,
        liveness=liveness,
        matches_only=p.scope == "verify",
    )
