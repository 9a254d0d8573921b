"""What every part of ``GalleryStore`` shares: the ``IdentityStore`` it is built on (identities,
templates, the locked write) and the database (the gallery's own tables, job leases)."""

from __future__ import annotations

from sqlalchemy import Engine

from services.db import make_sessionmaker
from services.store import IdentityStore


class GalleryBase:
    """The state each part of ``GalleryStore`` (jobs, batches, clusters) works on."""

    def __init__(self, store: IdentityStore, engine: Engine) -> None:
        self.store = store
        self.settings = store.settings
        self.engine = engine  # JobLease holds a connection of its own
        self.sessions = make_sessionmaker(engine)
