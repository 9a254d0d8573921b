"""Parameter cases for tests/services/test_hostile_inputs.py: bad ids, out-of-range and
non-finite numbers, NUL and unicode, wrong types, missing fields and wrong scopes on every
route, each as (what, method, path, httpx keyword arguments)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from hostile_files import FACE


def param_cases(world: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(what, method, path, httpx kwargs) for 100+ malformed or unauthorised requests."""
    col, iid, admin = world["col"], world["iid"], world["admin"]
    face = ("face.jpg", FACE.read_bytes(), "image/jpeg")
    bad_ids = [
        "x",
        "0",
        "-1",
        "9" * 40,
        "%00",
        "%2e%2e%2f%2e%2e",
        "名前",
        "a" * 300,
        "null",
        "1e309",
        str(uuid.uuid4()),
    ]
    for bad in bad_ids:
        yield f"collection {bad[:20]}", "GET", f"/v1/collections/{bad}", {"headers": admin}
        yield (
            f"identity {bad[:20]}",
            "GET",
            f"/v1/collections/{col}/identities/{bad}",
            {"headers": admin},
        )
        yield (
            f"erase {bad[:20]}",
            "DELETE",
            f"/v1/collections/{col}/identities/{bad}",
            {"headers": admin},
        )
        yield f"job {bad[:20]}", "GET", f"/v1/collections/{col}/jobs/{bad}", {"headers": admin}
        yield (
            f"thumb {bad[:20]}",
            "GET",
            f"/v1/collections/{col}/gallery-faces/{bad}/thumbnail",
            {"headers": admin},
        )
        yield (
            f"cluster name {bad[:20]}",
            "POST",
            f"/v1/collections/{col}/clusters/{bad}/name",
            {"headers": admin, "json": {"external_id": "x"}},
        )
        yield (
            f"dashboard identity {bad[:20]}",
            "GET",
            f"/admin/collections/{col}/identities/{bad}",
            {},
        )
    numbers = [
        "0",
        "-1",
        "101",
        "1e9",
        "NaN",
        "nan",
        "inf",
        "-inf",
        "1e-400",
        "1e400",
        "abc",
        "",
        "2" * 30,
        "0x10",
        "1,5",
        " 5 ",
        "\x00",
    ]
    for v in numbers:
        for field in ("top_k", "far", "threshold"):
            yield (
                f"identify {field}={v!r}",
                "POST",
                f"/v1/collections/{col}/identify",
                {"headers": world["verify"], "files": {"file": face}, "data": {field: v}},
            )
        yield (
            f"enroll face_index={v!r}",
            "POST",
            f"/v1/collections/{col}/identities/{iid}/faces",
            {"headers": admin, "files": [("files", face)], "data": {"face_index": v}},
        )
        yield (
            f"list limit={v!r}",
            "GET",
            f"/v1/collections/{col}/identities",
            {"headers": admin, "params": {"limit": v, "offset": v}},
        )
    for bbox in [
        "1,2,3",
        "a,b,c,d",
        "NaN,0,1,1",
        "inf,0,10,10",
        "5,5,1,1",
        "-10,-10,-1,-1",
        "1e309,0,1,1",
        "1," * 5000,
        "",
        "0,0,0,0",
        "\x00,1,2,3",
    ]:
        yield (
            f"enroll bbox={bbox[:20]!r}",
            "POST",
            f"/v1/collections/{col}/identities/{iid}/faces",
            {"headers": admin, "files": [("files", face)], "data": {"bbox": bbox}},
        )
    bodies: list[Any] = [
        {},
        {"name": None},
        {"name": 5},
        {"name": ["a"]},
        {"name": "A B"},
        {"name": "x" * 10_000},
        {"name": "ok\x00"},
        {"name": "名前"},
        {"name": "ok", "extra": 1},
        [],
        "name",
        12,
        None,
        {"name": "ok", "description": {"nested": [1] * 1000}},
    ]
    for b in bodies:
        yield (
            f"create collection {str(b)[:30]}",
            "POST",
            "/v1/collections",
            {"headers": admin, "json": b},
        )
    ident_bodies: list[Any] = [
        {},
        {"external_id": ""},
        {"external_id": "x\x00"},
        {"external_id": "x" * 300},
        {"external_id": 1},
        {"external_id": "ok", "metadata": "str"},
        {"external_id": "ok", "metadata": {"a\x00": 1}},
        {"external_id": "ok", "metadata": {"n": float("nan")}},
        {"external_id": "ok", "display_name": ["x"]},
    ]
    for b in ident_bodies:
        yield (
            f"create identity {str(b)[:30]}",
            "POST",
            f"/v1/collections/{col}/identities",
            {
                "headers": admin,
                "content": json_lenient(b),
                "headers_extra": {"content-type": "application/json"},
            },
        )
    deep = "[" * 100_000 + "]" * 100_000
    for raw in [
        b"{",
        b"not json",
        b"\xff\xfe",
        deep.encode(),
        b'{"name": NaN}',
        b'{"external_id": Infinity}',
    ]:
        yield (
            f"raw json {raw[:10]!r}",
            "POST",
            f"/v1/collections/{col}/identities",
            {
                "headers": admin,
                "content": raw,
                "headers_extra": {"content-type": "application/json"},
            },
        )
    # wrong scopes, keys and collections
    for who, hdr in [
        ("none", {}),
        ("bogus", {"X-API-Key": "idk_" + "A" * 43}),
        ("empty", {"X-API-Key": ""}),
        ("verify", world["verify"]),
        ("enroll", world["enroll"]),
        ("other-collection", world["other"]),
    ]:
        yield f"{who}: delete collection", "DELETE", f"/v1/collections/{col}", {"headers": hdr}
        yield f"{who}: erase", "DELETE", f"/v1/collections/{col}/identities/{iid}", {"headers": hdr}
        yield (
            f"{who}: create identity",
            "POST",
            f"/v1/collections/{col}/identities",
            {"headers": hdr, "json": {"external_id": "nope"}},
        )
        yield (
            f"{who}: enroll",
            "POST",
            f"/v1/collections/{col}/identities/{iid}/faces",
            {"headers": hdr, "files": [("files", face)]},
        )
        yield (
            f"{who}: job",
            "POST",
            f"/v1/collections/{col}/jobs",
            {"headers": hdr, "json": {"path": "/etc"}},
        )
        yield (
            f"{who}: recluster",
            "POST",
            f"/v1/collections/{col}/clusters/recluster",
            {"headers": hdr},
        )
    # wrong shapes of request
    yield (
        "identify without file",
        "POST",
        f"/v1/collections/{col}/identify",
        {"headers": admin, "data": {"top_k": "5"}},
    )
    yield (
        "identify file as text field",
        "POST",
        f"/v1/collections/{col}/identify",
        {"headers": admin, "data": {"file": "not a file"}},
    )
    yield (
        "identify as json",
        "POST",
        f"/v1/collections/{col}/identify",
        {"headers": admin, "json": {"file": "x"}},
    )
    yield (
        "verify neither identity nor file2",
        "POST",
        f"/v1/collections/{col}/verify",
        {"headers": admin, "files": {"file": face}},
    )
    yield (
        "enroll 0 files",
        "POST",
        f"/v1/collections/{col}/identities/{iid}/faces",
        {"headers": admin, "data": {"x": "1"}},
    )
    yield (
        "jobs path traversal",
        "POST",
        f"/v1/collections/{col}/jobs",
        {"headers": admin, "json": {"path": "../../etc"}},
    )
    yield (
        "jobs bad labels",
        "POST",
        f"/v1/collections/{col}/jobs",
        {"headers": admin, "json": {"path": "/", "labels": 7}},
    )
    yield (
        "multipart garbage",
        "POST",
        f"/v1/collections/{col}/identify",
        {
            "headers": admin,
            "content": b"--x\r\nnot really\r\n",
            "headers_extra": {"content-type": "multipart/form-data; boundary=x"},
        },
    )
    yield (
        "multipart no boundary",
        "POST",
        f"/v1/collections/{col}/identify",
        {
            "headers": admin,
            "content": b"abc",
            "headers_extra": {"content-type": "multipart/form-data"},
        },
    )
    yield (
        "dashboard form without csrf",
        "POST",
        f"/admin/collections/{col}/identities",
        {"data": {"external_id": "x"}},
    )
    yield "dashboard login empty", "POST", "/admin/login", {"data": {}}
    yield (
        "dashboard login NUL",
        "POST",
        "/admin/login",
        {"data": {"api_key": "\x00", "login_token": "\x00"}},
    )
    yield (
        "dashboard next redirect",
        "GET",
        "/admin/login",
        {"params": {"next": "//evil.example/" + "a" * 5000}},
    )
    yield "dashboard audit page", "GET", "/admin/audit", {"params": {"page": "-1"}}
    yield "static traversal", "GET", "/admin/static/..%2f..%2fsettings.py", {}


def json_lenient(value: Any) -> bytes:
    import json

    return json.dumps(value, allow_nan=True).encode()
