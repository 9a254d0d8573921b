"""Bounds and cancellation for one gallery job: bytes decompressed, time, and a cancel flag.

A compressed tar cannot skip a member without decompressing it, so a 1.8 MB ``.tar.bz2`` can
declare a 2 TB member and keep a job busy for hours. ``JobGuard`` holds the job's budget and is
asked ``check()`` between members and batches; ``GuardedStream`` wraps the decompressed stream of
a tar so that every read and every skip is counted and checked in chunks, which keeps even the
inside of a long decompression cancellable and bounded.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identity.errors import JobCancelled, JobLimitExceeded

# how often a guard asks its ``cancelled`` callable (a database read in the service)
CANCEL_POLL_S = 0.5
# a forward skip through a compressed stream is read in pieces this big, checking between them
SKIP_CHUNK = 1024 * 1024
# slack on top of the expansion bound, for tiny archives whose headers alone exceed the ratio
EXPANSION_SLACK = 1024 * 1024

_MAGIC: list[tuple[bytes, str]] = [
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
]


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable; keeps type checkers content


@dataclass(frozen=True)
class JobLimits:
    """What one job may spend (``identity.settings.Settings.job_*``)."""

    max_bytes: int = 32 * 1024**3
    max_member_bytes: int = 256 * 1024**2
    max_expansion: float = 100.0
    max_seconds: float = 86_400.0
    max_member_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> JobLimits:
        return cls(
            max_bytes=settings.job_max_bytes,
            max_member_bytes=settings.job_max_member_bytes,
            max_expansion=settings.job_max_expansion,
            max_seconds=settings.job_max_seconds,
            max_member_seconds=settings.job_max_member_seconds,
        )


class JobGuard:
    """A job's budget. ``check()`` raises ``JobCancelled`` or ``JobLimitExceeded``; cheap enough to
    call on every read (the ``cancelled`` callable runs at most every ``CANCEL_POLL_S``)."""

    def __init__(
        self, limits: JobLimits | None = None, cancelled: Callable[[], bool] | None = None
    ) -> None:
        self.limits = limits or JobLimits()
        self._cancelled = cancelled
        self._deadline = time.monotonic() + self.limits.max_seconds
        self._member_deadline: float | None = None
        self._member_name = ""
        self._next_poll = 0.0
        self.bytes_read = 0

    def check(self) -> None:
        now = time.monotonic()
        if self._cancelled is not None and now >= self._next_poll:
            self._next_poll = now + CANCEL_POLL_S
            if self._cancelled():
                raise JobCancelled("the job was cancelled")
        if now > self._deadline:
            raise JobLimitExceeded(
                f"the job ran longer than {self.limits.max_seconds:g} s "
                "(IDENTITY_JOB_MAX_SECONDS); rerun it to resume, or raise the limit"
            )
        if self._member_deadline is not None and now > self._member_deadline:
            raise JobLimitExceeded(
                f"reading archive member {self._member_name!r} took longer than "
                f"{self.limits.max_member_seconds:g} s (IDENTITY_JOB_MAX_MEMBER_SECONDS); "
                "extract the archive into a folder, or raise the limit"
            )

    def start_member(self, name: str = "") -> None:
        """The per-member clock starts now (call it before reading or skipping a member)."""
        self._member_name = name
        self._member_deadline = time.monotonic() + self.limits.max_member_seconds

    def end_member(self) -> None:
        self._member_deadline = None

    def add_bytes(self, n: int) -> None:
        """Count bytes read from the source (files, zip members); over the budget stops the job."""
        self.bytes_read += n
        if self.bytes_read > self.limits.max_bytes:
            raise JobLimitExceeded(
                f"the job read more than {human_bytes(self.limits.max_bytes)} "
                "(IDENTITY_JOB_MAX_BYTES); split the gallery, or raise the limit"
            )


class GuardedStream(io.RawIOBase):
    """The decompressed bytes of an archive, read and skipped under a ``JobGuard``.

    ``limit`` bounds the decompressed position of a compressed archive (the job budget, and the
    expansion ratio times its size): a read or seek that would pass it raises at once, before
    decompressing anything, so a member or PAX header declaring terabytes costs nothing. A plain
    tar has no such bound (``None``): its seeks are free and its reads end at the end of the file.
    """

    def __init__(
        self,
        inner: io.BufferedIOBase,
        guard: JobGuard,
        limit: int | None,
        compressed: bool,
        raw: io.BufferedIOBase | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._raw = raw  # the file under a decompressor (which does not close it)
        self._guard = guard
        self._limit = limit
        self._compressed = compressed
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _admit(self, end: int) -> None:
        self._guard.check()
        if self._limit is not None and end > self._limit:
            raise JobLimitExceeded(
                f"the archive's content runs past {human_bytes(self._limit)} "
                "(IDENTITY_JOB_MAX_BYTES, or IDENTITY_JOB_MAX_EXPANSION times the archive's "
                "size): refused as a decompression bomb; extract it into a folder instead"
            )

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = SKIP_CHUNK  # tarfile never asks for "everything"; never give it
        self._admit(self._pos + size)
        out = bytearray()
        while len(out) < size:  # in pieces: a big read is checked as it goes
            piece = self._inner.read(min(SKIP_CHUNK, size - len(out)))
            if not piece:
                break
            out += piece
            self._guard.check()
        self._pos += len(out)
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek from the end of an archive stream")
        if offset == self._pos:
            return self._pos
        self._admit(offset)
        if not self._compressed or offset < self._pos:
            self._pos = self._inner.seek(offset)
            return self._pos
        while self._pos < offset:  # forward through a compressed stream: decompress, checked
            piece = self._inner.read(min(SKIP_CHUNK, offset - self._pos))
            if not piece:
                break
            self._pos += len(piece)
            self._guard.check()
        return self._pos

    def close(self) -> None:
        try:
            self._inner.close()
            if self._raw is not None:
                self._raw.close()
        finally:
            super().close()


def open_archive_stream(path: Path, guard: JobGuard) -> tuple[GuardedStream, str | None]:
    """The decompressed byte stream of a (possibly gz/bz2/xz compressed) tar under ``guard``,
    and the compression found (``None`` for a plain tar, which skips members by seeking)."""
    raw = open(path, "rb")  # noqa: SIM115 - owned (and closed) by the returned stream
    try:
        head = raw.read(8)
        raw.seek(0)
        compression = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
        inner: io.BufferedIOBase
        if compression == "gz":
            inner = gzip.GzipFile(fileobj=raw, mode="rb")
        elif compression == "bz2":
            inner = bz2.BZ2File(raw, mode="rb")
        elif compression == "xz":
            inner = lzma.LZMAFile(raw, mode="rb")  # noqa: SIM115 - closed with the stream
        else:
            inner = raw
        limits = guard.limits
        limit = None
        if compression is not None:
            size = path.stat().st_size
            limit = min(limits.max_bytes, int(limits.max_expansion * size) + EXPANSION_SLACK)
        stream = GuardedStream(
            inner, guard, limit, compression is not None, raw if inner is not raw else None
        )
        return stream, compression
    except BaseException:
        raw.close()
        raise
