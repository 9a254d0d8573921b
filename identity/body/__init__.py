"""Body matching: person crops -> re-ID embeddings and ViT descriptors, as ``Bodies``.

The flow mirrors faces:

    images -> person boxes (given, or a person detector) -> crops -> re-ID embed (batch) -> Bodies

Runners are chosen by manifest name (``runner`` field), built lazily once and shared through
``identity.runtime.POOL``, like the face detectors and embedders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from identity.body.bodies import Bodies
from identity.body.crops import crop_bodies
from identity.errors import NoPersonFound
from identity.settings import Settings

__all__ = [
    "Bodies",
    "BodyAnalyzer",
    "BodyEmbedder",
    "DenseDescriptor",
    "PersonDetector",
    "crop_bodies",
    "load_body_embedder",
    "load_person_detector",
]


class PersonDetector(Protocol):
    name: str

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Bodies:
        """Person boxes and scores in each image's own pixels; ``image_index`` per row."""
        ...


class BodyEmbedder(Protocol):
    name: str
    dim: int

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) uint8 BGR person crops -> (embeddings (N, D) L2-normalised, norms (N,))."""
        ...


class DenseDescriptor(Protocol):
    name: str
    input_size: tuple[int, int] | None

    def dense(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Crops -> ((N, P, C) L2-normalised patch descriptors, (rows, cols) patch grid)."""
        ...


# runner name (manifest ``runner``) -> "module:Class", built as Class(resolved, settings)
EMBEDDER_RUNNERS: dict[str, str] = {
    "reid_onnx": "identity.body.reid:ReIDONNX",
    "reid_openvino": "identity.body.reid:ReIDOpenVINO",  # needs the `body` extra
    "dino_vit": "identity.body.vit:DinoViTDescriptor",  # needs the `torch` extra
}
DETECTOR_RUNNERS: dict[str, str] = {
    "ssd_openvino": "identity.body.detect:SSDPersonDetector",  # needs the `body` extra
    "scrfd_person": "identity.body.detect:SCRFDPersonDetector",
    "mediapipe_pose": "identity.body.detect:MediaPipePoseDetector",
}


def load_body_embedder(name: str, settings: Settings) -> BodyEmbedder:
    from identity.runtime import POOL, build_runner

    return POOL.get("body_embedder", name, lambda: build_runner(EMBEDDER_RUNNERS, name, settings))


def load_person_detector(name: str, settings: Settings) -> PersonDetector:
    """``hog`` needs no weights (they are compiled into OpenCV); others resolve a manifest."""
    from identity.runtime import POOL, build_runner

    if name == "hog":
        from identity.body.detect import HOGPersonDetector

        return POOL.get("person_detector", name, lambda: HOGPersonDetector(settings))
    return POOL.get("person_detector", name, lambda: build_runner(DETECTOR_RUNNERS, name, settings))


class BodyAnalyzer:
    """Person detector + re-ID embedder chosen by manifest name (defaults from settings)."""

    def __init__(
        self, settings: Settings, detector: str | None = None, embedder: str | None = None
    ) -> None:
        self.settings = settings
        self.detector_name = detector or settings.person_detector
        self.embedder_name = embedder or settings.body_embedder

    @property
    def detector(self) -> PersonDetector:
        return load_person_detector(self.detector_name, self.settings)

    @property
    def embedder(self) -> BodyEmbedder:
        return load_body_embedder(self.embedder_name, self.settings)

    def analyze(
        self,
        images_bgr: Sequence[np.ndarray],
        bodies: Bodies | None = None,
        keep_crops: bool = False,
    ) -> Bodies:
        """Every person of a batch of BGR images, with re-ID embeddings.

        ``bodies`` gives the person boxes (a tracker's or an upstream detector's; the common case)
        and skips detection; without it the configured person detector runs.
        """
        from identity.body.detect import check_person_images

        check_person_images(images_bgr)  # before any detector or resize sees a bad image
        if bodies is None:
            bodies = self.detector.detect(images_bgr)
        if not len(bodies):
            return bodies
        embedder = self.embedder
        size = getattr(embedder, "input_size", None) or (128, 256)
        crops = crop_bodies(images_bgr, bodies, size)
        embeddings, norms = embedder.embed(crops)
        return bodies.with_(
            crops=crops if keep_crops else None, embeddings=embeddings, embedding_norms=norms
        )

    @staticmethod
    def add_dense_descriptors(
        images_bgr: Sequence[np.ndarray], bodies: Bodies, descriptor: DenseDescriptor
    ) -> Bodies:
        """Bodies with per-patch descriptors (e.g. ``DinoViTDescriptor``) for part matching."""
        if not len(bodies):
            return bodies
        crops = crop_bodies(images_bgr, bodies, descriptor.input_size or (128, 256))
        dense, grid = descriptor.dense(crops)
        return bodies.with_(descriptors=dense, descriptor_grid=grid)

    def analyze_one(self, image_bgr: np.ndarray, box_xyxy: Sequence[float] | None = None) -> Bodies:
        """One person of one image: the given box, else the largest detected person."""
        if box_xyxy is not None:
            return self.analyze([image_bgr], Bodies.from_boxes([box_xyxy]))
        found = self.detector.detect([image_bgr])
        if not len(found):
            raise NoPersonFound(f"no person found by the '{self.detector_name}' detector")
        return self.analyze([image_bgr], found.largest())
