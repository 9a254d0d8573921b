"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``), the offline
default embedder: the weights ship in the ``face_recognition_models`` package and dlib-bin runs
them, so a fresh install recognises faces with no download.

The network was trained on chips cut by ``dlib.get_face_chip(size=150, padding=0.25)``; we cut the
same geometry from our detector's 5 landmarks with the ``dlib_150`` template
(``identity.align``), which on deepface's pairs separates genuine and impostor pairs better than
running dlib's own 5-point shape predictor on the detector's box (docs/embeddings.md).

dlib descriptors are not unit length (about 1.4-1.5 on real faces); face_recognition compares them
by Euclidean distance (0.6 default). We L2-normalise and compare by cosine like every other
embedder; the manifest's thresholds are cosine similarities.
"""

from __future__ import annotations

import threading

import numpy as np

from identity.errors import InvalidInput, ModelError
from identity.preprocess import l2_normalise
from identity.registry import ResolvedModel
from identity.settings import Settings


class DlibResNetEmbedder:
    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        try:
            import dlib
        except ImportError as exc:  # dlib-bin is a core dependency, but say so clearly
            raise ModelError(
                "dlib is not installed (pip install dlib-bin); it runs the dlib_resnet embedder",
                model=resolved.manifest.name,
            ) from exc
        m = resolved.manifest
        if resolved.path is None:
            raise ModelError(f"model '{m.name}' must be a file on disk for dlib", model=m.name)
        try:
            self._net = dlib.face_recognition_model_v1(str(resolved.path))
        except RuntimeError as exc:
            raise ModelError(f"dlib could not load {resolved.path}: {exc}", model=m.name) from exc
        self.name = m.name
        self.dim = int(m.output_dim or 128)
        self.template = m.alignment or "dlib_150"
        self.size = int(m.input_size[0]) if m.input_size else 150
        self.colour = m.colour
        self.num_jitters = int(m.extra.get("num_jitters", 0))
        # dlib's net object is not documented as thread-safe; the service calls from a pool.
        self._lock = threading.Lock()

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops = np.asarray(crops_bgr)
        if crops.ndim == 3:
            crops = crops[None]
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3) or crops.dtype != np.uint8:
            raise InvalidInput(
                f"{self.name} needs (N, {self.size}, {self.size}, 3) uint8 BGR chips aligned with "
                f"template '{self.template}', got {crops.shape} {crops.dtype}"
            )
        if not len(crops):
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        # dlib wants RGB, C-contiguous arrays.
        batch = [np.ascontiguousarray(c[:, :, ::-1] if self.colour == "rgb" else c) for c in crops]
        with self._lock:
            vectors = self._net.compute_face_descriptor(batch, num_jitters=self.num_jitters)
        raw = np.asarray([np.asarray(v) for v in vectors], dtype=np.float32).reshape(-1, self.dim)
        return l2_normalise(raw)
