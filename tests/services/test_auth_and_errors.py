"""API keys (401/403 per scope and collection) and the problem shape for every bad input."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from identity.settings import Settings
from services.app import create_app

from svc_helpers import PROBES, TRAIN, assert_problem

PROBE = ("p.jpg", (PROBES / "obama1.jpg").read_bytes(), "image/jpeg")


@pytest.fixture
def scoped(client: TestClient, admin: dict, keys, new_collection) -> dict:
    """Two collections with one enrolled identity in the first, and keys of every kind."""
    a, b = new_collection(), new_collection()
    iid = client.post(
        f"/v1/collections/{a}/identities", json={"external_id": "o"}, headers=admin
    ).json()["id"]
    r = client.post(
        f"/v1/collections/{a}/identities/{iid}/faces",
        files=[("files", ("o.jpg", (TRAIN / "obama/obama.jpg").read_bytes(), "image/jpeg"))],
        headers=admin,
    )
    assert r.status_code == 201, r.text

    def key(scope: str, coll: str | None = None) -> dict:
        return {"X-API-Key": keys.create(scope, coll)[0]}

    return {
        "a": a,
        "b": b,
        "iid": iid,
        "enroll_a": key("enroll", a),
        "verify_a": key("verify", a),
        "verify_any": key("verify"),
        "admin_a": key("admin", a),
    }


def test_401_without_or_with_bad_key(client: TestClient, scoped: dict, keys) -> None:
    a = scoped["a"]
    assert_problem(client.get("/v1/collections"), 401, "unauthorized")
    assert_problem(
        client.get("/v1/collections", headers={"X-API-Key": "nope"}), 401, "unauthorized"
    )
    forged = "idk_" + "A" * 43
    assert_problem(
        client.post(
            f"/v1/collections/{a}/identify", files={"file": PROBE}, headers={"X-API-Key": forged}
        ),
        401,
    )
    # a revoked key stops working at once
    key, row = keys.create("verify", a)
    h = {"X-API-Key": key}
    assert (
        client.post(f"/v1/collections/{a}/identify", files={"file": PROBE}, headers=h).status_code
        == 200
    )
    keys.revoke(str(row["id"]))
    assert_problem(
        client.post(f"/v1/collections/{a}/identify", files={"file": PROBE}, headers=h), 401
    )


def test_403_outside_scope_or_collection(client: TestClient, scoped: dict) -> None:
    a, b, iid = scoped["a"], scoped["b"], scoped["iid"]
    verify_a, enroll_a, admin_a = scoped["verify_a"], scoped["enroll_a"], scoped["admin_a"]
    # verify keys: verify/identify only
    assert client.post(
        f"/v1/collections/{a}/verify",
        files={"file": PROBE},
        data={"identity_id": iid},
        headers=verify_a,
    ).json()["match"]
    assert_problem(
        client.post(f"/v1/collections/{a}/identities", json={"external_id": "z"}, headers=verify_a),
        403,
        "forbidden",
    )
    assert_problem(client.get(f"/v1/collections/{a}/identities", headers=verify_a), 403)
    # enroll keys: identities and faces, not decisions, not erasure, not collections
    r = client.post(f"/v1/collections/{a}/identities", json={"external_id": "e1"}, headers=enroll_a)
    assert r.status_code == 201
    assert client.get(f"/v1/collections/{a}/identities", headers=enroll_a).json()["total"] == 2
    assert_problem(
        client.post(f"/v1/collections/{a}/identify", files={"file": PROBE}, headers=enroll_a), 403
    )
    assert_problem(client.delete(f"/v1/collections/{a}/identities/{iid}", headers=enroll_a), 403)
    assert_problem(client.post("/v1/collections", json={"name": "zz"}, headers=enroll_a), 403)
    # collection-bound keys, including admin ones, stay in their collection
    for h in (verify_a, enroll_a, admin_a):
        assert_problem(
            client.post(f"/v1/collections/{b}/identify", files={"file": PROBE}, headers=h), 403
        )
        assert_problem(client.get(f"/v1/collections/{b}/identities", headers=h), 403)
        assert [c["name"] for c in client.get("/v1/collections", headers=h).json()["items"]] == [a]
    assert_problem(client.delete(f"/v1/collections/{b}", headers=admin_a), 403)
    # an unbound verify key works anywhere
    assert (
        client.post(
            f"/v1/collections/{b}/identify", files={"file": PROBE}, headers=scoped["verify_any"]
        ).status_code
        == 200
    )


def test_bad_inputs_are_4xx_problems(client: TestClient, admin: dict, scoped: dict) -> None:
    a, iid = scoped["a"], scoped["iid"]
    url = f"/v1/collections/{a}"
    not_image = ("x.jpg", b"this is not an image at all", "image/jpeg")
    cases = [
        (
            client.post(f"{url}/identify", files={"file": not_image}, headers=admin),
            422,
            "bad_image",
        ),
        (
            client.post(
                f"{url}/identify", files={"file": ("e.jpg", b"", "image/jpeg")}, headers=admin
            ),
            422,
            None,
        ),
        (
            client.post(
                f"{url}/verify", files={"file": not_image}, data={"identity_id": iid}, headers=admin
            ),
            422,
            "bad_image",
        ),
        (client.post(f"{url}/identify", headers=admin), 422, "invalid_input"),
        (
            client.post(
                f"{url}/identify", files={"file": PROBE}, data={"top_k": "abc"}, headers=admin
            ),
            422,
            "invalid_input",
        ),
        (
            client.post(
                f"{url}/identify", files={"file": PROBE}, data={"top_k": "0"}, headers=admin
            ),
            422,
            "invalid_input",
        ),
        (
            client.post(f"{url}/identify", files={"file": PROBE}, data={"far": "2"}, headers=admin),
            422,
            "invalid_input",
        ),
        (
            client.post(
                f"{url}/verify", files={"file": PROBE}, data={"identity_id": "123"}, headers=admin
            ),
            404,
            "not_found",
        ),  # no such external_id
        (client.post(f"{url}/verify", files={"file": PROBE}, headers=admin), 422, "invalid_input"),
        (
            client.post(
                f"{url}/verify",
                files={"file": PROBE},
                data={"identity_id": str(uuid.uuid4())},
                headers=admin,
            ),
            404,
            "not_found",
        ),
        (
            client.post("/v1/collections/nope/identify", files={"file": PROBE}, headers=admin),
            404,
            "not_found",
        ),
        (client.get(f"{url}/identities/{uuid.uuid4()}", headers=admin), 404, "not_found"),
        (client.get(f"{url}/identities/not-a-uuid", headers=admin), 404, "not_found"),
        (client.get(f"{url}/identities?limit=0", headers=admin), 422, "invalid_input"),
        (
            client.post(
                f"{url}/identities", json={"display_name": "no external id"}, headers=admin
            ),
            422,
            "invalid_input",
        ),
        (
            client.post(
                f"{url}/identities", json={"external_id": 5, "metadata": "x"}, headers=admin
            ),
            422,
            "invalid_input",
        ),
        (
            client.post(
                f"{url}/identities",
                content=b"{not json",
                headers={**admin, "content-type": "application/json"},
            ),
            422,
            "invalid_input",
        ),
        (client.post(f"{url}/identities/{iid}/faces", headers=admin), 422, "invalid_input"),
        (
            client.post(
                f"{url}/identities/{iid}/faces", files=[("files", not_image)], headers=admin
            ),
            422,
            "enrollment_rejected",
        ),
        (
            client.post(
                f"{url}/identities/{iid}/faces",
                files=[("files", PROBE)],
                data={"bbox": "1,2,x"},
                headers=admin,
            ),
            422,
            "invalid_input",
        ),
        (
            client.post("/v1/collections", json={"name": "Bad Name!"}, headers=admin),
            422,
            "invalid_input",
        ),
        (
            client.post("/v1/collections", json={"name": "ok", "extra": 1}, headers=admin),
            422,
            "invalid_input",
        ),
        (client.get("/v1/nowhere", headers=admin), 404, "not_found"),
        (client.put("/v1/collections", headers=admin), 405, "method_not_allowed"),
    ]
    for r, status, code in cases:
        err = assert_problem(r, status, code)
        assert "this is not an image" not in str(err), "uploads are never echoed back"


def test_request_size_limit(settings: Settings, engine, analyzer, admin: dict) -> None:
    small = settings.model_copy(update={"max_request_bytes": 10_000})
    app = create_app(small, engine=engine, analyzer=analyzer, warm_models=False)
    big = (TRAIN / "obama/obama.jpg").read_bytes()
    assert len(big) > 10_000
    with TestClient(app) as c:
        r = c.post(
            "/v1/collections/any/identify",
            files={"file": ("b.jpg", big, "image/jpeg")},
            headers=admin,
        )
        assert_problem(r, 413, "request_too_large")
        # a chunked body with no Content-Length is counted as it streams
        chunks = iter([b"x" * 4096] * 8)
        r = c.post(
            "/v1/collections", content=chunks, headers={**admin, "content-type": "application/json"}
        )
        assert_problem(r, 413, "request_too_large")
