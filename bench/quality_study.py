"""The measurement behind ``bench/quality.py``: the pipeline run once per photo and condition
(quality computed with and without the mesh signals from the same faces), the probe pairs, and
their scores at a quality gate."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.common import MODELS, Pair
from bench.degradations import CLEAN, DEGRADATIONS, Image
from identity.calibration import auc_of, roc_curve, threshold_at_far
from identity.faces import Faces

SEED = 20261124
MAX_SIDE = 1024  # long side of the "clean" photo, in px


@dataclass
class Face:
    """The largest face of one image: embedding and quality with and without the mesh signals."""

    embedding: np.ndarray
    q_plain: float
    q_mesh: float
    reasons_plain: list[str]
    reasons_mesh: list[str]
    box: np.ndarray
    iod: float


Key = tuple[Path, str]  # (photo, condition)


class Study:
    """Runs the pipeline once per image; quality both ways from the same faces."""

    def __init__(self, detector: str, embedder: str, **overrides: object) -> None:
        from identity.mesh import mesh_available
        from identity.pipeline import FaceAnalyzer
        from identity.settings import Settings

        self.settings = Settings(  # type: ignore[arg-type]
            models_dir=MODELS, detector=detector, embedder=embedder, quality_mesh=True, **overrides
        )
        self.analyzer = FaceAnalyzer(self.settings)
        self.embedder = embedder
        self.has_mesh = mesh_available()
        self.seconds = 0.0

    def load(self, path: Path) -> Image:
        from identity.image import load_image

        img = load_image(path, self.settings)
        scale = MAX_SIDE / max(img.shape[:2])
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return img

    def largest(self, image: Image) -> Faces | None:
        """The pipeline's largest face of ``image`` (crops and raw norms kept), None if none."""
        start = time.perf_counter()
        faces = self.analyzer.analyze([image])
        self.seconds += time.perf_counter() - start
        return faces.largest() if len(faces) else None

    def face(self, image: Image) -> Face | None:
        f = self.largest(image)
        return None if f is None else self.face_of(f)

    def face_of(self, f: Faces) -> Face:
        from identity.quality import MESH_SIGNALS, assess_quality

        plain = assess_quality(
            f.with_(extra={k: v for k, v in f.extra.items() if k not in MESH_SIGNALS}),
            self.settings,
            embedder_name=self.embedder,
        )
        assert f.embeddings is not None and f.quality is not None and f.quality_reasons
        assert plain.quality is not None and plain.quality_reasons
        return Face(
            f.embeddings[0],
            float(plain.quality[0]),
            float(f.quality[0]),
            plain.quality_reasons[0],
            f.quality_reasons[0],
            f.boxes[0],
            float(f.inter_ocular[0]),
        )

    def run(self, photos: list[Path], conditions: list[str]) -> dict[Key, Face | None]:
        """Every photo under every condition; degradations need the clean face's box."""
        out: dict[Key, Face | None] = {}
        for i, path in enumerate(photos):
            img = self.load(path)
            clean = self.face(img)
            out[(path, CLEAN)] = clean
            for j, name in enumerate(conditions):
                if name == CLEAN:
                    continue
                if clean is None:  # nothing to aim the degradation at
                    out[(path, name)] = None
                    continue
                rng = np.random.default_rng([SEED, i, j])
                out[(path, name)] = self.face(
                    np.ascontiguousarray(DEGRADATIONS[name](img, clean.box, clean.iod, rng))
                )
        return out


@dataclass(frozen=True)
class Probe:
    a: Key
    b: Key
    same: bool


def mixed_pairs(pairs: list[Pair]) -> list[Probe]:
    """Second side always degraded, first side degraded half the time, truth unchanged."""
    names = list(DEGRADATIONS)
    rng = np.random.default_rng([SEED, 1])
    probes = []
    for p in pairs:
        b = names[int(rng.integers(len(names)))]
        a = names[int(rng.integers(len(names)))] if rng.random() < 0.5 else CLEAN
        probes.append(Probe((p.a, a), (p.b, b), p.same))
    return probes


def one_sided_pairs(pairs: list[Pair], name: str) -> list[Probe]:
    return [Probe((p.a, CLEAN), (p.b, name), p.same) for p in pairs]


@dataclass
class Score:
    faces_kept: int
    faces_total: int
    pairs: int
    accuracy: float
    tar: float | None  # at FAR 1e-2, None where fewer than 100 impostors


def score(
    found: dict[Key, Face | None], probes: list[Probe], threshold: float, q: float, mesh: bool
) -> Score:
    def quality(f: Face) -> float:
        return f.q_mesh if mesh else f.q_plain

    keys = {k for p in probes for k in (p.a, p.b)}
    kept_faces = sum(1 for k in keys if (f := found[k]) is not None and quality(f) >= q)
    gen: list[float] = []
    imp: list[float] = []
    correct = 0
    for p in probes:
        fa, fb = found[p.a], found[p.b]
        if fa is None or fb is None or min(quality(fa), quality(fb)) < q:
            continue
        s = float(fa.embedding @ fb.embedding)
        (gen if p.same else imp).append(s)
        correct += (s >= threshold) == p.same
    total = len(gen) + len(imp)
    tar = threshold_at_far(np.array(gen), np.array(imp), 1e-2)[1] if len(imp) >= 100 else None
    return Score(kept_faces, len(keys), total, correct / total if total else float("nan"), tar)


def auc(found: dict[Key, Face | None], probes: list[Probe]) -> float:
    gen, imp = [], []
    for p in probes:
        fa, fb = found[p.a], found[p.b]
        if fa is not None and fb is not None:
            (gen if p.same else imp).append(float(fa.embedding @ fb.embedding))
    far, tar, _ = roc_curve(np.array(gen), np.array(imp))
    return auc_of(far, tar)
