"""Reading zip and tar archives as gallery sources, without ever extracting them.

Members are read into memory one by one; members that could escape a target folder if someone did
extract them (``../x.jpg``, absolute paths, symlinks, hard links, devices) are reported and
skipped. Non-image members are skipped without reading them where the format allows (zip: the
central directory; plain tar: a seek); a compressed tar's member that would have to be
decompressed past the job's limit to skip it stops the archive.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from identity.errors import InvalidInput, JobLimitExceeded
from identity.gallery.files import display_name, is_image_name
from identity.gallery.limits import JobGuard, JobLimits, human_bytes, open_archive_stream

if TYPE_CHECKING:
    from identity.gallery.sources import GalleryItem, GallerySource


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


def unsafe_reason(name: str) -> tuple[str, str]:
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return "absolute_path", f"absolute member path {name!r} refused"
    return "path_traversal", f"member path {name!r} leaves the archive root; refused"


def count_zip_images(path: Path) -> int | None:
    """Image members a zip declares in its central directory (None when it cannot be read)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(1 for i in zf.infolist() if not i.is_dir() and is_image_name(i.filename))
    except (OSError, zipfile.BadZipFile):
        return None


def zip_items(source: GallerySource) -> Iterator[GalleryItem]:
    """The image members of a zip, each read into memory under the size limits."""
    try:
        zf = zipfile.ZipFile(source.location)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{source.location} is not a readable zip archive: {exc}") from exc
    with zf:
        for info in zf.infolist():
            source.check_cancelled()
            if info.is_dir():
                continue
            rel = safe_member_name(info.filename)
            if rel is None:
                source.refuse(info.filename, *unsafe_reason(info.filename))
                continue
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                source.refuse(rel, "link", "symlink member refused")
                continue
            if not is_image_name(rel):
                source.skipped_non_images += 1
                continue
            # the declared size first (cheap), then a capped read in case the header lies
            if info.file_size > source.max_bytes:
                source.refuse(
                    rel, "too_large", f"declared {info.file_size} bytes > {source.max_bytes}"
                )
                continue
            try:
                with zf.open(info) as fh:
                    data = fh.read(source.max_bytes + 1)
                if source.guard is not None:
                    source.guard.add_bytes(len(data))
            except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as exc:
                # RuntimeError: encrypted member; zlib/CRC failures surface as BadZipFile
                source.refuse(rel, "unreadable", f"cannot read member: {exc}")
                continue
            if len(data) > source.max_bytes:
                source.refuse(rel, "too_large", f"inflates past {source.max_bytes} bytes")
                continue
            item = source.make_item(rel, source.label_for(rel), data=data)
            if item is not None:
                yield item


def tar_items(source: GallerySource) -> Iterator[GalleryItem]:
    """The image members of a tar (plain or compressed), streamed under the job guard."""
    guard = source.guard or JobGuard()
    try:
        stream, compression = open_archive_stream(source.location, guard)
    except OSError as exc:
        raise InvalidInput(f"{source.location.name} is not a readable archive: {exc}") from None
    try:
        # closed by the ``with`` below; opening errors are reported apart from member errors
        tf = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115
    except (OSError, tarfile.TarError, EOFError) as exc:
        stream.close()
        raise InvalidInput(f"{source.location.name} is not a readable tar archive: {exc}") from None
    with stream, tf:
        try:
            yield from _tar_members(source, tf, guard, compression is not None)
        except (OSError, tarfile.TarError, EOFError) as exc:
            # a truncated archive: keep what was read, report the rest
            source.refuse(str(source.location.name), "truncated_archive", str(exc))
        finally:
            guard.end_member()


def _tar_members(
    source: GallerySource, tf: tarfile.TarFile, guard: JobGuard, compressed: bool
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
            source.refuse(member.name, *unsafe_reason(member.name))
            continue
        if member.issym() or member.islnk():
            source.refuse(rel, "link", f"link member to {member.linkname!r} refused")
            continue
        if not member.isfile():
            source.refuse(rel, "special_file", "device, fifo or other non-file member")
            continue
        if not is_image_name(rel):
            source.skipped_non_images += 1
            continue
        if member.size > source.max_bytes:
            source.refuse(rel, "too_large", f"declared {member.size} bytes > {source.max_bytes}")
            continue
        fh = tf.extractfile(member)  # a file object over the member, not extraction
        if fh is None:
            source.refuse(rel, "unreadable", "member has no data")
            continue
        data = fh.read(source.max_bytes + 1)
        guard.add_bytes(len(data))
        item = source.make_item(rel, source.label_for(rel), data=data)
        if item is not None:
            guard.end_member()  # the consumer's time (decode, detect, store) is not reading
            yield item


def is_tar(path: Path) -> bool:
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
