"""``identity watch SOURCE``: the command; ``services.cli`` registers it.

With ``--gallery DIR`` it needs only the library; with ``--collection C`` it reads the identity
store (Postgres + the search index), which is why the command lives on the service side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from identity.settings import Settings
from identity.video.watch import Event, WatchOptions, run_watch


def watch(
    source: Annotated[
        str, typer.Argument(help="Video file, rtsp:// or http(s):// URL, or camera index (0).")
    ],
    collection: Annotated[
        str | None, typer.Option(help="Identify against this collection of the identity store.")
    ] = None,
    gallery: Annotated[
        Path | None,
        typer.Option(help="Identify against a folder of labelled photos: DIR/<label>/*.jpg."),
    ] = None,
    detector: Annotated[
        str, typer.Option(help="Detector model for the frames.")
    ] = "blazeface_short",
    embedder: Annotated[
        str | None,
        typer.Option(help="Embedder (default IDENTITY_EMBEDDER; with --collection, the store's)."),
    ] = None,
    far: Annotated[
        float | None, typer.Option(help="False accept rate that decides a match.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Explicit cosine similarity threshold.", min=-1.0, max=1.0),
    ] = None,
    identify_after: Annotated[
        int, typer.Option(help="Identify a track after this many frames.", min=1)
    ] = 5,
    best_k: Annotated[
        int, typer.Option(help="Best-quality frames averaged per identification.", min=1)
    ] = 3,
    max_missed: Annotated[
        int, typer.Option(help="A track ends after this many frames unseen.", min=0)
    ] = 10,
    max_frames: Annotated[
        int | None, typer.Option(help="Stop after this many frames.", min=1)
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Detections below this confidence are ignored (default 0.7 faces, 0.5 people).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    bodies: Annotated[
        bool,
        typer.Option(
            "--bodies",
            help="Follow people by body (IDENTITY_PERSON_DETECTOR, IDENTITY_BODY_EMBEDDER) "
            "against the collection's body templates; needs --collection.",
        ),
    ] = False,
) -> None:
    """Detect, track and identify faces (or, with --bodies, people) in a video; print JSON
    lines events, fps at the end.

    Errors are mapped to one ``error:`` line by ``identity.cli.cli_errors``, which wraps this
    command when ``services.cli`` registers it.
    """

    def emit(event: Event) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    if (collection is None) == (gallery is None):
        _fail("give exactly one of --collection or --gallery")
    if far is not None and not 0 < far < 1:
        _fail(f"--far must be between 0 and 1 (exclusive), got {far:g}")
    if bodies and collection is None:
        _fail("--bodies identifies against a collection's body templates: give --collection")
    if min_score is None:
        min_score = 0.5 if bodies else 0.7  # the SSD's own cut; BlazeFace's, see VideoWatcher
    options = WatchOptions(detector, identify_after, best_k, max_missed, max_frames, min_score)
    from identity.video.watch import open_source

    open_source(source).release()  # a bad source fails before the gallery is embedded
    overrides: dict[str, Any] = {"embedder": embedder} if embedder else {}
    settings = Settings(**overrides)
    if gallery is not None:
        from identity.video.identify import GalleryIdentifier

        identifier = GalleryIdentifier.from_folder(gallery, settings, far=far, threshold=threshold)
        run_watch(source, identifier, settings, options, emit)
    else:
        assert collection is not None
        run_with_collection(source, collection, settings, options, emit, far, threshold, bodies)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def run_with_collection(
    source: str,
    collection: str,
    settings: Settings,
    options: WatchOptions,
    emit: Any,
    far: float | None = None,
    threshold: float | None = None,
    bodies: bool = False,
) -> None:
    """Identify against a collection of the identity store (Postgres + FAISS, services/): its
    face templates, or with ``bodies`` its body templates (``BodyStore``, as identify-body)."""
    from identity.video.identify import StoreIdentifier
    from services.db import open_database
    from services.store import IdentityStore

    with open_database(settings) as engine:
        store = IdentityStore(settings, engine)
        if bodies:
            from identity.video.body_watch import BodyStoreIdentifier, run_body_watch
            from services.body_store import BodyStore

            body_ids = BodyStoreIdentifier(BodyStore(store), collection, far, threshold)
            run_body_watch(source, body_ids, settings, options, emit)
            return
        identifier = StoreIdentifier(store, collection, far=far, threshold=threshold)
        run_watch(source, identifier, settings, options, emit)
