"""Batch gallery indexing on top of the identity store: jobs, batch writes, clusters.

``run_ingest(gallery, collection, path, options)`` is the whole job (the CLI and the API's
background worker both call it):

    source items -> read + SHA-256 -> skip images the store already has -> batches
      -> worker pool (decode, detect, embed, quality) -> write_batch (one transaction each)

Idempotent and resumable: every analysed image gets a ``gallery_images`` row in the same
transaction as its faces, keyed by (collection, model, sha256); a rerun skips those, and images
already enrolled through the API (``face_templates.source_sha256``) too. A kill loses at most the
batches in flight, never half a batch. Labelled faces become ``face_templates`` of identities
created as needed (``external_id`` = label); unlabelled faces go to ``gallery_faces`` and are
clustered into proposed identities (``gallery_clusters``) that an operator names or merges.

One module per job: ``report`` (options and report), ``lease`` (``JobLease``), ``jobs`` (job
rows, ending dead owners' jobs), ``batches`` (the one-transaction batch write), ``clusters``
(proposed identities), ``store`` (``GalleryStore``, composed of those three parts), ``ingest``
(``run_ingest``), ``migrate`` (``run_migration``: re-embedding a collection's templates with
another face model, and ``migrate_check``, its review list), ``runner`` (the API's background thread), ``paths`` (gallery roots). The tables
are in ``services/tables.py``.
"""

from services.gallery.ingest import _job_end as _job_end  # tests/gallery/test_gallery_job_limits.py
from services.gallery.ingest import run_ingest
from services.gallery.jobs import LIVE_STATUSES, sweep_job_leftovers
from services.gallery.lease import JobLease
from services.gallery.migrate import MigrationReport, run_migration
from services.gallery.paths import gallery_roots, resolve_server_path
from services.gallery.report import IngestOptions, IngestReport
from services.gallery.runner import GalleryJobRunner
from services.gallery.store import GalleryStore

__all__ = [
    "LIVE_STATUSES",
    "GalleryJobRunner",
    "GalleryStore",
    "IngestOptions",
    "IngestReport",
    "JobLease",
    "MigrationReport",
    "gallery_roots",
    "resolve_server_path",
    "run_ingest",
    "run_migration",
    "sweep_job_leftovers",
]
