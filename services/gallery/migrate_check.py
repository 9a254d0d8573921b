"""The migration report's review list: photos on which the target model decides otherwise.

Each migrated template is the photo of a known person. Asked as a 1:N probe against the rest
of its collection (itself left out), each model makes a decision at its own calibrated policy
threshold: the best other template's identity when it clears the threshold, else nobody. Where
the two models' decisions differ (a person found by one only, or found as someone else), the
photo goes on the list an operator reviews before switching.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import aliased

from identity.errors import CalibrationError
from services.store import IdentityStore
from services.tables import FaceTemplate, IdentityRow

_CHUNK = 1024  # probes per index search
_K = 5


def _decisions(
    store: IdentityStore,
    collection_id: int,
    model: str,
    queries: np.ndarray,
    own_ids: list[int],
    threshold: float,
) -> list[tuple[int, float] | None]:
    """Per probe: (best other template id, similarity) when it clears ``threshold``, else None."""
    out: list[tuple[int, float] | None] = []
    for start in range(0, len(queries), _CHUNK):
        sims, tids = store.indexes.search(collection_id, model, queries[start : start + _CHUNK], _K)
        for row, own in enumerate(own_ids[start : start + _CHUNK]):
            best = next(
                (
                    (int(t), float(sv))
                    for t, sv in zip(tids[row], sims[row], strict=False)
                    if t >= 0 and int(t) != own
                ),
                None,
            )
            out.append(best if best is not None and best[1] >= threshold else None)
    return out


def decision_changes(
    store: IdentityStore, collection_id: int, source: str, target: str, limit: int
) -> tuple[int, int, list[dict[str, Any]], str | None]:
    """(photos compared, decisions changed, the first ``limit`` changes, a note or None)."""
    new, old = aliased(FaceTemplate), aliased(FaceTemplate)
    with store.sessions() as s:
        rows = s.execute(
            select(
                old.id,
                old.identity_id,
                old.dim,
                old.embedding,
                old.key_id,
                new.id,
                new.dim,
                new.embedding,
                new.key_id,
            )
            .join(new, new.migrated_from == old.id)
            .where(
                new.collection_id == collection_id,
                new.model_name == target,
                old.model_name == source,
            )
            .order_by(old.id)
        ).all()
    if not rows:
        return 0, 0, [], None
    try:
        thr_source = store.threshold(None, None, source)[0]
        thr_target = store.threshold(None, None, target)[0]
    except CalibrationError as exc:
        return 0, 0, [], f"decisions not compared: {exc.message}"
    seal = store.sealer
    q_old = np.stack([seal.embedding(r[3], r[4], r[2]) for r in rows])
    q_new = np.stack([seal.embedding(r[7], r[8], r[6]) for r in rows])
    before = _decisions(store, collection_id, source, q_old, [r[0] for r in rows], thr_source)
    after = _decisions(store, collection_id, target, q_new, [r[5] for r in rows], thr_target)
    hits = {d[0] for d in before + after if d is not None}
    with store.sessions() as s:
        owner = {
            tid: (iid, ext)
            for tid, iid, ext in s.execute(
                select(FaceTemplate.id, IdentityRow.id, IdentityRow.external_id)
                .join(IdentityRow, IdentityRow.id == FaceTemplate.identity_id)
                .where(FaceTemplate.id.in_(hits | {r[0] for r in rows}))
            ).all()
        }

    def who(d: tuple[int, float] | None) -> tuple[uuid.UUID | None, dict[str, Any]]:
        if d is None or d[0] not in owner:
            return None, {"identity_id": None, "external_id": None, "similarity": None}
        iid, ext = owner[d[0]]
        return iid, {"identity_id": str(iid), "external_id": ext, "similarity": round(d[1], 4)}

    changes: list[dict[str, Any]] = []
    changed = 0
    for r, b, a in zip(rows, before, after, strict=True):
        (id_b, said_b), (id_a, said_a) = who(b), who(a)
        if id_b == id_a:
            continue
        changed += 1
        if len(changes) < limit:
            changes.append(
                {
                    "template_id": r[0],
                    "identity_id": str(r[1]),
                    "external_id": owner.get(r[0], (None, None))[1],
                    "source": said_b,
                    "target": said_a,
                }
            )
    return len(rows), changed, changes, None
