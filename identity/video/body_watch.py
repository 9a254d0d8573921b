"""``identity watch SOURCE --collection C --bodies``: people followed by body, not face.

Per frame the person detector (``Settings.person_detector``, the SSD by default) finds people;
``IoUTracker`` links their boxes; each track keeps its ``best_k`` crops (256x128, scored by
detector confidence x height up to 256 px) and is identified once, like a face track, by a
``BodyIdentifier``: the store's body templates of the collection (``BodyStoreIdentifier``, the
same decision as ``POST /identify-body`` without the face: the face path is the face watch).
The events are the face watch's, and ``identified`` carries the candidates.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from identity.body import PersonDetector, load_person_detector
from identity.body.crops import crop_bodies
from identity.body.detect import check_person_images
from identity.settings import Settings
from identity.video.tracker import IoUTracker
from identity.video.watch import Event, TrackWatcher, WatchOptions, open_source

CROP_WH = (128, 256)  # the re-ID networks' input; the identifier re-embeds these crops


class BodyIdentifier(Protocol):
    def identify_crops(self, crops: np.ndarray) -> dict[str, Any]:
        """A track's (N, 256, 128, 3) BGR person crops -> ``label``, ``match``, ``candidates``."""
        ...


class BodyStoreIdentifier:
    """A collection's body templates in the identity store (``services.body_store.BodyStore``)."""

    def __init__(
        self,
        body_store: Any,
        collection: str,
        far: float | None = None,
        threshold: float | None = None,
        top_k: int = 3,
    ) -> None:
        self.body_store = body_store
        self.collection = collection
        self.far = far
        self.threshold = threshold
        self.top_k = top_k
        body_store.store.collection_id(collection)  # fail early on an unknown collection

    def identify_crops(self, crops: np.ndarray) -> dict[str, Any]:
        result = self.body_store.identify_crops(
            self.collection, crops, top_k=self.top_k, far=self.far, threshold=self.threshold
        )
        candidates = [
            {
                "identity_id": c["identity_id"],
                "label": c["external_id"] or c["display_name"] or c["identity_id"],
                "similarity": c["body_similarity"],
                "score": c["fused_score"],
                "match": c["match"],
                "body_model": c["body_model"],
            }
            for c in result["candidates"]
        ]
        top = candidates[0] if candidates else None
        return {
            "label": top["label"] if top and top["match"] else None,
            "match": bool(top and top["match"]),
            "body_model": result["body_model"],
            "threshold": result["body_threshold"],
            "candidates": candidates,
        }


class BodyWatcher(TrackWatcher):
    """People: person-detector boxes, 256x128 crops, a ``BodyIdentifier``."""

    sightings_key = "persons"

    def __init__(
        self,
        detector: PersonDetector,
        identifier: BodyIdentifier,
        tracker: IoUTracker | None = None,
        identify_after: int = 5,
        min_hits: int = 2,
        best_k: int = 3,
        min_person_px: float = 64.0,
        min_det_score: float = 0.5,
    ) -> None:
        super().__init__(identifier, tracker, identify_after, min_hits, best_k, min_det_score)
        self.detector = detector
        # a person under ~64 px tall is a few re-ID pixels upscaled: tracked faces have the
        # same floor (min_face_px) for the same reason
        self.min_person_px = min_person_px

    def _sightings(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        check_person_images([frame])
        bodies = self.detector.detect([frame])
        height = bodies.boxes[:, 3] - bodies.boxes[:, 1]
        bodies = bodies[(bodies.scores >= self.min_det_score) & (height >= self.min_person_px)]
        if not len(bodies):
            return bodies.boxes, np.zeros(0, np.float32), np.zeros(0, np.uint8)
        height = bodies.boxes[:, 3] - bodies.boxes[:, 1]
        quality = bodies.scores * np.minimum(1.0, height / CROP_WH[1])
        return bodies.boxes, quality.astype(np.float32), crop_bodies([frame], bodies, CROP_WH)

    def _result(self, crops: np.ndarray) -> dict[str, Any]:
        result: dict[str, Any] = self.identifier.identify_crops(crops)
        return result


def run_body_watch(
    source: str,
    identifier: BodyIdentifier,
    settings: Settings,
    options: WatchOptions,
    emit: Any,
) -> None:
    """``run_watch`` for people: the configured person detector, ``options.min_score`` as the
    detector's floor."""
    cap = open_source(source)
    try:
        watcher = BodyWatcher(
            load_person_detector(settings.person_detector, settings),
            identifier,
            tracker=IoUTracker(max_missed=options.max_missed),
            identify_after=options.identify_after,
            best_k=options.best_k,
            min_det_score=options.min_score,
        )
        watcher.run(cap, emit, options.max_frames)
    finally:
        cap.release()


__all__ = ["BodyIdentifier", "BodyStoreIdentifier", "BodyWatcher", "Event", "run_body_watch"]
