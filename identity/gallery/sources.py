"""Gallery sources: a folder tree, a zip or tar(.gz) archive, or a CSV of ``path,identity``.

A source yields ``GalleryItem`` objects one at a time (relative path, a way to read the bytes, an
optional label) and records everything it refused in ``problems``. Archives are never extracted
(``identity.gallery.archives`` reads their members into memory one by one), so nothing inside an
archive is ever written anywhere.

Special files (FIFOs, devices, sockets) are refused from ``stat`` alone and every file is opened
non-blocking, so a FIFO can never hang a job. A ``JobGuard`` (``identity.gallery.limits``) bounds
what a source may decompress and lets a job be cancelled between members and inside a long
decompression.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from identity.errors import InvalidInput
from identity.gallery.archives import (
    count_zip_images,
    is_tar,
    tar_items,
    zip_items,
)
from identity.gallery.files import (
    display_name,
    is_image_name,
    label_problem,
    name_problem,
    read_labels_csv,
    read_regular_file,
)
from identity.gallery.limits import JobGuard

__all__ = ["GalleryItem", "GallerySource", "LabelMode", "SourceProblem", "open_source"]

LabelMode = Literal["none", "folders", "csv"]


@dataclass
class SourceProblem:
    """An entry the source refused before any decoding (the report lists these)."""

    rel_path: str
    code: str  # path_traversal, absolute_path, link, special_file, too_large, unreadable, ...
    message: str


@dataclass
class GalleryItem:
    """One image of a gallery. ``path`` is set for files on disk (a worker may read them
    itself); archive members carry their ``data`` already read into memory."""

    rel_path: str
    label: str | None
    path: Path | None = None
    data: bytes | None = None

    def read(self, max_bytes: int) -> bytes:
        """The raw bytes, refusing more than ``max_bytes`` (raises ``ValueError``)."""
        if self.data is not None:
            if len(self.data) > max_bytes:
                raise ValueError(f"{len(self.data)} bytes is over the limit of {max_bytes}")
            return self.data
        assert self.path is not None
        data = read_regular_file(self.path, max_bytes)
        if len(data) > max_bytes:
            raise ValueError(f"file is over the limit of {max_bytes} bytes")
        return data


@dataclass
class GallerySource:
    """Iterate with ``for item in source``; ``problems`` fills in as iteration proceeds."""

    location: Path
    kind: Literal["folder", "zip", "tar", "csv"]
    label_mode: LabelMode = "none"
    labels_csv: Path | None = None
    max_bytes: int = 20 * 1024 * 1024
    # Resolved folders every file a CSV names must lie in (None = anywhere: the CLI user can read
    # those files anyway). The API sets its gallery roots, so a CSV cannot reach the rest of the
    # server with an absolute or ``../`` row.
    allowed_roots: tuple[Path, ...] | None = None
    guard: JobGuard | None = None
    problems: list[SourceProblem] = field(default_factory=list)
    skipped_non_images: int = 0
    _labels: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.label_mode == "csv":
            if self.labels_csv is None:
                raise InvalidInput("--labels csv needs a CSV file of path,identity")
            self._labels = read_labels_csv(self.labels_csv)

    # labels -----------------------------------------------------------------------------------
    def label_for(self, rel_path: str) -> str | None:
        if self.label_mode == "folders":
            # The top-level folder under the root names the person, however deep the photo
            # sits: photo libraries nest by person first, then by year or event
            # (``alice/2019/x.jpg`` is alice). An image at the root has no label.
            parts = PurePosixPath(rel_path).parts
            return parts[0] if len(parts) > 1 else None
        if self.label_mode == "csv":
            assert self._labels is not None
            return self._labels.get(rel_path) or self._labels.get("./" + rel_path)
        return None

    def expected_count(self) -> int | None:
        """How many items iteration will try (for a progress bar), when cheap to know."""
        if self.kind == "folder":
            return sum(1 for _ in self._walk_names())
        if self.kind == "csv":
            assert self._labels is not None
            return len(self._labels)
        if self.kind == "zip":
            return count_zip_images(self.location)
        return None  # a tar.gz would have to be decompressed once just to count

    # iteration --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[GalleryItem]:
        if self.kind == "folder":
            yield from self._iter_folder()
        elif self.kind == "csv":
            yield from self._iter_csv()
        elif self.kind == "zip":
            yield from zip_items(self)
        else:
            yield from tar_items(self)

    # what each reader (here and in ``archives``) reports through -----------------------------
    def refuse(self, rel_path: str, code: str, message: str) -> None:
        """Record an entry refused before decoding (listed in the job's report)."""
        self.problems.append(SourceProblem(display_name(rel_path), code, message))

    def check_cancelled(self) -> None:
        """Raise when the job's guard says stop (cancelled, or over its limits)."""
        if self.guard is not None:
            self.guard.check()

    def make_item(
        self, rel: str, label: str | None, path: Path | None = None, data: bytes | None = None
    ) -> GalleryItem | None:
        """The item, or None with a problem recorded when its name or label cannot be stored."""
        problem = name_problem(rel)
        if problem is None and label is not None:
            problem = label_problem(label)
        if problem is not None:
            self.refuse(rel, *problem)
            return None
        return GalleryItem(rel, label, path=path, data=data)

    def _walk_names(self) -> Iterator[tuple[Path, str]]:
        root = self.location
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                if is_image_name(name):
                    yield full, rel

    def _iter_folder(self) -> Iterator[GalleryItem]:
        root = self.location.resolve()
        for dirpath, dirnames, filenames in os.walk(self.location, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                self.check_cancelled()
                full = Path(dirpath) / name
                rel = full.relative_to(self.location).as_posix()
                if not is_image_name(name):
                    self.skipped_non_images += 1
                    continue
                if full.is_symlink():
                    # a link may point anywhere on the server; follow it only inside the root
                    target = full.resolve()
                    if not target.is_relative_to(root):
                        self.refuse(rel, "link_outside_root", f"symlink to {target} refused")
                        continue
                try:
                    st = full.stat()
                except OSError as exc:
                    self.refuse(rel, "unreadable", str(exc))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    self.refuse(rel, "special_file", "not a regular file")
                    continue
                if st.st_size > self.max_bytes:
                    self.refuse(rel, "too_large", f"{st.st_size} bytes > {self.max_bytes}")
                    continue
                item = self.make_item(rel, self.label_for(rel), path=full)
                if item is not None:
                    yield item

    def _iter_csv(self) -> Iterator[GalleryItem]:
        assert self._labels is not None
        base = self.location.parent
        for rel, label in self._labels.items():
            self.check_cancelled()
            full = Path(rel) if Path(rel).is_absolute() else base / rel
            if self.allowed_roots is not None:
                # resolve first (symlinks and ``..`` included) and never touch what lies outside
                full = full.resolve()
                if not any(full.is_relative_to(r) for r in self.allowed_roots):
                    self.refuse(
                        rel, "outside_roots", "path is outside the allowed gallery roots; refused"
                    )
                    continue
            try:
                st = full.stat()
            except OSError as exc:
                self.refuse(rel, "unreadable", f"{exc.strerror or exc}")
                continue
            if not stat.S_ISREG(st.st_mode):
                self.refuse(rel, "special_file", "not a regular file")
                continue
            if st.st_size > self.max_bytes:
                self.refuse(rel, "too_large", f"{st.st_size} bytes > {self.max_bytes}")
                continue
            item = self.make_item(rel, label, path=full)
            if item is not None:
                yield item


def open_source(
    path: Path,
    labels: LabelMode = "none",
    labels_csv: Path | None = None,
    max_bytes: int = 20 * 1024 * 1024,
    allowed_roots: list[Path] | None = None,
    guard: JobGuard | None = None,
) -> GallerySource:
    """Pick the source kind from what ``path`` is: folder, ``.zip``, ``.tar[.gz|.bz2|.xz]``,
    or ``.csv`` (a CSV is its own label file). ``allowed_roots`` confines the files a CSV names
    (rows outside them are reported as ``outside_roots`` and never read). Anything else (a single
    image, a FIFO, a device) is an ``InvalidInput`` saying what was expected, found from ``stat``
    without opening a special file."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise InvalidInput(f"gallery {path} does not exist", path=str(path)) from None
    if stat.S_ISDIR(st.st_mode):
        kind: Literal["folder", "zip", "tar", "csv"] = "folder"
    elif not stat.S_ISREG(st.st_mode):
        raise InvalidInput(
            f"{path.name} is a FIFO, device or socket, not a gallery: give a folder, a zip or "
            "tar archive, or a CSV",
            path=str(path),
        )
    elif path.suffix.lower() == ".csv":
        kind, labels, labels_csv = "csv", "csv", path
    elif zipfile.is_zipfile(path):
        kind = "zip"
    elif is_tar(path):
        kind = "tar"
    elif is_image_name(path.name):
        raise InvalidInput(
            f"{path.name} is a single image: put it in a folder (or an archive) and index that, "
            "or enroll it with POST .../identities/{iid}/faces",
            path=str(path),
        )
    else:
        raise InvalidInput(f"{path.name} is not a folder, zip, tar archive or CSV", path=str(path))
    roots = None if allowed_roots is None else tuple(Path(r).resolve() for r in allowed_roots)
    return GallerySource(path, kind, labels, labels_csv, max_bytes, roots, guard)
