"""Body routes: enroll person crops for an identity, identify a person by body (+ face)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from services.api.schemas import UPLOAD_PROBLEMS, V1_PROBLEMS, IdentityRef, parse_bbox
from services.auth import Principal
from services.body_store import BodyStore
from services.deps import collection_access, lazy_state
from services.errors import EnrollmentRejected, check_file_count

router = APIRouter(prefix="/v1/collections/{cid}", tags=["bodies"], responses=V1_PROBLEMS)


def get_body_store(request: Request) -> BodyStore:
    """One ``BodyStore`` per app, built on first use over the app's ``IdentityStore``."""
    return lazy_state(request, "body_store", lambda: BodyStore(request.app.state.store))


BodyStoreDep = Annotated[BodyStore, Depends(get_body_store)]


class Person(BaseModel):
    bbox: list[float] = Field(description="x1, y1, x2, y2 in source pixels")
    det_score: float = Field(description="detector confidence; 1.0 for a given box")


class BodyAccepted(Person):
    filename: str
    template_id: int


class BodyRejected(BaseModel):
    filename: str
    code: str
    message: str


class BodyEnrollResult(BaseModel):
    accepted: list[BodyAccepted]
    rejected: list[BodyRejected]


class FaceInPerson(BaseModel):
    bbox: list[float]
    det_score: float
    skipped: str | None = Field(default=None, description="why the face was not fused")


class BodyCandidate(BaseModel):
    identity_id: str
    external_id: str
    display_name: str
    body_similarity: float | None
    body_template_id: int | None
    body_model: str | None = Field(
        default=None, description="body model of that template (older models stay searchable)"
    )
    face_similarity: float | None
    face_template_id: int | None
    fused_score: float = Field(description="weighted mean of calibrated margins; >= 0 is a match")
    match: bool


class BodyIdentifyResult(BaseModel):
    person: Person
    face: FaceInPerson | None
    candidates: list[BodyCandidate]
    body_model: str
    body_threshold: float
    reranked: bool = Field(
        default=False,
        description="candidates ordered by k-reciprocal re-ranking (body only, "
        "one body model in the collection)",
    )
    face_model: str | None
    face_threshold: float | None
    far: float | None
    fusion: dict[str, float | str]


@router.post(
    "/identities/{iid}/bodies",
    status_code=201,
    response_model=BodyEnrollResult,
    responses=UPLOAD_PROBLEMS,
)
def enroll_bodies(
    cid: str,
    iid: IdentityRef,
    bodies: BodyStoreDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
    files: Annotated[list[UploadFile], File(description="one or more images")],
    bbox: Annotated[
        str | None, Form(description="x1,y1,x2,y2 of the person (default: largest detected)")
    ] = None,
) -> dict:
    """Enroll the person of each image as a body template; 422 when none was accepted, 413
    when over ``enroll_max_files`` images."""
    check_file_count(len(files), bodies.settings.enroll_max_files)
    images = [(f.filename or f"file{i}", f.file.read()) for i, f in enumerate(files)]
    result = bodies.enroll_images(cid, iid, images, parse_bbox(bbox), actor=p.key_id)
    if not result["accepted"]:
        raise EnrollmentRejected("no image was enrolled", rejected=result["rejected"])
    return result


@router.post("/identify-body", response_model=BodyIdentifyResult, responses=UPLOAD_PROBLEMS)
def identify_body(
    cid: str,
    bodies: BodyStoreDep,
    p: Annotated[Principal, Depends(collection_access("verify"))],
    file: Annotated[UploadFile, File(description="probe image")],
    bbox: Annotated[str | None, Form(description="x1,y1,x2,y2 of the person")] = None,
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    far: Annotated[float | None, Form(gt=0, lt=1)] = None,
    threshold: Annotated[float | None, Form(ge=-1, lt=1, description="body threshold")] = None,
    use_face: Annotated[bool, Form(description="fuse with the face inside the person box")] = True,
    rerank: Annotated[
        bool | None, Form(description="k-reciprocal re-ranking of body-only candidates")
    ] = None,
) -> dict:
    """1:N by body appearance; fused with the face score when the person's face is visible."""
    return bodies.identify(
        cid,
        file.file.read(),
        parse_bbox(bbox),
        top_k=top_k,
        far=far,
        threshold=threshold,
        use_face=use_face,
        actor=p.key_id,
        rerank=rerank,
        matches_only=p.scope == "verify",
    )
