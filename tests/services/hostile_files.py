"""Crafted files for tests/services/test_hostile_inputs.py: corrupt, tiny, huge, bombs, not
images at all, odd pixel formats, hostile archives, and one real photo as the control."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from typing import Any

import cv2
import numpy as np
from PIL import Image

from svc_helpers import TRAIN

FACE = TRAIN / "obama" / "obama.jpg"


def _save(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_declaring(w: int, h: int) -> bytes:
    """A valid PNG signature and IHDR declaring w x h, with a tiny IDAT: a decompression bomb's
    header without its body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def png_bomb(side: int) -> bytes:
    """A real, fully valid side x side grey PNG: megabytes of zeros deflate to almost nothing."""
    raw = b"".join(b"\0" + b"\0" * side for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _jpeg_declaring(w: int, h: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to claim w x h."""
    data = bytearray(_save(_noise(16, 16), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _archive_zip(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, payload)
    return buf.getvalue()


def tar_gz(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def crafted_files() -> list[tuple[str, bytes]]:
    face = FACE.read_bytes()
    face_im = Image.open(FACE).convert("RGB")
    jpeg = _save(_noise(64, 64), "JPEG")
    png = _save(_noise(64, 64), "PNG")
    exif6, exif_bad = Image.Exif(), Image.Exif()
    exif6[0x0112] = 6
    exif_bad[0x0112] = 99
    grey16 = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    ok, rgb16 = cv2.imencode(
        ".png", (np.random.default_rng(1).integers(0, 65535, (48, 48, 3))).astype(np.uint16)
    )
    assert ok
    frames = [_noise(32, 32, s) for s in range(3)]
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    palette = _noise(64, 64).convert("P")
    corrupt_mid = bytearray(face)
    corrupt_mid[len(face) // 2 : len(face) // 2 + 2000] = b"\x00" * 2000
    bad_crc = bytearray(png)
    bad_crc[40] ^= 0xFF
    files = [
        ("empty.jpg", b""),
        ("one-byte.jpg", b"\xff"),
        ("text.jpg", b"hello, this is not an image\n" * 10),
        ("page.html", b"<!doctype html><html><body><script>alert(1)</script></body></html>"),
        (
            "vector.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9999999" height="9999999"></svg>',
        ),
        ("doc.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"),
        ("archive.zip", _archive_zip("a.jpg", face)),
        ("blob.gz", zlib.compress(face)),
        ("elf.bin", b"\x7fELF" + b"\x00" * 60),
        ("jpeg-soi-only.jpg", b"\xff\xd8\xff"),
        ("jpeg-truncated-half.jpg", face[: len(face) // 2]),
        ("jpeg-header-only.jpg", face[:200]),
        ("jpeg-zeroed-middle.jpg", bytes(corrupt_mid)),
        ("jpeg-declares-65500.jpg", _jpeg_declaring(65500, 65500)),
        ("jpeg-declares-0.jpg", _jpeg_declaring(0, 0)),
        ("jpeg-1x1.jpg", _save(_noise(1, 1), "JPEG")),
        ("jpeg-grey.jpg", _save(face_im.convert("L"), "JPEG")),
        ("jpeg-cmyk.jpg", _save(face_im.convert("CMYK"), "JPEG")),
        ("jpeg-exif-rotated.jpg", _save(face_im, "JPEG", exif=exif6.tobytes())),
        ("jpeg-exif-bad-orientation.jpg", _save(face_im, "JPEG", exif=exif_bad.tobytes())),
        (
            "jpeg-exif-garbage.jpg",
            jpeg[:2] + b"\xff\xe1\x00\x10Exif\x00\x00" + b"\xff" * 8 + jpeg[2:],
        ),
        ("jpeg-progressive.jpg", _save(face_im, "JPEG", progressive=True)),
        ("jpeg-7000.jpg", _save(face_im.resize((7000, 7000)), "JPEG", quality=60)),
        ("jpeg-3x5000.jpg", _save(_noise(3, 5000), "JPEG")),
        ("png-1x1.png", _save(_noise(1, 1), "PNG")),
        ("png-3x5000.png", _save(_noise(3, 5000), "PNG")),
        ("png-5000x3.png", _save(_noise(5000, 3), "PNG")),
        ("png-64x64.png", png),
        ("png-60x30.png", _save(_noise(60, 30), "PNG")),
        ("png-truncated.png", png[: len(png) // 2]),
        ("png-bad-crc.png", bytes(bad_crc)),
        ("png-declares-100000.png", _png_declaring(100_000, 100_000)),
        ("png-declares-2^31.png", _png_declaring(2**31 - 1, 1)),
        ("png-bomb-12000.png", png_bomb(12_000)),
        ("png-grey16.png", _save(grey16, "PNG")),
        ("png-rgb16.png", rgb16.tobytes()),
        ("png-rgba-transparent.png", _save(rgba, "PNG")),
        ("png-la.png", _save(_noise(64, 64).convert("LA"), "PNG")),
        ("png-palette.png", _save(palette, "PNG")),
        ("png-palette-transparency.png", _save(palette, "PNG", transparency=0)),
        ("png-1bit.png", _save(_noise(64, 64).convert("1"), "PNG")),
        ("png-face-rgba.png", _save(face_im.convert("RGBA"), "PNG")),
        ("gif-1x1.gif", _save(_noise(1, 1).convert("P"), "GIF")),
        ("gif-animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("gif-truncated.gif", _save(frames[0], "GIF")[:40]),
        ("webp.webp", _save(face_im, "WEBP")),
        ("webp-animated.webp", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
        ("webp-truncated.webp", _save(face_im, "WEBP")[:100]),
        ("tiff.tiff", _save(face_im, "TIFF")),
        ("tiff-truncated.tiff", _save(face_im, "TIFF")[:300]),
        ("tiff-16bit.tiff", _save(grey16, "TIFF")),
        ("bmp.bmp", _save(_noise(64, 64), "BMP")),
        ("bmp-truncated.bmp", _save(_noise(64, 64), "BMP")[:100]),
        ("ppm.ppm", _save(_noise(64, 64), "PPM")),
        ("ico.ico", _save(_noise(32, 32), "ICO")),
        ("face.jpg", face),  # the control: a real photo that must work
    ]
    return files
