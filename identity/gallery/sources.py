"""Gallery sources: a folder tree, a zip or tar(.gz) archive, or a CSV of ``path,identity``.

A source yields ``GalleryItem`` objects one at a time (relative path, a way to read the bytes, an
optional label) and records everything it refused in ``problems``. Archives are never extracted:
members are read into memory one by one, and members that could escape a target folder if someone
did extract them (``../x.jpg``, absolute paths, symlinks, hard links, devices) are reported and
skipped, so nothing inside an archive is ever written anywhere by this module.

Special files (FIFOs, devices, sockets) are refused from ``stat`` alone and every file is opened
non-blocking, so a FIFO can never hang a job. A ``JobGuard`` (``identity.gallery.limits``) bounds
what a source may decompress and lets a job be cancelled between members and inside a long
decompression; non-image members are skipped without reading them where the format allows (zip:
the central directory; plain tar: a seek).
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from identity.errors import InvalidInput, JobLimitExceeded
from identity.gallery.files import (
    display_name,
    label_problem,
    name_problem,
    read_labels_csv,
    read_regular_file,
)
from identity.gallery.limits import JobGuard, JobLimits, human_bytes, open_archive_stream

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm"}
)
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


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def safe_member_name(name: str) -> str | None:
    """The normalised relative path of an archive member, or None when it could escape.

    Both separators count: a Windows-made zip may hold ``..\\x.jpg``.
    """
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return None
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _unsafe_reason(name: str) -> tuple[str, str]:
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return "absolute_path", f"absolute member path {name!r} refused"
    return "path_traversal", f"member path {name!r} leaves the archive root; refused"


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
            try:
                with zipfile.ZipFile(self.location) as zf:
                    return sum(
                        1 for i in zf.infolist() if not i.is_dir() and is_image_name(i.filename)
                    )
            except (OSError, zipfile.BadZipFile):
                return None
        return None  # a tar.gz would have to be decompressed once just to count

    # iteration --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[GalleryItem]:
        if self.kind == "folder":
            yield from self._iter_folder()
        elif self.kind == "csv":
            yield from self._iter_csv()
        elif self.kind == "zip":
            yield from self._iter_zip()
        else:
            yield from self._iter_tar()

    def _problem(self, rel_path: str, code: str, message: str) -> None:
        self.problems.append(SourceProblem(display_name(rel_path), code, message))

    def _check(self) -> None:
        if self.guard is not None:
            self.guard.check()

    def _item(
        self, rel: str, label: str | None, path: Path | None = None, data: bytes | None = None
    ) -> GalleryItem | None:
        """The item, or None with a problem recorded when its name or label cannot be stored."""
        problem = name_problem(rel)
        if problem is None and label is not None:
            problem = label_problem(label)
        if problem is not None:
            self._problem(rel, *problem)
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
                self._check()
                full = Path(dirpath) / name
                rel = full.relative_to(self.location).as_posix()
                if not is_image_name(name):
                    self.skipped_non_images += 1
                    continue
                if full.is_symlink():
                    # a link may point anywhere on the server; follow it only inside the root
                    target = full.resolve()
                    if not target.is_relative_to(root):
                        self._problem(rel, "link_outside_root", f"symlink to {target} refused")
                        continue
                try:
                    st = full.stat()
                except OSError as exc:
                    self._problem(rel, "unreadable", str(exc))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    self._problem(rel, "special_file", "not a regular file")
                    continue
                if st.st_size > self.max_bytes:
                    self._problem(rel, "too_large", f"{st.st_size} bytes > {self.max_bytes}")
                    continue
                item = self._item(rel, self.label_for(rel), path=full)
                if item is not None:
                    yield item

    def _iter_csv(self) -> Iterator[GalleryItem]:
        assert self._labels is not None
        base = self.location.parent
        for rel, label in self._labels.items():
            self._check()
            full = Path(rel) if Path(rel).is_absolute() else base / rel
            if self.allowed_roots is not None:
                # resolve first (symlinks and ``..`` included) and never touch what lies outside
                full = full.resolve()
                if not any(full.is_relative_to(r) for r in self.allowed_roots):
                    self._problem(
                        rel, "outside_roots", "path is outside the allowed gallery roots; refused"
                    )
                    continue
            try:
                st = full.stat()
            except OSError as exc:
                self._problem(rel, "unreadable", f"{exc.strerror or exc}")
                continue
            if not stat.S_ISREG(st.st_mode):
                self._problem(rel, "special_file", "not a regular file")
                continue
            if st.st_size > self.max_bytes:
                self._problem(rel, "too_large", f"{st.st_size} bytes > {self.max_bytes}")
                continue
            item = self._item(rel, label, path=full)
            if item is not None:
                yield item

    def _iter_zip(self) -> Iterator[GalleryItem]:
        try:
            zf = zipfile.ZipFile(self.location)
        except (OSError, zipfile.BadZipFile) as exc:
            raise InvalidInput(f"{self.location} is not a readable zip archive: {exc}") from exc
        with zf:
            for info in zf.infolist():
                self._check()
                if info.is_dir():
                    continue
                rel = safe_member_name(info.filename)
                if rel is None:
                    self._problem(info.filename, *_unsafe_reason(info.filename))
                    continue
                mode = info.external_attr >> 16
                if mode and stat.S_ISLNK(mode):
                    self._problem(rel, "link", "symlink member refused")
                    continue
                if not is_image_name(rel):
                    self.skipped_non_images += 1
                    continue
                # the declared size first (cheap), then a capped read in case the header lies
                if info.file_size > self.max_bytes:
                    self._problem(
                        rel, "too_large", f"declared {info.file_size} bytes > {self.max_bytes}"
                    )
                    continue
                try:
                    with zf.open(info) as fh:
                        data = fh.read(self.max_bytes + 1)
                    if self.guard is not None:
                        self.guard.add_bytes(len(data))
                except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as exc:
                    # RuntimeError: encrypted member; zlib/CRC failures surface as BadZipFile
                    self._problem(rel, "unreadable", f"cannot read member: {exc}")
                    continue
                if len(data) > self.max_bytes:
                    self._problem(rel, "too_large", f"inflates past {self.max_bytes} bytes")
                    continue
                item = self._item(rel, self.label_for(rel), data=data)
                if item is not None:
                    yield item

    def _iter_tar(self) -> Iterator[GalleryItem]:
        guard = self.guard or JobGuard()
        try:
            stream, compression = open_archive_stream(self.location, guard)
        except OSError as exc:
            raise InvalidInput(f"{self.location.name} is not a readable archive: {exc}") from None
        try:
            # closed by the ``with`` below; opening errors are reported apart from member errors
            tf = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115
        except (OSError, tarfile.TarError, EOFError) as exc:
            stream.close()
            raise InvalidInput(
                f"{self.location.name} is not a readable tar archive: {exc}"
            ) from None
        with stream, tf:
            try:
                yield from self._tar_members(tf, guard, compression is not None)
            except (OSError, tarfile.TarError, EOFError) as exc:
                # a truncated archive: keep what was read, report the rest
                self._problem(str(self.location.name), "truncated_archive", str(exc))
            finally:
                guard.end_member()

    def _tar_members(
        self, tf: tarfile.TarFile, guard: JobGuard, compressed: bool
    ) -> Iterator[GalleryItem]:
        """Members in archive order. Skipping one in a compressed tar means decompressing it, so
        a member declaring more than the job allows stops the archive before that happens."""
        max_member = guard.limits.max_member_bytes
        while True:
            guard.start_member()  # the clock covers skipping the previous member too
            member = tf.next()
            if member is None:
                return
            guard.start_member(display_name(member.name))
            if compressed and member.size > max_member:
                raise JobLimitExceeded(
                    f"archive member {display_name(member.name)!r} declares "
                    f"{human_bytes(member.size)}; reading past it means decompressing it, over "
                    f"the {human_bytes(max_member)} allowed per member "
                    "(IDENTITY_JOB_MAX_MEMBER_BYTES): extract the archive into a folder, or "
                    "rebuild it without that member"
                )
            if member.isdir():
                continue
            rel = safe_member_name(member.name)
            if rel is None:
                self._problem(member.name, *_unsafe_reason(member.name))
                continue
            if member.issym() or member.islnk():
                self._problem(rel, "link", f"link member to {member.linkname!r} refused")
                continue
            if not member.isfile():
                self._problem(rel, "special_file", "device, fifo or other non-file member")
                continue
            if not is_image_name(rel):
                self.skipped_non_images += 1
                continue
            if member.size > self.max_bytes:
                self._problem(rel, "too_large", f"declared {member.size} bytes > {self.max_bytes}")
                continue
            fh = tf.extractfile(member)  # a file object over the member, not extraction
            if fh is None:
                self._problem(rel, "unreadable", "member has no data")
                continue
            data = fh.read(self.max_bytes + 1)
            guard.add_bytes(len(data))
            item = self._item(rel, self.label_for(rel), data=data)
            if item is not None:
                guard.end_member()  # the consumer's time (decode, detect, store) is not reading
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
    elif _is_tar(path):
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


def _is_tar(path: Path) -> bool:
    """Whether ``path`` reads as a tar, under a small guard: ``tarfile.is_tarfile`` would read a
    first PAX header of any declared size into memory."""
    guard = JobGuard(JobLimits(max_bytes=64 * 1024**2, max_seconds=30, max_member_seconds=30))
    try:
        stream, _ = open_archive_stream(path, guard)
    except OSError:
        return False
    with stream:
        try:
            tarfile.open(fileobj=stream, mode="r:").close()
        except JobLimitExceeded:
            return True  # a tar whose first header declares too much: refused while reading it
        except Exception:  # any decoder's error means "not a tar we can read"
            return False
    return True
