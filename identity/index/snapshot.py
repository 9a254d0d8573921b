"""The ``FaceIndex`` snapshot file: magic, a JSON header, then named binary sections.

The header records each section's length and a SHA-256 over all of them, so a truncated or
altered file is refused with ``IndexSnapshotError`` instead of loading a wrong index. A file is
written atomically (temp file, fsync, rename, fsync of the folder), 0600 in a 0700 folder, and
may be sealed whole (``seal``/``unseal``, e.g. ``identity.sealing`` with a data key).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from identity.errors import IndexSnapshotError, IndexSnapshotMissing
from identity.sealing import private_dir

MAGIC = b"FACEIDX\x01"
FORMAT_VERSION = 1


def corrupt(path: Path, why: str) -> IndexSnapshotError:
    return IndexSnapshotError(f"corrupt index snapshot {path}: {why}", path=str(path))


def write_snapshot(
    path: Path,
    header: dict[str, Any],
    sections: dict[str, bytes],
    seal: Callable[[bytes], bytes] | None = None,
) -> None:
    """Write ``header`` (JSON-able; format, section sizes and checksum are added) and sections."""
    header = {
        **header,
        "format": FORMAT_VERSION,
        "sections": [[name, len(blob)] for name, blob in sections.items()],
        "sha256": _sha256(sections.values()),
    }
    head = json.dumps(header, sort_keys=True).encode()
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            if seal is None:
                fh.write(MAGIC + struct.pack("<Q", len(head)) + head)
                fh.writelines(sections.values())
            else:
                plain = b"".join([MAGIC, struct.pack("<Q", len(head)), head, *sections.values()])
                fh.write(seal(plain))
                del plain
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def read_snapshot(
    path: Path, unseal: Callable[[bytes], bytes] | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The checked header and sections of a snapshot; raises ``IndexSnapshotError`` (or
    ``IndexSnapshotMissing``)."""
    try:
        data = path.read_bytes()
        if unseal is not None:
            data = unseal(data)
    except FileNotFoundError as exc:
        raise IndexSnapshotMissing(f"no index snapshot at {path}", path=str(path)) from exc
    except OSError as exc:
        raise IndexSnapshotError(f"cannot read {path}: {exc}", path=str(path)) from exc

    if len(data) < len(MAGIC) + 8 or not data.startswith(MAGIC):
        raise corrupt(path, "not a FaceIndex snapshot (bad magic)")
    (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    try:
        header = json.loads(data[start : start + hlen])
        if header["format"] != FORMAT_VERSION:
            raise corrupt(path, f"format {header['format']} is not {FORMAT_VERSION}")
        pos = start + hlen
        sections: dict[str, bytes] = {}
        for name, size in header["sections"]:
            sections[name] = data[pos : pos + size]
            if len(sections[name]) != size:
                raise corrupt(path, "truncated")
            pos += size
        if pos != len(data):
            raise corrupt(path, "trailing bytes")
        if _sha256(sections.values()) != header["sha256"]:
            raise corrupt(path, "checksum mismatch")
    except IndexSnapshotError:
        raise
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    return header, sections


def _sha256(blobs: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for blob in blobs:
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.hexdigest()
