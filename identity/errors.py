"""Typed errors raised by the library and the service.

Each class carries a stable machine-readable ``code`` and the HTTP status the service maps it to,
so the mapping lives here once and the service has a single exception handler.
"""

from __future__ import annotations

from typing import Any


class IdentityError(Exception):
    code = "identity_error"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


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


class NotFound(IdentityError):
    code = "not_found"
    http_status = 404


class Conflict(IdentityError):
    code = "conflict"
    http_status = 409


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


class Unauthorized(IdentityError):
    code = "unauthorized"
    http_status = 401


class Forbidden(IdentityError):
    code = "forbidden"
    http_status = 403


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


class TooManyAttempts(IdentityError):
    """Too many failed key checks from one client or for one key prefix; ``retry_after_s``
    says when to try again (the service sends it as Retry-After)."""

    code = "too_many_attempts"
    http_status = 429
