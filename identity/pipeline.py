"""The face pipeline: decode -> detect -> align -> embed -> quality, one ``Faces`` out.

``FaceAnalyzer`` only orchestrates the stage modules; each stage has its own module. The seconds
each stage took travel on the result (``Faces.timings``) for the service's Server-Timing header
and per-stage histograms; ``time.perf_counter`` only, so timing costs nothing measurable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from identity.align import align_faces, get_template
from identity.crops import SourceCrop, source_crop
from identity.detect import Detector, load_detector
from identity.embed import Embedder, embed_with_signals, load_embedder
from identity.faces import Faces
from identity.image import decode_for_detection, decode_image_bounded
from identity.mesh import add_mesh_signals
from identity.microbatch import MicroBatcher
from identity.quality import assess_quality
from identity.rows import merge_timings
from identity.runtime import IN_FLIGHT
from identity.settings import Settings


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds the ``with`` body takes to ``timings[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class AnalyzedImage:
    image_bgr: np.ndarray  # as decoded: at most ``decode_max_side`` on the long side
    faces: Faces  # coordinates in the upload's own pixels
    scale_xy: tuple[float, float] = (1.0, 1.0)  # decoded / upload pixels

    def source_crop(self, faces: Faces, i: int, max_side: int) -> SourceCrop:
        """Face ``i`` of ``faces`` (in upload pixels, e.g. a chosen subset of ``self.faces``)
        as a source crop of the decoded image (``identity.crops``)."""
        sx, sy = self.scale_xy
        return source_crop(
            self.image_bgr,
            faces.boxes[i] * np.array([sx, sy, sx, sy], np.float32),
            faces.landmarks[i] * np.array([sx, sy], np.float32),
            max_side,
        )


class FaceAnalyzer:
    """Detector + embedder chosen by manifest name (defaults from settings), loaded lazily once."""

    def __init__(
        self, settings: Settings, detector: str | None = None, embedder: str | None = None
    ) -> None:
        self.settings = settings
        self.detector_name = detector or settings.detector
        self.embedder_name = embedder or settings.embedder
        self._batchers: dict[tuple[bool, bool], MicroBatcher[np.ndarray, Faces]] = {}

    @property
    def detector(self) -> Detector:
        return load_detector(self.detector_name, self.settings)

    @property
    def embedder(self) -> Embedder:
        return load_embedder(self.embedder_name, self.settings)

    def detect(self, images_bgr: Sequence[np.ndarray]) -> Faces:
        # letterboxing and decoding the outputs are image work too (IN_FLIGHT), not only the run
        with IN_FLIGHT.working():
            faces = self.detector.detect(images_bgr)
        if len(faces) and self.settings.min_face_px > 0:
            side = np.minimum(
                faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1]
            )
            faces = faces[side >= self.settings.min_face_px]
        return faces

    def analyze(
        self,
        images_bgr: Sequence[np.ndarray],
        embed: bool = True,
        faces: Faces | None = None,
        liveness: bool = False,
    ) -> Faces:
        """All faces of a batch of BGR images, with crops, embeddings and quality.

        ``faces`` skips detection when boxes and landmarks are already known (re-analysis).
        ``liveness`` adds the presentation-attack score (``identity.liveness``), only when asked.
        """
        timings: dict[str, float] = {}
        with IN_FLIGHT.working():  # alignment and quality too: a neighbour's run stays narrow
            if faces is None:
                with timed(timings, "detect"):
                    faces = self.detect(images_bgr)
            if len(faces):
                faces = self._analyze_found(images_bgr, faces, embed, liveness, timings)
        return faces.with_(timings=merge_timings([faces.timings, timings]))

    def _analyze_found(
        self,
        images_bgr: Sequence[np.ndarray],
        faces: Faces,
        embed: bool,
        liveness: bool,
        timings: dict[str, float],
    ) -> Faces:
        # mesh extra: pose and eye signals for quality, optionally mesh landmarks (docs/mesh.md)
        with timed(timings, "mesh"):
            faces = add_mesh_signals(images_bgr, faces, self.settings)
        embedder = self.embedder
        with timed(timings, "align"):
            crops = align_faces(images_bgr, faces, embedder.template)
        faces = faces.with_(crops=crops)
        if embed:
            with timed(timings, "embed"):
                embeddings, norms, signals = embed_with_signals(embedder, crops)
            faces = faces.with_(
                embeddings=embeddings, embedding_norms=norms, extra={**faces.extra, **signals}
            )
        with timed(timings, "quality"):
            faces = assess_quality(faces, self.settings, embedder_name=self.embedder_name)
        if liveness:
            from identity.liveness import assess_liveness

            with timed(timings, "liveness"):
                faces = assess_liveness(images_bgr, faces, self.settings)
        return faces

    def _batcher(self, embed: bool, liveness: bool) -> MicroBatcher[np.ndarray, Faces]:
        """The micro-batcher for analyses with these flags (``identity.microbatch``)."""
        key = (embed, liveness)
        found = self._batchers.get(key)
        if found is None:

            def run(images: list[np.ndarray]) -> list[Faces]:
                faces = self.analyze(images, embed=embed, liveness=liveness)
                # each caller gets its own image's faces as image 0, and the batch's timings
                return [
                    f.with_(image_index=np.zeros(len(f), np.int32), timings=dict(faces.timings))
                    for f in faces.split_by_image(len(images))
                ]

            made = MicroBatcher(run, self.settings.micro_batch_max)
            found = self._batchers.setdefault(key, made)  # atomic: racing threads keep one
        return found

    def _needs_detail(self, faces: Faces) -> bool:
        """Whether a face has fewer pixels between the eyes than the embedder's aligned crop,
        so that aligning it would upsample."""
        tpl = get_template(self.embedder.template).points
        return bool((faces.inter_ocular < float(np.linalg.norm(tpl[1] - tpl[0]))).any())

    def analyze_bytes(
        self, data: bytes, embed: bool = True, liveness: bool = False
    ) -> AnalyzedImage:
        """Decode (bounded, ``decode_image_bounded``) and analyse one image. Boxes and landmarks
        come back in the upload's pixels; quality's and liveness's pixel measures stay those of
        the decoded image, the detail the models really saw."""
        timings: dict[str, float] = {}
        # decoding is image work too (IN_FLIGHT): a neighbour's model run stays on one thread
        with timed(timings, "decode"), IN_FLIGHT.working():
            decoded = decode_for_detection(data, self.settings)
        image = decoded.image_bgr
        located: Faces | None = None  # faces still to analyse, in ``decoded``'s pixels
        if self.settings.micro_batch:
            # the batcher analyses whole images: a face too small in this one is analysed again
            faces = self._batcher(embed, liveness).submit(image)
        else:
            with timed(timings, "detect"):
                faces = located = self.detect([image])
        if decoded.finer and len(faces) and self._needs_detail(faces):
            # a face too small at the detection scale is cut from the finer decode
            with timed(timings, "decode_finer"), IN_FLIGHT.working():
                decoded = decode_image_bounded(data, self.settings)
            (h0, w0), (h1, w1) = image.shape[:2], decoded.image_bgr.shape[:2]
            fx, fy = w1 / w0, h1 / h0
            located = Faces(
                boxes=faces.boxes * np.array([fx, fy, fx, fy], np.float32),
                landmarks=faces.landmarks * np.array([fx, fy], np.float32),
                scores=faces.scores,
                image_index=faces.image_index,
            )
        if located is not None:
            faces = self.analyze([decoded.image_bgr], embed=embed, faces=located, liveness=liveness)
        if decoded.reduced and len(faces):
            sx, sy = decoded.scale_xy
            faces = faces.with_(
                boxes=faces.boxes / np.array([sx, sy, sx, sy], np.float32),
                landmarks=faces.landmarks / np.array([sx, sy], np.float32),
            )
        faces = faces.with_(timings=merge_timings([timings, faces.timings]))
        return AnalyzedImage(decoded.image_bgr, faces, decoded.scale_xy)
