"""Decoding: a corpus of bad and odd images generated here, each decoded to the right pixels or
rejected with the right typed error, plus EXIF orientation on a real photo."""

from __future__ import annotations

import io
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from identity.errors import BadImage, ImageTooLarge
from identity.image import decode_image, load_image
from identity.settings import Settings

from shared_data import SHARED_DIR

REPO = Path(__file__).resolve().parents[2]
DATA = SHARED_DIR / "data"
MODELS = SHARED_DIR / "models"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), models_dir=MODELS)


def pil_bytes(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient_rgb(w: int = 48, h: int = 32) -> np.ndarray:
    """An RGB image where every pixel differs, so flips and rotations are all distinguishable."""
    ys, xs = np.mgrid[:h, :w]
    return np.stack([xs * 5 % 256, ys * 7 % 256, (xs + ys * 3) % 256], axis=2).astype(np.uint8)


# rejected ----------------------------------------------------------------------------------------
def test_empty_bytes(settings: Settings) -> None:
    with pytest.raises(BadImage, match="empty"):
        decode_image(b"", settings)


@pytest.mark.parametrize(
    "data",
    [
        b"hello, I am not an image",
        b"<html><body>no</body></html>",
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
    ],
    ids=["text", "html", "random", "pdf"],
)
def test_not_an_image(settings: Settings, data: bytes) -> None:
    with pytest.raises(BadImage, match="not an image") as err:
        decode_image(data, settings)
    assert type(err.value) is BadImage and err.value.http_status == 422


def test_not_bytes(settings: Settings) -> None:
    with pytest.raises(BadImage, match="must be bytes"):
        decode_image("a path, not bytes", settings)  # type: ignore[arg-type]


def test_format_outside_allow_list(settings: Settings) -> None:
    # Pillow reads ICO, but an upload in it is not a photo; the allow-list refuses it.
    ico = pil_bytes(Image.fromarray(gradient_rgb(32, 32)), "ICO")
    assert Image.open(io.BytesIO(ico)).format == "ICO"
    with pytest.raises(BadImage, match="supported format"):
        decode_image(ico, settings)


def test_truncated_jpeg(settings: Settings) -> None:
    data = (DATA / "deepface" / "img10.jpg").read_bytes()
    cut = data[: len(data) // 2]  # header intact, scan data cut off
    with pytest.raises(BadImage, match="truncated"):
        decode_image(cut, settings)


def test_jpeg_header_only(settings: Settings) -> None:
    data = pil_bytes(Image.fromarray(gradient_rgb()), "JPEG")
    with pytest.raises(BadImage):
        decode_image(data[:40], settings)


def test_corrupt_png_chunk(settings: Settings) -> None:
    data = bytearray(pil_bytes(Image.fromarray(gradient_rgb()), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 30] = b"\x00" * 20  # break the compressed stream and its CRC
    with pytest.raises(BadImage):
        decode_image(bytes(data), settings)


def test_over_byte_limit(settings: Settings) -> None:
    small = settings.model_copy(update={"max_image_bytes": 1000})
    data = pil_bytes(Image.fromarray(gradient_rgb(200, 200)), "PNG")
    assert len(data) > 1000
    with pytest.raises(ImageTooLarge, match="bytes") as err:
        decode_image(data, small)
    assert err.value.http_status == 413


def test_over_pixel_limit_small_file(settings: Settings) -> None:
    tight = settings.model_copy(update={"max_image_pixels": 1000})
    data = pil_bytes(Image.fromarray(gradient_rgb(40, 40)), "JPEG")
    with pytest.raises(ImageTooLarge, match="1600 pixels"):
        decode_image(data, tight)


def _bomb_png(side: int) -> bytes:
    """A black side x side PNG made without ever holding its pixels: a 1-bit image compresses
    to almost nothing, which is what a decompression bomb is."""
    return pil_bytes(Image.new("1", (side, side)), "PNG", optimize=True)


@pytest.mark.parametrize("side", [12_000, 20_000], ids=["over-our-limit", "over-pillow-limit"])
def test_decompression_bomb_rejected_before_decoding(settings: Settings, side: int) -> None:
    data = _bomb_png(side)
    assert len(data) < 200_000  # tiny file ...
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        decode_image(data, settings)  # ... of 144M / 400M pixels, refused from the header
    assert time.perf_counter() - start < 0.5


def test_load_image_missing_and_directory(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(BadImage, match="cannot read"):
        load_image(tmp_path / "nope.jpg", settings)
    with pytest.raises(BadImage, match="not a file"):
        load_image(tmp_path, settings)


def test_load_image_checks_size_before_reading(settings: Settings, tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    p.write_bytes(pil_bytes(Image.fromarray(gradient_rgb(300, 300)), "PNG"))
    with pytest.raises(ImageTooLarge):
        load_image(p, settings.model_copy(update={"max_image_bytes": 100}))


# decoded correctly -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM", "WEBP"])
def test_lossless_formats_exact_bgr(settings: Settings, fmt: str) -> None:
    rgb = gradient_rgb()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(pil_bytes(Image.fromarray(rgb), fmt, **kw), settings)
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb[..., ::-1])  # BGR


def test_grayscale_png_and_jpeg(settings: Settings) -> None:
    grey = gradient_rgb()[..., 0]
    out = decode_image(pil_bytes(Image.fromarray(grey, "L"), "PNG"), settings)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    flat = np.full((32, 32), 140, np.uint8)
    out = decode_image(pil_bytes(Image.fromarray(flat, "L"), "JPEG", quality=95), settings)
    assert out.shape == (32, 32, 3) and np.abs(out.astype(int) - 140).max() <= 1


def test_one_bit_png(settings: Settings) -> None:
    bits = (gradient_rgb()[..., 0] > 100).astype(np.uint8) * 255
    out = decode_image(pil_bytes(Image.fromarray(bits).convert("1"), "PNG"), settings)
    np.testing.assert_array_equal(out[..., 1], bits)


def test_gray16_png_scaled_by_rounding(settings: Settings) -> None:
    v = np.array([[0, 128, 129, 385, 32767, 65535, 257 * 200 + 128, 257 * 200 + 129]], np.uint16)
    ok, buf = cv2.imencode(".png", v)
    assert ok
    out = decode_image(buf.tobytes(), settings)
    np.testing.assert_array_equal(out[0, :, 0], np.rint(v[0] / 257.0).astype(np.uint8))
    assert out[0, 5, 0] == 255 and out[0, 1, 0] == 0 and out[0, 2, 0] == 1


def test_rgb16_png_scaled_by_rounding_not_truncated(settings: Settings) -> None:
    rng = np.random.default_rng(1)
    bgr16 = rng.integers(0, 65536, (16, 20, 3), dtype=np.uint16)
    _ok, buf = cv2.imencode(".png", bgr16)
    out = decode_image(buf.tobytes(), settings)
    np.testing.assert_array_equal(out, np.rint(bgr16 / 257.0).astype(np.uint8))
    # Pillow alone keeps the high byte: differs from proper scaling on some pixels.
    pil = np.asarray(Image.open(io.BytesIO(buf.tobytes())).convert("RGB"))[..., ::-1]
    assert (pil != out).any()


def test_rgba16_png_composited_on_white(settings: Settings) -> None:
    bgra = np.zeros((4, 4, 4), np.uint16)
    bgra[..., 2] = 65535  # red
    bgra[:2, :, 3] = 65535  # top half opaque, bottom transparent
    _ok, buf = cv2.imencode(".png", bgra)
    out = decode_image(buf.tobytes(), settings)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(out[3, 0], [255, 255, 255])


def test_rgba_png_composited_on_white(settings: Settings) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:5, :, 3] = 255  # opaque
    rgba[5:8, :, 3] = 0  # fully transparent
    rgba[8:, :, 3] = 128  # half
    out = decode_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), settings)
    np.testing.assert_array_equal(out[0, 0], [30, 200, 10])
    np.testing.assert_array_equal(out[6, 0], [255, 255, 255])
    half = 128 / 255
    expect = np.rint(np.array([30, 200, 10]) * half + 255 * (1 - half))
    np.testing.assert_array_equal(out[9, 0], expect)


def test_la_png(settings: Settings) -> None:
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 0] = 60
    la[:2, :, 1] = 255
    out = decode_image(pil_bytes(Image.fromarray(la, "LA"), "PNG"), settings)
    np.testing.assert_array_equal(out[0, 0], [60, 60, 60])
    np.testing.assert_array_equal(out[3, 0], [255, 255, 255])


def test_palette_png_and_gif(settings: Settings) -> None:
    rgb = gradient_rgb()
    pal = Image.fromarray(rgb).quantize(colors=16)
    expect = np.asarray(pal.convert("RGB"))[..., ::-1]
    np.testing.assert_array_equal(decode_image(pil_bytes(pal, "PNG"), settings), expect)
    np.testing.assert_array_equal(decode_image(pil_bytes(pal, "GIF"), settings), expect)


def test_palette_png_with_transparency(settings: Settings) -> None:
    idx = np.zeros((6, 6), np.uint8)
    idx[3:] = 1
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 255] + [255, 0, 0] + [0] * 762)
    out = decode_image(pil_bytes(im, "PNG", transparency=1), settings)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])  # blue, in BGR
    np.testing.assert_array_equal(out[5, 0], [255, 255, 255])  # transparent -> white


def test_cmyk_jpeg_colours(settings: Settings) -> None:
    patches = np.zeros((64, 64, 3), np.uint8)
    colours = [(200, 30, 40), (20, 160, 220), (240, 240, 240), (60, 60, 60)]
    for i, c in enumerate(colours):
        patches[(i // 2) * 32 : (i // 2 + 1) * 32, (i % 2) * 32 : (i % 2 + 1) * 32] = c
    cmyk = Image.fromarray(patches).convert("CMYK")
    data = pil_bytes(cmyk, "JPEG", quality=98)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data, settings)
    for i, c in enumerate(colours):
        y, x = (i // 2) * 32 + 16, (i % 2) * 32 + 16
        assert np.abs(out[y, x].astype(int) - np.array(c[::-1])).max() <= 6, (c, out[y, x])


def orientation_png(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(Image.fromarray(rgb), "PNG", exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(settings: Settings, orientation: int) -> None:
    rgb = gradient_rgb(48, 32)
    data = orientation_png(rgb, orientation)
    expect = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    out = decode_image(data, settings)
    np.testing.assert_array_equal(out, expect[..., ::-1])
    assert out.shape[:2] == ((48, 32) if orientation >= 5 else (32, 48))


def test_malformed_exif_is_ignored(settings: Settings) -> None:
    rgb = gradient_rgb()
    data = bytearray(
        pil_bytes(Image.fromarray(rgb), "JPEG", quality=100, exif=b"Exif\x00\x00MM\x00*garbage!!")
    )
    out = decode_image(bytes(data), settings)
    assert out.shape == (32, 48, 3)


def test_real_32bit_png(settings: Settings) -> None:
    out = load_image(DATA / "face_recognition" / "tests" / "test_images" / "32bit.png", settings)
    ref = np.asarray(Image.open(DATA / "face_recognition" / "tests" / "test_images" / "32bit.png"))
    assert out.shape == ref.shape[:2] + (3,)
    opaque = ref[..., 3] == 255
    np.testing.assert_array_equal(out[opaque], ref[..., 2::-1][opaque])


def test_exif_rotated_real_photo_gives_same_face(settings: Settings) -> None:
    """A phone-style sideways JPEG with orientation 6 decodes upright: same face, same place."""
    from identity.detect import RUNNERS
    from identity.runtime import build_runner

    upright = load_image(DATA / "deepface" / "img10.jpg", settings)
    sideways = np.rot90(upright, k=1)  # what the sensor stored; tag 6 = rotate 90 clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    data = pil_bytes(
        Image.fromarray(np.ascontiguousarray(sideways[..., ::-1])),
        "JPEG",
        quality=95,
        exif=exif.tobytes(),
    )
    decoded = decode_image(data, settings)
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright.astype(int)).mean() < 3  # JPEG noise only

    det = build_runner(RUNNERS, "yunet_n", settings)
    a, b = det.detect([upright]), det.detect([decoded])
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(b.boxes, a.boxes, atol=4)
    lm = b.landmarks[0]
    assert lm[0, 1] < lm[3, 1] and lm[1, 1] < lm[4, 1]  # eyes above the mouth: upright
