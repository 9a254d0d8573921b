"""The audit log: filtered, paged, and on request the hash chain checked end to end."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse

from identity.errors import CodedError, InvalidInput
from services.admin import queries
from services.admin.routes.deps import AdminDep, render, screen, visible_names
from services.deps import SessionsDep, StoreDep

router = screen()


def _parse_when(value: str, field: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field}: not a date and time: '{value}'") from None
    # The form's datetime-local has no zone: read it as UTC, as the table shows.
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@router.get("/audit")
def audit_page(
    request: Request,
    admin: AdminDep,
    store: StoreDep,
    sessions: SessionsDep,
    action: str = "",
    collection: str = "",
    since: str = "",
    until: str = "",
    page: int = 1,
    check: bool = False,
) -> HTMLResponse:
    page = max(page, 1)
    filters = {"action": action, "collection": collection, "since": since, "until": until}
    # The whole chain is read to check it (seconds for millions of rows): on request only.
    chain = store.verify_audit_chain() if check else None
    if admin.principal.collection is not None:
        collection = admin.principal.collection
    flash = None
    try:
        result = queries.audit_page(
            sessions,
            action=action or None,
            collection=collection or None,
            since=_parse_when(since, "from"),
            until=_parse_when(until, "until"),
            offset=(page - 1) * queries.AUDIT_PAGE,
        )
    except CodedError as exc:
        flash = {"kind": "error", "message": exc.message}
        result = queries.audit_page(sessions, limit=0)
    pages = max(1, math.ceil(result["total"] / queries.AUDIT_PAGE))
    query = urlencode({k: v for k, v in filters.items() if v})
    return render(
        request,
        "audit.html",
        admin,
        result=result,
        filters=filters,
        page=page,
        pages=pages,
        collections=visible_names(store, admin),
        query=query,
        flash=flash,
        chain=chain,
        last_day=(datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    )
