"""Request and response bodies of the HTTP API (they also document the OpenAPI schema)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from identity.errors import InvalidInput
from identity.faces import check_bbox_xyxy

# Paging beyond this is a client bug, and Postgres's OFFSET is a bigint: an unbounded int from
# the query string would reach it as a DataError (a 500) instead of a 422.
MAX_OFFSET = 10**9
BIGINT_MAX = 2**63 - 1  # ids in the path are Postgres bigints


def _no_nul(value: str) -> str:
    # Postgres text and jsonb cannot store U+0000; psycopg refuses it at INSERT time (a 500).
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse what Postgres jsonb cannot hold: NUL in keys or strings, NaN and +-Infinity.

    Python's JSON parser accepts the non-standard ``NaN``/``Infinity`` literals; jsonb does not.
    Walked with a stack, not recursion: the JSON parser allows nesting deeper than Python's
    recursion limit would.
    """
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if "\x00" in key:
                    raise ValueError("keys must not contain the NUL character (U+0000)")
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            _no_nul(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string Postgres can store (no NUL); use it for every text field that reaches the database."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]

IdentityRefField = Field(
    min_length=1, max_length=256, description="the identity's id (UUID) or its external_id"
)
IdentityRef = Annotated[Text, IdentityRefField]
"""How a request names an identity: our UUID or the caller's own ``external_id``."""


def parse_bbox(bbox: str | None) -> list[float] | None:
    """The ``x1,y1,x2,y2`` form field (source pixels) -> a checked box (``check_bbox_xyxy``)."""
    if bbox is None or bbox == "":
        return None
    try:
        values = [float(v) for v in bbox.split(",")]
    except ValueError:
        raise InvalidInput("bbox must be four numbers: x1,y1,x2,y2", bbox=bbox[:100]) from None
    return check_bbox_xyxy(values)


LivenessPolicyField = Literal["off", "report", "require"]
_POLICY_HELP = (
    "presentation-attack check on verify/identify/enroll: off (only when a request asks), "
    "report (score returned), require (spoofs refused with presentation_attack)"
)


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["staff"])
    description: Text = Field(default="", max_length=2000)
    liveness_policy: LivenessPolicyField = Field(default="off", description=_POLICY_HELP)


class CollectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: Text | None = Field(default=None, max_length=2000)
    liveness_policy: LivenessPolicyField | None = Field(default=None, description=_POLICY_HELP)


class CollectionOut(BaseModel):
    name: str
    description: str
    liveness_policy: str = "off"
    created_at: str
    identities: int
    templates: int


class CollectionList(BaseModel):
    items: list[CollectionOut]


class IdentityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: Text = Field(min_length=1, max_length=256, examples=["emp-0042"])
    display_name: Text = Field(default="", max_length=256, examples=["Ada Lovelace"])
    metadata: JsonObject = Field(default_factory=dict)


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


class Liveness(BaseModel):
    policy: str
    score: float | None = Field(description="probability of a live face; null when not judged")
    live: bool | None
    reason: str | None = Field(description="why not judged: face_too_small, face_cut_by_border")
    threshold: float
    operating_point: str = Field(description="the BPCER the threshold was calibrated for")
    meaning: str
    models: list[str]
    evidence: dict[str, Any] = Field(description="calibration set, subjects, counts, error rates")
    source: str


class Accepted(FaceOut):
    filename: str
    template_id: int
    liveness: Liveness | None = None


class Rejected(BaseModel):
    filename: str
    code: str = Field(
        description="no_face_found, multiple_faces, low_quality, duplicate_image, bad_image..."
    )
    message: str
    reasons: list[str]
    details: dict[str, Any]


class EnrollResult(BaseModel):
    accepted: list[Accepted]
    rejected: list[Rejected]


class CalibrationOut(BaseModel):
    """The evidence behind a decision's FAR (None when the caller gave its own threshold)."""

    set: str = Field(description="labelled set the threshold was calibrated on, e.g. celeba500")
    impostor_pairs: int | None = Field(description="impostor pairs behind the threshold")
    far_upper_95: float | None = Field(
        description="upper limit of the 95% Clopper-Pearson interval of the FAR"
    )
    pipeline: str = Field(description="detector+embedder the calibration was measured with")
    source: str = Field(description="calibrated (this install), shipped or manifest")


class VerifyResult(BaseModel):
    similarity: float = Field(description="cosine similarity, higher = more alike")
    threshold: float
    far: float | None = Field(description="false-accept rate the threshold was calibrated for")
    calibration: CalibrationOut | None = None
    match: bool
    model: str
    probe_face: FaceOut = Field(description="the probe face that was compared (the best one)")
    probe_face_index: int = Field(
        description="its rank by size among the probe's faces (0 = largest)"
    )
    faces_in_probe: int = Field(description="faces found in the probe image")
    identity_id: str | None = None
    templates_compared: int | None = None
    best_template_id: int | None = None
    template_policy: str | None = Field(
        default=None, description="all or gate (IDENTITY_TEMPLATE_QUALITY_POLICY)"
    )
    compared_template_ids: list[int] | None = Field(
        default=None, description="the identity's templates the probe was compared with"
    )
    ignored_template_ids: list[int] | None = Field(
        default=None, description="templates below the quality gate, not compared (policy gate)"
    )
    other_face: FaceOut | None = None
    liveness: Liveness | None = None


class Candidate(BaseModel):
    identity_id: str
    external_id: str
    display_name: str
    similarity: float
    template_id: int
    match: bool
    ignored_template_ids: list[int] | None = Field(
        default=None, description="templates below the quality gate, not compared (policy gate)"
    )


class IdentifiedFace(FaceOut):
    candidates: list[Candidate]
    liveness: Liveness | None = None


class IdentifyResult(BaseModel):
    faces: list[IdentifiedFace]
    threshold: float
    far: float | None
    calibration: CalibrationOut | None = None
    model: str
    template_policy: str | None = Field(
        default=None, description="all or gate (IDENTITY_TEMPLATE_QUALITY_POLICY)"
    )


class Erased(BaseModel):
    erased: str
    templates: int


class CollectionDeleted(BaseModel):
    deleted: str
    identities: int
    templates: int


# error answers, for the OpenAPI schema ---------------------------------------------------------
class ProblemDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. not_found, too_many_files, busy")
    message: str = Field(description="for a person: what went wrong and what to do")
    details: dict[str, Any] = Field(description="structured context (limits, rejected files...)")


class Problem(BaseModel):
    """The one error shape of every 4xx/5xx answer (services/errors.py)."""

    error: ProblemDetail


_PROBLEM_TEXT = {
    400: "Malformed request (an unreadable Content-Length or multipart body).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's scope or collection does not allow this.",
    404: "No such collection, identity, job, cluster or face.",
    409: "Conflicts with what exists (a name or image already there, nothing enrolled yet).",
    413: "Request body, image bytes or pixels, or files per request over a limit; the problem "
    "names the limit.",
    422: "Invalid input: a field out of range, an unreadable image, no usable face.",
    429: "Too many attempts from this client or key; Retry-After says when to try again.",
    503: "At capacity: every inference worker busy and the queue full (Retry-After says when to "
    "retry), or a model cannot be loaded.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router or route: these statuses answer with a ``Problem``."""
    return {s: {"model": Problem, "description": _PROBLEM_TEXT[s]} for s in statuses}


# Every /v1 route: the key checks (and their throttle, services/throttle.py), the collection
# lookup, validation, the body size limit.
V1_PROBLEMS = problems(400, 401, 403, 404, 413, 422, 429)
# Routes that take uploads also pass the inference queue (services/limits.py).
UPLOAD_PROBLEMS = problems(503)
CONFLICT_PROBLEMS = problems(409)
