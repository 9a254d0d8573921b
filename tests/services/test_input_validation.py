"""Hostile but well-formed input never reaches Postgres as a 500: NUL characters, NaN/Infinity,
huge paging numbers, malformed boxes and out-of-range decision parameters are 4xx problems."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from svc_helpers import PROBES, assert_problem

PROBE = ("p.jpg", (PROBES / "obama1.jpg").read_bytes(), "image/jpeg")


@pytest.fixture
def ident(client: TestClient, admin: dict, collection: str) -> str:
    r = client.post(
        f"/v1/collections/{collection}/identities", json={"external_id": "x"}, headers=admin
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize(
    "body",
    [
        {"external_id": "a\x00b"},
        {"external_id": "ok", "display_name": "Ada\x00"},
        {"external_id": "ok", "metadata": {"k": "v\x00"}},
        {"external_id": "ok", "metadata": {"k\x00": 1}},
        {"external_id": "ok", "metadata": {"k": [{"deep": ["\x00"]}]}},
    ],
)
def test_nul_in_identity_fields(
    client: TestClient, admin: dict, collection: str, body: dict
) -> None:
    r = client.post(f"/v1/collections/{collection}/identities", json=body, headers=admin)
    assert_problem(r, 422, "invalid_input")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_metadata(
    client: TestClient, admin: dict, collection: str, literal: bytes
) -> None:
    raw = b'{"external_id": "n", "metadata": {"x": [1, ' + literal + b"]}}"
    r = client.post(
        f"/v1/collections/{collection}/identities",
        content=raw,
        headers={**admin, "content-type": "application/json"},
    )
    assert_problem(r, 422, "invalid_input")


def test_nul_in_collection_fields(client: TestClient, admin: dict) -> None:
    assert_problem(
        client.post("/v1/collections", json={"name": "ab\x00"}, headers=admin), 422, "invalid_input"
    )
    r = client.post(
        "/v1/collections", json={"name": "nul-desc", "description": "x\x00y"}, headers=admin
    )
    assert_problem(r, 422, "invalid_input")
    assert_problem(client.get("/v1/collections/a%00b", headers=admin), 404, "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "q=%00",
        "q=ab%00cd",
        f"offset={10**30}",
        f"offset={2**63}",
        f"offset={10**9 + 1}",
        "offset=-1",
        f"limit={10**30}",
        "limit=1001",
    ],
)
def test_identity_listing_params(
    client: TestClient, admin: dict, collection: str, query: str
) -> None:
    r = client.get(f"/v1/collections/{collection}/identities?{query}", headers=admin)
    assert_problem(r, 422, "invalid_input")


def test_listing_largest_offset_is_fine(client: TestClient, admin: dict, collection: str) -> None:
    r = client.get(f"/v1/collections/{collection}/identities?offset={10**9}", headers=admin)
    assert r.status_code == 200 and r.json()["items"] == [], r.text


@pytest.mark.parametrize(
    "bbox",
    ["nan,0,10,10", "0,0,inf,10", "0,-inf,10,10", "10,0,5,10", "0,0,0,10", "0,10,10,10", "1,2,3"],
)
def test_bad_bbox(client: TestClient, admin: dict, collection: str, ident: str, bbox: str) -> None:
    url = f"/v1/collections/{collection}/identities/{ident}"
    r = client.post(f"{url}/faces", files=[("files", PROBE)], data={"bbox": bbox}, headers=admin)
    assert_problem(r, 422, "invalid_input")
    r = client.post(f"{url}/bodies", files=[("files", PROBE)], data={"bbox": bbox}, headers=admin)
    assert_problem(r, 422, "invalid_input")
    r = client.post(
        f"/v1/collections/{collection}/identify-body",
        files={"file": PROBE},
        data={"bbox": bbox},
        headers=admin,
    )
    assert_problem(r, 422, "invalid_input")


@pytest.mark.parametrize(
    "form",
    [
        {"top_k": "0"},
        {"top_k": "-3"},
        {"top_k": str(10**6)},
        {"top_k": str(10**30)},
        {"top_k": "1.5"},
        {"far": "0"},
        {"far": "1"},
        {"far": "-0.1"},
        {"far": "nan"},
        {"far": "inf"},
        {"threshold": "nan"},
        {"threshold": "inf"},
        {"threshold": "-inf"},
        {"threshold": "1.5"},
    ],
)
def test_decision_params(
    client: TestClient, admin: dict, collection: str, ident: str, form: dict
) -> None:
    url = f"/v1/collections/{collection}"
    r = client.post(f"{url}/identify", files={"file": PROBE}, data=form, headers=admin)
    assert_problem(r, 422, "invalid_input")
    r = client.post(f"{url}/identify-body", files={"file": PROBE}, data=form, headers=admin)
    assert_problem(r, 422, "invalid_input")
    if "top_k" not in form:
        r = client.post(
            f"{url}/verify",
            files={"file": PROBE},
            data={"identity_id": ident, **form},
            headers=admin,
        )
        assert_problem(r, 422, "invalid_input")


@pytest.mark.parametrize(
    ("iid", "status", "code"),
    # an identity is named by its UUID or its external_id: a name no identity has is unknown
    # (404); one no identity can have (NUL, over 256 characters) is invalid (422)
    [
        ("not-a-uuid", 404, "not_found"),
        ("0" * 40, 404, "not_found"),
        ("%00", 422, "invalid_input"),
        ("x" * 300, 422, "invalid_input"),
    ],
)
def test_identity_ref_unknown_or_invalid(
    client: TestClient, admin: dict, collection: str, iid: str, status: int, code: str
) -> None:
    url = f"/v1/collections/{collection}"
    assert_problem(client.get(f"{url}/identities/{iid}", headers=admin), status, code)
    assert_problem(client.delete(f"{url}/identities/{iid}", headers=admin), status, code)
    form_iid = iid.replace("%00", "\x00")
    r = client.post(
        f"{url}/verify", files={"file": PROBE}, data={"identity_id": form_iid}, headers=admin
    )
    assert_problem(r, status, code)


def test_gallery_inputs(client: TestClient, admin: dict, collection: str) -> None:
    url = f"/v1/collections/{collection}"
    assert_problem(
        client.get(f"{url}/clusters?offset={10**30}", headers=admin), 422, "invalid_input"
    )
    r = client.post(f"{url}/clusters/1/name", json={"external_id": "a\x00"}, headers=admin)
    assert_problem(r, 422, "invalid_input")
    r = client.post(f"{url}/jobs", json={"path": "/tmp/a\x00b"}, headers=admin)
    assert_problem(r, 422, "invalid_input")
    r = client.post(
        f"{url}/clusters/recluster", json={"threshold": None, "min_size": 10**30}, headers=admin
    )
    assert_problem(r, 422, "invalid_input")
    for big in (10**30, 2**63):
        assert client.get(f"{url}/gallery-faces/{big}/thumbnail", headers=admin).status_code in (
            404,
            422,
        )
        assert client.post(
            f"{url}/clusters/{big}/merge", json={"clusters": [big]}, headers=admin
        ).status_code in (404, 422)


def test_database_refusal_is_a_422_problem(engine) -> None:
    """The backstop: a value only Postgres refuses (here a bigint overflow, a real DataError)
    still comes back as the one problem shape, 422, without quoting the value."""
    from fastapi import FastAPI
    from sqlalchemy import text

    from services.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/overflow")
    def overflow() -> dict:
        with engine.connect() as conn:
            conn.execute(text("SELECT CAST(:v AS bigint)"), {"v": str(10**30)})
        return {}

    with TestClient(app) as c:
        err = assert_problem(c.get("/overflow"), 422, "invalid_input")
    assert str(10**30) not in str(err)
