"""A greedy IoU tracker: a detection joins the track whose last box overlaps it most.

Faces in a video move little between frames at normal frame rates, so overlap alone links them;
a track that is not seen for ``max_missed`` frames ends. This is the IoU tracker of Bochinski et
al. (2017) without its score filter (the detector already thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of xyxy boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(np.float32)


@dataclass
class Track:
    track_id: int
    box: np.ndarray  # last seen xyxy
    first_frame: int
    first_t: float
    last_frame: int
    last_t: float
    hits: int = 1
    missed: int = 0
    identified: bool = False
    # best frames so far: (quality, frame index, aligned crop), highest quality first
    best: list[tuple[float, int, np.ndarray]] = field(default_factory=list)
    result: dict[str, Any] | None = None

    def offer(self, quality: float, frame: int, crop: np.ndarray, keep: int) -> None:
        """Keep the ``keep`` best-quality crops of this track."""
        self.best.append((quality, frame, crop))
        self.best.sort(key=lambda item: -item[0])
        del self.best[keep:]


class IoUTracker:
    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 10) -> None:
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.active: list[Track] = []
        self._next_id = 1

    def update(
        self, boxes: np.ndarray, frame: int, t: float
    ) -> tuple[list[int], list[Track], list[Track]]:
        """Assign this frame's boxes to tracks.

        Returns (track id per box, tracks started this frame, tracks ended this frame).
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        ious = iou_matrix(
            np.array([tr.box for tr in self.active], np.float32).reshape(-1, 4), boxes
        )
        assigned: list[int] = [-1] * len(boxes)
        used_tracks: set[int] = set()
        # greedy by overlap: the best pair first, then the best of what is left
        if ious.size:
            for flat in np.argsort(-ious, axis=None):
                ti, bi = divmod(int(flat), len(boxes))
                if ious[ti, bi] < self.iou_threshold:
                    break
                if ti in used_tracks or assigned[bi] != -1:
                    continue
                track = self.active[ti]
                track.box, track.last_frame, track.last_t = boxes[bi], frame, t
                track.hits += 1
                track.missed = 0
                used_tracks.add(ti)
                assigned[bi] = track.track_id
        ended: list[Track] = []
        still: list[Track] = []
        for ti, track in enumerate(self.active):
            if ti not in used_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    ended.append(track)
                    continue
            still.append(track)
        started: list[Track] = []
        for bi, box in enumerate(boxes):
            if assigned[bi] == -1:
                track = Track(self._next_id, box, frame, t, frame, t)
                self._next_id += 1
                started.append(track)
                still.append(track)
                assigned[bi] = track.track_id
        self.active = still
        return assigned, started, ended

    def flush(self) -> list[Track]:
        """End every active track (the stream is over)."""
        ended, self.active = self.active, []
        return ended
