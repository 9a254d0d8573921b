"""Files and names a gallery source meets: reading a file without ever blocking on a FIFO, the
names and labels the store can hold, and the ``path,identity`` labels CSV."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path, PurePosixPath

from identity.errors import InvalidInput
from identity.gallery.limits import human_bytes

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm"}
)
# An identity's external_id (and a gallery image's label) is at most this long in the store.
MAX_LABEL_CHARS = 256
MAX_CSV_BYTES = 64 * 1024 * 1024
# C0 controls and DEL: a NUL cannot be stored in Postgres text, the rest only confuse a report
_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes of a regular file. Opened non-blocking and checked with
    ``fstat``: a FIFO swapped in after an earlier ``stat`` is refused, not waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name}: not a regular file (a FIFO, device or socket)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(max_bytes + 1)
    finally:
        os.close(fd)


def display_name(name: str) -> str:
    """``name`` safe to store and show: undecodable bytes and control characters escaped."""
    try:  # names from os.walk and tarfile carry undecodable bytes as surrogate escapes
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(repr(ch)[1:-1] if ch in _CONTROL else ch for ch in text)[:1000]


def name_problem(rel_path: str) -> tuple[str, str] | None:
    """(code, message) when a path cannot be stored as it is (bytes that are not UTF-8, control
    characters), else None."""
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:
        return "bad_name", "the file name is not valid UTF-8; rename it"
    if any(ch in _CONTROL for ch in rel_path):
        return "bad_name", "the file name holds control characters; rename it"
    return None


def label_problem(label: str) -> tuple[str, str] | None:
    """(code, message) when ``label`` cannot name an identity, else None."""
    if len(label) > MAX_LABEL_CHARS:
        return (
            "label_too_long",
            f"the identity label is {len(label)} characters; at most {MAX_LABEL_CHARS}",
        )
    if name_problem(label) is not None:
        return "bad_label", "the identity label is not UTF-8 or holds control characters"
    return None


def read_labels_csv(csv_path: Path) -> dict[str, str]:
    """``path,identity`` rows (a header row naming ``path`` is optional) -> {path: identity}."""
    try:
        raw = read_regular_file(csv_path, MAX_CSV_BYTES)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read labels CSV {csv_path.name}: {exc.strerror or exc}", path=str(csv_path)
        ) from None
    if len(raw) > MAX_CSV_BYTES:
        raise InvalidInput(
            f"labels CSV {csv_path.name} is over {human_bytes(MAX_CSV_BYTES)}; split it",
            path=str(csv_path),
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"labels CSV {csv_path.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
            f"offset {exc.start}); save it as UTF-8",
            path=str(csv_path),
        ) from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise InvalidInput(f"labels CSV {csv_path} is empty", path=str(csv_path))
    header = [c.strip().lower() for c in rows[0]]
    path_col, label_col = 0, 1
    if "path" in header:
        path_col = header.index("path")
        label_col = next(
            (header.index(n) for n in ("identity", "label", "name", "person") if n in header),
            1 if path_col == 0 else 0,
        )
        rows = rows[1:]
    labels: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=2):
        if len(row) <= max(path_col, label_col):
            raise InvalidInput(
                f"labels CSV {csv_path}: row {lineno} needs a path and an identity", row=row
            )
        rel = row[path_col].strip().replace("\\", "/")
        label = row[label_col].strip()
        if rel and label:
            labels[rel] = label
    return labels
