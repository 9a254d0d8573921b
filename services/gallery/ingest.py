"""The batch driver: ``run_ingest`` reads a source, analyses it in batches and writes each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from identity.errors import CodedError, JobCancelled
from identity.gallery.limits import JobGuard, JobLimits
from identity.gallery.sources import GalleryItem, GallerySource, open_source
from identity.gallery.worker import WorkItem, analyze_batches, sha256_hex
from services.gallery.lease import JobLease
from services.gallery.report import IngestOptions, IngestReport
from services.gallery.store import GalleryStore

log = logging.getLogger(__name__)


# what a client sees when a job fails for a reason that is not a typed CodedError: the
# exception itself (a database error quotes its SQL and parameters) goes to the server log only
INTERNAL_JOB_ERROR = "internal error while indexing; the server log has the details (job {job})"


ProgressHook = Callable[[int, IngestReport], None]


def _prepared_batches(
    gallery: GalleryStore,
    collection_id: int,
    model: str,
    items: Iterator[GalleryItem],
    report: IngestReport,
    labelled: bool,
    batch_size: int,
    read_bytes: bool = True,
    guard: JobGuard | None = None,
) -> Iterator[list[WorkItem]]:
    """Read, hash and dedupe source items; yield batches of work that is actually new.

    Items already in the store are counted and dropped here, so a resumed run spends no
    detector time on them. ``read_bytes=False`` (Ray) leaves reading and hashing to the workers.
    """
    max_bytes = gallery.settings.max_image_bytes
    seen_in_run: set[str] = set()
    chunk: list[WorkItem] = []

    def flush(chunk: list[WorkItem]) -> list[WorkItem]:
        if not read_bytes:
            return chunk
        known = gallery.known_shas(collection_id, model, [w.sha256 for w in chunk if w.sha256])
        fresh = []
        for w in chunk:
            if w.sha256 in known:
                report.skipped_known += 1
                report.done += 1
            else:
                fresh.append(w)
        return fresh

    for item in items:
        if guard is not None:
            guard.check()
        report.images_seen += 1
        if labelled and not item.label:
            report.add_unreadable(item.rel_path, "no_label", "no identity label for this image")
            report.done += 1
            continue
        if read_bytes:
            try:
                data = item.read(max_bytes)
            except (OSError, ValueError) as exc:
                code = "image_too_large" if isinstance(exc, ValueError) else "unreadable"
                report.add_unreadable(item.rel_path, code, str(exc))
                report.done += 1
                continue
            if guard is not None and item.path is not None:
                guard.add_bytes(len(data))  # archive members are counted by their source
            digest = sha256_hex(data)
            if digest in seen_in_run:
                report.duplicates += 1
                report.done += 1
                continue
            seen_in_run.add(digest)
            chunk.append(WorkItem(item.rel_path, item.label, data=data, sha256=digest))
        else:
            chunk.append(
                WorkItem(
                    item.rel_path,
                    item.label,
                    path=None if item.path is None else str(item.path),
                    data=item.data,
                )
            )
        if len(chunk) >= batch_size:
            fresh = flush(chunk)
            chunk = []
            if fresh:
                yield fresh
    if chunk:
        fresh = flush(chunk)
        if fresh:
            yield fresh


def run_ingest(
    gallery: GalleryStore,
    collection: str,
    path: Path,
    options: IngestOptions,
    job_id: str | None = None,
    on_progress: ProgressHook | None = None,
    actor: int | None = None,
) -> IngestReport:
    """Index a gallery into ``collection`` (see module docstring); returns the report.

    ``on_progress(n_images_done, report)`` is called after each committed batch. Without
    ``job_id`` (the CLI) a bad source raises before any job row exists; with one (a queued API
    job) every failure, a bad source included, ends the job ``failed`` with a message a person
    can act on. A cancelled job raises ``JobCancelled`` after recording ``cancelled``.
    """
    started = time.perf_counter()
    source = None
    if job_id is None:
        source = open_source(
            Path(path),
            options.labels,
            options.labels_csv,
            gallery.settings.max_image_bytes,
            allowed_roots=options.allowed_roots,
        )
    lease = None
    if job_id is None:
        lease = JobLease(gallery.store.engine)
        try:
            job_id = gallery.create_job(collection, str(path), options, actor=actor, lease=lease)
        except BaseException:
            lease.release()
            raise
    try:
        return _run_job(
            gallery, collection, path, options, job_id, source, on_progress, actor, started
        )
    finally:
        if lease is not None:
            lease.release()


def _run_job(
    gallery: GalleryStore,
    collection: str,
    path: Path,
    options: IngestOptions,
    job_id: str,
    source: GallerySource | None,
    on_progress: ProgressHook | None,
    actor: int | None,
    started: float,
) -> IngestReport:
    report = IngestReport(job_id, collection, str(path), options.labels)
    problems_added = False
    guard = JobGuard(
        JobLimits.from_settings(gallery.settings),
        cancelled=lambda: gallery.cancel_requested(job_id),
    )
    try:
        if gallery.cancel_requested(job_id):
            raise JobCancelled("the job was cancelled before it started")
        if source is None:
            source = open_source(
                Path(path),
                options.labels,
                options.labels_csv,
                gallery.settings.max_image_bytes,
                allowed_roots=options.allowed_roots,
                guard=guard,
            )
        source.guard = guard
        labelled = source.label_mode != "none"
        report.label_mode = source.label_mode
        report.total = source.expected_count()
        if not gallery.start_job(job_id, report.total):
            raise JobCancelled("the job was cancelled before it started")
        cid = gallery.store.collection_id(collection)
        # The collection's model when the job starts embeds the whole job (a switch mid-job
        # applies to the next one), so every batch is written under the model that made it.
        model = gallery.store.model_of(collection)
        analysis = gallery.settings.model_copy(update={"embedder": model})
        batches = _prepared_batches(
            gallery,
            cid,
            model,
            iter(source),
            report,
            labelled,
            options.batch_size,
            read_bytes=options.engine == "local",
            guard=guard,
        )
        if options.engine == "ray":
            from identity.gallery.ray_engine import analyze_batches_ray

            stream = analyze_batches_ray(batches, analysis, labelled, options.workers)
        else:
            stream = analyze_batches(batches, analysis, labelled, options.workers)
        for _batch, results in stream:
            gallery.write_batch(
                collection, job_id, results, labelled, report, actor=actor, model=model
            )
            if on_progress is not None:
                on_progress(report.done, report)
            guard.check()
        problems_added = True
        for problem in source.problems:
            report.images_seen += 1
            report.done += 1
            report.add_unreadable(problem.rel_path, problem.code, problem.message)
        report.skipped_non_images = source.skipped_non_images
        if not labelled and options.cluster:
            try:
                summary = gallery.recluster(
                    collection, options.cluster_method, options.cluster_threshold
                )
            except CodedError as exc:
                # Every batch is committed by now: the faces are stored and can be clustered
                # later (POST .../clusters/recluster with a threshold), so the job did its work.
                why = f"{exc.message} [{exc.code}]"
                log.warning("gallery job %s: clustering skipped: %s", job_id, why)
                report.notes.append(f"clustering skipped: {why}")
            else:
                report.clusters = summary["clusters"]
                report.clustered_faces = summary["clustered_faces"]
        report.seconds = time.perf_counter() - started
        gallery.finish_job(job_id, "done", report)
    except BaseException as exc:
        report.seconds = time.perf_counter() - started
        if source is not None and not problems_added:
            for problem in source.problems:  # what the source refused before it stopped
                report.add_unreadable(problem.rel_path, problem.code, problem.message)
            report.skipped_non_images = source.skipped_non_images
        status, error = _job_end(job_id, exc)
        try:
            gallery.finish_job(job_id, status, report, error=error)
        except Exception:  # the database may be what failed; keep the first error
            log.exception("could not record the end of gallery job %s", job_id)
        raise
    return report


def _job_end(job_id: str, exc: BaseException) -> tuple[str, str | None]:
    """(status, the error a client may see) for a job that raised ``exc``. Only typed errors,
    whose messages this code wrote, reach clients; anything else is logged with its details."""
    if isinstance(exc, JobCancelled):
        log.info("gallery job %s cancelled", job_id)
        return "cancelled", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted (Ctrl-C or SIGTERM); rerun the same source to resume"
    if isinstance(exc, CodedError):
        log.warning("gallery job %s failed: %s [%s]", job_id, exc.message, exc.code)
        return "failed", f"{exc.message} [{exc.code}]"
    log.error("gallery job %s failed", job_id, exc_info=exc)
    return "failed", INTERNAL_JOB_ERROR.format(job=job_id)
