"""The watch loop: frames -> faces -> tracks -> one identification per track -> JSON events.

Per frame: detect (BlazeFace by default: ~5-15 ms a 640 px frame here), link boxes to tracks
(``IoUTracker``), and offer each face's aligned crop to its track with a cheap frame-quality score
(detector confidence x face size x frontalness from the 5 landmarks). A track is identified once:
when it has been seen on ``identify_after`` frames, or when it ends if it was shorter (but seen
at least ``min_hits`` times), from the mean embedding of its ``best_k`` best crops. So the
embedder runs ``best_k`` times per person, not on every frame.

Events (one JSON object per line): ``track_started``, ``identified``, ``track_ended``, and a final
``summary`` with frames, seconds and frames per second. ``t`` is the position in the stream in
seconds (from the container's timestamps, or the wall clock for cameras and streams that have
none); ``time`` is the wall-clock UTC time the event was printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np

from identity.align import align_faces
from identity.detect import Detector
from identity.embed import Embedder
from identity.errors import InvalidInput
from identity.faces import Faces
from identity.settings import Settings
from identity.video.identify import Identifier
from identity.video.tracker import IoUTracker, Track

Event = dict[str, Any]


def open_source(source: str | int) -> cv2.VideoCapture:
    """A capture for a file path, an RTSP/HTTP URL, or a camera index ("0", 0)."""
    if isinstance(source, str) and source.strip().isdigit():
        source = int(source)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise InvalidInput(
            f"cannot open video source {source!r}: not a readable file, reachable stream URL or "
            "camera index",
            source=str(source),
        )
    return cap


def frames(
    cap: cv2.VideoCapture, max_frames: int | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, stream time in seconds, BGR frame) until the stream ends."""
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    start = time.monotonic()
    i = 0
    while max_frames is None or i < max_frames:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        msec = cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0
        if msec > 0:
            t = msec / 1000.0
        elif fps > 0:
            t = i / fps
        else:
            t = time.monotonic() - start
        yield i, t, frame
        i += 1


def frame_quality(faces: Faces) -> np.ndarray:
    """Cheap per-face score in [0, 1] for choosing a track's best frames.

    det_score x min(1, inter-ocular / 40 px) x frontalness, where frontalness = 1 - |nose offset
    from the eye midpoint| / inter-ocular distance (0 for a profile, 1 for a frontal face).
    """
    eye = np.maximum(faces.inter_ocular, 1e-3)
    mid = (faces.landmarks[:, 0] + faces.landmarks[:, 1]) / 2
    axis = (faces.landmarks[:, 1] - faces.landmarks[:, 0]) / eye[:, None]
    offset = np.abs(((faces.landmarks[:, 2] - mid) * axis).sum(axis=1)) / eye
    frontal = np.clip(1.0 - 2.0 * offset, 0.0, 1.0)
    return (faces.scores * np.minimum(1.0, eye / 40.0) * frontal).astype(np.float32)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class WatchStats:
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    identified: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class TrackWatcher:
    """The loop shared by faces and bodies: sightings of a frame -> tracks -> one
    identification per track. Subclasses say what a sighting is (``_sightings``) and how a
    track's best crops are identified (``_result``)."""

    sightings_key = "faces"  # the summary's count of sightings

    def __init__(
        self,
        identifier: Any,
        tracker: IoUTracker | None,
        identify_after: int,
        min_hits: int,
        best_k: int,
        min_det_score: float,
    ) -> None:
        # best_k = 0 would keep no crop and leave nothing to embed (np.stack of nothing).
        if best_k < 1 or identify_after < 1 or min_hits < 1:
            raise InvalidInput(
                f"best_k, identify_after and min_hits must be at least 1, got {best_k}, "
                f"{identify_after} and {min_hits}"
            )
        self.identifier = identifier
        self.tracker = tracker or IoUTracker()
        self.identify_after = identify_after
        self.min_hits = min_hits
        self.best_k = best_k
        self.min_det_score = min_det_score
        self.stats = WatchStats()

    def _sightings(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (N, 4) xyxy, quality (N,), crops (N, ...)) of one frame."""
        raise NotImplementedError

    def _result(self, crops: np.ndarray) -> dict[str, Any]:
        """What the identifier says about a track from its best crops."""
        raise NotImplementedError

    def _identify(self, track: Track, t: float) -> Event:
        track.result = self._result(np.stack([crop for _, _, crop in track.best]))
        track.identified = True
        self.stats.identified += 1
        return {
            "event": "identified",
            "track_id": track.track_id,
            "t": round(t, 3),
            "time": _now(),
            "frames_used": [f for _, f, _ in track.best],
            **track.result,
        }

    def _ended(self, track: Track) -> list[Event]:
        events = []
        if not track.identified and track.hits >= self.min_hits and track.best:
            events.append(self._identify(track, track.last_t))
        events.append(
            {
                "event": "track_ended",
                "track_id": track.track_id,
                "t": round(track.last_t, 3),
                "time": _now(),
                "first_frame": track.first_frame,
                "last_frame": track.last_frame,
                "frames_seen": track.hits,
                "label": (track.result or {}).get("label"),
            }
        )
        return events

    def process(self, frame_index: int, t: float, frame: np.ndarray) -> list[Event]:
        """Events caused by one frame."""
        boxes, quality, crops = self._sightings(frame)
        self.stats.frames += 1
        self.stats.faces += len(boxes)
        ids, started, ended = self.tracker.update(boxes, frame_index, t)
        events: list[Event] = []
        for track in ended:
            events.extend(self._ended(track))
        for track in started:
            self.stats.tracks += 1
            events.append(
                {
                    "event": "track_started",
                    "track_id": track.track_id,
                    "t": round(t, 3),
                    "time": _now(),
                    "frame": frame_index,
                    "bbox": [round(float(v), 1) for v in track.box],
                }
            )
        by_id = {tr.track_id: tr for tr in self.tracker.active}
        for row, track_id in enumerate(ids):
            track = by_id[track_id]
            if track.identified:
                continue
            track.offer(float(quality[row]), frame_index, crops[row], self.best_k)
            if track.hits >= self.identify_after:
                events.append(self._identify(track, t))
        return events

    def summary(self) -> Event:
        return {
            "event": "summary",
            "time": _now(),
            "frames": self.stats.frames,
            self.sightings_key: self.stats.faces,
            "tracks": self.stats.tracks,
            "identified": self.stats.identified,
            "seconds": round(self.stats.seconds, 3),
            "fps": round(self.stats.fps, 2),
        }

    def run(
        self,
        cap: cv2.VideoCapture,
        emit: Callable[[Event], None],
        max_frames: int | None = None,
    ) -> WatchStats:
        start = time.perf_counter()
        last_t = 0.0
        # Open tracks are closed and the summary printed however the loop stops: end of stream,
        # --max-frames, Ctrl-C (KeyboardInterrupt) or an error; a consumer of the JSON lines
        # always sees how many frames were processed.
        try:
            for i, t, frame in frames(cap, max_frames):
                last_t = t
                for event in self.process(i, t, frame):
                    emit(event)
        finally:
            try:
                for track in self.tracker.flush():
                    track.last_t = max(track.last_t, last_t)
                    for event in self._ended(track):
                        emit(event)
            finally:
                self.stats.seconds = time.perf_counter() - start
                emit(self.summary())
        return self.stats


class VideoWatcher(TrackWatcher):
    """Faces: detector boxes, aligned crops, the face embedder, an ``Identifier``."""

    def __init__(
        self,
        detector: Detector,
        embedder: Embedder,
        identifier: Identifier,
        tracker: IoUTracker | None = None,
        identify_after: int = 5,
        min_hits: int = 2,
        best_k: int = 3,
        min_face_px: float = 20.0,
        min_det_score: float = 0.7,
    ) -> None:
        if embedder.name != identifier.embedder_name:
            raise InvalidInput(
                f"the identifier's gallery was embedded with {identifier.embedder_name}, "
                f"not {embedder.name}",
            )
        # BlazeFace's own default is 0.5, but on a stream a spurious box repeats on every frame
        # and becomes a track: on the White House backdrop of knn_examples/test/obama1.jpg the
        # short-range model fires at 0.57 frame after frame, true faces there score above 0.85.
        super().__init__(identifier, tracker, identify_after, min_hits, best_k, min_det_score)
        self.detector = detector
        self.embedder = embedder
        self.min_face_px = min_face_px

    def _sightings(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        faces = self.detector.detect([frame])
        faces = faces[faces.scores >= self.min_det_score]
        if len(faces) and self.min_face_px > 0:
            side = np.minimum(
                faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1]
            )
            faces = faces[side >= self.min_face_px]
        if not len(faces):
            return faces.boxes, np.zeros(0, np.float32), np.zeros(0, np.uint8)
        return (
            faces.boxes,
            frame_quality(faces),
            align_faces([frame], faces, self.embedder.template),
        )

    def _result(self, crops: np.ndarray) -> dict[str, Any]:
        vectors, _ = self.embedder.embed(crops)
        mean = vectors.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-9)
        result: dict[str, Any] = self.identifier.identify(mean[None])[0].to_dict()
        return result


@dataclass(frozen=True)
class WatchOptions:
    detector: str = "blazeface_short"
    identify_after: int = 5
    best_k: int = 3
    max_missed: int = 10
    max_frames: int | None = None
    min_score: float = 0.7


def run_watch(
    source: str,
    identifier: Identifier,
    settings: Settings,
    options: WatchOptions,
    emit: Any,
) -> None:
    from identity.detect import load_detector
    from identity.embed import load_embedder

    cap = open_source(source)
    try:
        watcher = VideoWatcher(
            load_detector(options.detector, settings),
            load_embedder(identifier.embedder_name, settings),
            identifier,
            tracker=IoUTracker(max_missed=options.max_missed),
            identify_after=options.identify_after,
            best_k=options.best_k,
            min_face_px=settings.min_face_px,
            min_det_score=options.min_score,
        )
        watcher.run(cap, emit, options.max_frames)
    finally:
        cap.release()
