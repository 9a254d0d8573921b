"""Per-stage timings through the service: a ``Server-Timing`` header on requests that ran the face
pipeline (enroll, verify, identify, their refusals too), with the serving stages around it (the
API-key check, identify's vector search, the decision's audit row), and the
``identity_stage_seconds`` histogram on /metrics, whose counts grow with each such request."""

from __future__ import annotations

import re
from io import BytesIO

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from svc_helpers import PROBES, TRAIN

ENTRY = re.compile(r"^([a-z_]+);dur=(\d+\.\d)$")


def server_timing(r: object) -> dict[str, float]:
    """The header parsed as {name: ms}; asserts the W3C shape ``name;dur=1.2, ...``."""
    value = r.headers["server-timing"]  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for entry in value.split(", "):
        m = ENTRY.match(entry)
        assert m, value
        out[m.group(1)] = float(m.group(2))
    assert list(out)[-1] == "total", value
    return out


def stage_counts(client: TestClient, admin: dict) -> dict[str, float]:
    text = client.get("/metrics", headers=admin).text  # /metrics needs an admin key
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^identity_stage_seconds_count\{stage="(\w+)"\} (\S+)$', text, re.M)
    }


def test_server_timing_and_stage_histograms(
    client: TestClient, admin: dict, collection: str
) -> None:
    cid = collection
    before = stage_counts(client, admin)
    iid = client.post(
        f"/v1/collections/{cid}/identities", json={"external_id": "obama"}, headers=admin
    ).json()["id"]
    assert (
        "server-timing"
        not in client.get(f"/v1/collections/{cid}/identities", headers=admin).headers
    )

    photos = [TRAIN / "obama/obama.jpg", TRAIN / "obama/obama2.jpg"]
    r = client.post(
        f"/v1/collections/{cid}/identities/{iid}/faces",
        headers=admin,
        files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
    )
    assert r.status_code == 201, r.text
    enroll = server_timing(r)
    stages = {"decode", "detect", "mesh", "align", "embed", "quality"}
    assert set(enroll) == stages | {"auth", "total"}  # enrollment's audit rows ride its commit
    assert enroll["total"] >= enroll["embed"] > 0  # two images' stages summed, within the request
    assert enroll["total"] >= sum(v for k, v in enroll.items() if k != "total") - 0.5

    probe = {"file": ("p.jpg", (PROBES / "obama1.jpg").read_bytes(), "image/jpeg")}
    r = client.post(
        f"/v1/collections/{cid}/verify", files=probe, data={"identity_id": iid}, headers=admin
    )
    assert r.status_code == 200 and r.json()["match"] is True, r.text
    verify = server_timing(r)
    assert set(verify) == stages | {"auth", "audit", "total"}
    assert verify["auth"] > 0 and verify["audit"] > 0
    r = client.post(f"/v1/collections/{cid}/identify", files=probe, headers=admin)
    assert r.status_code == 200, r.text
    identify = server_timing(r)
    assert set(identify) == stages | {"auth", "search", "audit", "total"}
    assert identify["search"] < identify["total"]

    # a refused probe still reports what it cost
    buf = BytesIO()
    Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(buf, format="JPEG")
    r = client.post(
        f"/v1/collections/{cid}/identify", files={"file": ("g.jpg", buf.getvalue())}, headers=admin
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face_found", r.text
    assert set(server_timing(r)) == {"auth", "decode", "detect", "total"}

    after = stage_counts(client, admin)
    for stage in stages - {"decode", "detect"}:  # enroll, verify, identify: one observation each
        assert after[stage] - before.get(stage, 0) == 3, (stage, before, after)
    for stage in ("decode", "detect", "auth"):  # and the refused probe
        assert after[stage] - before.get(stage, 0) == 4, (stage, before, after)
    assert after["audit"] - before.get("audit", 0) == 2  # the two decisions
    assert after["search"] - before.get("search", 0) == 1  # the identify that found a face
    text = client.get("/metrics", headers=admin).text
    assert 'identity_stage_seconds_bucket{le="0.001",stage="embed"}' in text
    assert 'identity_stage_seconds_bucket{le="5.0",stage="embed"}' in text
