"""Request and response bodies of the HTTP API (they also document the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["staff"])
    description: str = Field(default="", max_length=2000)


class CollectionOut(BaseModel):
    name: str
    description: str
    created_at: str
    identities: int
    templates: int


class CollectionList(BaseModel):
    items: list[CollectionOut]


class IdentityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: str = Field(min_length=1, max_length=256, examples=["emp-0042"])
    display_name: str = Field(default="", max_length=256, examples=["Ada Lovelace"])
    metadata: dict[str, Any] = Field(default_factory=dict)


class IdentityOut(BaseModel):
    id: str
    external_id: str
    display_name: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    templates: int | None = None
    faces: list[dict[str, Any]] | None = None


class IdentityPage(BaseModel):
    items: list[IdentityOut]
    total: int
    limit: int
    offset: int


class FaceOut(BaseModel):
    bbox: list[float]
    det_score: float
    quality: float | None
    quality_reasons: list[str]


class Accepted(FaceOut):
    filename: str
    template_id: int


class Rejected(BaseModel):
    filename: str
    code: str = Field(description="no_face_found, multiple_faces, low_quality, duplicate_image, bad_image...")
    message: str
    reasons: list[str]
    details: dict[str, Any]


class EnrollResult(BaseModel):
    accepted: list[Accepted]
    rejected: list[Rejected]


class VerifyResult(BaseModel):
    similarity: float = Field(description="cosine similarity, higher = more alike")
    threshold: float
    far: float | None = Field(description="false-accept rate the threshold was calibrated for")
    match: bool
    model: str
    probe_face: FaceOut
    identity_id: str | None = None
    templates_compared: int | None = None
    best_template_id: int | None = None
    other_face: FaceOut | None = None


class Candidate(BaseModel):
    identity_id: str
    external_id: str
    display_name: str
    similarity: float
    template_id: int
    match: bool


class IdentifiedFace(FaceOut):
    candidates: list[Candidate]


class IdentifyResult(BaseModel):
    faces: list[IdentifiedFace]
    threshold: float
    far: float | None
    model: str


class Erased(BaseModel):
    erased: str
    templates: int


class CollectionDeleted(BaseModel):
    deleted: str
    identities: int
    templates: int
