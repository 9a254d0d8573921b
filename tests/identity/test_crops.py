"""Source crops (``identity.crops``): what a template keeps is enough to re-embed it.

On real photos, the embedding re-derived from the stored crop (JPEG round trip included) must
be the embedding of the original photo, for each model's own alignment.
"""

from __future__ import annotations

import numpy as np
import pytest

from identity.crops import decode_crop, embed_crops, encode_crop, source_crop
from identity.errors import BadImage
from identity.pipeline import FaceAnalyzer
from identity.settings import Settings

from shared_data import SHARED_DIR

DEEPFACE = SHARED_DIR / "data" / "deepface"
PHOTOS = ["img1.jpg", "img2.jpg", "img10.jpg", "img11.jpg", "img12.jpg", "couple.jpg"]


@pytest.mark.parametrize("model", ["dlib_resnet_v1", "arcface_mobilefacenet_128"])
def test_crop_reembeds_like_the_photo(settings: Settings, model: str) -> None:
    analyzer = FaceAnalyzer(settings, embedder=model)
    sims = []
    for name in PHOTOS:
        analyzed = analyzer.analyze_bytes((DEEPFACE / name).read_bytes())
        faces = analyzed.faces.sorted_by_area()
        for i in range(len(faces)):  # every face of the couple, not just the largest
            crop = analyzed.source_crop(faces, i, settings.face_crop_side)
            assert crop.image_bgr.shape[0] == crop.image_bgr.shape[1] <= settings.face_crop_side
            stored = decode_crop(encode_crop(crop), crop.geometry())
            again = embed_crops(analyzer, [stored], [float(faces.scores[i])])
            assert again.embeddings is not None and faces.embeddings is not None
            sims.append(float(again.embeddings[0] @ faces.embeddings[i]))
    assert len(sims) >= len(PHOTOS) + 1
    # same face, same model: far above any impostor (identical would be 1.0)
    assert min(sims) > 0.97, sims


def test_face_at_the_border_keeps_its_geometry() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    box = np.array([70.0, 10.0, 100.0, 40.0], np.float32)  # touching the right edge
    lms = np.array([[78, 20], [92, 20], [85, 26], [79, 33], [91, 33]], np.float32)
    crop = source_crop(image, box, lms, max_side=320)
    side = crop.image_bgr.shape[0]
    assert side == 60  # 2x the box side: never upscaled
    assert np.allclose(crop.box, [15, 15, 45, 45])
    assert np.allclose(crop.landmarks[0], [23, 25])
    assert crop.image_bgr[:, -1].max() == 0  # outside the photo is black, not stretched


def test_damaged_crop_is_a_clear_error() -> None:
    with pytest.raises(BadImage):
        decode_crop(b"not a jpeg", {"box": [0, 0, 1, 1], "landmarks": [[0, 0]] * 5})
    crop = source_crop(
        np.zeros((50, 50, 3), np.uint8),
        np.array([10, 10, 30, 30], np.float32),
        np.full((5, 2), 20, np.float32),
        320,
    )
    with pytest.raises(BadImage):
        decode_crop(encode_crop(crop), {"box": [1, 2]})
