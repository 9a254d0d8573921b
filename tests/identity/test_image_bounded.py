"""Bounded decoding (``decode_image_bounded``): the pixels decoded per request stay within
``decode_max_side`` whatever the upload declares, faces are still found where they are, with
near-identical embeddings, and EXIF orientation still applies. Real photos from ../shared/data."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from identity.image import decode_image, decode_image_bounded
from identity.pipeline import FaceAnalyzer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BIG_REAL = DATA / "deepface" / "img40.jpg"  # 3061x4600: a portrait and a smaller second face
OBAMA = DATA / "face_recognition" / "knn_examples" / "train" / "obama" / "obama.jpg"


def _jpeg(rgb: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def huge_face_jpeg(side: int = 7000) -> bytes:
    """A real face photo blown up to a ``side`` x ``side`` canvas (aspect kept, centred), as in
    the issue's memory attack."""
    rgb = np.asarray(Image.open(OBAMA).convert("RGB"))
    k = side / max(rgb.shape[:2])
    big = cv2.resize(rgb, (round(rgb.shape[1] * k), round(rgb.shape[0] * k)))
    canvas = np.full((side, side, 3), 128, np.uint8)
    y, x = (side - big.shape[0]) // 2, (side - big.shape[1]) // 2
    canvas[y : y + big.shape[0], x : x + big.shape[1]] = big
    return _jpeg(canvas)


def _peak_bytes(fn, *args):  # type: ignore[no-untyped-def]
    tracemalloc.start()  # numpy registers its buffers with tracemalloc
    try:
        out = fn(*args)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_jpeg_is_decoded_small(settings) -> None:  # type: ignore[no-untyped-def]
    data = huge_face_jpeg()
    bounded, peak_bounded = _peak_bytes(decode_image_bounded, data, settings)
    full, peak_full = _peak_bytes(decode_image, data, settings)
    assert full.shape == (7000, 7000, 3)
    assert max(bounded.image_bgr.shape[:2]) <= settings.decode_max_side
    assert bounded.image_bgr.shape[:2] == (1750, 1750)  # libjpeg's 1/4 scale, no resize needed
    assert bounded.scale_xy == (0.25, 0.25)
    # 7000^2 RGB is 147 MB; the bounded decode holds a few copies of 1750^2 (9 MB each)
    assert peak_full > 7000 * 7000 * 3
    assert peak_bounded < 4 * 1750 * 1750 * 3


def test_small_images_are_untouched(settings) -> None:  # type: ignore[no-untyped-def]
    data = OBAMA.read_bytes()
    bounded = decode_image_bounded(data, settings)
    assert not bounded.reduced
    np.testing.assert_array_equal(bounded.image_bgr, decode_image(data, settings))


def test_real_large_photo_same_face_same_embedding(settings, analyzer: FaceAnalyzer) -> None:  # type: ignore[no-untyped-def]
    data = BIG_REAL.read_bytes()
    full_image = decode_image(data, settings)
    assert max(full_image.shape[:2]) > settings.decode_max_side  # the photo really is reduced
    bounded = analyzer.analyze_bytes(data)
    assert max(bounded.image_bgr.shape[:2]) <= settings.decode_max_side
    full = analyzer.analyze([full_image])
    assert len(bounded.faces) == len(full) == 2
    got, want = bounded.faces.sorted_by_area(), full.sorted_by_area()
    for i in range(2):
        # boxes come back in the upload's pixels, on the same face
        a, b = got.boxes[i], want.boxes[i]
        inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
        union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
        assert inter / union > 0.95
        similarity = float(got.embeddings[i] @ want.embeddings[i])
        assert similarity > 0.97, (i, similarity)


def test_huge_upload_still_matches_the_original_photo(settings, analyzer: FaceAnalyzer) -> None:  # type: ignore[no-untyped-def]
    probe = analyzer.analyze_bytes(huge_face_jpeg())
    original = analyzer.analyze_bytes(OBAMA.read_bytes())
    assert len(probe.faces) == len(original.faces) == 1
    assert float(probe.faces.embeddings[0] @ original.faces.embeddings[0]) > 0.95
    # the box, taken back through the blow-up, lands on the original face
    w, h = Image.open(OBAMA).size
    k = 7000 / max(w, h)
    offset = np.float32([(7000 - round(w * k)) // 2, (7000 - round(h * k)) // 2] * 2)
    back = (probe.faces.boxes[0] - offset) / k
    np.testing.assert_allclose(back, original.faces.boxes[0], atol=0.02 * max(w, h))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applies_to_reduced_decode(settings, orientation: int) -> None:  # type: ignore[no-untyped-def]
    rgb = np.asarray(Image.open(BIG_REAL).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(rgb, exif=exif.tobytes())
    bounded = decode_image_bounded(data, settings)
    full = decode_image(data, settings)
    assert bounded.reduced and full.shape[:2] != rgb.shape[:2] or orientation == 3
    small = cv2.resize(full, bounded.image_bgr.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - bounded.image_bgr.astype(int)).mean() < 4
    sx, sy = bounded.scale_xy
    assert abs(sx - bounded.image_bgr.shape[1] / full.shape[1]) < 1e-9
    assert abs(sy - bounded.image_bgr.shape[0] / full.shape[0]) < 1e-9


def small_face_jpeg(side: int = 2400, width: int = 200) -> bytes:
    """A real photo shrunk to ``width`` px on a large canvas: about 45 px between the eyes in
    the upload, 22 at the detection decode (the ArcFace crop has 35)."""
    rgb = np.asarray(Image.open(OBAMA).convert("RGB"))
    k = width / rgb.shape[1]
    small = cv2.resize(rgb, (width, round(rgb.shape[0] * k)), interpolation=cv2.INTER_AREA)
    canvas = np.full((side, side, 3), 128, np.uint8)
    canvas[900 : 900 + small.shape[0], 1100 : 1100 + width] = small
    return _jpeg(canvas)


def test_two_phase_decode_a_large_face_needs_one_small_decode(settings, analyzer) -> None:  # type: ignore[no-untyped-def]
    from identity.image import decode_for_detection

    data = BIG_REAL.read_bytes()
    first = decode_for_detection(data, settings)
    assert max(first.image_bgr.shape[:2]) <= settings.decode_detect_side and first.finer
    one = FaceAnalyzer(settings.model_copy(update={"decode_detect_side": 0}))
    two_phase, single = analyzer.analyze_bytes(data), one.analyze_bytes(data)
    assert "decode_finer" not in two_phase.faces.timings  # the portrait has detail to spare
    a, b = two_phase.faces.largest(), single.faces.largest()
    assert np.abs(a.boxes - b.boxes).max() < 0.02 * (b.boxes[0, 2] - b.boxes[0, 0])
    assert float(a.embeddings[0] @ b.embeddings[0]) > 0.97


def test_two_phase_decode_a_small_face_is_embedded_from_the_finer_decode(
    settings, analyzer
) -> None:  # type: ignore[no-untyped-def]
    data = small_face_jpeg()
    one = FaceAnalyzer(settings.model_copy(update={"decode_detect_side": 0}))
    two_phase, single = analyzer.analyze_bytes(data), one.analyze_bytes(data)
    assert "decode_finer" in two_phase.faces.timings
    assert two_phase.image_bgr.shape == single.image_bgr.shape  # the crop came from there
    a, b = two_phase.faces.largest(), single.faces.largest()
    assert np.abs(a.boxes - b.boxes).max() < 3.0 and np.abs(a.landmarks - b.landmarks).max() < 3.0
    assert float(a.embeddings[0] @ b.embeddings[0]) > 0.99


def test_two_phase_decode_leaves_other_formats_to_one_decode(settings) -> None:  # type: ignore[no-untyped-def]
    from identity.image import decode_for_detection

    rgb = np.asarray(Image.open(BIG_REAL).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    decoded = decode_for_detection(buf.getvalue(), settings)
    assert not decoded.finer and max(decoded.image_bgr.shape[:2]) == settings.decode_max_side
