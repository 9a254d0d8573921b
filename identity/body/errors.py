"""Typed errors of body matching (same base and mapping as ``identity.errors``)."""

from __future__ import annotations

from identity.errors import IdentityError


class NoPersonFound(IdentityError):
    """No person box given and the person detector found none."""

    code = "no_person_found"
    http_status = 422
