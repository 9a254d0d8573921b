"""Where an API gallery job may read from: the gallery roots and server path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from identity.errors import InvalidInput
from services.errors import NotFound


def gallery_roots(settings: Any) -> list[Path]:
    """``IDENTITY_GALLERY_ROOTS`` resolved: the only folders an API job may read from."""
    return [Path(r).resolve() for r in settings.gallery_roots]


def resolve_server_path(settings: Any, raw: str) -> Path:
    """A server-side gallery path, allowed only inside ``settings.gallery_roots``.

    Only the path itself: the files a CSV names are confined by ``IngestOptions.allowed_roots``
    row by row while the job runs.
    """
    roots = gallery_roots(settings)
    if not roots:
        raise InvalidInput(
            "server-side paths are disabled: set IDENTITY_GALLERY_ROOTS, or upload an archive"
        )
    path = Path(raw)
    if not path.is_absolute():
        path = roots[0] / path
    resolved = path.resolve()
    if not any(resolved.is_relative_to(r) for r in roots):
        raise InvalidInput(
            "path is outside the allowed gallery roots", path=raw, roots=[str(r) for r in roots]
        )
    if not resolved.exists():
        raise NotFound(f"gallery path '{raw}' not found", path=raw)
    return resolved
