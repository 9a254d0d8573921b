"""The admin dashboard at ``/admin``: server-rendered pages over the identity store, one module
per screen.

Routes stay thin: read the form, call one store (or ``queries``) function, render a template.
Sign-in takes an admin API key once; after that a signed, http-only cookie carries a server-side
session's token (``services.admin.session``) and every POST carries the session's CSRF token
(``deps.CheckedAdminDep``). Errors from the store (``CodedError``) are shown as the error page
instead of the API's JSON problem body, mapped once for every screen (``deps.PageRoute``, the
route class of ``deps.screen()``); a page that answers an error with a flash catches it itself.
Gallery jobs and their proposed clusters (docs/batch.md) go
through the same ``GalleryStore`` as the API.
"""

from __future__ import annotations

from fastapi import APIRouter

from services.admin.routes import (
    audit,
    clusters,
    collections,
    face_models,
    identities,
    jobs,
    playground,
    quality,
    signin,
    system,
)

router = APIRouter()
for screen in (
    signin,
    collections,
    identities,
    playground,
    audit,
    system,
    jobs,
    clusters,
    face_models,
    quality,
):
    router.include_router(screen.router)
