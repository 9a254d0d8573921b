"""One presentation-attack model as an onnxruntime session: images and face boxes in, the
probability that each face is live out.

What differs between the PAD graphs is data in the manifest: the crop (``extra.crop``:
``minifasnet`` or ``square_reflect``, see ``identity.liveness.crops``) and its scale
(``extra.crop_scale``), the pixel preprocessing (``colour``, ``scale``, ``mean``, ``std``, through
``identity.preprocess.to_tensor``) and which softmax class means live (``extra.live_class``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from identity.errors import ModelError
from identity.liveness.crops import CROPPERS
from identity.preprocess import to_tensor
from identity.registry import ResolvedModel
from identity.runtime import onnx_session
from identity.settings import Settings


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class PADModel:
    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        m = resolved.manifest
        self.manifest = m
        self.name = m.name
        crop = m.extra.get("crop")
        if crop not in CROPPERS or "crop_scale" not in m.extra or "live_class" not in m.extra:
            raise ModelError(
                f"manifest '{m.name}' needs extra.crop (one of {sorted(CROPPERS)}), "
                "extra.crop_scale and extra.live_class",
                model=m.name,
            )
        if m.input_size is None:
            raise ModelError(f"manifest '{m.name}' needs input_size", model=m.name)
        self.crop = CROPPERS[crop]
        self.crop_scale = float(m.extra["crop_scale"])
        self.live_class = int(m.extra["live_class"])
        self.size = int(m.input_size[0])
        try:
            # Tiny graphs run back to back: see onnx_session on spinning.
            self.session = onnx_session(resolved, settings, spinning=False)
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise ModelError(
                f"could not load '{m.name}' from {resolved.location}: {exc}", model=m.name
            ) from exc
        self.input_name = self.session.get_inputs()[0].name

    def crops(
        self, images_bgr: Sequence[np.ndarray], boxes: np.ndarray, image_index: np.ndarray
    ) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR crops at this model's scale around each face box."""
        out = np.empty((len(boxes), self.size, self.size, 3), np.uint8)
        for row, (box, i) in enumerate(zip(boxes, image_index, strict=True)):
            out[row] = self.crop(images_bgr[int(i)], box, self.crop_scale, self.size)
        return out

    def live_probability(
        self,
        images_bgr: Sequence[np.ndarray],
        boxes: np.ndarray,
        image_index: np.ndarray,
        mirrored: bool = False,
    ) -> np.ndarray:
        """(N,) float32 softmax probability of the live class, one per box; ``mirrored`` scores
        the crops flipped left-right (a test-time-augmentation view, see bench/liveness.py)."""
        if not len(boxes):
            return np.zeros((0,), np.float32)
        crops = self.crops(images_bgr, boxes, image_index)
        blob = to_tensor(crops[:, :, ::-1] if mirrored else crops, self.manifest)
        logits = self.session.run(None, {self.input_name: blob})[0]
        return softmax(logits)[:, self.live_class].astype(np.float32)
