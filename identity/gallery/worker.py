"""Batched decode -> detect -> embed -> quality for gallery images, in one process or a pool.

``analyze_items`` is the unit of work: a list of ``WorkItem`` in, one ``ImageResult`` per item
out, never an exception for a bad image (corrupt, not an image, too large: each becomes an
``ImageResult`` with an ``error_code``). The same function runs in the local process pool and in
Ray Data's ``map_batches``.

Each worker process builds its ``FaceAnalyzer`` once (models load lazily on the first batch) with
``intra_op_threads=1`` and OpenCV single-threaded: N processes x 1 thread uses N cores without
the oversubscription of N processes x N threads each.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from identity.errors import IdentityError
from identity.faces import Faces
from identity.gallery.files import read_regular_file
from identity.image import sha256_hex
from identity.settings import Settings

# Faces smaller than this fraction of the largest face's area do not make an image ambiguous in
# labelled mode: a portrait with a bystander in the background still names its subject.
SUBJECT_DOMINANCE = 0.5


@dataclass
class WorkItem:
    """What a worker needs: the bytes (or a path to read them from) and where they came from."""

    rel_path: str
    label: str | None = None
    data: bytes | None = None
    path: str | None = None
    sha256: str | None = None


@dataclass
class FaceResult:
    bbox: list[float]
    landmarks: list[list[float]]
    det_score: float
    quality: float | None
    quality_reasons: list[str]
    embedding: np.ndarray  # (D,) float32, L2-normalised
    rejections: list[str] = field(default_factory=list)  # empty = usable for enrollment
    thumbnail_jpeg: bytes | None = None  # the aligned crop, for the dashboard and clusters
    # the source crop a template keeps to be re-embedded by another model (identity.crops)
    crop_jpeg: bytes | None = None
    crop_geometry: dict[str, Any] | None = None

    @property
    def usable(self) -> bool:
        return not self.rejections

    @property
    def rejection_codes(self) -> list[str]:
        """The distinct reason codes of ``rejections``, in order (what a report counts)."""
        return list(dict.fromkeys(reason_code(r) for r in self.rejections))


@dataclass
class ImageResult:
    rel_path: str
    label: str | None
    sha256: str | None
    faces: list[FaceResult] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error_code: str | None = None  # bad_image, image_too_large, unreadable, analysis_failed
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


def reason_code(reason: str) -> str:
    """``"low_quality: 0.31 < 0.4 (blurry)"`` -> ``"low_quality"``.

    The quality gate's reasons read ``code: measured vs limit`` so that an API error can show the
    numbers; counting the whole strings would give one key per distinct value.
    """
    return reason.partition(":")[0].strip()


def enrollment_rejections(faces: Faces, settings: Settings) -> list[list[str]]:
    """Why each face may not be enrolled (empty list = enrollable).

    Delegates to ``identity.quality.enrollment_rejections`` so the batch job and the enroll API
    apply one gate.
    """
    from identity.quality import enrollment_rejections as gate

    return [list(r) for r in gate(faces, settings)]


def subject_rejections(faces: Faces, labelled: bool) -> list[list[str]]:
    """Extra reasons in labelled mode: the label names one person, so an image whose faces are
    of similar size is ambiguous (all rejected), and small background faces are not the subject."""
    n = len(faces)
    out: list[list[str]] = [[] for _ in range(n)]
    if not labelled or n <= 1:
        return out
    areas = faces.areas
    order = np.argsort(-areas)
    largest = order[0]
    if areas[order[1]] >= SUBJECT_DOMINANCE * areas[largest]:
        return [["ambiguous_subject"] for _ in range(n)]
    for i in range(n):
        if i != largest:
            out[i].append("not_subject")
    return out


def faces_to_results(
    faces: Faces, settings: Settings, labelled: bool, image: np.ndarray | None = None
) -> list[FaceResult]:
    """Per-face results; with the ``image`` the faces were found in, the faces that become
    templates (labelled and usable) carry their source crop when the settings keep crops."""
    if not len(faces):
        return []
    gate = enrollment_rejections(faces, settings)
    subject = subject_rejections(faces, labelled)
    assert faces.embeddings is not None
    results = []
    for i in range(len(faces)):
        thumb = None
        if faces.crops is not None:
            import cv2

            ok, buf = cv2.imencode(".jpg", faces.crops[i], [cv2.IMWRITE_JPEG_QUALITY, 85])
            thumb = buf.tobytes() if ok else None
        results.append(
            FaceResult(
                bbox=[round(float(v), 2) for v in faces.boxes[i]],
                landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in faces.landmarks[i]],
                det_score=float(faces.scores[i]),
                quality=None if faces.quality is None else float(faces.quality[i]),
                quality_reasons=list(faces.quality_reasons[i]) if faces.quality_reasons else [],
                embedding=np.asarray(faces.embeddings[i], dtype=np.float32),
                rejections=subject[i] + gate[i],
                thumbnail_jpeg=thumb,
            )
        )
        if image is not None and labelled and settings.keep_face_crops and results[-1].usable:
            from identity.crops import encode_crop, source_crop

            crop = source_crop(image, faces.boxes[i], faces.landmarks[i], settings.face_crop_side)
            results[-1].crop_jpeg, results[-1].crop_geometry = encode_crop(crop), crop.geometry()
    return results


class BatchAnalyzer:
    """Turns a batch of ``WorkItem`` into ``ImageResult`` with one detector/embedder call per
    batch; a failing batch is retried image by image so one poisoned image costs only itself."""

    def __init__(self, settings: Settings, labelled: bool) -> None:
        from identity.pipeline import FaceAnalyzer

        self.settings = settings
        self.labelled = labelled
        self.analyzer = FaceAnalyzer(settings)

    def _read(self, item: WorkItem) -> tuple[bytes | None, ImageResult]:
        result = ImageResult(item.rel_path, item.label, item.sha256)
        data = item.data
        if data is None:
            try:
                data = read_regular_file(Path(item.path or ""), self.settings.max_image_bytes)
            except OSError as exc:
                result.error_code, result.error_message = "unreadable", str(exc.strerror or exc)
                return None, result
            if len(data) > self.settings.max_image_bytes:
                result.error_code = "image_too_large"
                result.error_message = f"over the limit of {self.settings.max_image_bytes} bytes"
                return None, result
        if result.sha256 is None:
            result.sha256 = sha256_hex(data)
        return data, result

    def __call__(self, items: list[WorkItem]) -> list[ImageResult]:
        from identity.image import decode_image

        results: list[ImageResult] = []
        images: list[np.ndarray] = []
        decoded_at: list[int] = []
        for item in items:
            data, result = self._read(item)
            results.append(result)
            if data is None:
                continue
            try:
                image = decode_image(data, self.settings)
            except IdentityError as exc:
                result.error_code, result.error_message = exc.code, exc.message
                continue
            except Exception as exc:
                result.error_code, result.error_message = "bad_image", f"cannot decode: {exc}"
                continue
            result.height, result.width = int(image.shape[0]), int(image.shape[1])
            images.append(image)
            decoded_at.append(len(results) - 1)
        if not images:
            return results
        try:
            per_image = self._analyze(images)
        except Exception:
            per_image = []
            for k, image in enumerate(images):
                try:
                    per_image.append(self._analyze([image])[0])
                except Exception as exc:
                    res = results[decoded_at[k]]
                    res.error_code, res.error_message = "analysis_failed", str(exc)
                    per_image.append(None)
        for k, faces in enumerate(per_image):
            if faces is not None:
                results[decoded_at[k]].faces = faces
        return results

    def _analyze(self, images: list[np.ndarray]) -> list[list[FaceResult] | None]:
        faces = self.analyzer.analyze(images)
        return [
            faces_to_results(faces.for_image(i), self.settings, self.labelled, images[i])
            for i in range(len(images))
        ]


# --- process pool --------------------------------------------------------------------------
_WORKER: BatchAnalyzer | None = None


def worker_settings(settings: Settings) -> Settings:
    """The settings a pool worker runs with: one intra-op thread (the pool is the parallelism)."""
    return settings.model_copy(update={"intra_op_threads": 1})


def _init_worker(settings: Settings, labelled: bool) -> None:
    global _WORKER
    import cv2

    cv2.setNumThreads(1)
    _WORKER = BatchAnalyzer(settings, labelled)


def _run_batch(items: list[WorkItem]) -> list[ImageResult]:
    assert _WORKER is not None, "pool worker not initialised"
    return _WORKER(items)


def default_workers() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def analyze_batches(
    batches: Iterable[list[WorkItem]],
    settings: Settings,
    labelled: bool,
    workers: int,
    on_start: Callable[[list[WorkItem]], None] | None = None,
) -> Iterator[tuple[list[WorkItem], list[ImageResult]]]:
    """Results per batch, in input order, keeping at most ``2 * workers`` batches in flight so
    a huge gallery never sits in memory at once. ``workers <= 1`` runs in this process."""
    if workers <= 1:
        analyzer = BatchAnalyzer(settings, labelled)
        for batch in batches:
            yield batch, analyzer(batch)
        return
    # spawn, not fork: the caller may be a threaded service, and forking a process that holds
    # locks in other threads (Postgres pool, onnxruntime) can deadlock the child.
    ctx = mp.get_context("spawn")
    wsettings = worker_settings(settings)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(wsettings, labelled)) as pool:
        pending: deque[tuple[list[WorkItem], Any]] = deque()
        for batch in batches:
            if on_start is not None:
                on_start(batch)
            pending.append((batch, pool.apply_async(_run_batch, (batch,))))
            while len(pending) >= 2 * workers:
                done_batch, handle = pending.popleft()
                yield done_batch, handle.get()
        while pending:
            done_batch, handle = pending.popleft()
            yield done_batch, handle.get()
