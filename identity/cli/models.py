"""``identity models``: the model registry (list, verify checksums, pull weights)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from identity.settings import Settings

models_app = typer.Typer(
    help="Model registry: list, verify checksums, pull weights.", no_args_is_help=True
)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every known model: presence, location, checksum state, licence, and how to get it."""
    from identity.registry import load_manifests, model_status

    settings = Settings()
    rows = [
        model_status(n, settings.models_dir, settings.model_cache_dir) for n in load_manifests()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    # The licence decides whether a model may be used at all: shown whole on its own line, never
    # cut to a column; a missing model says how to get it.
    typer.echo(f"{'name':32} {'task':16} {'state':12} location")
    for r in rows:
        state = r["checksum"] if r["present"] else "missing"
        typer.echo(f"{r['name']:32} {r['task']:16} {state:12} {r['location'] or '-'}")
        typer.echo(f"    licence: {r['licence']}")
        if r["how_to_get"]:
            typer.echo(f"    get it: {r['how_to_get']}")


@models_app.command("verify")
def models_verify(names: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Check the SHA-256 of every present model (or the named ones); exit 1 on a mismatch."""
    from identity.registry import load_manifests, model_status

    settings = Settings()
    bad = 0
    for name in names or list(load_manifests()):
        r = model_status(name, settings.models_dir, settings.model_cache_dir)
        if not r["present"]:
            if names:
                bad += 1
            typer.echo(f"{name}: missing")
            continue
        head = f"; quality head: {r['quality_head']}" if r["quality_head"] else ""
        typer.echo(f"{name}: {r['checksum']} ({r['location']}){head}")
        bad += r["checksum"] == "MISMATCH" or r["quality_head"] == "MISMATCH"
    if bad:
        raise typer.Exit(1)


@models_app.command("pull")
def models_pull(
    name: str,
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            help="Accept a model whose manifest has no SHA-256 and pin the downloaded file's."
        ),
    ] = False,
) -> None:
    """Download a model's weights into the cache, verifying the SHA-256 before keeping them."""
    from identity.registry import pull

    settings = Settings()
    path = pull(name, settings.model_cache_dir, allow_unpinned=allow_unpinned)
    typer.echo(f"{name}: saved to {path}")
