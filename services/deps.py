"""FastAPI dependencies: settings, store, sessions, DB session and the API-key principal, the
same for the API and the dashboard; ``services.app`` builds what they return at start-up.

``collection_access(action)`` builds a dependency that authenticates ``X-API-Key`` and checks
that the key's scope allows ``action`` on the ``{cid}`` path parameter (401 / 403 otherwise).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from identity.settings import Settings
from services.auth import KeyStore, Principal
from services.gallery import GalleryJobRunner, GalleryStore
from services.metrics import timed_stage
from services.store import IdentityStore

T = TypeVar("T")

# Dependencies that only read ``app.state`` or check a scope are coroutines: FastAPI runs a plain
# function dependency on a worker thread, a thread hop per dependency per request.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_store(request: Request) -> IdentityStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def get_sessions(request: Request) -> sessionmaker[Session]:
    """The app's session factory (for helpers that take one: dashboard sessions, the audit
    chain, the dashboard's read queries)."""
    return request.app.state.sessions  # type: ignore[no-any-return]


async def get_keys(request: Request) -> KeyStore:
    return request.app.state.keys  # type: ignore[no-any-return]


# Made on first use (most deployments never index a gallery or enroll a body through the
# service), under a lock: two first requests at once must not build two (two job runners).
_lazy = threading.Lock()


def lazy_state(request: Request, name: str, make: Callable[[], T]) -> T:
    """``request.app.state.<name>``, made by ``make()`` the first time."""
    state = request.app.state
    with _lazy:
        if getattr(state, name, None) is None:
            setattr(state, name, make())
        return getattr(state, name)  # type: ignore[no-any-return]


def get_gallery(request: Request) -> GalleryStore:
    state = request.app.state
    return lazy_state(request, "gallery", lambda: GalleryStore(state.store, state.engine))


def get_job_runner(request: Request) -> GalleryJobRunner:
    gallery = get_gallery(request)
    return lazy_state(request, "gallery_jobs", lambda: GalleryJobRunner(gallery))


def get_session(
    sessions: Annotated[sessionmaker[Session], Depends(get_sessions)],
) -> Iterator[Session]:
    """A plain SQLAlchemy session (read-mostly helpers such as the dashboard)."""
    with sessions() as session:
        yield session


def client_address(request: Request) -> str | None:
    """The caller's address as uvicorn reports it (behind a proxy, with ``--forwarded-allow-ips``
    it is the X-Forwarded-For client): what the sign-in throttle counts per."""
    return request.client.host if request.client else None


def get_principal(
    request: Request,
    keys: Annotated[KeyStore, Depends(get_keys)],
    x_api_key: Annotated[str | None, Header(description="API key (identity keys create)")] = None,
) -> Principal:
    with timed_stage("auth"):
        return keys.authenticate(x_api_key, client=client_address(request))


def access(action: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: a key allowed to do ``action`` (admin|enroll|read|verify|any), no collection."""

    async def dep(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(action)
        return principal

    return dep


def collection_access(action: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: a key allowed to do ``action`` in the ``{cid}`` collection of the path."""

    async def dep(cid: str, principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(action, cid)
        return principal

    return dep


StoreDep = Annotated[IdentityStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
KeysDep = Annotated[KeyStore, Depends(get_keys)]
GalleryDep = Annotated[GalleryStore, Depends(get_gallery)]
