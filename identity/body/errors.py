"""Typed errors of body matching (same base and mapping as ``identity.errors``)."""

from __future__ import annotations

from identity.errors import IdentityError, InvalidInput


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
