"""A collection's quality report: the enrollment gate re-run on its stored templates (the same
store call as ``GET /v1/collections/{cid}/quality-report``). It reports; removing a face is the
identity page's "Remove face"."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from identity.errors import InvalidInput
from services.admin.routes.deps import AdminDep, collection_or_404, render, screen
from services.deps import StoreDep

router = screen()


@router.get("/collections/{cid}/quality")
def quality_page(
    request: Request, cid: str, admin: AdminDep, store: StoreDep, min_quality: str = ""
) -> HTMLResponse:
    admin.principal.require("admin", cid)
    collection = collection_or_404(store, admin, cid)
    try:
        gate = float(min_quality) if min_quality.strip() else None
    except ValueError:
        raise InvalidInput("min_quality must be a number in [0, 1]") from None
    report = store.quality_report(cid, gate)
    return render(
        request, "quality_report.html", admin, collection=collection, tab="quality", report=report
    )
