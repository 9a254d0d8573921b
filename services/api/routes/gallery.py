"""Batch gallery indexing jobs and proposed identities (clusters) over HTTP.

- ``POST /v1/collections/{cid}/jobs``: JSON ``{"path": ..., "labels": ...}`` (a folder, archive or
  CSV inside ``IDENTITY_GALLERY_ROOTS``) or multipart with ``file`` (a zip or tar archive) and form
  fields ``labels``/``cluster``; 202 with the job. ``GET .../jobs`` and ``GET .../jobs/{jid}``:
  status, progress and counts, the full report when done. ``POST .../jobs/{jid}/cancel`` stops a
  job (queued: at once; running: at its next check), keeping what it committed.
- ``GET .../clusters``: proposed identities with sample faces; ``POST .../clusters/{id}/name``
  makes one an identity; ``POST .../clusters/{id}/merge`` merges others into it;
  ``POST .../clusters/recluster`` recomputes; ``GET .../gallery-faces/{id}/thumbnail``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError

from identity.errors import InvalidInput
from identity.gallery.sources import open_source
from services.api.schemas import (
    BIGINT_MAX,
    CONFLICT_PROBLEMS,
    MAX_OFFSET,
    UPLOAD_PROBLEMS,
    V1_PROBLEMS,
    Text,
)
from services.auth import Principal
from services.deps import StoreDep, collection_access, get_gallery, get_job_runner
from services.gallery import (
    GalleryJobRunner,
    GalleryStore,
    IngestOptions,
    gallery_roots,
    resolve_server_path,
)

router = APIRouter(prefix="/v1/collections/{cid}", tags=["gallery"], responses=V1_PROBLEMS)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# an uploaded archive has no CSV beside it: its labels are none or its folders
UPLOAD_LABELS = ("none", "folders")


class JobCreate(BaseModel):
    path: Text = Field(description="Folder, archive or CSV inside IDENTITY_GALLERY_ROOTS")
    labels: Literal["none", "folders", "csv"] = "none"
    labels_csv: Text | None = Field(default=None, description="path,identity CSV (labels=csv)")
    workers: int = Field(default=1, ge=1, le=64)
    cluster: bool = True
    cluster_method: Literal["graph", "components", "hdbscan"] = "graph"


class ClusterName(BaseModel):
    external_id: Text | None = Field(default=None, min_length=1, max_length=256)
    display_name: Text = Field(default="", max_length=256)
    identity_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="an existing identity: id or external_id",
    )


class ClusterMerge(BaseModel):
    clusters: list[Annotated[int, Field(ge=1, le=BIGINT_MAX)]] = Field(
        min_length=1, max_length=1000
    )


class Recluster(BaseModel):
    method: Literal["graph", "components", "hdbscan"] = "graph"
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    min_size: int = Field(default=2, ge=1, le=1000)


# The handler reads its body itself (JSON or multipart), so FastAPI cannot infer it: the OpenAPI
# document states both forms, or generated clients would send no body at all.
JOB_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"a zip or tar archive ({', '.join(ARCHIVE_SUFFIXES)})",
                        },
                        "labels": {
                            "type": "string",
                            "enum": list(UPLOAD_LABELS),
                            "default": "none",
                        },
                        "cluster": {"type": "boolean", "default": True},
                    },
                }
            },
        },
    }
}

GalleryDep = Annotated[GalleryStore, Depends(get_gallery)]
RunnerDep = Annotated[GalleryJobRunner, Depends(get_job_runner)]


def _form_bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@router.post("/jobs", status_code=202, responses=UPLOAD_PROBLEMS, openapi_extra=JOB_BODY)
async def create_job(
    cid: str,
    request: Request,
    store: StoreDep,
    runner: RunnerDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
) -> dict[str, Any]:
    """Index a gallery in the background: a server-side path (JSON) or an uploaded archive."""
    await run_in_threadpool(store.collection_id, cid)  # 404 before anything is saved
    settings = store.settings
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("multipart job needs a 'file' part (a zip or tar archive)")
        name = (upload.filename or "upload").lower()
        if not name.endswith(ARCHIVE_SUFFIXES):
            raise InvalidInput(f"upload a zip or tar archive ({', '.join(ARCHIVE_SUFFIXES)})")
        labels = str(form.get("labels") or "none")
        if labels not in UPLOAD_LABELS:
            raise InvalidInput("labels for an uploaded archive: none or folders", labels=labels)
        options = IngestOptions(
            labels=labels,  # type: ignore[arg-type]
            workers=1,
            batch_size=settings.index_batch_size,
            cluster=_form_bool(form.get("cluster"), True),
        )
        # the archive is kept as one file (never extracted) until the job ends
        suffix = next(s for s in ARCHIVE_SUFFIXES if name.endswith(s))
        return await run_in_threadpool(
            runner.submit_upload,
            cid,
            upload.file,
            suffix,
            options,
            p.key_id,
            f"upload:{upload.filename}",
        )
    try:
        body = JobCreate.model_validate(await request.json())
    except (ValueError, ValidationError) as exc:
        raise InvalidInput(
            "send JSON {path, labels, ...} or multipart with an archive 'file'",
            error=str(exc)[:500],
        ) from None
    path = resolve_server_path(settings, body.path)
    labels_csv = None if body.labels_csv is None else resolve_server_path(settings, body.labels_csv)
    if body.labels == "csv" and labels_csv is None and path.suffix.lower() != ".csv":
        raise InvalidInput("labels=csv needs labels_csv (or a CSV as the path)")
    options = IngestOptions(
        labels=body.labels,
        labels_csv=labels_csv,
        workers=body.workers,
        batch_size=settings.index_batch_size,
        cluster=body.cluster,
        cluster_method=body.cluster_method,
        allowed_roots=gallery_roots(settings),  # every CSV row, not just the CSV itself
    )

    def check_and_submit() -> dict[str, Any]:
        # what can be told now (a single image, a FIFO, an empty or non-UTF-8 CSV) is a 422
        # now; the job itself still fails with the same message if the source changes meanwhile
        open_source(
            path,
            options.labels,
            labels_csv,
            settings.max_image_bytes,
            allowed_roots=options.allowed_roots,
        )
        return runner.submit(cid, path, options, None, p.key_id)

    return await run_in_threadpool(check_and_submit)


@router.get("/jobs")
def list_jobs(
    cid: str,
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("read"))],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    return gallery.list_jobs(cid, limit)


@router.get("/jobs/{jid}")
def get_job(
    cid: str,
    jid: Text,
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("read"))],
) -> dict[str, Any]:
    return gallery.get_job(cid, jid)


@router.post("/jobs/{jid}/cancel")
def cancel_job(
    cid: str,
    jid: Text,
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
) -> dict[str, Any]:
    """Stop a job: ``cancelled`` at once when queued, ``cancelling`` until a running job reaches
    its next check; 409 when it already ended."""
    return gallery.cancel_job(cid, jid, actor=p.key_id)


@router.get("/clusters")
def list_clusters(
    cid: str,
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("read"))],
    status: Annotated[Literal["proposed", "named", "all"], Query()] = "proposed",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    return gallery.list_clusters(cid, None if status == "all" else status, limit, offset)


@router.post("/clusters/recluster")
def recluster(
    cid: str,
    body: Recluster,
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
) -> dict[str, Any]:
    return gallery.recluster(cid, body.method, body.threshold, body.min_size)


@router.post("/clusters/{clid}/name", status_code=201, responses=CONFLICT_PROBLEMS)
def name_cluster(
    cid: str,
    clid: Annotated[int, PathParam(ge=1, le=BIGINT_MAX)],
    body: ClusterName,
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
) -> dict[str, Any]:
    """Make the cluster an identity: a new one (external_id) or an existing one (identity_id)."""
    return gallery.name_cluster(
        cid,
        clid,
        external_id=body.external_id,
        display_name=body.display_name,
        identity_id=None if body.identity_id is None else str(body.identity_id),
        actor=p.key_id,
    )


@router.post("/clusters/{clid}/merge", responses=CONFLICT_PROBLEMS)
def merge_clusters(
    cid: str,
    clid: Annotated[int, PathParam(ge=1, le=BIGINT_MAX)],
    body: ClusterMerge,
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("enroll"))],
) -> dict[str, Any]:
    return gallery.merge_clusters(cid, clid, body.clusters, actor=p.key_id)


@router.get("/gallery-faces/{face_id}/thumbnail")
def face_thumbnail(
    cid: str,
    face_id: Annotated[int, PathParam(ge=1, le=BIGINT_MAX)],
    gallery: GalleryDep,
    p: Annotated[Principal, Depends(collection_access("read"))],
) -> Response:
    return Response(gallery.face_thumbnail(cid, face_id), media_type="image/jpeg")
