"""``GalleryStore``: the gallery's data access, one part per job (rows, batches, clusters)."""

from __future__ import annotations

from services.gallery.batches import GalleryBatches
from services.gallery.clusters import GalleryClusters
from services.gallery.jobs import GalleryJobs


class GalleryStore(GalleryJobs, GalleryBatches, GalleryClusters):
    """Gallery writes and reads, sharing the ``IdentityStore``'s engine, model and indexes."""
