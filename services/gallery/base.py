"""What every part of ``GalleryStore`` shares: the ``IdentityStore`` it is built on."""

from __future__ import annotations

from services.store import IdentityStore


class GalleryBase:
    """The state each part of ``GalleryStore`` (jobs, batches, clusters) works on."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store
        self.settings = store.settings
        self.sessions = store.sessions
