"""Paths, photos and the generated bad-file corpus for the gallery tests."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

from shared_data import SHARED_DIR

REPO = Path(__file__).resolve().parents[2]
SHARED = SHARED_DIR
DATA = SHARED / "data"
DEEPFACE = DATA / "deepface"
TRAIN = DATA / "face_recognition" / "knn_examples" / "train"
OBAMA_480P = DATA / "face_recognition" / "obama-480p.jpg"


def write_blurred(src: Path, dest: Path, sigma_frac: float = 0.02) -> None:
    """A Gaussian-blurred JPEG copy of a real photo (sigma a fraction of its longer side): the
    face is still found, but the quality gate refuses it as ``low_quality ... (blurry)``."""
    import cv2

    image = cv2.imread(str(src))
    blurred = cv2.GaussianBlur(image, (0, 0), sigma_frac * max(image.shape[:2]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", blurred)
    assert ok
    dest.write_bytes(buf.tobytes())


def deepface_labels() -> list[tuple[str, str]]:
    with open(DEEPFACE / "LABELS.csv") as fh:
        return [(r["path"], r["identity"]) for r in csv.DictReader(fh)]


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature and IHDR claiming width x height pixels (a decompression bomb's
    header): the decoder must refuse it from the header alone."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\0" * 64)
    idat_chunk = b"IDAT" + idat
    body += struct.pack(">I", len(idat)) + idat_chunk + struct.pack(">I", zlib.crc32(idat_chunk))
    return b"\x89PNG\r\n\x1a\n" + body


def write_bad_files(folder: Path) -> dict[str, str]:
    """Bad images inside a gallery folder; returns {relative path: expected error family}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = (TRAIN / "biden" / "biden.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(good[: len(good) // 3][:2000])
    (folder / "text.jpg").write_text("this is not an image at all\n")
    (folder / "huge.png").write_bytes(huge_png_header())
    (folder / "empty.jpg").write_bytes(b"")
    return {
        "corrupt.jpg": "bad_image",
        "text.jpg": "bad_image",
        "huge.png": "image_too_large",
        "empty.jpg": "bad_image",
    }


# --- hostile archives for the job-limit tests -------------------------------------------------
ZERO_UNIT = 8 * 1024 * 1024  # zeros per bz2 stream; streams concatenate into one stream of bytes
_ZERO_STREAM: list[bytes] = []


def _zero_stream() -> bytes:
    """bz2 of ``ZERO_UNIT`` zero bytes (about 50 bytes), made once: repeating it writes gigabytes
    of decompressed zeros for kilobytes of archive, the way a real bomb is built."""
    if not _ZERO_STREAM:
        import bz2

        _ZERO_STREAM.append(bz2.compress(b"\0" * ZERO_UNIT, 9))
    return _ZERO_STREAM[0]


def write_bz2_tar(
    dest: Path, members: list[tuple[str, bytes | int]], declared: dict[str, int] | None = None
) -> Path:
    """A ``.tar.bz2`` of ``members`` (name, bytes, or a count of ``ZERO_UNIT`` zero blocks),
    written as concatenated bz2 streams so zero members cost ~50 bytes per 8 MiB. ``declared``
    overrides a member's header size (a header declaring 2 TB over fewer real bytes: the reader
    must still refuse it from the header alone)."""
    import bz2
    import tarfile

    declared = declared or {}
    with open(dest, "wb") as out:
        for name, data in members:
            info = tarfile.TarInfo(name)
            size = len(data) if isinstance(data, bytes) else data * ZERO_UNIT
            info.size = declared.get(name, size)
            out.write(bz2.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
            if isinstance(data, bytes):
                pad = (-len(data)) % 512
                out.write(bz2.compress(data + b"\0" * pad))
            else:
                out.write(_zero_stream() * data)
        out.write(bz2.compress(b"\0" * 1024))  # end-of-archive blocks
    return dest
