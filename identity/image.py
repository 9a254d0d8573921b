"""Image decoding: bytes in, one HxWx3 uint8 BGR array out, or a typed error.

Order matters for safety: the byte size is checked before anything is parsed, and the pixel
count is read from the header (Pillow's ``Image.open`` parses headers only) before a single
pixel is decoded, so a decompression bomb costs a few bytes of parsing, never gigabytes of RAM.

Large pictures are decoded small: a JPEG whose long side is over ``decode_max_side`` is decoded at
a reduced DCT scale (libjpeg's 1/2, 1/4, 1/8 IDCT, Pillow's ``draft``), so a 7000x7000 upload
costs the 1750x1750 pixels the detector can use (it sees 640 px) instead of 49 megapixels; other
formats are decoded whole within ``max_image_pixels`` and then shrunk to the same bound.
``decode_image_bounded`` says by how much, so callers report coordinates in the upload's pixels.

Then the pixels are normalised to what every detector expects:

- EXIF orientation applied (phones store portraits sideways and set a tag);
- grey, palette, CMYK, YCbCr and friends converted to colour;
- alpha composited on white (a transparent PNG background becomes white, not black);
- 16-bit PNGs scaled to 8 bits by rounding ``v / 257`` (Pillow keeps only the high byte of
  16-bit colour PNGs, which is a floor and darkens by up to one level, so those go through
  OpenCV's 16-bit decoder instead).
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from identity.errors import BadImage, ImageTooLarge
from identity.settings import Settings

# Formats a photo upload may reasonably be in. Pillow can open more (EPS shells out to
# Ghostscript, for one); keeping the list short keeps the parsing attack surface small.
# (Multi-picture JPEGs from phones, MPO, open through the JPEG plugin.)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")

_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_image(path: str | Path, settings: Settings) -> np.ndarray:
    """Read and decode an image file (HxWx3 uint8 BGR); the byte limit is checked before reading."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise BadImage(f"cannot read image file {p}: {exc.strerror or exc}", path=str(p)) from exc
    if not p.is_file():
        raise BadImage(f"{p} is not a file", path=str(p))
    if size > settings.max_image_bytes:
        raise ImageTooLarge(
            f"image file {p} is {size} bytes, over the limit of {settings.max_image_bytes}",
            path=str(p),
            size_bytes=size,
            max_bytes=settings.max_image_bytes,
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadImage(f"cannot read image file {p}: {exc.strerror or exc}", path=str(p)) from exc
    return decode_image(data, settings)


@dataclass(frozen=True)
class DecodedImage:
    """An upright BGR image and how it relates to the upload's own (upright) pixels."""

    image_bgr: np.ndarray  # (H, W, 3) uint8
    scale_xy: tuple[float, float]  # decoded / original pixels along x and y (1.0 = full size)
    # a decode at ``decode_max_side`` would hold more pixels (a JPEG decoded for detection)
    finer: bool = False

    @property
    def reduced(self) -> bool:
        return self.scale_xy != (1.0, 1.0)


def decode_image(data: bytes, settings: Settings) -> np.ndarray:
    """Decode image bytes to an HxWx3 uint8 BGR array at full size, upright per EXIF.

    Raises ``ImageTooLarge`` (bytes or pixels over the settings' limits, checked before decoding)
    or ``BadImage`` (empty, not an image, truncated, unsupported pixel format).
    """
    return _decode(data, settings, max_side=0).image_bgr


def decode_image_bounded(data: bytes, settings: Settings) -> DecodedImage:
    """Like ``decode_image``, with the long side at most ``settings.decode_max_side`` pixels.

    What a request handler should call: the pixels held per request stay bounded whatever the
    upload declares. ``scale_xy`` maps coordinates back (``x_original = x / scale_x``).
    """
    return _decode(data, settings, max_side=settings.decode_max_side)


def decode_for_detection(data: bytes, settings: Settings) -> DecodedImage:
    """The cheapest decode that detection needs: a JPEG at the libjpeg DCT scale that brings its
    long side within ``settings.decode_detect_side`` (``finer`` says when ``decode_image_bounded``
    would hold more pixels); any other format as ``decode_image_bounded`` decodes it, since only
    JPEG decodes faster at a smaller scale."""
    side, bound = settings.decode_detect_side, settings.decode_max_side
    if side <= 0 or (0 < bound <= side) or bytes(data[:3]) != b"\xff\xd8\xff":
        return decode_image_bounded(data, settings)
    decoded = _decode(data, settings, max_side=side)
    return replace(decoded, finer=decoded.reduced)


def _decode(data: bytes, settings: Settings, max_side: int) -> DecodedImage:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadImage(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BadImage("image data is empty (0 bytes)")
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(
            f"image is {len(data)} bytes, over the limit of {settings.max_image_bytes}",
            size_bytes=len(data),
            max_bytes=settings.max_image_bytes,
        )

    im = _open_header(data)
    width, height = im.size
    if width <= 0 or height <= 0:
        raise BadImage(f"image has an empty size {width}x{height}")
    if width * height > settings.max_image_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{settings.max_image_pixels}",
            width=width,
            height=height,
            max_pixels=settings.max_image_pixels,
        )

    if im.format == "PNG":
        # PNG carries a CRC per chunk; Pillow only checks them in verify(), which reads chunks
        # without inflating them, so a corrupted upload is refused instead of decoded as noise.
        _verify_png(data)
    orientation = _exif_orientation(im)
    if max_side > 0 and im.format == "JPEG":
        _draft(im, max_side)
    if im.format == "PNG" and _png_is_16bit_colour(data):
        rgb = _decode_png16_colour(data, width, height)
    else:
        rgb = _pillow_to_rgb(im)
    # OpenCV swaps the channels in one vectorised pass: numpy's reversed-stride copy took 4 ms
    # on a 1024 x 768 photo, cvtColor 0.1 ms.
    bgr = _apply_orientation(
        cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), orientation
    )
    del rgb
    if max_side > 0 and max(bgr.shape[:2]) > max_side:
        f = max_side / max(bgr.shape[:2])
        size = (max(1, round(bgr.shape[1] * f)), max(1, round(bgr.shape[0] * f)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    upright_w, upright_h = (height, width) if orientation >= 5 else (width, height)
    return DecodedImage(bgr, (bgr.shape[1] / upright_w, bgr.shape[0] / upright_h))


# Why Pillow decodes JPEG pixels, not cv2.imdecode: OpenCV gives identical pixels (same
# libjpeg-turbo) for 25% less CPU on a full-size photo, and refuses truncated files as Pillow
# does, but its libjpeg prints every "Corrupt JPEG data" warning straight to stderr, which no
# log level silences: old photo collections are full of such files (measured 2026-12-03).
def _draft(im: Image.Image, max_side: int) -> None:
    """Ask libjpeg for the smallest of 1/2, 1/4, 1/8 scale that brings the long side within
    ``max_side`` (1/8 at most: beyond that the remaining shrink is a resize)."""
    long_side = max(im.size)
    factor = 1
    while factor < 8 and long_side / factor > max_side:
        factor *= 2
    if factor > 1:
        # Pillow picks the largest scale whose result is still at least the size asked for.
        # at least 1 px a side: a 3 x 5000 strip would otherwise ask Pillow for a 0-wide draft
        im.draft(None, (max(1, im.size[0] // factor), max(1, im.size[1] // factor)))


# header -------------------------------------------------------------------------------------
def _open_header(data: bytes) -> Image.Image:
    """Parse the header only (no pixel data yet); any failure is a ``BadImage``."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit decides; Pillow's bomb warning would only be noise. Pillow
            # still raises DecompressionBombError above twice its own limit, caught below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image rejected as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        head = data[:8].hex()
        raise BadImage(
            "bytes are not an image in a supported format "
            f"({', '.join(ALLOWED_FORMATS)}); first bytes: {head}",
            first_bytes=head,
        ) from exc
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as exc:
        raise BadImage(f"image header is corrupt: {exc}") from exc
    return im


def _verify_png(data: bytes) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.open(io.BytesIO(data), formats=("PNG",)).verify()
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as exc:
        raise BadImage(f"PNG data is corrupt: {exc}") from exc


def _exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8; 1 (upright) when absent or unreadable, since a broken EXIF block
    should not make an otherwise good photo undecodable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data" and carries on
            value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(bgr: np.ndarray, orientation: int) -> np.ndarray:
    """Make the pixels upright; the same eight cases as ``PIL.ImageOps.exif_transpose``.

    OpenCV's flips and rotations write a contiguous image in one pass, where a numpy view would
    need a strided copy afterwards (several ms on a phone photo)."""
    if orientation == 2:
        return cv2.flip(bgr, 1)
    if orientation == 3:
        return cv2.rotate(bgr, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(bgr, 0)
    if orientation == 5:
        return cv2.transpose(bgr)
    if orientation == 6:
        return cv2.rotate(bgr, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(bgr), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(bgr, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return bgr


# pixels --------------------------------------------------------------------------------------
def _load(im: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image rejected as a decompression bomb: {exc}") from exc
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, MemoryError) as exc:
        # Pillow says "image file is truncated" for cut-off JPEGs; keep its words.
        raise BadImage(f"image data is truncated or corrupt: {exc}") from exc


def _pillow_to_rgb(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB from any Pillow mode we accept."""
    _load(im)
    mode = im.mode
    try:
        if mode == "RGB":
            return np.asarray(im)
        if mode in ("1", "L"):
            return _grey_to_rgb(np.asarray(im.convert("L")))
        if mode.startswith("I;16") or mode == "I":
            return _grey_to_rgb(_scale16(np.asarray(im)))
        if mode == "CMYK":
            return np.asarray(_cmyk_to_rgb(im))
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in im.info
        ):
            rgba = np.asarray(im.convert("RGBA"))
            return _composite_on_white(rgba[..., :3], rgba[..., 3])
        if mode in ("P", "YCbCr", "LAB", "HSV"):
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise BadImage(f"cannot convert {mode} pixels to RGB: {exc}") from exc
    raise BadImage(f"unsupported pixel format {mode!r} ({im.format})", mode=mode)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _scale16(values: np.ndarray) -> np.ndarray:
    """16-bit samples to 8-bit by rounding v/257 (65535 -> 255 exactly, 0 -> 0)."""
    v = np.clip(values.astype(np.float32), 0, 65535)
    return np.rint(v / 257.0).astype(np.uint8)


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.rint(out).astype(np.uint8)


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK through its embedded ICC profile when there is one, else Pillow's formula
    (R = (255 - C)(255 - K) / 255). Pillow already un-inverts Adobe CMYK JPEGs on load."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            if out is not None:
                return out
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile falls back to the formula rather than failing the upload
    return im.convert("RGB")


# 16-bit colour PNG --------------------------------------------------------------------------
def _png_is_16bit_colour(data: bytes) -> bool:
    """IHDR bit depth 16 with colour type 2 (RGB), 4 (grey+alpha) or 6 (RGBA)."""
    if len(data) < 26 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = data[24], data[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _decode_png16_colour(data: bytes, width: int, height: int) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.shape[:2] != (height, width):
        raise BadImage("16-bit PNG data is truncated or corrupt")
    if arr.dtype != np.uint16:
        arr = arr.astype(np.uint16) * 257
    if arr.ndim == 2:
        return _grey_to_rgb(_scale16(arr))
    channels = arr.shape[2]
    if channels == 2:  # grey + alpha
        grey = _scale16(arr[..., 0])
        return _composite_on_white(_grey_to_rgb(grey), _scale16(arr[..., 1]))
    rgb = _scale16(arr[..., 2::-1])  # OpenCV gives BGR(A)
    if channels == 4:
        return _composite_on_white(rgb, _scale16(arr[..., 3]))
    return rgb


def sha256_hex(data: bytes) -> str:
    """An upload's dedupe key: enrollment and batch ingestion must compute it the same way, so
    an image indexed by one is recognised as known by the other."""
    return hashlib.sha256(data).hexdigest()
