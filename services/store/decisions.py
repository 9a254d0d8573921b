"""Decisions: verify (1:1), identify (1:N) and the calibrated threshold they use."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy import select

from identity.choice import face_summary
from identity.errors import BadImage, InvalidInput, MultipleFaces, NoFaceFound
from identity.faces import Faces
from services.errors import NoTemplates
from services.liveness import audit_fields, wanted
from services.metrics import record_stages, timed_stage
from services.store.core import MAX_TOP_K
from services.store.liveness import LivenessMixin
from services.tables import FaceTemplate, IdentityRow


class DecisionsMixin(LivenessMixin):
    """1:1 and 1:N decisions at the policy's threshold (or a stricter one asked for)."""

    def threshold(
        self, far: float | None, threshold: float | None, model: str | None = None
    ) -> tuple[float, float | None]:
        """(threshold, far) of the policy or a stricter one asked for (``decision_threshold``),
        for ``model`` (default: the service's embedder)."""
        from identity.calibration import decision_threshold

        return decision_threshold(
            model or self.model_name, self.settings, far, threshold, self.detector_name
        )

    def calibration_evidence(
        self, far: float | None, model: str | None = None
    ) -> dict[str, Any] | None:
        """Which calibration a decision at ``far`` used (None for a caller's own threshold)."""
        if far is None:
            return None
        from identity.calibration import pipeline_calibration

        return pipeline_calibration(
            model or self.model_name, self.settings, self.detector_name
        ).evidence(far)

    def _deciding(self, quality: Iterable[float | None]) -> np.ndarray:
        """Mask of one identity's templates that decide (``template_quality_policy``)."""
        from identity.quality import deciding_templates

        return deciding_templates(
            list(quality), self.settings.enroll_min_quality, self.settings.template_quality_policy
        )

    def _probe(self, data: bytes, model: str, what: str = "probe", liveness: bool = False) -> Faces:
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise BadImage(f"{what} image is empty")
        analyzer = self.analyzer_for(model)
        faces = analyzer.analyze_bytes(bytes(data), liveness=liveness).faces
        record_stages(faces.timings)
        if not len(faces):
            raise NoFaceFound(f"no face found in the {what} image")
        return faces

    def verify(
        self,
        collection: str,
        probe: bytes,
        identity_id: uuid.UUID | str | None = None,
        other: bytes | None = None,
        far: float | None = None,
        threshold: float | None = None,
        actor: int | None = None,
        single_face: bool = False,
        liveness: bool = False,
    ) -> dict[str, Any]:
        """1:1: a claim about an identity checks every face of the probe against every template
        (the best face answers, so a group photo does not silently compare the wrong person);
        ``single_face`` refuses a probe with several faces instead. Against ``other``, the two
        images' largest faces are compared.

        The liveness of the face that answers is checked per the collection's policy (or the
        ``liveness`` opt-in) before the decision is made or audited.
        """
        if (identity_id is None) == (other is None):
            raise InvalidInput("give exactly one of identity_id or a second image")
        with self.sessions() as s:
            c = self._collection(s, collection)
            model = self.face_model(c)
            thr, far_used = self.threshold(far, threshold, model)
            policy = c.liveness_policy
            if identity_id is not None:
                row = self._identity(s, c, identity_id)
                templates = s.execute(
                    select(
                        FaceTemplate.id,
                        FaceTemplate.dim,
                        FaceTemplate.embedding,
                        FaceTemplate.key_id,
                        FaceTemplate.quality,
                    ).where(
                        FaceTemplate.identity_id == row.id,
                        FaceTemplate.model_name == model,
                    )
                ).all()
                if not templates:
                    raise NoTemplates(
                        f"identity '{row.id}' has no enrolled faces for model {model}"
                    )
                deciding = self._deciding(t[4] for t in templates)
                ignored = [int(t[0]) for t, k in zip(templates, deciding, strict=True) if not k]
                templates = [t for t, k in zip(templates, deciding, strict=True) if k]
        live_check = wanted(policy, liveness)
        probe_faces = self._probe(
            probe, model, liveness=live_check
        ).sorted_by_area()  # face 0 is the largest
        if single_face and len(probe_faces) > 1:
            raise MultipleFaces(
                f"the probe holds {len(probe_faces)} faces and one was required",
                faces=len(probe_faces),
            )
        out: dict[str, Any] = {"faces_in_probe": len(probe_faces)}
        if identity_id is not None:
            gallery = np.stack([self.sealer.embedding(t[2], t[3], t[1]) for t in templates])
            sims = probe_faces.embeddings @ gallery.T  # (faces, templates)
            face, best = (int(v) for v in np.unravel_index(int(np.argmax(sims)), sims.shape))
            similarity = float(sims[face, best])
            out.update(
                identity_id=str(row.id),
                templates_compared=len(templates),
                best_template_id=int(templates[best][0]),
                template_policy=self.settings.template_quality_policy,
                compared_template_ids=[int(t[0]) for t in templates],
                ignored_template_ids=ignored,
            )
        else:
            face = 0
            other_faces = self._probe(other, model, "second").largest()  # type: ignore[arg-type]
            assert other_faces.embeddings is not None and probe_faces.embeddings is not None
            similarity = float(other_faces.embeddings[0] @ probe_faces.embeddings[0])
            out["other_face"] = face_summary(other_faces, 0)
        if live_check:
            (out["liveness"],) = self._liveness_gate(
                probe_faces[int(face)],
                policy,
                "verify",
                actor,
                collection,
                None if identity_id is None else row.id,
            )
        match = similarity >= thr
        self.audit(
            actor,
            "verify",
            "match" if match else "no_match",
            collection=collection,
            identity_id=None if identity_id is None else row.id,
            similarity=round(similarity, 4),
            threshold=round(thr, 4),
            **(audit_fields(out["liveness"]) if "liveness" in out else {}),
        )
        return {
            "similarity": round(similarity, 6),
            "threshold": round(thr, 6),
            "far": far_used,
            "calibration": self.calibration_evidence(far_used, model),
            "match": bool(match),
            "model": model,
            "probe_face": face_summary(probe_faces, int(face)),
            "probe_face_index": int(face),
            **out,
        }

    def identify(
        self,
        collection: str,
        probe: bytes,
        top_k: int = 5,
        far: float | None = None,
        threshold: float | None = None,
        all_faces: bool = False,
        actor: int | None = None,
        liveness: bool = False,
        matches_only: bool = False,
    ) -> dict[str, Any]:
        """1:N: the largest face (or every face) of a probe image against the collection.

        Under a ``require`` policy every face searched must be judged live.
        """
        with self.sessions() as s:
            c = self._collection(s, collection)
            cid, policy, model = c.id, c.liveness_policy, self.face_model(c)
        live_check = wanted(policy, liveness)
        faces = self._probe(probe, model, liveness=live_check)
        faces = faces.sorted_by_area() if all_faces else faces.largest()
        if not live_check:
            return self.identify_faces(
                collection,
                faces,
                top_k,
                far,
                threshold,
                actor,
                cid,
                matches_only=matches_only,
                model=model,
            )
        found = self._liveness_gate(faces, policy, "identify", actor, collection)
        result = self.identify_faces(
            collection,
            faces,
            top_k,
            far,
            threshold,
            actor,
            cid,
            audit_extra={"liveness": [audit_fields(v)["liveness"] for v in found]},
            matches_only=matches_only,
            model=model,
        )
        for face, verdict in zip(result["faces"], found, strict=True):
            face["liveness"] = verdict
        return result

    def identify_faces(
        self,
        collection: str,
        faces: Faces,
        top_k: int = 5,
        far: float | None = None,
        threshold: float | None = None,
        actor: int | None = None,
        collection_id: int | None = None,
        audit_extra: dict[str, Any] | None = None,
        matches_only: bool = False,
        model: str | None = None,
    ) -> dict[str, Any]:
        """1:N for analysed faces (embedded with ``model``, default the collection's). ``matches_only`` drops the candidates below the threshold:
        a verify-scoped key learns who matched, never who came close (the names of near
        misses would let it enumerate the collection)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be 1-{MAX_TOP_K}", top_k=top_k)
        if faces.embeddings is None:
            raise InvalidInput("identify_faces needs faces with embeddings")
        if collection_id is None or model is None:
            with self.sessions() as s:
                c = self._collection(s, collection)
                collection_id, model = c.id, model or self.face_model(c)
        cid = collection_id
        thr, far_used = self.threshold(far, threshold, model)
        # Several templates per identity: over-fetch so top_k distinct identities survive.
        k = max(top_k * 5, 20)
        with timed_stage("search"):  # the vector index (FAISS or Milvus): 1:N's own cost
            sims, tids = self.indexes.search(cid, model, faces.embeddings, k)
        wanted = {int(t) for t in tids.ravel() if t >= 0}
        owners: dict[int, tuple[uuid.UUID, str, str]] = {}
        if wanted:
            with self.sessions() as s:
                for tid, iid, ext, name in s.execute(
                    select(
                        FaceTemplate.id,
                        IdentityRow.id,
                        IdentityRow.external_id,
                        IdentityRow.display_name,
                    )
                    .join(IdentityRow, IdentityRow.id == FaceTemplate.identity_id)
                    .where(FaceTemplate.id.in_(wanted))
                ).all():
                    owners[tid] = (iid, ext, name)
        gated = self._gated_scores(model, {o[0] for o in owners.values()}, faces.embeddings)
        results, top = [], []
        for f in range(len(faces)):
            best: dict[uuid.UUID, dict[str, Any]] = {}
            for sim, tid in zip(
                sims[f] if sims.size else [], tids[f] if tids.size else [], strict=False
            ):
                owner = owners.get(int(tid))
                if owner is None or owner[0] in best:
                    continue  # results are sorted, so the first hit per identity is its max
                extra: dict[str, Any] = {}
                if owner[0] in gated:  # below-gate templates ignored: its deciding templates' max
                    g_sims, g_tids, ignored = gated[owner[0]]
                    sim, tid, extra = g_sims[f], g_tids[f], {"ignored_template_ids": ignored}
                best[owner[0]] = {
                    "identity_id": str(owner[0]),
                    "external_id": owner[1],
                    "display_name": owner[2],
                    "similarity": round(float(sim), 6),
                    "template_id": int(tid),
                    "match": bool(float(sim) >= thr),
                    **extra,
                }
            # A gated identity's score may have dropped below the next one's (stable sort).
            candidates = sorted(best.values(), key=lambda c: -c["similarity"])[:top_k]
            top.extend(candidates[:1])  # the audit keeps the best score, shown or not
            if matches_only:
                candidates = [c for c in candidates if c["match"]]
            results.append({**face_summary(faces, f), "candidates": candidates})
        self.audit(
            actor,
            "identify",
            "match" if any(c["match"] for c in top) else "no_match",
            collection=collection,
            faces=len(results),
            best=[round(c["similarity"], 4) for c in top],
            **(audit_extra or {}),
        )
        return {
            "faces": results,
            "threshold": round(thr, 6),
            "far": far_used,
            "calibration": self.calibration_evidence(far_used, model),
            "model": model,
            "template_policy": self.settings.template_quality_policy,
        }

    def _gated_scores(
        self, model: str, identity_ids: set[uuid.UUID], embeddings: np.ndarray
    ) -> dict[uuid.UUID, tuple[np.ndarray, np.ndarray, list[int]]]:
        """Under the ``gate`` template policy, per candidate identity that has templates to
        ignore: (best similarity per probe face, the template giving it, the ignored template
        ids), recomputed from its deciding templates (the index holds every template, and the
        deciding ones may lie beyond the hits it returned)."""
        if self.settings.template_quality_policy != "gate" or not identity_ids:
            return {}
        per_identity: dict[uuid.UUID, list[Any]] = {}
        with self.sessions() as s:
            for t in s.execute(
                select(
                    FaceTemplate.identity_id,
                    FaceTemplate.id,
                    FaceTemplate.quality,
                    FaceTemplate.dim,
                    FaceTemplate.embedding,
                    FaceTemplate.key_id,
                ).where(
                    FaceTemplate.identity_id.in_(identity_ids), FaceTemplate.model_name == model
                )
            ).all():
                per_identity.setdefault(t[0], []).append(t)
        out = {}
        for iid, rows in per_identity.items():
            keep = self._deciding(r[2] for r in rows)
            if keep.all():
                continue
            kept = [r for r, k in zip(rows, keep, strict=True) if k]
            gallery = np.stack([self.sealer.embedding(r[4], r[5], r[3]) for r in kept])
            sims = embeddings @ gallery.T  # (faces, deciding templates)
            best = np.argmax(sims, axis=1)
            out[iid] = (
                sims[np.arange(len(sims)), best],
                np.array([int(kept[b][1]) for b in best]),
                [int(r[1]) for r, k in zip(rows, keep, strict=True) if not k],
            )
        return out
