"""Byte searches over the files a deployment leaves on disk (tests of sealing and erasure)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, text

# What a JPEG written by libjpeg (OpenCV, Pillow) starts with: SOI, APP0 "JFIF". Long enough
# that ciphertext never holds it by chance (2^-88 per position).
JFIF = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def windows(blob: bytes, size: int = 48) -> list[bytes]:
    """Three slices of ``blob`` (start, middle, end): a TOASTed value is stored in ~2 KB chunks,
    so the whole blob need not be contiguous on disk, but each slice of one chunk is."""
    if len(blob) <= size:
        return [blob]
    mid = len(blob) // 2
    return [blob[:size], blob[mid : mid + size], blob[-size:]]


def pg_data_dir(engine: Engine) -> Path:
    with engine.connect() as conn:
        return Path(conn.execute(text("SHOW data_directory")).scalar_one())


def files_under(root: Path, skip: Iterable[str] = ()) -> list[Path]:
    skipped = {root / s for s in skip}
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(p == s or s in p.parents for s in skipped)
    ]


def find_bytes(paths: Iterable[Path], needles: dict[str, bytes]) -> list[tuple[str, str]]:
    """(needle name, file) for every needle found in a file; empty when none is anywhere."""
    hits = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:  # a file Postgres removed while we walked
            continue
        hits.extend((name, str(path)) for name, needle in needles.items() if needle in data)
    return hits
