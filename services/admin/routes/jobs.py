"""Gallery indexing jobs (docs/batch.md): the list across collections, a collection's jobs, one
job, and cancelling one. Jobs start through the API or the CLI; the dashboard shows them with
the same ``GalleryStore`` calls the /v1 gallery routes make."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from identity.errors import CodedError
from services.admin import queries
from services.admin.routes.deps import (
    AdminDep,
    CheckedAdminDep,
    collection_or_404,
    flash,
    redirect,
    render,
    screen,
    visible_names,
)
from services.deps import GalleryDep, StoreDep
from services.errors import NotFound
from services.gallery import LIVE_STATUSES

router = screen()


def _any_running(jobs: list[dict[str, Any]]) -> bool:
    return any(j["status"] in LIVE_STATUSES for j in jobs)


@router.get("/jobs")
def all_jobs_page(
    request: Request, admin: AdminDep, store: StoreDep, gallery: GalleryDep
) -> HTMLResponse:
    jobs = queries.recent_jobs(gallery, visible_names(store, admin))
    return render(request, "jobs.html", admin, jobs=jobs, refresh=_any_running(jobs))


@router.get("/collections/{cid}/jobs")
def jobs_page(
    request: Request, cid: str, admin: AdminDep, store: StoreDep, gallery: GalleryDep
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    jobs = gallery.list_jobs(cid)
    return render(
        request,
        "jobs.html",
        admin,
        collection=collection,
        tab="jobs",
        jobs=jobs,
        refresh=_any_running(jobs),
    )


@router.get("/collections/{cid}/jobs/{jid}")
def job_page(
    request: Request, cid: str, jid: str, admin: AdminDep, store: StoreDep, gallery: GalleryDep
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    job = gallery.get_job(cid, jid)
    return render(
        request,
        "job.html",
        admin,
        collection=collection,
        tab="jobs",
        job=job,
        refresh=_any_running([job]),
    )


@router.post("/collections/{cid}/jobs/{jid}/cancel")
def cancel_job(
    request: Request,
    cid: str,
    jid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    gallery: GalleryDep,
) -> Response:
    """The API's cancel: a queued job ends at once, a running one at its next check."""
    target = redirect(f"/admin/collections/{quote(cid)}/jobs/{quote(jid)}")
    collection_or_404(store, admin, cid)
    try:
        job = gallery.cancel_job(cid, jid, actor=admin.actor)
    except NotFound:
        raise  # no such job: the error page (PageRoute), not a flash on a page that is not there
    except CodedError as exc:
        return flash(request, target, exc.message, kind="error")
    if job["status"] == "cancelled":
        return flash(request, target, f"Job {jid[:8]} cancelled before it started.")
    return flash(
        request,
        target,
        f"Job {jid[:8]} is stopping; what it committed stays. This page updates when it has.",
    )
