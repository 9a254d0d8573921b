"""Options and settings shared by the library's commands."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from identity.cli.errors import fail
from identity.settings import Settings


def check_far(far: float | None, option: str = "--far") -> None:
    """A FAR is a probability strictly between 0 and 1; refuse others before loading models."""
    if far is not None and not 0 < far < 1:
        fail(f"{option} must be between 0 and 1 (exclusive), got {far:g}")


def settings_with(detector: str | None = None, embedder: str | None = None) -> Settings:
    overrides: dict[str, Any] = {
        k: v for k, v in (("detector", detector), ("embedder", embedder)) if v
    }
    return Settings(**overrides)


DetectorOpt = Annotated[
    str | None, typer.Option(help="Detector model (default IDENTITY_DETECTOR).")
]
EmbedderOpt = Annotated[
    str | None, typer.Option(help="Embedder model (default IDENTITY_EMBEDDER).")
]
FarOpt = Annotated[float | None, typer.Option(help="False accept rate that decides a match.")]
