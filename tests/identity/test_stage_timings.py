"""``FaceAnalyzer`` records the seconds each stage took on the result it returns (Faces.timings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from identity.pipeline import FaceAnalyzer

from shared_data import SHARED_DIR

PHOTO = SHARED_DIR / "data" / "deepface" / "img1.jpg"


def test_analyze_bytes_times_every_stage_that_ran(analyzer: FaceAnalyzer) -> None:
    faces = analyzer.analyze_bytes(Path(PHOTO).read_bytes()).faces
    assert len(faces) >= 1 and faces.embeddings is not None
    assert list(faces.timings) == ["decode", "detect", "mesh", "align", "embed", "quality"]
    assert all(isinstance(s, float) and s >= 0 for s in faces.timings.values())
    assert faces.timings["embed"] > 0 and faces.timings["detect"] > 0
    # slicing to the largest face keeps the cost of the whole image
    assert faces.largest().timings == faces.timings


def test_no_face_still_reports_decode_and_detect(analyzer: FaceAnalyzer) -> None:
    blank = np.full((240, 320, 3), 127, np.uint8)
    faces = analyzer.analyze([blank])
    assert len(faces) == 0 and list(faces.timings) == ["detect"]
    without_embedding = analyzer.analyze_bytes(Path(PHOTO).read_bytes(), embed=False).faces
    assert "embed" not in without_embedding.timings and "align" in without_embedding.timings
