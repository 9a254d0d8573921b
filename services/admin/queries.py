"""Read models the dashboard needs that the public store API does not offer.

Kept beside the dashboard (not in ``services/store.py``) because only the dashboard asks for
them: a filtered, paged audit log, one thumbnail per identity for list pages, the newest gallery
jobs across collections. Writes (removing a single face, naming
a cluster) are ``IdentityStore`` / ``GalleryStore`` methods.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.audit import event_dict
from services.gallery import GalleryStore
from services.tables import AuditEvent, FaceTemplate

AUDIT_PAGE = 50


def first_template_ids(
    sessions: sessionmaker[Session], identity_ids: Sequence[str]
) -> dict[str, int]:
    """identity id -> its oldest template with a thumbnail, for one picture per list row."""
    ids = [uuid.UUID(i) for i in identity_ids]
    if not ids:
        return {}
    with sessions() as s:
        rows = s.execute(
            select(FaceTemplate.identity_id, func.min(FaceTemplate.id))
            .where(FaceTemplate.identity_id.in_(ids), FaceTemplate.thumbnail.is_not(None))
            .group_by(FaceTemplate.identity_id)
        ).all()
    return {str(iid): int(tid) for iid, tid in rows}


def audit_page(
    sessions: sessionmaker[Session],
    action: str | None = None,
    collection: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = AUDIT_PAGE,
    offset: int = 0,
) -> dict[str, Any]:
    """Newest first; ``action`` matches exactly or as a prefix ending in '.' ('face.' = all)."""
    where = []
    if action:
        where.append(
            AuditEvent.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditEvent.action == action
        )
    if collection:
        where.append(AuditEvent.collection == collection)
    if since is not None:
        where.append(AuditEvent.at >= since)
    if until is not None:
        where.append(AuditEvent.at < until)
    with sessions() as s:
        total = s.execute(select(func.count()).select_from(AuditEvent).where(*where)).scalar_one()
        rows = (
            s.execute(
                select(AuditEvent)
                .where(*where)
                .order_by(AuditEvent.id.desc())
                .limit(limit)
                .offset(offset)
            )
            .scalars()
            .all()
        )
        actions = (
            s.execute(select(AuditEvent.action).distinct().order_by(AuditEvent.action))
            .scalars()
            .all()
        )
        items = [event_dict(e) for e in rows]
    return {
        "items": items,
        "total": total,
        "actions": list(actions),
        "limit": limit,
        "offset": offset,
    }


def recent_jobs(
    gallery: GalleryStore, collections: Sequence[str], limit: int = 50
) -> list[dict[str, Any]]:
    """The newest gallery jobs of these collections, newest first (one ``list_jobs`` each: the
    dashboard shows a handful of collections, and each job dict is the API's own)."""
    jobs = [j for name in collections for j in gallery.list_jobs(name, limit)]
    jobs.sort(key=lambda j: j["created_at"] or "", reverse=True)
    return jobs[:limit]
