"""A collection's face models: which one decides, how far another one covers it, the switch
between them and dropping the templates of one no longer used (docs/model-migration.md).

Templates are tagged by model and each (collection, model) has its own index, so templates of
a second model can be written beside the active one's (``services.gallery.migrate``) while
decisions go on with the active one; the switch is one row update.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session, aliased

from identity.errors import CalibrationError, InvalidInput, ModelError
from services.errors import ActiveModel, MigrationIncomplete
from services.sealed import CROP
from services.store.core import StoreCore
from services.tables import FaceTemplate


def check_face_model(name: str) -> str:
    """``name`` if it is a face recognition model of the registry, else InvalidInput (422)."""
    from identity.registry import load_manifests

    manifests = load_manifests()
    found = manifests.get(name) if isinstance(name, str) else None
    if found is not None and found.task == "recognition":
        return name
    known = sorted(n for n, m in manifests.items() if m.task == "recognition")
    raise InvalidInput(f"'{name}' is not a face recognition model", model=name, known=known)


def uncovered(collection_id: int, source: str, target: str) -> Select[FaceTemplate]:
    """Templates of ``source`` with no ``target`` twin (same identity, same photo), id order: what
    a migration still has to do, and what a switch would leave unrecognised."""
    twin = aliased(FaceTemplate)
    return (
        select(FaceTemplate)
        .outerjoin(
            twin,
            and_(
                twin.identity_id == FaceTemplate.identity_id,
                twin.source_sha256 == FaceTemplate.source_sha256,
                twin.model_name == target,
            ),
        )
        .where(
            FaceTemplate.collection_id == collection_id,
            FaceTemplate.model_name == source,
            twin.id.is_(None),
        )
        .order_by(FaceTemplate.id)
    )


def uncovered_count(s: Session, collection_id: int, source: str, target: str) -> int:
    query = uncovered(collection_id, source, target).subquery()
    return int(s.execute(select(func.count()).select_from(query)).scalar_one())


class FaceModelsMixin(StoreCore):
    """Per collection: the active face model, the others' coverage, switch and drop."""

    def calibration_problem(self, model: str) -> str | None:
        """Why decisions with ``model`` cannot be made at the policy FAR, or None."""
        from identity.calibration import decision_threshold

        try:
            decision_threshold(model, self.settings, detector=self.detector_name)
        except (CalibrationError, ModelError) as exc:
            return exc.message
        return None

    def face_models(self, collection: str) -> dict[str, Any]:
        """The active model and, per model with templates, how many there are, how many keep a
        source crop, and how many of the active model's templates it does not cover yet."""
        with self.read(collection) as (s, c):
            active = self.face_model(c)
            rows = s.execute(
                select(
                    FaceTemplate.model_name,
                    func.count(),
                    func.count(func.distinct(FaceTemplate.identity_id)),
                    func.count(FaceTemplate.crop),
                )
                .where(FaceTemplate.collection_id == c.id)
                .group_by(FaceTemplate.model_name)
            ).all()
            counts = {m: (n, ids, crops) for m, n, ids, crops in rows}
            models = sorted(set(counts) | {active}, key=lambda m: (m != active, m))
            out = []
            for m in models:
                n, ids, crops = counts.get(m, (0, 0, 0))
                out.append(
                    {
                        "model": m,
                        "active": m == active,
                        "templates": n,
                        "identities": ids,
                        "with_crop": crops,
                        "uncovered": 0 if m == active else uncovered_count(s, c.id, active, m),
                        "calibration_problem": self.calibration_problem(m),
                    }
                )
        return {
            "collection": collection,
            "active": active,
            "pinned": c.face_model is not None,
            "service_default": self.model_name,
            "keep_face_crops": self.settings.keep_face_crops,
            "models": out,
        }

    def switch_model(
        self, collection: str, model: str, force: bool = False, actor: int | None = None
    ) -> dict[str, Any]:
        """Make ``model`` the collection's active face model in one step.

        Refused (409 ``migration_incomplete``) while the active model has templates ``model``
        does not cover (a migration still running, or enrolments since it ended: run it again,
        it resumes), unless ``force`` (those identities then cannot be recognised until they
        are covered); refused (422) when ``model`` has no calibration at the policy FAR.
        """
        model = check_face_model(model)
        problem = self.calibration_problem(model)
        if problem is not None:
            raise CalibrationError(
                f"cannot switch to {model}: {problem}", model=model, collection=collection
            )
        with self.write(collection, actor) as w:
            s, c = w.session, w.collection
            before = self.face_model(c)
            missing = 0 if model == before else uncovered_count(s, c.id, before, model)
            if missing and not force:
                raise MigrationIncomplete(
                    f"{missing} templates of {before} have no {model} template yet: run "
                    f"`identity templates migrate -c {collection} --to {model}` again (it "
                    "resumes), or force the switch",
                    uncovered=missing,
                    active=before,
                    model=model,
                )
            c.face_model = model
            w.audit(
                "model.switch", "ok", model=model, previous=before, uncovered=missing, force=force
            )
            cid = c.id
        self.indexes.catch_up(cid, model)  # the first decision needs no rebuild
        return {"collection": collection, "active": model, "previous": before, "uncovered": missing}

    def drop_model(self, collection: str, model: str, actor: int | None = None) -> dict[str, Any]:
        """Delete every template of ``model`` in the collection (files, index entries, then the
        erasure's VACUUM); the active model's templates are refused (409 ``active_model``)."""
        with self.write(collection, actor) as w:
            s, c = w.session, w.collection
            if model == self.face_model(c):
                raise ActiveModel(
                    f"{model} is the active model of '{collection}': switch first",
                    model=model,
                )
            rows = s.execute(
                select(FaceTemplate.id, FaceTemplate.thumbnail, FaceTemplate.crop).where(
                    FaceTemplate.collection_id == c.id, FaceTemplate.model_name == model
                )
            ).all()
            for tid, thumb, crop in rows:
                w.template_removed(tid, model, thumb, crop)
            s.execute(
                FaceTemplate.__table__.delete().where(  # type: ignore[attr-defined]
                    FaceTemplate.collection_id == c.id, FaceTemplate.model_name == model
                )
            )
            w.audit("model.drop", "ok", model=model, templates=len(rows))
        return {"collection": collection, "model": model, "dropped": len(rows)}

    # what a migration reads (services/gallery/migrate.py) ------------------------------------
    def crop_jpeg(self, collection_id: int, name: str) -> bytes:
        """A template's source crop, unsealed; OSError when the file is gone."""
        return self.sealer.open(self._thumb_path(collection_id, name).read_bytes(), CROP)

    def migrated_pairs(
        self, collection_id: int, source: str, target: str
    ) -> tuple[list[tuple[int, uuid.UUID, int]], np.ndarray, np.ndarray]:
        """Every (old template id, identity id, new template id) of ``target`` templates
        re-embedded from ``source`` ones, with both embeddings ((n, dim) each), in old-id order."""
        new, old = aliased(FaceTemplate), aliased(FaceTemplate)
        with self.sessions() as s:
            rows = s.execute(
                select(
                    old.id,
                    old.identity_id,
                    new.id,
                    old.dim,
                    old.embedding,
                    old.key_id,
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
            empty = np.zeros((0, 0), np.float32)
            return [], empty, empty
        seal = self.sealer
        return (
            [(r[0], r[1], r[2]) for r in rows],
            np.stack([seal.embedding(r[4], r[5], r[3]) for r in rows]),
            np.stack([seal.embedding(r[7], r[8], r[6]) for r in rows]),
        )
