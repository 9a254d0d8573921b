"""Does rejecting low-quality faces raise verification accuracy? And do mesh landmarks help?

    python bench/quality.py [--detector retinaface_mnet025] [--embedder dlib_resnet_v1]
                            [--clean] [--alignment] [--calibration-only]

deepface's 61 photos are all good portraits (quality 0.82 to 1.0), so a quality gate has nothing
to reject there (``--clean`` prints that table). This benchmark therefore degrades the same real
photos the way real probes go wrong and measures again:

* every photo is decoded once and, when its long side is over 1024 px, shrunk to 1024 px
  (INTER_AREA; the smallest deepface face then still has an eye distance over 60 px) - this is
  the "clean" version;
* each photo gets one degraded copy per degradation below (``DEGRADATIONS``), made in memory; the
  strength is drawn per (photo, degradation) from a fixed range by a generator seeded with
  ``SEED``, and scaled to the face's size (its eye distance on the clean photo), so a 2 MB
  portrait and a 300 px thumbnail get comparable damage;
* the pairs are deepface's 520 labelled pairs (``PAIRS.csv``, truth unchanged). In the mixed
  set every pair has its second photo degraded (a degradation drawn per pair) and, with
  probability 1/2, its first photo too (another draw). Per degradation, every pair compares the
  clean first photo with the degraded second one.

Largest face per image. A face the detector does not find is not scored (the detector's own
gate); a pair is scored when both faces are found and kept when both reach the quality
threshold. The similarity threshold is the embedder's calibrated one at FAR 1e-3 (manifest
thresholds, calibrated on the face_recognition people, never on these pairs). TAR at FAR 1e-2 is
read off the kept pairs' own ROC (only where at least 100 impostor pairs are left, so that FAR
1e-2 is measurable). Quality is computed twice from the same detections and embeddings: from the
5 landmarks only, and with the FaceMesh signals (mesh pose, eyes open) when mediapipe is
installed.

The face_recognition people (``../shared/data/face_recognition``) get the same degradations
(``--calibration-only`` prints just that table): they are the calibration set on which the
quality constants were checked; nothing is tuned on the deepface pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    MODELS,
    Pair,
    command_line,
    deepface_pairs,
    face_recognition_people,
    print_table,
)
from identity.calibration import auc_of, roc_curve, threshold_at_far

SEED = 20261124
MAX_SIDE = 1024
# Mixed set and per-degradation table; enroll_min_quality defaults to 0.4.
GRID = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
GATE = 0.4
# Table of the clean photos (--clean): they score 0.82 to 1.0, so the grid goes high.
CLEAN_GRID = [0.0, 0.4, 0.7, 0.8, 0.85, 0.9, 0.95]

Image = np.ndarray
Degrade = Callable[[Image, np.ndarray, float, np.random.Generator], Image]


# --- degradations: (image BGR, clean face box xyxy, clean eye distance px, rng) -> image ---------


def gaussian_blur(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Out of focus: sigma 3% to 25% of the eye distance (1 to 9 px at the 35 px template)."""
    sigma = rng.uniform(0.03, 0.25) * iod
    return cv2.GaussianBlur(img, (0, 0), sigma)


def motion_blur(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Camera or subject motion: a line kernel 10% to 80% of the eye distance, any direction."""
    length = max(3, int(np.rint(rng.uniform(0.1, 0.8) * iod)) | 1)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return cv2.filter2D(img, -1, kernel / kernel.sum())


def small_face(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Far from the camera: the whole photo shrunk until the eyes are 6 to 22 px apart."""
    scale = min(1.0, rng.uniform(6.0, 22.0) / iod)
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def jpeg_q10(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """A re-compressed web/CCTV still: face at 20-45 px eye distance, JPEG quality 10."""
    scale = min(1.0, rng.uniform(20.0, 45.0) / iod)
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def underexposed(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Heavy under-exposure: 3% to 20% of the light, plus sensor read noise (sd 2 grey levels)."""
    gain = rng.uniform(0.03, 0.2)
    out = img.astype(np.float32) * gain + rng.normal(0.0, 2.0, img.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def rotated(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """Large in-plane rotation (45 to 150 degrees either way) about the face, canvas enlarged."""
    angle = float(rng.choice([-1.0, 1.0]) * rng.uniform(45.0, 150.0))
    h, w = img.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
    side = int(np.hypot(h, w))
    m[:, 2] += (side / 2 - cx, side / 2 - cy)
    return cv2.warpAffine(img, m, (side, side), borderMode=cv2.BORDER_REPLICATE)


def cut_face(img: Image, box: np.ndarray, iod: float, rng: np.random.Generator) -> Image:
    """The frame cuts the face: 25% to 60% of the face box lost off one side."""
    x0, y0, x1, y1 = (int(np.rint(v)) for v in box)
    h, w = img.shape[:2]
    lost = rng.uniform(0.25, 0.6)
    side = int(rng.integers(4))
    if side == 0:  # left part of the face cut away
        return img[:, min(w - 1, max(0, x0 + int(lost * (x1 - x0)))) :]
    if side == 1:  # right part
        return img[:, : max(1, x1 - int(lost * (x1 - x0)))]
    if side == 2:  # top
        return img[min(h - 1, max(0, y0 + int(lost * (y1 - y0)))) :, :]
    return img[: max(1, y1 - int(lost * (y1 - y0))), :]


DEGRADATIONS: dict[str, Degrade] = {
    "gaussian blur": gaussian_blur,
    "motion blur": motion_blur,
    "small face": small_face,
    "jpeg q10": jpeg_q10,
    "under-exposed": underexposed,
    "rotated 45-150": rotated,
    "face cut by frame": cut_face,
}
CLEAN = "clean"


# --- analysis ------------------------------------------------------------------------------------


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

    def face(self, image: Image) -> Face | None:
        from identity.quality import SIGNALS, assess_quality

        start = time.perf_counter()
        faces = self.analyzer.analyze([image])
        self.seconds += time.perf_counter() - start
        if not len(faces):
            return None
        f = faces.largest()
        plain = assess_quality(
            f.with_(extra={k: v for k, v in f.extra.items() if k not in SIGNALS}),
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


# --- metrics -------------------------------------------------------------------------------------


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


def fmt_tar(t: float | None) -> object:
    return "n/a" if t is None else t


def sweep_table(
    found: dict[Key, Face | None],
    probes: list[Probe],
    threshold: float,
    grid: list[float],
    title: str,
    has_mesh: bool,
) -> None:
    rows = []
    for q in grid:
        row: list[object] = [f"{q} (enroll default)" if q == GATE else q]
        for mesh in (False, True) if has_mesh else (False,):
            s = score(found, probes, threshold, q, mesh)
            row += [f"{s.faces_kept}/{s.faces_total}", s.pairs, s.accuracy, fmt_tar(s.tar)]
        rows.append(row)
    headers = ["min quality"]
    for name in ("5-landmark", "mesh") if has_mesh else ("5-landmark",):
        headers += [f"faces kept ({name})", "pairs", "accuracy", "TAR@FAR1e-2"]
    print_table(headers, rows, title)


def verdict(all_: Score, kept: Score) -> str:
    if kept.pairs == all_.pairs:
        return "no effect: gate rejects none"
    if kept.pairs == 0:
        return "rejects every pair"
    gain = kept.accuracy - all_.accuracy
    if gain > 0.005:
        return f"helps (+{gain:.3f})"
    if gain < -0.005:
        return f"hurts ({gain:.3f})"
    return "no accuracy change"


def per_degradation_table(
    found: dict[Key, Face | None], pairs: list[Pair], threshold: float, mesh: bool, title: str
) -> None:
    rows = []
    for name in [CLEAN, *DEGRADATIONS]:
        probes = one_sided_pairs(pairs, name)
        side_b = sorted({p.b for p in probes})
        faces = [found[k] for k in side_b]
        got = [f for f in faces if f is not None]
        qs = np.array([f.q_mesh if mesh else f.q_plain for f in got])
        reasons = Counter(r for f in got for r in (f.reasons_mesh if mesh else f.reasons_plain))
        all_ = score(found, probes, threshold, 0.0, mesh)
        kept = score(found, probes, threshold, GATE, mesh)
        rows.append(
            [
                name,
                f"{len(got)}/{len(faces)}",
                float(np.median(qs)) if len(qs) else float("nan"),
                f"{int((qs < GATE).sum())}/{len(got)}",
                ", ".join(f"{r} {c}" for r, c in reasons.most_common(3)) or "-",
                all_.pairs,
                all_.accuracy,
                fmt_tar(all_.tar),
                kept.pairs,
                kept.accuracy,
                fmt_tar(kept.tar),
                verdict(all_, kept),
            ]
        )
    print_table(
        [
            "degraded side",
            "faces found",
            "median quality",
            f"rejected < {GATE}",
            "top reasons",
            "pairs",
            "accuracy",
            "TAR@FAR1e-2",
            f"pairs kept (q >= {GATE})",
            "accuracy kept",
            "TAR kept",
            "gate",
        ],
        rows,
        title,
    )


def calibration_table(found: dict[Key, Face | None], people: list[Path], has_mesh: bool) -> None:
    """Median quality per degradation on the calibration people (the set the constants were
    checked on), and how often each expected reason fires."""
    rows = []
    for name in [CLEAN, *DEGRADATIONS]:
        got = [f for p in people if (f := found[(p, name)]) is not None]
        qp = np.array([f.q_plain for f in got])
        qm = np.array([f.q_mesh for f in got])
        reasons = Counter(r for f in got for r in (f.reasons_mesh if has_mesh else f.reasons_plain))
        rows.append(
            [
                name,
                f"{len(got)}/{len(people)}",
                float(np.median(qp)) if len(qp) else float("nan"),
                float(np.median(qm)) if len(qm) else float("nan"),
                f"{int((qm < GATE).sum())}/{len(got)}",
                ", ".join(f"{r} {c}" for r, c in reasons.most_common(3)) or "-",
            ]
        )
    print_table(
        [
            "condition",
            "faces found",
            "median quality (5-landmark)",
            "median quality (mesh)",
            f"rejected < {GATE} (mesh)",
            "top reasons (mesh)",
        ],
        rows,
        "Calibration set: face_recognition people under the same degradations",
    )


def auc(found: dict[Key, Face | None], probes: list[Probe]) -> float:
    gen, imp = [], []
    for p in probes:
        fa, fb = found[p.a], found[p.b]
        if fa is not None and fb is not None:
            (gen if p.same else imp).append(float(fa.embedding @ fb.embedding))
    far, tar, _ = roc_curve(np.array(gen), np.array(imp))
    return auc_of(far, tar)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--detector", default="retinaface_mnet025")
    parser.add_argument("--embedder", default="dlib_resnet_v1")
    parser.add_argument("--far", type=float, default=1e-3)
    parser.add_argument("--clean", action="store_true", help="Also the table on clean photos only.")
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="Also detector vs mesh landmarks for alignment (clean photos).",
    )
    parser.add_argument(
        "--calibration-only",
        action="store_true",
        help="Only the face_recognition calibration table.",
    )
    args = parser.parse_args()

    from identity.calibration import threshold_for
    from identity.settings import Settings

    # The manifest's threshold (calibrated on the face_recognition people); no local
    # calibration file may stand in for it.
    threshold = threshold_for(
        args.embedder,
        args.far,
        Settings(models_dir=MODELS, data_dir=Path("/nonexistent-no-calibration")),
    )
    study = Study(args.detector, args.embedder)
    conditions = [CLEAN, *DEGRADATIONS]

    people = sorted(face_recognition_people())
    calib = study.run(people, conditions)
    calibration_table(calib, people, study.has_mesh)
    print(f"\n`{command_line()}`")
    if args.calibration_only:
        return

    pairs = deepface_pairs()
    photos = sorted({p.a for p in pairs} | {p.b for p in pairs})
    study.seconds = 0.0
    found = study.run(photos, conditions)
    n_images = len(photos) * len(conditions)
    where = (
        f"{args.detector} + {args.embedder}, similarity threshold {threshold:.4f} "
        f"(FAR {args.far:g}, calibrated on the face_recognition people)"
    )
    probes = mixed_pairs(pairs)
    sweep_table(
        found,
        probes,
        threshold,
        GRID,
        f"Mixed degraded pairs (deepface's 520, every pair with one or both sides degraded), {where}",
        study.has_mesh,
    )
    print(f"\n`{command_line()}`")
    per_degradation_table(
        found,
        pairs,
        threshold,
        study.has_mesh,
        f"Per degradation (clean first photo vs degraded second photo, 520 pairs), quality "
        f"{'with the mesh signals' if study.has_mesh else 'from 5 landmarks'}, gate {GATE}, {where}",
    )
    print(f"\n`{command_line()}`")
    print(
        f"\n{n_images} deepface images analysed in {study.seconds:.0f} s; "
        f"AUC of the mixed set (no gate) {auc(found, probes):.4f}"
    )

    if args.clean:
        clean = one_sided_pairs(pairs, CLEAN)
        sweep_table(
            found,
            clean,
            threshold,
            CLEAN_GRID,
            f"Clean photos only (deepface's 520 pairs), {where}",
            study.has_mesh,
        )
        print(f"\n`{command_line()}`")

    if args.alignment:
        align_rows = []
        clean_probes = one_sided_pairs(pairs, CLEAN)
        variants: dict[str, Study] = {
            "detector 5 points": study,
            "mesh: iris centres": Study(
                args.detector, args.embedder, mesh_landmarks=True, mesh_landmark_eyes="iris"
            ),
            "mesh: eye-corner midpoints": Study(
                args.detector, args.embedder, mesh_landmarks=True, mesh_landmark_eyes="corners"
            ),
        }
        for name, variant in variants.items():
            if variant is study:
                res = {k: v for k, v in found.items() if k[1] == CLEAN}
                secs = float("nan")
            else:
                variant.seconds = 0.0
                res = variant.run(photos, [CLEAN])
                secs = variant.seconds
            s = score(res, clean_probes, threshold, 0.0, True)
            n_found = sum(1 for k, v in res.items() if v is not None)
            align_rows.append(
                [
                    name,
                    f"{n_found}/{len(photos)}",
                    s.pairs,
                    auc(res, clean_probes),
                    s.accuracy,
                    secs,
                ]
            )
        print_table(
            ["alignment landmarks", "faces", "pairs", "AUC", "accuracy", "seconds"],
            align_rows,
            f"Alignment landmarks (clean photos), {args.detector} + {args.embedder}",
        )
        print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
