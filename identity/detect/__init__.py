"""Face detectors. Every detector returns one ``Faces`` for a batch of BGR uint8 images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from identity.faces import Faces
from identity.settings import Settings


class Detector(Protocol):
    name: str

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Faces:
        """Boxes, 5 landmarks (InsightFace order) and scores in each image's own pixels;
        ``image_index`` says which image each face came from."""
        ...


# runner name (manifest ``runner``) -> "module:Class"; the class is built as Class(resolved, settings)
RUNNERS: dict[str, str] = {
    "retinaface": "identity.detect.retinaface:RetinaFaceDetector",
    "scrfd": "identity.detect.scrfd:SCRFDDetector",
    "yunet": "identity.detect.yunet:YuNetDetector",
    "blazeface": "identity.detect.blazeface:BlazeFaceDetector",
}


def load_detector(name: str, settings: Settings) -> Detector:
    """The shared, lazily built detector for a manifest name."""
    from identity.runtime import POOL, build_runner

    return POOL.get("detector", name, lambda: build_runner(RUNNERS, name, settings))
