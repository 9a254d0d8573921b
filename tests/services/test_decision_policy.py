"""Decisions never looser than the policy, no near misses for verify keys, /metrics protected;
the real service (TestClient), real Postgres, real models and the shared photos."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from identity.calibration import threshold_for
from identity.settings import Settings
from services.app import create_app

from svc_helpers import PROBES, TRAIN, assert_problem

PROBE = ("p.jpg", (PROBES / "obama1.jpg").read_bytes(), "image/jpeg")
PEOPLE = ("obama", "biden", "alex_lacamoire", "kit_harington", "rose_leslie")


@pytest.fixture(scope="module")
def gallery(client: TestClient, admin: dict, keys) -> dict:  # type: ignore[no-untyped-def]
    """Five people enrolled in a fresh collection, and a verify key bound to it."""
    import uuid

    cid = "pol-" + uuid.uuid4().hex[:8]
    assert client.post("/v1/collections", json={"name": cid}, headers=admin).status_code == 201
    ids = {}
    for person in PEOPLE:
        iid = client.post(
            f"/v1/collections/{cid}/identities",
            json={"external_id": person, "display_name": person.replace("_", " ").title()},
            headers=admin,
        ).json()["id"]
        photo = min((TRAIN / person).glob("*.jp*g"))
        r = client.post(
            f"/v1/collections/{cid}/identities/{iid}/faces",
            files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))],
            headers=admin,
        )
        assert r.status_code == 201, r.text
        ids[person] = iid
    return {"cid": cid, "ids": ids, "verify": {"X-API-Key": keys.create("verify", cid)[0]}}


def test_looser_than_policy_is_refused(
    client: TestClient, admin: dict, gallery: dict, settings: Settings
) -> None:
    url = f"/v1/collections/{gallery['cid']}"
    policy = threshold_for(settings.embedder, settings.default_far, settings)
    for headers in (gallery["verify"], admin):
        for form in (
            {"threshold": "-1"},
            {"threshold": str(round(policy - 0.05, 3))},
            {"far": str(settings.default_far * 10)},
            {"far": "0.5"},
        ):
            err = assert_problem(
                client.post(
                    f"{url}/identify",
                    files={"file": PROBE},
                    data={"top_k": "100", **form},
                    headers=headers,
                ),
                422,
                "looser_than_policy",
            )
            assert err["details"]["policy_far"] == settings.default_far
            assert_problem(
                client.post(
                    f"{url}/verify",
                    files={"file": PROBE},
                    data={"identity_id": gallery["ids"]["biden"], **form},
                    headers=headers,
                ),
                422,
                "looser_than_policy",
            )
            if form.get("threshold") != str(round(policy - 0.05, 3)):  # the body model's own policy
                assert_problem(
                    client.post(
                        f"{url}/identify-body", files={"file": PROBE}, data=form, headers=headers
                    ),
                    422,
                    "looser_than_policy",
                )
    # stricter than the policy is honoured, and the answer says which threshold decided
    r = client.post(
        f"{url}/identify", files={"file": PROBE}, data={"threshold": "0.99"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["threshold"] == 0.99
    r = client.post(
        f"{url}/verify",
        files={"file": PROBE},
        data={"identity_id": gallery["ids"]["obama"], "far": "0.0001"},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["far"] == 0.0001 and r.json()["threshold"] > policy


def test_verify_keys_see_matches_only(client: TestClient, admin: dict, gallery: dict) -> None:
    url = f"/v1/collections/{gallery['cid']}"
    form = {"top_k": "100"}
    as_admin = client.post(
        f"{url}/identify", files={"file": PROBE}, data=form, headers=admin
    ).json()
    near = [c for c in as_admin["faces"][0]["candidates"] if not c["match"]]
    assert as_admin["faces"][0]["candidates"][0]["external_id"] == "obama"
    assert len(near) >= 3, "admin keys see the near misses (the other people)"

    as_verify = client.post(
        f"{url}/identify", files={"file": PROBE}, data=form, headers=gallery["verify"]
    ).json()
    shown = as_verify["faces"][0]["candidates"]
    assert [c["external_id"] for c in shown] == ["obama"] and shown[0]["match"]
    # the enumeration the issue reported: a threshold of 1 is strict, so allowed, and names nobody
    strict = client.post(
        f"{url}/identify",
        files={"file": PROBE},
        data={**form, "threshold": "1"},
        headers=gallery["verify"],
    ).json()
    assert strict["faces"][0]["candidates"] == []
    body_text = str(strict) + str(as_verify)
    for person in PEOPLE[1:]:
        assert person not in body_text and gallery["ids"][person] not in body_text


@pytest.fixture
def metrics_app(settings: Settings, engine, analyzer) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    tokened = settings.model_copy(update={"metrics_token": "prom-" + "s" * 30})
    with TestClient(create_app(tokened, engine=engine, analyzer=analyzer, warm_models=False)) as c:
        yield c


def test_metrics_need_credentials(
    client: TestClient, admin: dict, gallery: dict, keys, metrics_app: TestClient
) -> None:  # type: ignore[no-untyped-def]
    assert_problem(client.get("/metrics"), 401, "unauthorized")
    assert_problem(client.get("/metrics", headers=gallery["verify"]), 403, "forbidden")
    bound_admin = {"X-API-Key": keys.create("admin", gallery["cid"])[0]}
    assert_problem(client.get("/metrics", headers=bound_admin), 403, "forbidden")
    for headers in (admin, {"Authorization": f"Bearer {admin['X-API-Key']}"}):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 200 and "identity_index_templates" in r.text
    # with IDENTITY_METRICS_TOKEN, Prometheus sends that token; a wrong one is refused
    r = metrics_app.get("/metrics", headers={"Authorization": "Bearer prom-" + "s" * 30})
    assert r.status_code == 200 and "identity_http_requests_total" in r.text
    assert_problem(metrics_app.get("/metrics", headers={"Authorization": "Bearer prom-wrong"}), 401)
    assert_problem(metrics_app.get("/metrics"), 401)
