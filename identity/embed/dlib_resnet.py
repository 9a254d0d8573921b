"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``), the offline
default embedder: the weights ship in the ``face_recognition_models`` package and dlib-bin runs
them, so a fresh install recognises faces with no download.

The network was trained on chips cut by ``dlib.get_face_chip(size=150, padding=0.25)``; we cut the
same geometry from our detector's 5 landmarks with the ``dlib_150`` template
(``identity.align``), which on deepface's pairs separates genuine and impostor pairs better than
running dlib's own 5-point shape predictor on the detector's box (docs/embeddings.md).

By default the network runs on onnxruntime: ``identity.embed.dlib_onnx`` converts the packaged
``.dat`` once into an ONNX graph in the model cache (same descriptors to ~1e-6, several times
faster, batched, any execution provider). ``IDENTITY_DLIB_RUNTIME=dlib`` keeps dlib's own loop;
``auto`` falls back to it when the ``onnx`` package is missing.

dlib descriptors are not unit length (about 1.4-1.5 on real faces); face_recognition compares them
by Euclidean distance (0.6 default). We L2-normalise and compare by cosine like every other
embedder; the manifest's thresholds are cosine similarities.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
from typing import Any

import numpy as np

from identity.embed import checked_crops
from identity.embed.dlib_onnx import convert
from identity.errors import ModelError
from identity.preprocess import l2_normalise
from identity.registry import ResolvedModel
from identity.runtime import onnx_session
from identity.settings import Settings

log = logging.getLogger(__name__)


class DlibResNetEmbedder:
    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        m = resolved.manifest
        self.name = m.name
        self.dim = int(m.output_dim or 128)
        self.template = m.alignment or "dlib_150"
        self.size = int(m.input_size[0]) if m.input_size else 150
        self.colour = m.colour
        self.num_jitters = int(m.extra.get("num_jitters", 0))
        # dlib's net object is not documented as thread-safe; the service calls from a pool.
        self._lock = threading.Lock()
        self._net: Any = None
        self._session: Any = None
        # jitters are dlib's own test-time augmentation: only its loop does them
        if settings.dlib_runtime != "dlib" and not self.num_jitters:
            self._session = _converted_session(resolved, settings)
        if self._session is None:
            self._net = _dlib_net(resolved)
        self.runtime = "onnxruntime" if self._session is not None else "dlib"

    def embed(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops = checked_crops(crops_bgr, self.name, self.size)
        if not len(crops):
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        # dlib wants RGB, C-contiguous arrays.
        batch = [np.ascontiguousarray(c[:, :, ::-1] if self.colour == "rgb" else c) for c in crops]
        if self._session is not None:
            raw = self._session.run(None, {"input": np.stack(batch).astype(np.float32)})[0]
            return l2_normalise(np.asarray(raw, np.float32))
        with self._lock:
            vectors = self._net.compute_face_descriptor(batch, num_jitters=self.num_jitters)
        raw = np.asarray([np.asarray(v) for v in vectors], dtype=np.float32).reshape(-1, self.dim)
        return l2_normalise(raw)


def _dlib_net(resolved: ResolvedModel) -> Any:
    m = resolved.manifest
    try:
        import dlib
    except ImportError as exc:  # dlib-bin is a core dependency, but say so clearly
        raise ModelError(
            "dlib is not installed (pip install dlib-bin); it runs the dlib_resnet embedder",
            model=m.name,
        ) from exc
    if resolved.path is None:
        raise ModelError(f"model '{m.name}' must be a file on disk for dlib", model=m.name)
    try:
        return dlib.face_recognition_model_v1(str(resolved.path))
    except RuntimeError as exc:
        raise ModelError(f"dlib could not load {resolved.path}: {exc}", model=m.name) from exc


def _converted_session(resolved: ResolvedModel, settings: Settings) -> Any:
    """An onnxruntime session on the ONNX conversion of the verified ``.dat``, converted once
    into the model cache (named by the source's SHA-256, so new weights mean a new file); None
    when ``auto`` and the onnx package is missing."""
    m = resolved.manifest
    digest = (m.sha256 or hashlib.sha256(resolved.read_bytes()).hexdigest())[:16]
    path = settings.model_cache_dir / f"{m.name}.{digest}.onnx"
    if not path.is_file():
        try:
            model = convert(resolved.read_bytes())
        except ModelError:
            if settings.dlib_runtime == "auto" and importlib.util.find_spec("onnx") is None:
                log.info("onnx is not installed: %s runs on dlib's own (slower) loop", m.name)
                return None
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(model)
        os.replace(tmp, path)  # readers never see a half-written model
        log.info("converted %s to ONNX at %s", m.name, path)
    converted = ResolvedModel(manifest=m, origin="cache", path=path)
    return onnx_session(converted, settings)
