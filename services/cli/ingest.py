"""``identity ingest PATH --collection C``: index a gallery into the store, with a progress bar;
``identity jobs cancel ID`` and ``identity jobs list -c C``.

Registered on the ``identity`` command by ``services.cli``. The service layer (Postgres, FAISS) is imported
inside the command, so ``identity analyze`` never pays for it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

LABEL_HELP = (
    "none (cluster into proposed identities), folders (the top-level folder under PATH is the "
    "identity: alice/2019/x.jpg is alice), csv FILE"
)


def ingest(
    path: Annotated[
        Path, typer.Argument(help="Folder, .zip, .tar[.gz] archive, or path,identity CSV.")
    ],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Collection to index into.")
    ],
    labels: Annotated[str, typer.Option(help=LABEL_HELP, metavar="none|folders|csv")] = "none",
    labels_csv: Annotated[
        Path | None, typer.Argument(help="The CSV for --labels csv.", show_default=False)
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores).", min=1)
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per batch.", min=1)] = None,
    engine: Annotated[str, typer.Option(help="local (process pool) or ray (Ray Data).")] = "local",
    cluster: Annotated[
        bool, typer.Option(help="Unlabelled mode: propose identities by clustering.")
    ] = True,
    cluster_method: Annotated[str, typer.Option(help="graph, components or hdbscan.")] = "graph",
    create: Annotated[bool, typer.Option(help="Create the collection if missing.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Ingest a gallery: detect, embed and enroll every usable face; idempotent and resumable."""
    from identity.gallery.worker import default_workers
    from identity.settings import Settings

    if labels not in ("none", "folders", "csv"):
        _fail(f"--labels must be none, folders or csv, not {labels!r}")
    if labels == "csv" and labels_csv is None and path.suffix.lower() != ".csv":
        _fail("--labels csv needs the CSV file: --labels csv FILE")
    if engine not in ("local", "ray"):
        _fail(f"--engine must be local or ray, not {engine!r}")
    if cluster_method not in ("graph", "components", "hdbscan"):
        _fail(f"--cluster-method must be graph, components or hdbscan, not {cluster_method!r}")
    settings = Settings()
    # Everything that can be checked without the database is checked first, so a typo or a
    # missing extra never leaves a new, empty collection or a failed job behind.
    from identity.gallery.sources import open_source

    open_source(path, labels, labels_csv, settings.max_image_bytes)  # type: ignore[arg-type]
    if engine == "ray" and not has_module("ray"):
        _fail(
            "--engine ray needs Ray, which is not installed: pip install 'identity-platform[ray]'"
        )
    if (
        cluster
        and labels == "none"
        and cluster_method == "hdbscan"
        and not (has_module("sklearn") or has_module("hdbscan"))
    ):
        _fail(
            "--cluster-method hdbscan needs scikit-learn>=1.3 or the hdbscan package: "
            "pip install 'identity-platform[dev]' (or use --cluster-method graph)"
        )
    report = run_cli_ingest(
        settings,
        path,
        collection,
        labels=labels,
        labels_csv=labels_csv,
        workers=workers or default_workers(),
        batch_size=batch_size or settings.index_batch_size,
        engine=engine,
        cluster=cluster,
        cluster_method=cluster_method,
        create=create,
        progress=progress,
    )
    text = report.pop("text")
    typer.echo(json.dumps(report, indent=2) if as_json else text)


def has_module(name: str) -> bool:
    """Whether ``name`` is importable, without importing it (Ray takes seconds to import)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def run_cli_ingest(
    settings: Any,
    path: Path,
    collection: str,
    *,
    labels: str,
    labels_csv: Path | None,
    workers: int,
    batch_size: int,
    engine: str,
    cluster: bool,
    cluster_method: str,
    create: bool,
    progress: bool,
) -> dict[str, Any]:
    """Open the store, run the job with a tqdm bar, return the report dict (+ ``text``)."""
    from tqdm import tqdm

    from services.db import open_database, upgrade
    from services.embedded_pg import exit_on_sigterm
    from services.errors import NotFound
    from services.gallery import GalleryStore, IngestOptions, run_ingest
    from services.store import IdentityStore

    exit_on_sigterm()  # SIGTERM stops the embedded Postgres cleanly; SIGKILL is safe anyway
    options = IngestOptions(
        labels=labels,  # type: ignore[arg-type]
        labels_csv=labels_csv,
        workers=workers,
        batch_size=batch_size,
        engine=engine,  # type: ignore[arg-type]
        cluster=cluster,
        cluster_method=cluster_method,  # type: ignore[arg-type]
    )
    with open_database(settings) as eng:
        upgrade(eng)
        store = IdentityStore(settings, eng)
        try:
            store.collection_id(collection)
        except NotFound:
            if not create:
                raise
            store.create_collection(collection)
        gallery = GalleryStore(store, eng)
        bar = tqdm(
            desc="indexing", unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True
        )

        def on_progress(done: int, report: Any) -> None:
            if report.total is not None and bar.total != report.total:
                bar.total = report.total
            bar.update(done - bar.n)
            bar.set_postfix(
                enrolled=report.enrolled,
                rejected=report.rejected,
                unreadable=report.unreadable_count,
                refresh=False,
            )

        try:
            report = run_ingest(gallery, collection, path, options, on_progress=on_progress)
        finally:
            bar.close()
        out = report.to_dict()
        out["text"] = report.to_text()
        return out


jobs_app = typer.Typer(help="Gallery indexing jobs (API and CLI alike).", no_args_is_help=True)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id (GET .../jobs, identity jobs list).")],
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Its collection (found if omitted).")
    ] = None,
) -> None:
    """Stop a job: queued ones end at once, a running one at its next check (seconds), in
    whichever process runs it; what it committed stays."""
    with _gallery_store() as gallery:
        name = collection or gallery.job_collection(job_id)
        job = gallery.cancel_job(name, job_id)
    typer.echo(f"job {job['id']}: {job['status']}")


@jobs_app.command("list")
def jobs_list(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection.")],
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The collection's newest jobs: id, status, counts, source."""
    with _gallery_store() as gallery:
        jobs = gallery.list_jobs(collection, limit)
    if as_json:
        typer.echo(json.dumps(jobs, indent=2))
        return
    for j in jobs:
        c = j["counts"]
        typer.echo(
            f"{j['id']}  {j['status']:11}  seen {c['seen']:>6}  enrolled {c['enrolled']:>6}  "
            f"{j['source']}"
        )


@contextmanager
def _gallery_store() -> Iterator[Any]:
    from identity.settings import Settings
    from services.db import open_database, upgrade
    from services.gallery import GalleryStore
    from services.store import IdentityStore

    settings = Settings()
    with open_database(settings) as eng:
        upgrade(eng)
        yield GalleryStore(IdentityStore(settings, eng), eng)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add ``identity ingest`` (and its old name ``index``) and ``identity jobs cancel|list`` to the main CLI."""
    app.command("ingest")(ingest)
    # the old name, kept so existing scripts go on working; "index" now means only the search index
    app.command("index", hidden=True, deprecated=True)(ingest)
    app.add_typer(jobs_app, name="jobs")
