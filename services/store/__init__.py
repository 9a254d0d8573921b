"""The identity store: the service layer's Python API (no HTTP needed).

Routes, the admin dashboard, the batch gallery indexer and the CLI all call these methods on one
``IdentityStore``. Every write is one Postgres transaction; the indexes (faces: the configured
vector store; bodies: an ``IndexRegistry`` of kind "body") are brought up to date right after the
commit, from the ``index_changes`` log the transaction
wrote. Errors are ``identity.errors`` types (NotFound, Conflict, InvalidInput, NoFaceFound...),
which the HTTP layer maps once.

The methods live by resource, one module each: ``core`` (construction, ``read``/``write``
transactions, locks, audit), ``write`` (``CollectionWrite``, ``NewTemplate``), ``collections``, ``identities``,
``enrollment`` (images and analysed faces, thumbnails), ``decisions`` (verify, identify, the
threshold), ``bodies`` (body template rows and the reads of 1:N by body), ``liveness`` (a
collection's policy and its gate), ``face_models`` (the active face model, switch and drop), ``quality_report`` (the
enrollment gate re-run on stored templates) and
``housekeeping`` (audit log, the indexes' life cycle,
index status, reindex, sweeps). ``IdentityStore`` composes them, so callers see one object.

Decisions use ``identity.calibration.decision_threshold``: the policy (``default_far``) or a
stricter FAR/threshold asked for; a looser one is refused (``LooserThanPolicy``, 422).
Every method takes ``actor`` (the API key id, or None for the CLI) for the audit log.
"""

from __future__ import annotations

from identity.choice import face_summary
from services.store.bodies import BodiesMixin
from services.store.collections import CollectionsMixin
from services.store.core import COLLECTION_NAME, MAX_TOP_K, sha256_hex
from services.store.decisions import DecisionsMixin
from services.store.enrollment import EnrollmentMixin
from services.store.face_models import FaceModelsMixin
from services.store.housekeeping import HousekeepingMixin
from services.store.identities import IdentitiesMixin
from services.store.quality_report import QualityReportMixin
from services.store.write import CollectionWrite, NewTemplate

__all__ = [
    "COLLECTION_NAME",
    "MAX_TOP_K",
    "CollectionWrite",
    "IdentityStore",
    "NewTemplate",
    "face_summary",
    "sha256_hex",
]


class IdentityStore(
    CollectionsMixin,
    IdentitiesMixin,
    EnrollmentMixin,
    DecisionsMixin,
    FaceModelsMixin,
    QualityReportMixin,
    BodiesMixin,
    HousekeepingMixin,
):
    """Postgres-backed identities and templates plus their FAISS indexes (see module docstring)."""
