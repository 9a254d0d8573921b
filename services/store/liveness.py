"""A collection's liveness policy and the gate that enforces it (enrollment and decisions)."""

from __future__ import annotations

import uuid
from typing import Any

from identity.faces import Faces
from services.liveness import audit_fields, refusal, verdicts
from services.store.core import StoreCore


class LivenessMixin(StoreCore):
    """The liveness policy of a collection and its audited refusals."""

    def liveness_policy(self, name: str) -> str:
        with self.sessions() as s:
            return self._collection(s, name).liveness_policy

    def _liveness_gate(
        self,
        faces: Faces,
        policy: str,
        action: str,
        actor: int | None,
        collection: str,
        identity_id: uuid.UUID | None = None,
    ) -> list[dict[str, Any]]:
        """Verdicts for ``faces`` (analysed with liveness); a ``require`` refusal is audited
        (outcome ``presentation_attack`` or ``liveness_undetermined``) and raised."""
        found = verdicts(faces, policy, self.settings)
        for v in found:
            err = refusal(v)
            if err is not None:
                self.audit(
                    actor,
                    action,
                    err.code,
                    collection=collection,
                    identity_id=identity_id,
                    **audit_fields(v),
                )
                raise err
        return found
