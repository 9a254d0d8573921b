"""Every error the library raises: one tree under ``IdentityError``.

Each class carries a stable machine-readable ``code`` and the HTTP status a service would answer
with, so the mapping is data on the class and the service (``services/errors.py``, whose own
tree sits beside this one under ``CodedError``) has a single exception handler.
"""

from __future__ import annotations

from typing import Any


class CodedError(Exception):
    """An error a client can act on: a stable ``code``, an HTTP status and a message.

    The common base of the library's tree (``IdentityError``) and the service's
    (``services.errors.ServiceError``)."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class IdentityError(CodedError):
    """The root of every error raised by the ``identity`` library."""

    code = "identity_error"


class BadImage(IdentityError):
    """Bytes that are not a decodable image (empty, truncated, unknown format)."""

    code = "bad_image"
    http_status = 422


class ImageTooLarge(BadImage):
    """Byte size or pixel count over the configured limits (decompression bombs included)."""

    code = "image_too_large"
    http_status = 413


class NoFaceFound(IdentityError):
    code = "no_face_found"
    http_status = 422


class MultipleFaces(IdentityError):
    code = "multiple_faces"
    http_status = 422


class LowQuality(IdentityError):
    code = "low_quality"
    http_status = 422


class InvalidInput(IdentityError):
    code = "invalid_input"
    http_status = 422


class FeatureUnavailable(InvalidInput):
    """The request asks for something this installation lacks (an optional extra): the client
    can ask for another method, the operator can install the extra."""

    code = "feature_unavailable"
    http_status = 422


class LooserThanPolicy(InvalidInput):
    """A decision asked for at a FAR above, or a threshold below, the service's policy."""

    code = "looser_than_policy"
    http_status = 422


class ModelError(IdentityError):
    """A model is missing, fails its checksum, or cannot be loaded."""

    code = "model_error"
    http_status = 503


class ModelNotFound(ModelError):
    code = "model_not_found"


class ChecksumMismatch(ModelError):
    code = "checksum_mismatch"


class DownloadFailed(ModelError):
    code = "download_failed"


class CalibrationError(IdentityError):
    code = "calibration_error"
    http_status = 422


class NoPersonFound(IdentityError):
    """No person box given and the person detector found none."""

    code = "no_person_found"
    http_status = 422


class UnsuitablePersonImage(InvalidInput):
    """An image no person detector or re-ID network can use: too small, or a strip no person
    image has the shape of. Refused before any native code sees it (OpenCV's HOG crashed the
    process on images smaller than its window)."""

    code = "unsuitable_person_image"
    http_status = 422


class IndexSnapshotError(IdentityError):
    """A snapshot file is missing, truncated, corrupt or from an incompatible version.

    The caller catches this and rebuilds the index from the store.
    """

    code = "index_snapshot_error"
    http_status = 503


class IndexSnapshotMissing(IndexSnapshotError):
    code = "index_snapshot_missing"


class SealingError(IdentityError):
    """A KEK or data key is missing or wrong, or a sealed blob fails authentication
    (``identity.sealing``). A server-side fault (configuration or tampering), never the client's."""

    code = "sealing_error"
    http_status = 500


class PresentationAttack(IdentityError):
    """A collection requires liveness and the face was judged a presentation attack (a printed
    photo, a screen): ``details`` carry the score, the threshold and what the threshold means."""

    code = "presentation_attack"
    http_status = 422


class LivenessUndetermined(IdentityError):
    """A collection requires liveness and the face could not be judged (too small, cut by the
    image border): the client should retake the photo, not be told it is an attack."""

    code = "liveness_undetermined"
    http_status = 422


class JobCancelled(IdentityError):
    """A batch job was cancelled (by an operator, or before it started)."""

    code = "job_cancelled"
    http_status = 409


class JobLimitExceeded(IdentityError):
    """A batch job reached one of its bounds (bytes decompressed, time): it stops, keeping what
    it committed; the message names the setting to raise."""

    code = "job_limit_exceeded"
    http_status = 422
