"""Body templates beside face templates: enroll person crops, identify by body, fuse with faces.

Same identities as faces (an identity may have face templates, body templates or both); body
templates live in ``body_templates`` (migration 0201_body) and are searched through their own
FAISS index per (collection, body model).

Index: the store's ``body_indexes``, an ``IndexRegistry`` of kind "body" kept fresh exactly as the
face indexes are (``services.indexes``: change log replayed by seq, sealed snapshots, purge on
erasure). It is FAISS even when faces use Milvus (``IDENTITY_VECTOR_STORE=milvus``): body
galleries are small, and one freshness path serves both.

Fusion (``services.fusion``): a face inside the person box is scored too, and the two
calibrated margins are mixed. An identity's score in a modality is its best template's
similarity, computed exactly from Postgres for every candidate that either index returned, so an
identity absent from one top-k list is not favoured.

The tables and indexes are the store's (``services.store.bodies``): this module decodes,
analyses, and decides.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from identity.body import Bodies, BodyAnalyzer
from identity.body.rerank import RerankParams
from identity.errors import BadImage, CalibrationError, InvalidInput, NoPersonFound
from identity.faces import Faces
from identity.image import decode_image
from services.errors import DuplicateImage
from services.fusion import BODY_WEIGHT, FACE_WEIGHT, fuse, margin
from services.store import MAX_TOP_K, IdentityStore

# k-reciprocal re-ranking of a body shortlist: the setting bench/reid.py chose on cuhk01's
# train half (docs/body.md)
BODY_RERANK = RerankParams(k1=3, k2=1, lambda_value=0.3)


def _source_sha256(data: bytes, bbox: Sequence[float] | None) -> str:
    h = hashlib.sha256(data)
    h.update(json.dumps(None if bbox is None else [round(float(v), 1) for v in bbox]).encode())
    return h.hexdigest()


def _person(bodies: Bodies, i: int = 0) -> dict[str, Any]:
    return {
        "bbox": [round(float(v), 2) for v in bodies.boxes[i]],
        "det_score": round(float(bodies.scores[i]), 4),
    }


class BodyStore:
    """Body enrollment and identification on top of an ``IdentityStore`` (same DB, identities)."""

    def __init__(
        self,
        store: IdentityStore,
        analyzer: BodyAnalyzer | None = None,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self.analyzer = analyzer or BodyAnalyzer(store.settings)

    @property
    def model_name(self) -> str:
        return self.analyzer.embedder_name

    def _decode(self, data: bytes, what: str) -> np.ndarray:
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise BadImage(f"{what} image is empty")
        return decode_image(bytes(data), self.settings)

    def body_threshold(
        self, far: float | None, threshold: float | None, model: str | None = None
    ) -> tuple[float, float | None]:
        """The policy's body threshold or a stricter one (``decision_threshold``); below 1, as
        the fusion margin divides by ``1 - threshold``."""
        from identity.calibration import decision_threshold

        if threshold is not None and threshold >= 1.0:
            raise InvalidInput("threshold is a cosine similarity in [-1, 1)", threshold=threshold)
        return decision_threshold(model or self.model_name, self.settings, far, threshold)

    def _body_models(self, collection_id: int) -> list[str]:
        """The configured body model first, then every other model that has templates here:
        templates enrolled before a model change stay searchable with the model that made them
        (the source images are not kept, so they cannot be re-embedded)."""
        return self.store.body_models(collection_id, self.model_name)

    def _reranked(
        self, collection_id: int, model: str, query: np.ndarray, template_ids: np.ndarray
    ) -> dict[uuid.UUID, float]:
        """Each shortlisted identity's best k-reciprocal re-ranked similarity (Zhong et al. 2017)
        to the query, over the shortlist's own templates (the gallery-gallery neighbourhoods)."""
        from identity.body.rerank import k_reciprocal_rerank

        wanted = [int(t) for t in template_ids if t >= 0]
        if not wanted:
            return {}
        owners, g = self.store.template_vectors("body", collection_id, model, wanted)
        if not owners:
            return {}
        q = query[None, :].astype(np.float32)
        sims = k_reciprocal_rerank(q @ g.T, q @ q.T, g @ g.T, BODY_RERANK)[0]
        best: dict[uuid.UUID, float] = {}
        for iid, sim in zip(owners, sims, strict=True):
            best[iid] = max(best.get(iid, -2.0), float(sim))
        return best

    def _probe(self, image: np.ndarray, person: Bodies, model: str) -> np.ndarray:
        """The probe person's (1, D) embedding by ``model`` (the configured one is already done)."""
        if model == self.model_name:
            assert person.embeddings is not None
            return person.embeddings
        other = BodyAnalyzer(self.settings, self.analyzer.detector_name, model)
        return other.analyze([image], Bodies.from_boxes(person.boxes[:1])).embeddings  # type: ignore[return-value]

    # enrollment -----------------------------------------------------------------------------
    def enroll_images(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        images: Sequence[tuple[str, bytes]],
        bbox: Sequence[float] | None = None,
        actor: int | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Enroll the person in each image (``bbox`` if given, else the largest detected person).

        Each image is accepted or rejected with a code; an unknown collection or identity is a
        NotFound for the whole request.
        """
        if not images:
            raise InvalidInput("no images given")
        identity_id = self.store.require_identity(collection, identity_id)  # UUID or external id
        accepted, rejected = [], []
        for filename, data in images:
            try:
                image = self._decode(data, filename or "uploaded")
                bodies = self.analyzer.analyze_one(image, bbox)
                tid = self._insert(
                    collection, identity_id, bodies, _source_sha256(data, bbox), actor
                )
                accepted.append({"filename": filename, "template_id": tid, **_person(bodies)})
            except (BadImage, NoPersonFound, InvalidInput, DuplicateImage) as exc:
                rejected.append({"filename": filename, "code": exc.code, "message": exc.message})
        return {"accepted": accepted, "rejected": rejected}

    def _insert(
        self,
        collection: str,
        identity_id: uuid.UUID | str,
        bodies: Bodies,
        sha: str,
        actor: int | None,
    ) -> int:
        assert bodies.embeddings is not None
        from identity.registry import get_manifest

        return self.store.add_body_template(
            collection,
            identity_id,
            self.model_name,
            get_manifest(self.model_name).version,
            bodies.embeddings[0],
            det_score=float(bodies.scores[0]),
            bbox=[round(float(v), 2) for v in bodies.boxes[0]],
            source_sha256=sha,
            actor=actor,
        )

    # identification -------------------------------------------------------------------------
    def _face_in_person(
        self, image: np.ndarray, person_box: np.ndarray, face_model: str
    ) -> Faces | None:
        """The largest face whose centre lies inside the person box, with embeddings of
        ``face_model``, or None."""
        faces = self.store.detect_faces(image, face_model)
        if not len(faces) or faces.embeddings is None:
            return None
        centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
        x1, y1, x2, y2 = person_box
        inside = (
            (centres[:, 0] >= x1)
            & (centres[:, 0] <= x2)
            & (centres[:, 1] >= y1)
            & (centres[:, 1] <= y2)
        )
        return faces[inside].largest() if inside.any() else None

    def identify(
        self,
        collection: str,
        probe: bytes,
        bbox: Sequence[float] | None = None,
        top_k: int = 5,
        far: float | None = None,
        threshold: float | None = None,
        use_face: bool = True,
        actor: int | None = None,
        rerank: bool | None = None,
        matches_only: bool = False,
    ) -> dict[str, Any]:
        """1:N by body, fused with the face inside the person box when there is one.

        ``rerank`` (default ``Settings.body_rerank``) orders the body-only candidates by
        k-reciprocal re-ranking over the shortlist's templates (``_reranked``); the match
        decision stays the calibrated cosine threshold. ``matches_only`` drops non-matching
        candidates (verify-scoped keys, as ``IdentityStore.identify``)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be 1-{MAX_TOP_K}", top_k=top_k)
        self.store.collection_id(collection)  # an unknown collection before any model runs
        image = self._decode(probe, "probe")
        person = self.analyzer.analyze_one(image, bbox)
        return self.identify_person(
            collection, image, person, top_k, far, threshold, use_face, actor, rerank, matches_only
        )

    def identify_crops(
        self,
        collection: str,
        crops: np.ndarray,
        top_k: int = 5,
        far: float | None = None,
        threshold: float | None = None,
        actor: int | None = None,
    ) -> dict[str, Any]:
        """1:N by body for one tracked person (``identity watch --bodies``): the mean embedding
        of its (N, H, W, 3) crops, body only (a watched face is the face watch's job)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or not len(crops):
            raise InvalidInput("identify_crops needs (N, H, W, 3) person crops")
        h, w = crops.shape[1:3]
        whole = Bodies.from_boxes(np.tile([0.0, 0.0, w, h], (len(crops), 1)), range(len(crops)))
        seen = self.analyzer.analyze(list(crops), whole)
        assert seen.embeddings is not None
        mean = seen.embeddings.mean(axis=0)
        person = whole[:1].with_(
            embeddings=(mean / max(float(np.linalg.norm(mean)), 1e-9))[None].astype(np.float32)
        )
        return self.identify_person(
            collection, crops[0], person, top_k, far, threshold, use_face=False, actor=actor
        )

    def identify_person(
        self,
        collection: str,
        image: np.ndarray,
        person: Bodies,
        top_k: int = 5,
        far: float | None = None,
        threshold: float | None = None,
        use_face: bool = True,
        actor: int | None = None,
        rerank: bool | None = None,
        matches_only: bool = False,
    ) -> dict[str, Any]:
        """``identify`` for a person already embedded by the configured model: ``person`` (its
        box in ``image``, which other body models and the face detector read)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be 1-{MAX_TOP_K}", top_k=top_k)
        cid = self.store.collection_id(collection)
        face_model = self.store.model_of(collection)
        body_thr, far_used = self.body_threshold(far, threshold)
        k = max(top_k * 5, 20)
        # per body model: (probe embedding, threshold); candidates from each model's index
        probes: dict[str, tuple[np.ndarray, float]] = {}
        candidates: set[uuid.UUID] = set()
        order: dict[uuid.UUID, float] = {}
        models = self._body_models(cid)
        for model in models:
            q = self._probe(image, person, model)
            probes[model] = (q[0], self.body_threshold(far, threshold, model)[0])
            _, tids = self.store.search_templates("body", cid, model, q, k)
            candidates |= self.store.template_owners("body", tids)
            # re-ranking needs one embedding space: not with older models' templates around
            if len(models) == 1 and (self.settings.body_rerank if rerank is None else rerank):
                order = self._reranked(cid, model, q[0], tids[0])

        face_info: dict[str, Any] | None = None
        face_thr: float | None = None
        q_face = None
        if use_face:
            faces = self._face_in_person(image, person.boxes[0], face_model)
            if faces is not None:
                face_info = {
                    "bbox": [round(float(v), 2) for v in faces.boxes[0]],
                    "det_score": round(float(faces.scores[0]), 4),
                }
                try:
                    face_thr, _ = self.store.threshold(far, None, face_model)
                except CalibrationError as exc:  # no calibrated face threshold: body only
                    face_info["skipped"] = exc.message
                else:
                    assert faces.embeddings is not None  # _face_in_person checked it
                    q_face = faces.embeddings[0]
                    _, face_tids = self.store.search_templates(
                        "face", cid, face_model, faces.embeddings, k
                    )
                    candidates |= self.store.template_owners("face", face_tids)

        # each identity's body score: its best template's margin over that model's threshold
        body_best: dict[uuid.UUID, tuple[float, int, str, float]] = {}
        for model, (q, thr) in probes.items():
            for iid, (sim, tid) in self.store.best_template_per_identity(
                "body", model, candidates, q
            ).items():
                if iid not in body_best or margin(sim, thr) > margin(
                    body_best[iid][0], body_best[iid][3]
                ):
                    body_best[iid] = (sim, tid, model, thr)
        face_best = (
            self.store.best_template_per_identity("face", face_model, candidates, q_face)
            if q_face is not None
            else {}
        )
        names = self.store.identity_names(candidates)
        rows = []
        for iid in candidates:
            if iid not in names:
                continue  # erased between the search and now
            b = body_best.get(iid)
            f = face_best.get(iid)
            score = fuse(
                None if f is None or face_thr is None else (f[0], face_thr),
                None if b is None else (b[0], b[3]),
            )
            if score is None:
                continue
            rows.append(
                {
                    "identity_id": str(iid),
                    "external_id": names[iid][0],
                    "display_name": names[iid][1],
                    "body_similarity": None if b is None else round(b[0], 6),
                    "body_template_id": None if b is None else b[1],
                    "body_model": None if b is None else b[2],
                    "face_similarity": None if f is None else round(f[0], 6),
                    "face_template_id": None if f is None else f[1],
                    "fused_score": round(score, 6),
                    "match": bool(score >= 0),
                }
            )
        if order and q_face is None:  # re-ranking orders body-only evidence
            rows.sort(
                key=lambda r: (
                    -order.get(uuid.UUID(str(r["identity_id"])), -2.0),
                    str(r["identity_id"]),
                )
            )
        else:
            rows.sort(key=lambda r: (-cast(float, r["fused_score"]), str(r["identity_id"])))
        rows = rows[:top_k]
        self.store.audit(
            actor,
            "identify_body",
            "match" if rows and rows[0]["match"] else "no_match",
            collection=collection,
            best=rows[0]["fused_score"] if rows else None,
            fused_with_face=q_face is not None,
        )
        if matches_only:
            rows = [r for r in rows if r["match"]]
        return {
            "person": _person(person),
            "face": face_info,
            "candidates": rows,
            "body_model": self.model_name,
            "body_threshold": round(body_thr, 6),
            "reranked": bool(order) and q_face is None,
            "face_model": face_model if q_face is not None else None,
            "face_threshold": None if face_thr is None or q_face is None else round(face_thr, 6),
            "far": far_used,
            "fusion": {
                "face_weight": FACE_WEIGHT,
                "body_weight": BODY_WEIGHT,
                "rule": "weighted mean of (similarity - threshold) / (1 - threshold)",
            },
        }


__all__ = ["BODY_WEIGHT", "FACE_WEIGHT", "BodyStore", "fuse", "margin"]
