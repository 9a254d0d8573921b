"""Enrollment that uses quality: which templates decide (IDENTITY_TEMPLATE_QUALITY_POLICY) and
the enrollment gate re-run on a collection's stored templates (store, API, CLI)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import cv2
import pytest
from blurred_face import blurred_face
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from identity.settings import Settings
from services.cli import app as cli
from services.store import IdentityStore

from svc_helpers import TRAIN, assert_problem

KIT1, KIT2 = TRAIN / "kit_harington/john1.jpeg", TRAIN / "kit_harington/john2.jpeg"
OBAMA = TRAIN / "obama/obama.jpg"


@pytest.fixture
def gallery(store: IdentityStore, analyzer: Any) -> dict[str, Any]:
    """kit: one good template and one blurred below the gate; obama: only a blurred one;
    rose: a template enrolled without a stored quality."""
    cid = f"tq-{uuid.uuid4().hex[:8]}"
    store.create_collection(cid)
    out: dict[str, Any] = {"cid": cid}
    for ext in ("kit", "obama", "rose"):
        out[ext] = store.create_identity(cid, ext)["id"]
    (good,) = store.enroll_images(cid, "kit", [(KIT1.name, KIT1.read_bytes())])["accepted"]
    out["kit_good"] = good["template_id"]
    face, digest = blurred_face(KIT2, analyzer)
    assert float(face.quality[0]) < store.settings.enroll_min_quality, face.quality
    (out["kit_blurred"],) = store.enroll_faces(cid, "kit", face, digest)
    face, digest = blurred_face(OBAMA, analyzer)
    (out["obama_blurred"],) = store.enroll_faces(cid, "obama", face, digest)
    rose = analyzer.analyze([cv2.imread(str(TRAIN / "rose_leslie/img1.jpg"))]).largest()
    (out["rose_unknown"],) = store.enroll_faces(cid, "rose", rose.with_(quality=None), "rose-1")
    return out


def _gated(store: IdentityStore, settings: Settings, engine: Any) -> IdentityStore:
    return IdentityStore(settings.model_copy(update={"template_quality_policy": "gate"}), engine)


def test_gate_policy_ignores_templates_below_the_gate_only_when_one_passes(
    store: IdentityStore, settings: Settings, engine: Any, gallery: dict[str, Any]
) -> None:
    cid, probe = gallery["cid"], KIT2.read_bytes()
    every = store.verify(cid, probe, identity_id="kit")
    assert every["template_policy"] == "all" and every["ignored_template_ids"] == []
    assert sorted(every["compared_template_ids"]) == sorted(
        [gallery["kit_good"], gallery["kit_blurred"]]
    )
    gated_store = _gated(store, settings, engine)
    gated = gated_store.verify(cid, probe, identity_id="kit")
    assert gated["template_policy"] == "gate"
    assert gated["compared_template_ids"] == [gallery["kit_good"]]
    assert gated["ignored_template_ids"] == [gallery["kit_blurred"]]
    assert gated["templates_compared"] == 1 and gated["best_template_id"] == gallery["kit_good"]
    # a subset of the templates: the best similarity can only fall (so can the FAR)
    assert gated["similarity"] <= every["similarity"] and gated["match"]
    # obama has no template above the gate: all of his stay, he is still verifiable
    obama = gated_store.verify(cid, OBAMA.read_bytes(), identity_id="obama")
    assert obama["compared_template_ids"] == [gallery["obama_blurred"]]
    assert obama["ignored_template_ids"] == []
    # a template without a stored quality is not known to be below the gate: it decides
    rose = gated_store.verify(cid, probe, identity_id="rose")
    assert rose["compared_template_ids"] == [gallery["rose_unknown"]]

    # identify says the same per candidate: the blurred template neither answers nor ranks
    kit = next(
        c
        for c in gated_store.identify(cid, probe, top_k=3)["faces"][0]["candidates"]
        if c["external_id"] == "kit"
    )
    assert kit["template_id"] == gallery["kit_good"]
    assert kit["ignored_template_ids"] == [gallery["kit_blurred"]]
    assert kit["similarity"] == pytest.approx(gated["similarity"], abs=1e-4)
    plain = store.identify(cid, probe, top_k=3)
    assert plain["template_policy"] == "all"
    assert all("ignored_template_ids" not in c for c in plain["faces"][0]["candidates"])


def test_quality_report_names_who_falls_below_the_gate(
    store: IdentityStore, gallery: dict[str, Any]
) -> None:
    report = store.quality_report(gallery["cid"])
    assert report["min_quality"] == store.settings.enroll_min_quality
    assert report["templates_checked"] == 4 and report["identities_checked"] == 3
    by_ext = {p["external_id"]: p for p in report["identities"]}
    kit = by_ext["kit"]
    assert (kit["templates"], kit["passing"], kit["no_template_passes"]) == (2, 1, False)
    (t,) = kit["below_gate"]
    assert t["template_id"] == gallery["kit_blurred"]
    assert any(r.startswith("low_quality:") for r in t["gate_reasons"])
    assert "blurry" in t["quality_reasons"]
    assert by_ext["obama"]["no_template_passes"] is True
    assert [p["external_id"] for p in report["identities_with_no_template_passing"]] == ["obama"]
    # rose's quality was not stored: named, never guessed, and not a refusal (as in decisions)
    rose = by_ext["rose"]
    assert rose["below_gate"] == [] and rose["passing"] == 1
    assert rose["not_stored"] == [{"template_id": gallery["rose_unknown"], "missing": ["quality"]}]
    assert report["templates_quality_missing"] == 1 and report["templates_below_gate"] == 2
    # a stricter threshold flags more; the report deletes nothing
    faces = [
        f
        for ext in ("kit", "obama", "rose")
        for f in store.get_identity(gallery["cid"], ext)["faces"]
    ]
    strict = store.quality_report(gallery["cid"], min_quality=0.999)
    # every stored quality under 0.999 now; rose's unknown one is still not a refusal
    assert strict["templates_below_gate"] == sum(
        f["quality"] is not None and f["quality"] < 0.999 for f in faces
    )
    assert strict["templates_below_gate"] >= 2
    assert store.get_identity(gallery["cid"], "kit")["templates"] == 2
    with pytest.raises(Exception) as err:
        store.quality_report(gallery["cid"], min_quality=float("nan"))
    assert getattr(err.value, "code", None) == "invalid_input"


def test_quality_report_over_http_and_cli(
    client: TestClient,
    admin: dict,
    settings: Settings,
    gallery: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = gallery["cid"]
    r = client.get(f"/v1/collections/{cid}/quality-report", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["templates_below_gate"] == 2
    r = client.get(f"/v1/collections/{cid}/quality-report?min_quality=0", headers=admin)
    assert r.status_code == 200 and r.json()["min_quality"] == 0.0
    assert_problem(
        client.get(f"/v1/collections/{cid}/quality-report?min_quality=2", headers=admin), 422
    )
    assert_problem(client.get("/v1/collections/nope/quality-report", headers=admin), 404)
    # the identity JSON carries each face's quality and reasons
    faces = client.get(f"/v1/collections/{cid}/identities/kit", headers=admin).json()["faces"]
    blurred = next(f for f in faces if f["id"] == gallery["kit_blurred"])
    assert blurred["quality"] < settings.enroll_min_quality and blurred["quality_reasons"]
    assert blurred["gate_reasons"][0].startswith("low_quality:")
    good = next(f for f in faces if f["id"] == gallery["kit_good"])
    assert good["gate_reasons"] == []

    monkeypatch.setenv("DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("IDENTITY_MODELS_DIR", str(settings.models_dir))
    assert settings.kek is not None
    monkeypatch.setenv("IDENTITY_KEK", settings.kek.get_secret_value())
    result = CliRunner().invoke(cli, ["templates", "gate", "-c", cid, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["templates_below_gate"] == 2
    result = CliRunner().invoke(cli, ["templates", "gate", "-c", cid])
    assert result.exit_code == 0, result.output
    assert "obama (0/1 pass)  NO TEMPLATE PASSES" in result.output
    assert f"face {gallery['kit_blurred']}: low_quality" in result.output
    result = CliRunner().invoke(cli, ["templates", "gate", "-c", cid, "--min-quality", "7"])
    assert result.exit_code != 0 and "error: min_quality" in result.output
    assert "Traceback" not in result.output
