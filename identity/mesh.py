"""Dense face geometry: MediaPipe FaceMesh with attention on each detected face crop.

The mesh runs on a square crop around every detected box, not on the whole photo: the legacy
``face_mesh`` graph finds faces with the 128 px short-range BlazeFace first, which misses small
faces in a large photo, while on a crop the face fills the frame. Its 478 points (468-point mesh
refined around eyes and lips by the attention model, plus 5 points per iris) are mapped back to
source-image pixels and give three things the quality stage and alignment use:

* head pose (yaw, pitch, roll in degrees) by ``cv2.solvePnP`` of six mesh points (pupils, nose
  tip, mouth corners, chin) against a generic 3D face (``MODEL_3D``), with a pinhole camera whose
  focal length is the image's long side;
* eye openness: the eye aspect ratio (Soukupova and Cech, 2016) of each eye from the mesh's eyelid
  points, and the lid gap relative to the iris diameter (how much of the iris is visible);
* five InsightFace-order landmarks (eye centres from the iris centres, nose tip, mouth corners),
  which can replace a detector's coarser points before alignment (``IDENTITY_MESH_LANDMARKS``).

Results go into ``Faces.extra`` (per-face arrays, so they slice with the faces):
``mesh`` (N, 478, 3) float32 (x, y in pixels, z relative depth in the same pixel scale, NaN where
the mesh failed), ``mesh_ok`` (N,) bool, ``head_pose`` (N, 3) yaw/pitch/roll degrees,
``eye_aspect`` (N, 2) image-left/right eye, ``iris_visible`` (N, 2), ``eyes_closed`` (N,) bool.

mediapipe 0.10.14 is the ``mesh`` extra. Its Python glue was written for protobuf 4; with protobuf
5 or newer (which onnx needs) two calls it makes are gone, so ``_solutions`` restores the one
missing method it needs and builds FaceMesh without editing calculator options (that path reads
``FieldDescriptor.label``, removed in protobuf 7; the options it would edit are the thresholds we
keep at the graph's defaults anyway).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from identity.errors import ModelError
from identity.faces import Faces
from identity.native_log import native_stderr_to_log
from identity.registry import ResolvedModel
from identity.settings import Settings

log = logging.getLogger(__name__)

N_POINTS = 478

# Mesh indices (MediaPipe's canonical face topology). "Image-left" is the subject's right side in
# an unmirrored photo, which is what InsightFace's landmark order calls "left".
NOSE_TIP = 1
CHIN = 152
EYE_OUTER_L, EYE_INNER_L = 33, 133  # image-left eye corners
EYE_INNER_R, EYE_OUTER_R = 362, 263  # image-right eye corners
MOUTH_L, MOUTH_R = 61, 291
# eyelid pairs (upper, lower) for the eye aspect ratio, two vertical chords per eye
LIDS_L = ((160, 144), (158, 153))
LIDS_R = ((385, 380), (387, 373))
IRIS_L = (468, 469, 470, 471, 472)  # centre then 4 boundary points, image-left iris
IRIS_R = (473, 474, 475, 476, 477)

# Generic 3D face for solvePnP, in millimetres, in an OpenCV camera-like frame (x to the image
# right, y down, z away from the camera), nose tip at the origin. x and y are ArcFace's 112 px
# template (the mean frontal face, identity/align.py) scaled to a 63 mm interpupillary distance;
# depths behind the nose tip are average adult values (pupils 30 mm, mouth corners 25 mm, chin
# 22 mm). A frontal, upright face gives the identity rotation. Points: pupils (iris centres), nose
# tip, mouth corners, chin.
MODEL_3D = np.array(
    [
        [-31.5, -36.0, 30.0],  # image-left pupil
        [31.5, -36.0, 30.0],  # image-right pupil
        [0.0, 0.0, 0.0],  # nose tip
        [-26.0, 37.0, 25.0],  # image-left mouth corner
        [26.0, 37.0, 25.0],  # image-right mouth corner
        [0.0, 72.0, 22.0],  # chin
    ],
    dtype=np.float64,
)
MODEL_INDICES = (IRIS_L[0], IRIS_R[0], NOSE_TIP, MOUTH_L, MOUTH_R, CHIN)
# Mediapipe's nose tip (point 1) sits lower on the face than the template's, so the model above
# reads camera-facing portraits as chin-down: the median pitch of the 61 deepface portraits was
# -15 degrees. Adding it back puts a level, camera-facing head at about 0.
PITCH_ZERO_DEG = 15.0

_PATCHED = False
_PATCH_LOCK = threading.Lock()


def _solutions() -> tuple[Any, Any, Any]:
    """mediapipe's legacy (SolutionBase, face_mesh, face_detection), or a ModelError saying how to
    get them. Applies the protobuf compatibility shim once (see the module docstring)."""
    global _PATCHED
    with _PATCH_LOCK:
        if not _PATCHED:
            from google.protobuf import message_factory, symbol_database

            # protobuf >= 5 dropped GetPrototype and 4.x warns on every call; GetMessageClass is
            # its documented replacement. mediapipe's packet_getter calls it on the default
            # SymbolDatabase for every output.
            def _get_prototype(self: Any, descriptor: Any) -> Any:
                return message_factory.GetMessageClass(descriptor)

            for cls in (symbol_database.SymbolDatabase, message_factory.MessageFactory):
                cls.GetPrototype = _get_prototype
            _PATCHED = True
    try:
        from mediapipe.python.solution_base import SolutionBase
        from mediapipe.python.solutions import face_detection, face_mesh
    except ImportError as exc:
        raise ModelError(
            "the MediaPipe models need the 'mesh' extra: pip install 'identity-platform[mesh]' "
            f"(mediapipe==0.10.14); import failed: {exc}",
            extra="mesh",
        ) from exc
    return SolutionBase, face_mesh, face_detection


def run_graph(runner: Any, packet: Any) -> Any:
    """``runner._graph.process(packet)``, building the graph on first use (under the runner's
    lock). The graph's threads log as it starts and first runs, after its constructor returns,
    so one capture spans both and sends that chatter to the log."""
    if runner._graph is not None:
        return runner._graph.process(packet)
    with native_stderr_to_log(log):
        runner._graph = runner._make_graph()
        return runner._graph.process(packet)


def mesh_available() -> bool:
    """True when mediapipe imports (the ``mesh`` extra is installed)."""
    try:
        _solutions()
    except ModelError:
        return False
    return True


class FaceMeshRunner:
    """FaceMesh with attention on face crops; built as ``FaceMeshRunner(resolved, settings)``.

    The legacy graph takes one image per call and keeps per-graph state, so calls are
    serialised with a lock; "batching" here means one graph serves every crop of a batch of
    images without rebuilding (building it costs ~0.1 s, a crop ~10-30 ms on this machine).
    """

    name = "facemesh_attention"

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        solution_base, face_mesh, _ = _solutions()
        self.name = resolved.manifest.name
        self.settings = settings
        extra = resolved.manifest.extra
        self.crop_scale = float(extra.get("crop_scale", 1.7))
        self.crop_max_side = int(extra.get("crop_max_side", 320))
        self._lock = threading.Lock()
        # Two faces per crop so a neighbour's face cannot hide the one we asked about: we keep the
        # mesh nearest the crop centre.
        self._graph: Any = None
        self._make_graph = lambda: solution_base(
            binary_graph_path=face_mesh._BINARYPB_FILE_PATH,
            side_inputs={"num_faces": 2, "with_attention": True, "use_prev_landmarks": False},
            outputs=["multi_face_landmarks"],
        )

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()

    def _crop(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """Square RGB crop around a box (padded with black outside the image): crop, x0, y0, and
        the source pixels per crop pixel."""
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(x2 - x1, y2 - y1, 1.0) * self.crop_scale
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        s = round(side)
        h, w = image.shape[:2]
        crop = np.zeros((s, s, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
        if sx1 > sx0 and sy1 > sy0:
            crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        scale = 1.0
        if s > self.crop_max_side:
            scale = s / self.crop_max_side
            crop = cv2.resize(  # type: ignore[assignment]  # cv2's stubs widen the dtype
                crop, (self.crop_max_side, self.crop_max_side), interpolation=cv2.INTER_AREA
            )
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), float(x0), float(y0), scale

    def mesh(self, images_bgr: Sequence[np.ndarray], faces: Faces) -> np.ndarray:
        """(N, 478, 3) float32 mesh per face in source pixels; NaN rows where no mesh was found."""
        out = np.full((len(faces), N_POINTS, 3), np.nan, np.float32)
        for i in range(len(faces)):
            image = images_bgr[int(faces.image_index[i])]
            crop, x0, y0, scale = self._crop(image, faces.boxes[i])
            side = crop.shape[0]
            with self._lock:
                result = run_graph(self, {"image": crop})
            found = result.multi_face_landmarks or []
            best, best_d = None, math.inf
            for lms in found:
                pts = np.array([(p.x, p.y, p.z) for p in lms.landmark], np.float32)
                d = float(np.hypot(*(pts[:, :2].mean(axis=0) - 0.5)))
                if d < best_d:
                    best, best_d = pts, d
            if best is None or len(best) != N_POINTS:
                continue
            # normalised crop coordinates -> source pixels; z shares x's scale (mediapipe docs)
            out[i, :, 0] = x0 + best[:, 0] * side * scale
            out[i, :, 1] = y0 + best[:, 1] * side * scale
            out[i, :, 2] = best[:, 2] * side * scale
        return out


def load_mesh_runner(settings: Settings, name: str = "facemesh_attention") -> FaceMeshRunner:
    from identity.runtime import POOL, resolve_model

    return POOL.get("mesh", name, lambda: FaceMeshRunner(resolve_model(name, settings), settings))


# geometry --------------------------------------------------------------------------------------
def head_pose(mesh: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """(N, 3) yaw, pitch, roll in degrees from meshes in source pixels; NaN where no mesh.

    Signs: yaw > 0 when the face turns towards the image's right (the subject's left), pitch > 0
    when the chin goes up, roll > 0 when the face is rotated clockwise as seen in the image.
    """
    h, w = image_shape[:2]
    f = float(max(h, w))
    camera = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float64)
    out = np.full((len(mesh), 3), np.nan, np.float32)
    for i, m in enumerate(mesh):
        if not np.isfinite(m).all():
            continue
        pts = m[list(MODEL_INDICES), :2].astype(np.float64)
        # Start the iterative solver upright-ish (roll from the eye line) at the distance the eye
        # spacing implies; from a zero guess it sometimes lands on the mirrored, 180-degree-roll
        # solution.
        eye = max(float(np.linalg.norm(pts[1] - pts[0])), 1e-3)
        roll0 = math.atan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0])
        rvec = np.array([[0.0], [0.0], [roll0]])
        depth = f * 63.0 / eye
        tvec = np.array(
            [[(pts[2, 0] - w / 2) / f * depth], [(pts[2, 1] - h / 2) / f * depth], [depth]]
        )
        ok, rvec, _ = cv2.solvePnP(
            MODEL_3D,
            pts,
            camera,
            None,
            rvec,
            tvec,
            useExtrinsicGuess=True,
            flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if not ok:
            continue
        rot, _ = cv2.Rodrigues(rvec)
        yaw, pitch, roll = rotation_to_euler(rot)
        out[i] = (yaw, pitch + PITCH_ZERO_DEG, roll)
    return out


def rotation_to_euler(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of a model-to-camera rotation, R = Rz(roll) Ry(yaw) Rx(pitch)."""
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -rot[2, 0]))))
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    roll = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    # With y pointing down in the camera frame, a chin-up rotation about x is negative; flip it
    # so "pitch > 0 = looking up" reads naturally. Yaw: turning to the image right moves the nose
    # right, a negative rotation about camera y (y down); flip likewise.
    return -yaw, -pitch, roll


def eye_openness(mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eye aspect ratio (N, 2) and lid gap / iris diameter (N, 2), image-left then image-right."""
    xy = mesh[:, :, :2].astype(np.float64)

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(xy[:, a] - xy[:, b], axis=1)

    ears, iris = [], []
    for lids, (c1, c2), ring in (
        (LIDS_L, (EYE_OUTER_L, EYE_INNER_L), IRIS_L),
        (LIDS_R, (EYE_INNER_R, EYE_OUTER_R), IRIS_R),
    ):
        gap = (dist(*lids[0]) + dist(*lids[1])) / 2
        width = np.maximum(dist(c1, c2), 1e-6)
        diameter = np.maximum((dist(ring[1], ring[3]) + dist(ring[2], ring[4])) / 2, 1e-6)
        ears.append(gap / width)
        iris.append(gap / diameter)
    return np.stack(ears, 1).astype(np.float32), np.stack(iris, 1).astype(np.float32)


def five_points(mesh: np.ndarray, eyes: str = "iris") -> np.ndarray:
    """(N, 5, 2) InsightFace-order landmarks from meshes.

    ``eyes="iris"`` takes the iris centres (the pupil, what the ArcFace template's annotators
    clicked); ``eyes="corners"`` the midpoint of each eye's corners, steadier when the gaze is
    off-axis.
    """
    xy = mesh[:, :, :2]
    if eyes == "iris":
        left, right = xy[:, IRIS_L[0]], xy[:, IRIS_R[0]]
    else:
        left = (xy[:, EYE_OUTER_L] + xy[:, EYE_INNER_L]) / 2
        right = (xy[:, EYE_INNER_R] + xy[:, EYE_OUTER_R]) / 2
    return np.stack([left, right, xy[:, NOSE_TIP], xy[:, MOUTH_L], xy[:, MOUTH_R]], 1).astype(
        np.float32
    )


def annotate_mesh(
    images_bgr: Sequence[np.ndarray],
    faces: Faces,
    settings: Settings,
    replace_landmarks: bool | None = None,
) -> Faces:
    """Faces with the mesh signals in ``extra`` (see the module docstring).

    ``replace_landmarks`` (default ``settings.mesh_landmarks``) swaps the detector's five points
    for the mesh's where a mesh was found, so alignment uses them.
    """
    if not len(faces):
        return faces
    runner = load_mesh_runner(settings)
    mesh = runner.mesh(images_bgr, faces)
    ok = np.isfinite(mesh).all(axis=(1, 2))
    pose = np.full((len(faces), 3), np.nan, np.float32)
    for i in np.flatnonzero(ok):
        shape = images_bgr[int(faces.image_index[i])].shape
        pose[i] = head_pose(mesh[i : i + 1], shape)[0]
    ear, iris = eye_openness(np.nan_to_num(mesh))
    ear[~ok], iris[~ok] = np.nan, np.nan
    # Both eyes must look shut: one low eye is more often a profile view or a wink.
    closed = ok & (np.nanmax(np.where(ok[:, None], ear, 1.0), axis=1) < settings.eyes_closed_ear)
    extra = dict(faces.extra)
    extra.update(
        mesh=mesh, mesh_ok=ok, head_pose=pose, eye_aspect=ear, iris_visible=iris, eyes_closed=closed
    )
    landmarks = faces.landmarks
    use = settings.mesh_landmarks if replace_landmarks is None else replace_landmarks
    if use and ok.any():
        landmarks = landmarks.copy()
        landmarks[ok] = five_points(mesh[ok], settings.mesh_landmark_eyes)
    return faces.with_(extra=extra, landmarks=landmarks)


def add_mesh_signals(images_bgr: Sequence[np.ndarray], faces: Faces, settings: Settings) -> Faces:
    """The pipeline's hook: mesh signals for ``identity.quality`` when enabled and installed.

    Fills quality's extension keys: ``extra["pose_mesh"]`` (N, 3) yaw/pitch/roll, where a face got
    no mesh its 5-landmark estimate (so one failed mesh never drops a face's pose), and
    ``extra["eyes_open"]`` (N,) in [0, 1] = clip(max eye aspect ratio / (2 * eyes_closed_ear), 0,
    1), so quality's "eyes closed" point (0.5) is exactly ``eyes_closed`` here and a face without a
    mesh counts as open. Without the ``mesh`` extra, or with ``quality_mesh`` off, the faces come
    back unchanged.
    """
    if not settings.quality_mesh or not len(faces) or not mesh_available():
        return faces
    from identity.quality import pose_from_landmarks

    faces = annotate_mesh(images_bgr, faces, settings)
    ok = faces.extra["mesh_ok"]
    pose = np.where(ok[:, None], faces.extra["head_pose"], pose_from_landmarks(faces.landmarks))
    ear = np.nan_to_num(faces.extra["eye_aspect"], nan=1.0).max(axis=1)
    eyes_open = np.where(ok, np.clip(ear / (2 * settings.eyes_closed_ear), 0, 1), 1.0)
    extra = dict(faces.extra)
    extra.update(pose_mesh=pose.astype(np.float32), eyes_open=eyes_open.astype(np.float32))
    return faces.with_(extra=extra)
