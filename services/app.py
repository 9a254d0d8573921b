"""The FastAPI application: ``create_app(settings)``.

Start-up (lifespan): open the database (``DATABASE_URL`` or the embedded Postgres in
``data_dir``), apply migrations, seal what an older version left in plaintext (``seal_at_rest``),
sweep orphan thumbnails, load or build the FAISS indexes, load
the models, then start a background thread that replays other processes' changes and snapshots
indexes. Shut-down: stop the thread, snapshot every index with unsaved changes, close the DB.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from identity.pipeline import FaceAnalyzer
from identity.settings import Settings, get_settings
from services.admin import routes as admin_routes
from services.api.routes import (
    body,
    collections,
    decisions,
    face_models,
    gallery,
    health,
    identities,
)
from services.auth import KeyStore
from services.db import make_sessionmaker, open_database, upgrade, vacuum
from services.errors import RequestSizeLimit, install_error_handlers
from services.gallery import GalleryStore, sweep_job_leftovers
from services.limits import InferenceLimit
from services.metrics import Metrics, MetricsMiddleware
from services.sealed import DataKeys, seal_legacy_rows, tighten_data_dirs
from services.store import IdentityStore
from services.throttle import FailureThrottle
from services.vector_store import check_vector_store_settings, make_vector_store

log = logging.getLogger(__name__)

BACKGROUND_EVERY_S = 2.0  # how stale another process's writes may look to an idle index


def _background(app: FastAPI, stop: threading.Event, settings: Settings) -> None:
    from identity.runtime import POOL

    while not stop.wait(BACKGROUND_EVERY_S):
        try:
            app.state.store.catch_up_indexes()
            POOL.unload_idle(settings.model_idle_unload_s)
        except Exception:  # keep the loop alive; the next round retries
            log.exception("index background round failed")


def seal_at_rest(settings: Settings, engine: Engine, sealer: DataKeys) -> None:
    """Seal rows and files left in plaintext by a version before sealing (migration 0320), then
    VACUUM FULL so no dead tuple keeps the plaintext; tighten folder and file modes."""
    tighten_data_dirs(settings)
    sealed = seal_legacy_rows(sealer, settings)
    if sealed:
        log.info("sealed plaintext biometric rows from before sealing: %s", sealed)
        vacuum(engine, mode="full")


def keep_uploads_in_memory(settings: Settings) -> None:
    """Uploaded files stay in memory while a request is parsed (bodies over ``max_request_bytes``
    are refused before that).

    Starlette spools each file part to a temporary file past 1 MiB, and then writes every chunk
    of it from a thread-pool hop: a phone photo's face went to disk, and a 2 MB upload paid
    about 30 hops. The bodies parsed at once are bounded (``InferenceLimit`` admits
    ``inference_workers`` image requests), so the memory this holds is too.
    """
    from starlette.formparsers import MultiPartParser

    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_request_bytes)


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    analyzer: FaceAnalyzer | None = None,
    warm_models: bool = True,
) -> FastAPI:
    """The service. ``engine``/``analyzer`` may be passed in (tests share them across apps)."""
    settings = settings or get_settings()
    check_vector_store_settings(settings)
    keep_uploads_in_memory(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            eng = engine if engine is not None else stack.enter_context(open_database(settings))
            upgrade(eng)
            # built here and handed on: routes get them through services.deps, never by
            # reaching into the store
            sealer = DataKeys(settings, eng)
            app.state.engine = eng
            app.state.sessions = make_sessionmaker(eng)
            store = IdentityStore(settings, eng, analyzer, make_vector_store(settings, eng, sealer))
            app.state.store = store
            seal_at_rest(settings, eng, sealer)
            app.state.keys = KeyStore(
                eng, FailureThrottle(settings.auth_fail_burst, settings.auth_fail_per_minute)
            )
            removed = store.sweep_orphan_thumbnails()
            if removed:
                log.info("removed %d orphan thumbnails", removed)
            # jobs of dead processes end now, not when the first job request builds the runner;
            # their uploaded archives (original photos) go with them
            app.state.gallery = GalleryStore(store, eng)
            sweep_job_leftovers(app.state.gallery)
            store.warm_indexes()
            if warm_models:
                store.load_models()
            stop = threading.Event()
            thread = threading.Thread(
                target=_background, args=(app, stop, settings), name="index-sync", daemon=True
            )
            thread.start()
            app.state.ready = True
            try:
                yield
            finally:
                app.state.ready = False
                stop.set()
                thread.join(timeout=10)
                store.snapshot_indexes()

    app = FastAPI(
        title="identity",
        version="0.1.0",
        description="Self-hosted face identity: enroll, verify (1:1), identify (1:N), erase.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False
    app.state.metrics = Metrics(
        lambda: app.state.store.index_sizes() if hasattr(app.state, "store") else {}
    )
    install_error_handlers(app)
    for module in (collections, identities, decisions, health, body, gallery, face_models):
        app.include_router(module.router)
    app.include_router(admin_routes.router)  # the dashboard at /admin
    # Added innermost first: the size limit runs before anything reads the body, metrics see
    # every response (503s from the inference queue too), the queue admits image requests.
    app.add_middleware(
        InferenceLimit,
        workers=settings.inference_workers,
        queue=settings.inference_queue,
        timeout_s=settings.inference_queue_timeout_s,
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    return app
