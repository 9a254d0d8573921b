"""Face quality: one score in [0, 1] per face, the reasons that lowered it, and the raw signals.

Formula (every factor is in [0, 1]; 1 means "no penalty"; the score is their product, so any
single bad signal can sink a face, the way a human reviewer would reject it):

    quality = f_det * f_size * f_sharp * f_pose [* f_norm] [* f_eyes]

* ``f_det = clip((det_score - 0.5) / 0.4, 0, 1)``: full credit from detector confidence 0.9.
* ``f_size = clip((iod - 8) / (35 - 8), 0, 1)`` with ``iod`` the inter-ocular distance in source
  pixels: 35 px is the eye distance of the ArcFace 112 px template, so bigger faces are not
  upsampled by alignment; below about 8 px there is no identity left.
* ``sharpness = v / (v + 100)`` with ``v`` the variance of the Laplacian of the aligned crop,
  resized to 112 x 112 grey so chips of every template compare; ``f_sharp = clip(sharpness / 0.6,
  0, 1)`` (full credit from v = 150; sharp real photos score v of 350 to 4000, a Gaussian blur of
  3 px at a 60 px eye distance about 20).
* ``f_pose = g(|yaw|) * g(|pitch|)`` with ``g(a) = clip(1 - (a - 20) / 40, 0, 1)``: no penalty
  within 20 degrees, zero at 60. Pose comes from the 5 landmarks (``pose_from_landmarks``) unless
  a better signal is attached (below).
* ``f_norm``: ``clip((norm - lo) / (hi - lo), 0, 1)`` with the norm of the unnormalised
  embedding, for embedders whose manifest gives ``extra.feature_norm_range`` and for AdaFace
  (trained to make the norm grow with recognisability; default range 15, 25). ArcFace-loss
  models show the same effect without being trained for it: on celeba500 the norm is the single
  best predictor of a false non-match for both MobileFaceNets (docs/calibration.md), so their
  manifests give a range fitted there (``lo`` and ``hi`` = 1st and 10th percentiles of the
  norms, so a typical face keeps a factor of 1).
* ``f_eyes`` when an ``eyes_open`` signal is attached: ``clip(eyes_open / 0.5, 0, 1)``.

With a learned recognisability (``extra["recognisability"]``: an embedder whose manifest has a
``quality_head``, identity/recognisability.py, as the default and ``arcface_mobilefacenet_128``
do) the score is instead

    quality = f_recog * f_det [* f_eyes]

with ``f_recog`` linear between the head's ``points`` (0 at a predicted share of 0, 0.1 at the
2.5th and 1 at the 30th percentile of celeba500 faces the head never saw): so the 0.1 gate refuses
about 2.5% of ordinary faces as it does under the factors, a typical face scores 1, and the score
keeps ordering faces below the gate and up to the 30% an error-versus-reject curve rejects. The
head has learned from the embedder's own features what pose, blur and the norm do to matching,
and does better than the factors: held out by identity on celeba500, rejecting the lowest 10% of
comparisons cuts the default's FNMR at FMR 1e-3 by 34% where the factors cut 22% (39.7% against
33% for arcface_mobilefacenet_128), and multiplying the pose and
sharpness factors back in brings it down to 13-16% (docs/calibration.md). So pose, sharpness and
size only give reasons here (a small face reads as a blurry crop to the head, and is scored by
whether it will still match, not by its pixel count); the detector's confidence stays a factor
because the head never saw a non-face.

Reason codes: ``low_det_score`` (< 0.7), ``small_face`` (iod < 20 px), ``blurry`` (sharpness
< 0.4), ``extreme_pose`` (|yaw| > 40 or |pitch| > 35 degrees), ``low_feature_norm`` (norm < lo),
``low_recognisability`` (f_recog < 0.1), ``eyes_closed`` (eyes_open < 0.5).

Extension point: other stages attach per-face arrays to ``faces.extra`` and this module uses them
when present: ``extra["pose_mesh"]`` (N, 3) yaw, pitch, roll in degrees (e.g. from FaceMesh)
replaces the 5-landmark estimate, ``extra["eyes_open"]`` (N,) in [0, 1] adds the eyes factor.
``SIGNALS`` lists the keys; ``quality_details`` records which source each value came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from identity.faces import Faces
from identity.settings import Settings

if TYPE_CHECKING:
    from identity.registry import Manifest

# Keys in Faces.extra that refine quality when a stage provides them.
SIGNALS = {
    "pose_mesh": "(N, 3) yaw, pitch, roll in degrees from a dense landmark model",
    "eyes_open": "(N,) probability/openness in [0, 1]",
    "recognisability": "(N,) predicted share of matching comparisons, from the embedder's head",
}
MESH_SIGNALS = ("pose_mesh", "eyes_open")  # the ones identity.mesh attaches

LOW_DET_SCORE = 0.7
SMALL_FACE_IOD_PX = 20.0
BLURRY_SHARPNESS = 0.4
EXTREME_YAW_DEG = 40.0
EXTREME_PITCH_DEG = 35.0
EYES_CLOSED = 0.5
LOW_RECOGNISABILITY = 0.1  # f_recog below the default enrollment gate on its own
SHARPNESS_HALF_VAR = 100.0
DEFAULT_FEATURE_NORM_RANGE = (15.0, 25.0)
DET_SCORE_RAMP = (0.5, 0.9)  # f_det: 0 at the first, full credit from the second

# Ratio of nose-tip depth (in front of the eye/mouth plane) to the inter-ocular distance and to
# the eye-to-mouth distance, from adult anthropometry (about 32 mm and 63 mm / 72 mm): used to turn
# the nose's 2-D offset into an angle. The frontal vertical position of the nose between the eye
# line and the mouth line is 0.495 in the ArcFace template, but RetinaFace puts its nose point
# lower: 0.55 is the median over the 31 faces of ../shared/data/face_recognition (which would
# otherwise all read about 7 degrees "down").
NOSE_DEPTH_PER_IOD = 0.5
NOSE_DEPTH_PER_EYE_MOUTH = 0.45
FRONTAL_NOSE_HEIGHT = 0.55


def pose_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 2) landmarks -> (N, 3) yaw, pitch, roll in degrees (approximate).

    Roll is the angle of the eye line (positive = clockwise in the image, the right-hand eye
    lower). The other two are read in the roll-corrected frame: yaw from how far the nose tip sits
    sideways from the eye-mouth midline (relative to the eye distance; positive = nose towards the
    image's right), pitch from how high the nose sits between the eye line and the mouth line
    (positive = face tilted up, nose closer to the eyes). A weak-perspective model with a nose
    that protrudes by a fixed fraction of the face turns both offsets into angles with atan.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    le, re, nose, lm_, rm = (lm[:, i] for i in range(5))
    d = re - le
    roll = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    c, s = np.cos(np.radians(-roll)), np.sin(np.radians(-roll))

    def derolled(p: np.ndarray) -> np.ndarray:
        return np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], axis=1)

    le_r, re_r, n_r = derolled(le), derolled(re), derolled(nose)
    eye_mid = (le_r + re_r) / 2
    mouth_mid = derolled((lm_ + rm) / 2)
    iod = np.maximum(np.linalg.norm(re_r - le_r, axis=1), 1e-6)
    # Midline x at the nose's height (the eye-mouth axis may lean with yaw).
    span = mouth_mid[:, 1] - eye_mid[:, 1]
    span_safe = np.where(np.abs(span) < 1e-6, 1e-6, span)
    t = (n_r[:, 1] - eye_mid[:, 1]) / span_safe
    mid_x = eye_mid[:, 0] + t * (mouth_mid[:, 0] - eye_mid[:, 0])
    yaw = np.degrees(np.arctan((n_r[:, 0] - mid_x) / iod / NOSE_DEPTH_PER_IOD))
    pitch = np.degrees(np.arctan((FRONTAL_NOSE_HEIGHT - t) / NOSE_DEPTH_PER_EYE_MOUTH))
    return np.stack([yaw, pitch, roll], axis=1)


def crop_sharpness(crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variance of the Laplacian, normalised sharpness in [0, 1)) per aligned crop."""
    var = np.zeros(len(crops_bgr))
    for i, crop in enumerate(crops_bgr):
        grey = cv2.cvtColor(np.asarray(crop, np.uint8), cv2.COLOR_BGR2GRAY)
        if grey.shape != (112, 112):
            grey = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA)
        var[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
    return var, var / (var + SHARPNESS_HALF_VAR)


def native_sharpness(
    crops_bgr: np.ndarray, inter_ocular_px: np.ndarray, template: str
) -> tuple[np.ndarray, np.ndarray]:
    """(variance of the Laplacian, normalised sharpness) at the face's own resolution.

    Alignment upsamples a small face to the template's size, which smooths it: measured on the
    crop, a small sharp face reads as blurry. Here each crop (at 112 px, as ``crop_sharpness``)
    is first shrunk back by the ratio of the face's eye distance in the photo to the template's,
    so only faces that are blurry at the resolution they have read blurry; size is its own signal.
    """
    from identity.align import get_template

    tpl = get_template(template)
    tpl_iod = float(np.linalg.norm(tpl.points[1] - tpl.points[0])) * 112.0 / tpl.size
    var = np.zeros(len(crops_bgr))
    for i, crop in enumerate(crops_bgr):
        grey = cv2.cvtColor(np.asarray(crop, np.uint8), cv2.COLOR_BGR2GRAY)
        if grey.shape != (112, 112):
            grey = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA)
        scale = min(1.0, float(inter_ocular_px[i]) / tpl_iod)
        side = max(16, round(112 * scale))
        if side < 112:
            grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)
        var[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
    return var, var / (var + SHARPNESS_HALF_VAR)


def _manifest(embedder_name: str | None) -> Manifest | None:
    """The embedder's manifest; None for an ad-hoc embedder without one (no model signals)."""
    if not embedder_name:
        return None
    from identity.errors import ModelNotFound
    from identity.registry import get_manifest

    try:
        return get_manifest(embedder_name)
    except ModelNotFound:
        return None


def _feature_norm_range(m: Manifest | None) -> tuple[float, float] | None:
    """(lo, hi) when the embedder's norm is a quality signal, else None."""
    if m is None:
        return None
    declared = m.extra.get("feature_norm_range")
    if declared is None and m.runner != "adaface":
        return None
    lo, hi = declared or DEFAULT_FEATURE_NORM_RANGE
    return float(lo), float(hi)


def _recognisability_points(m: Manifest | None) -> list[list[float]] | None:
    """The (recognisability, factor) points of the embedder's quality head, None without one."""
    head = m.extra.get("quality_head") if m is not None else None
    if not head or "points" not in head:
        return None
    return [[float(x), float(y)] for x, y in head["points"]]


def recognisability_factor(recognisability: np.ndarray, points: list[list[float]]) -> np.ndarray:
    """``f_recog``: linear between the head's points, flat beyond the first and the last."""
    xs, ys = zip(*points, strict=True)
    return np.interp(np.asarray(recognisability, np.float64), xs, ys)


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 at ``lo`` and below, 1 at ``hi`` and above, linear between: every factor's shape."""
    return np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0)


def assess_quality(faces: Faces, settings: Settings, embedder_name: str | None = None) -> Faces:
    """A copy of ``faces`` with ``quality``, ``quality_reasons`` and ``quality_details`` filled."""
    n = len(faces)
    if n == 0:
        return faces.with_(
            quality=np.zeros((0,), np.float32), quality_reasons=[], quality_details=[]
        )
    det = faces.scores.astype(np.float64)
    iod = faces.inter_ocular.astype(np.float64)
    if "pose_mesh" in faces.extra:
        pose = np.asarray(faces.extra["pose_mesh"], np.float64).reshape(n, 3)
        pose_source = "pose_mesh"
    else:
        pose = pose_from_landmarks(faces.landmarks)
        pose_source = "landmarks5"
    manifest = _manifest(embedder_name)
    factors = ramp(det, *DET_SCORE_RAMP)
    points = _recognisability_points(manifest)
    recog = faces.extra.get("recognisability") if points is not None else None
    f_recog = None
    if recog is not None and points is not None:
        recog = np.asarray(recog, np.float64).reshape(n)
        f_recog = recognisability_factor(recog, points)
        factors *= f_recog
    else:
        factors *= ramp(iod, 8.0, 35.0)
        factors *= np.clip(1 - (np.abs(pose[:, 0]) - 20) / 40, 0, 1)
        factors *= np.clip(1 - (np.abs(pose[:, 1]) - 20) / 40, 0, 1)

    lap_var = sharp = None
    if faces.crops is not None:
        lap_var, sharp = crop_sharpness(faces.crops)
        if f_recog is None:
            factors *= np.clip(sharp / 0.6, 0, 1)

    norm_range = _feature_norm_range(manifest)
    norms = faces.embedding_norms if norm_range is not None else None
    if norms is not None and norm_range is not None and f_recog is None:
        factors *= ramp(norms, *norm_range)

    eyes = faces.extra.get("eyes_open")
    if eyes is not None:
        eyes = np.asarray(eyes, np.float64).reshape(n)
        factors *= np.clip(eyes / EYES_CLOSED, 0, 1)

    reasons: list[list[str]] = []
    details: list[dict[str, Any]] = []
    for i in range(n):
        r: list[str] = []
        if det[i] < LOW_DET_SCORE:
            r.append("low_det_score")
        if iod[i] < SMALL_FACE_IOD_PX:
            r.append("small_face")
        if sharp is not None and sharp[i] < BLURRY_SHARPNESS:
            r.append("blurry")
        if abs(pose[i, 0]) > EXTREME_YAW_DEG or abs(pose[i, 1]) > EXTREME_PITCH_DEG:
            r.append("extreme_pose")
        if norms is not None and norm_range is not None and norms[i] < norm_range[0]:
            r.append("low_feature_norm")
        if f_recog is not None and f_recog[i] < LOW_RECOGNISABILITY:
            r.append("low_recognisability")
        if eyes is not None and eyes[i] < EYES_CLOSED:
            r.append("eyes_closed")
        d: dict[str, Any] = {
            "det_score": round(float(det[i]), 4),
            "inter_ocular_px": round(float(iod[i]), 2),
            "pose": {
                "yaw": round(float(pose[i, 0]), 1),
                "pitch": round(float(pose[i, 1]), 1),
                "roll": round(float(pose[i, 2]), 1),
                "source": pose_source,
            },
        }
        if sharp is not None and lap_var is not None:
            d["sharpness"] = round(float(sharp[i]), 4)
            d["laplacian_var"] = round(float(lap_var[i]), 1)
        if norms is not None:
            d["feature_norm"] = round(float(norms[i]), 3)
        if recog is not None:
            d["recognisability"] = round(float(recog[i]), 4)
        if eyes is not None:
            d["eyes_open"] = round(float(eyes[i]), 3)
        reasons.append(r)
        details.append(d)
    return faces.with_(
        quality=np.clip(factors, 0, 1).astype(np.float32),
        quality_reasons=reasons,
        quality_details=details,
    )


def enrollment_rejections(faces: Faces, settings: Settings) -> list[list[str]]:
    """Per face, why the enrollment gate refuses it (empty list = accepted).

    Thresholds are settings (``enroll_min_quality``, ``enroll_min_det_score``,
    ``enroll_min_inter_ocular_px``, ``enroll_max_abs_yaw``); ``faces`` must have been through
    ``assess_quality``. Each entry reads ``code: value vs limit`` so an API error can show it.
    """
    if faces.quality is None or faces.quality_details is None:
        raise ValueError("enrollment_rejections needs faces that went through assess_quality")
    out: list[list[str]] = []
    for i in range(len(faces)):
        d = faces.quality_details[i]
        r: list[str] = []
        if float(faces.quality[i]) < settings.enroll_min_quality:
            why = ",".join(faces.quality_reasons[i]) if faces.quality_reasons else ""
            r.append(
                f"low_quality: {float(faces.quality[i]):.2f} < {settings.enroll_min_quality}"
                + (f" ({why})" if why else "")
            )
        if d["det_score"] < settings.enroll_min_det_score:
            r.append(f"low_det_score: {d['det_score']:.2f} < {settings.enroll_min_det_score}")
        if d["inter_ocular_px"] < settings.enroll_min_inter_ocular_px:
            r.append(
                f"small_face: inter-ocular {d['inter_ocular_px']:.1f} px < "
                f"{settings.enroll_min_inter_ocular_px}"
            )
        if abs(d["pose"]["yaw"]) > settings.enroll_max_abs_yaw:
            r.append(
                f"extreme_pose: |yaw| {abs(d['pose']['yaw']):.0f} > {settings.enroll_max_abs_yaw}"
            )
        out.append(r)
    return out


def deciding_templates(
    quality: Sequence[float | None], min_quality: float, policy: str = "all"
) -> np.ndarray:
    """(T,) bool: which of one identity's templates decide under ``template_quality_policy``.

    ``"gate"`` drops the templates whose stored quality is below ``min_quality`` (a face the
    enrollment gate would refuse today), but only when at least one template passes, so an
    identity enrolled before the gate stays findable. A template without a stored quality is not
    known to be below the gate and decides. Dropping templates only ever lowers an identity's
    best similarity, so the calibrated false-accept rate can only fall, never rise.
    """
    q = np.array([np.nan if v is None else float(v) for v in quality], np.float64)
    keep = np.ones(len(q), bool)
    if policy == "gate":
        passing = ~(q < min_quality)  # nan (unknown) compares False: it passes
        if passing.any():
            keep = passing
    return keep


def stored_gate_rejections(
    landmarks: np.ndarray,
    det_scores: Sequence[float | None],
    quality: Sequence[float | None],
    quality_reasons: Sequence[Sequence[str]],
    settings: Settings,
) -> tuple[list[list[str]], list[list[str]]]:
    """The enrollment gate (``enrollment_rejections``) re-run on what stored templates kept:
    (per template why the gate refuses it, per template which stored value it lacks).

    Eye distance and yaw are read again from the stored 5 landmarks (a template enrolled with
    FaceMesh pose was gated on the mesh's yaw). A missing quality or detector score is named
    (``quality``, ``det_score``), never guessed, and is not a refusal.
    """
    n = len(quality)
    lm = np.asarray(landmarks, np.float64).reshape(n, 5, 2)
    q = np.array([np.nan if v is None else float(v) for v in quality], np.float64)
    det = np.array([np.nan if v is None else float(v) for v in det_scores], np.float64)
    pose = pose_from_landmarks(lm)
    iod = np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1)
    faces = Faces(
        boxes=np.zeros((n, 4)),
        landmarks=lm,
        scores=np.nan_to_num(det, nan=1.0),
        image_index=np.zeros(n),
        quality=q,
        quality_reasons=[list(r) for r in quality_reasons],
        quality_details=[
            {"det_score": det[i], "inter_ocular_px": iod[i], "pose": {"yaw": pose[i, 0]}}
            for i in range(n)
        ],
    )
    rejections = enrollment_rejections(faces, settings)  # nan compares False: no reason
    missing = [
        [name for name, v in (("quality", q[i]), ("det_score", det[i])) if np.isnan(v)]
        for i in range(n)
    ]
    return rejections, missing
