"""A real face the enrollment gate refuses: a photo out of focus, analysed, for the tests that
store templates below the gate the way gallery naming stores faces (``enroll_faces``, no gate)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import cv2


def blurred_face(path: Path, analyzer: Any) -> tuple[Any, str]:
    """(the largest face of the photo blurred with a Gaussian of sigma 15% of its eye distance,
    analysed; a fresh source digest). Quality about 0.06, reason ``blurry``."""
    image = cv2.imread(str(path))
    iod = float(analyzer.analyze([image]).largest().inter_ocular[0])
    face = analyzer.analyze([cv2.GaussianBlur(image, (0, 0), 0.15 * iod)]).largest()
    return face, f"blurred-{path.name}-{uuid.uuid4().hex}"
