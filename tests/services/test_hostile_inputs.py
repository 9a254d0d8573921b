"""Hostile inputs against a real ``identity serve`` process: crafted files (corrupt, tiny, huge,
bombs, not images at all, odd pixel formats) on every endpoint that takes an image, and parameter
cases (bad ids, out-of-range and non-finite numbers, NUL and unicode, wrong types, missing
fields, wrong scopes) on every route. The rule: no answer is a 5xx and the process is alive at
the end; a crash shows as a dead server, never as a dead pytest.
"""

from __future__ import annotations

import io
import struct
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from served import Served, admin_session, serve

from svc_helpers import TRAIN

FACE = TRAIN / "obama" / "obama.jpg"


# crafted files ---------------------------------------------------------------------------------
def _save(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_declaring(w: int, h: int) -> bytes:
    """A valid PNG signature and IHDR declaring w x h, with a tiny IDAT: a decompression bomb's
    header without its body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _png_bomb(side: int) -> bytes:
    """A real, fully valid side x side grey PNG: megabytes of zeros deflate to almost nothing."""
    raw = b"".join(b"\0" + b"\0" * side for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _jpeg_declaring(w: int, h: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to claim w x h."""
    data = bytearray(_save(_noise(16, 16), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _archive_zip(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, payload)
    return buf.getvalue()


def _tar_gz(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def crafted_files() -> list[tuple[str, bytes]]:
    face = FACE.read_bytes()
    face_im = Image.open(FACE).convert("RGB")
    jpeg = _save(_noise(64, 64), "JPEG")
    png = _save(_noise(64, 64), "PNG")
    exif6, exif_bad = Image.Exif(), Image.Exif()
    exif6[0x0112] = 6
    exif_bad[0x0112] = 99
    grey16 = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    ok, rgb16 = cv2.imencode(
        ".png", (np.random.default_rng(1).integers(0, 65535, (48, 48, 3))).astype(np.uint16)
    )
    assert ok
    frames = [_noise(32, 32, s) for s in range(3)]
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    palette = _noise(64, 64).convert("P")
    corrupt_mid = bytearray(face)
    corrupt_mid[len(face) // 2 : len(face) // 2 + 2000] = b"\x00" * 2000
    bad_crc = bytearray(png)
    bad_crc[40] ^= 0xFF
    files = [
        ("empty.jpg", b""),
        ("one-byte.jpg", b"\xff"),
        ("text.jpg", b"hello, this is not an image\n" * 10),
        ("page.html", b"<!doctype html><html><body><script>alert(1)</script></body></html>"),
        (
            "vector.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9999999" height="9999999"></svg>',
        ),
        ("doc.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"),
        ("archive.zip", _archive_zip("a.jpg", face)),
        ("blob.gz", zlib.compress(face)),
        ("elf.bin", b"\x7fELF" + b"\x00" * 60),
        ("jpeg-soi-only.jpg", b"\xff\xd8\xff"),
        ("jpeg-truncated-half.jpg", face[: len(face) // 2]),
        ("jpeg-header-only.jpg", face[:200]),
        ("jpeg-zeroed-middle.jpg", bytes(corrupt_mid)),
        ("jpeg-declares-65500.jpg", _jpeg_declaring(65500, 65500)),
        ("jpeg-declares-0.jpg", _jpeg_declaring(0, 0)),
        ("jpeg-1x1.jpg", _save(_noise(1, 1), "JPEG")),
        ("jpeg-grey.jpg", _save(face_im.convert("L"), "JPEG")),
        ("jpeg-cmyk.jpg", _save(face_im.convert("CMYK"), "JPEG")),
        ("jpeg-exif-rotated.jpg", _save(face_im, "JPEG", exif=exif6.tobytes())),
        ("jpeg-exif-bad-orientation.jpg", _save(face_im, "JPEG", exif=exif_bad.tobytes())),
        (
            "jpeg-exif-garbage.jpg",
            jpeg[:2] + b"\xff\xe1\x00\x10Exif\x00\x00" + b"\xff" * 8 + jpeg[2:],
        ),
        ("jpeg-progressive.jpg", _save(face_im, "JPEG", progressive=True)),
        ("jpeg-7000.jpg", _save(face_im.resize((7000, 7000)), "JPEG", quality=60)),
        ("jpeg-3x5000.jpg", _save(_noise(3, 5000), "JPEG")),
        ("png-1x1.png", _save(_noise(1, 1), "PNG")),
        ("png-3x5000.png", _save(_noise(3, 5000), "PNG")),
        ("png-5000x3.png", _save(_noise(5000, 3), "PNG")),
        ("png-64x64.png", png),
        ("png-60x30.png", _save(_noise(60, 30), "PNG")),
        ("png-truncated.png", png[: len(png) // 2]),
        ("png-bad-crc.png", bytes(bad_crc)),
        ("png-declares-100000.png", _png_declaring(100_000, 100_000)),
        ("png-declares-2^31.png", _png_declaring(2**31 - 1, 1)),
        ("png-bomb-12000.png", _png_bomb(12_000)),
        ("png-grey16.png", _save(grey16, "PNG")),
        ("png-rgb16.png", rgb16.tobytes()),
        ("png-rgba-transparent.png", _save(rgba, "PNG")),
        ("png-la.png", _save(_noise(64, 64).convert("LA"), "PNG")),
        ("png-palette.png", _save(palette, "PNG")),
        ("png-palette-transparency.png", _save(palette, "PNG", transparency=0)),
        ("png-1bit.png", _save(_noise(64, 64).convert("1"), "PNG")),
        ("png-face-rgba.png", _save(face_im.convert("RGBA"), "PNG")),
        ("gif-1x1.gif", _save(_noise(1, 1).convert("P"), "GIF")),
        ("gif-animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("gif-truncated.gif", _save(frames[0], "GIF")[:40]),
        ("webp.webp", _save(face_im, "WEBP")),
        ("webp-animated.webp", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
        ("webp-truncated.webp", _save(face_im, "WEBP")[:100]),
        ("tiff.tiff", _save(face_im, "TIFF")),
        ("tiff-truncated.tiff", _save(face_im, "TIFF")[:300]),
        ("tiff-16bit.tiff", _save(grey16, "TIFF")),
        ("bmp.bmp", _save(_noise(64, 64), "BMP")),
        ("bmp-truncated.bmp", _save(_noise(64, 64), "BMP")[:100]),
        ("ppm.ppm", _save(_noise(64, 64), "PPM")),
        ("ico.ico", _save(_noise(32, 32), "ICO")),
        ("face.jpg", face),  # the control: a real photo that must work
    ]
    return files


# the service -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def svc(settings) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    with serve(settings) as served:
        yield served


@pytest.fixture(scope="module")
def world(svc: Served, keys) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    admin_key, _ = keys.create("admin", name="hostile")
    admin = {"X-API-Key": admin_key}
    cols = []
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        for _ in range(2):
            name = "h-" + uuid.uuid4().hex[:10]
            assert c.post("/v1/collections", json={"name": name}, headers=admin).status_code == 201
            cols.append(name)
        iid = c.post(
            f"/v1/collections/{cols[0]}/identities", json={"external_id": "obama"}, headers=admin
        ).json()["id"]
        r = c.post(
            f"/v1/collections/{cols[0]}/identities/{iid}/faces",
            headers=admin,
            files=[("files", ("obama.jpg", FACE.read_bytes(), "image/jpeg"))],
        )
        assert r.status_code == 201, r.text
    scoped = {
        scope: {"X-API-Key": keys.create(scope, collection=cols[0])[0]}
        for scope in ("verify", "enroll")
    }
    other = {"X-API-Key": keys.create("admin", collection=cols[1])[0]}
    return {
        "admin": admin,
        "admin_key": admin_key,
        "col": cols[0],
        "other_col": cols[1],
        "iid": iid,
        "other": other,
        **scoped,
    }


class Tally:
    """Every answer counted; 5xx and transport failures (a dead or hung server) kept in full."""

    def __init__(self, svc: Served) -> None:
        self.svc = svc
        self.count = 0
        self.bad: list[str] = []

    def check(self, what: str, send: Any) -> httpx.Response | None:
        self.count += 1
        try:
            r = send()
        except httpx.HTTPError as exc:
            self.bad.append(f"{what}: {type(exc).__name__} {exc}")
            return None
        if r.status_code >= 500:
            self.bad.append(f"{what}: {r.status_code} {r.text[:300]}")
        return r

    def assert_clean(self) -> None:
        alive = self.svc.alive()
        assert alive and not self.bad, (
            f"{len(self.bad)} of {self.count} requests failed (server alive: {alive}):\n"
            + "\n".join(self.bad[:40])
            + ("" if alive else "\n--- server log ---\n" + self.svc.log_tail())
        )


@pytest.fixture(scope="module")
def files() -> list[tuple[str, bytes]]:
    made = crafted_files()
    assert len(made) >= 40
    return made


def _file_calls(
    c: httpx.Client, dash: httpx.Client, csrf: str, world: dict[str, Any], name: str, data: bytes
) -> dict[str, partial[httpx.Response]]:
    """One crafted file sent to every face, gallery and dashboard endpoint that takes an image."""
    col, iid, admin, verify = world["col"], world["iid"], world["admin"], world["verify"]
    part = (name, data, "application/octet-stream")
    v1 = f"/v1/collections/{col}"
    dash_col = f"/admin/collections/{col}"
    return {
        "identify": partial(c.post, f"{v1}/identify", headers=verify, files={"file": part}),
        "enroll": partial(
            c.post, f"{v1}/identities/{iid}/faces", headers=admin, files=[("files", part)]
        ),
        "verify": partial(
            c.post, f"{v1}/verify", headers=verify, files={"file": part}, data={"identity_id": iid}
        ),
        "verify-two-files": partial(
            c.post,
            f"{v1}/verify",
            headers=verify,
            files={"file": ("face.jpg", FACE.read_bytes()), "file2": part},
        ),
        "job-archive": partial(
            c.post, f"{v1}/jobs", headers=admin, files={"file": (name + ".zip", data)}
        ),
        "dashboard-search": partial(
            dash.post,
            f"{dash_col}/search",
            data={"csrf": csrf, "top_k": "5"},
            files={"probe": part},
        ),
        "dashboard-verify": partial(
            dash.post,
            f"{dash_col}/verify",
            data={"csrf": csrf, "mode": "identity", "identity_id": iid},
            files={"probe": part},
        ),
        "dashboard-enroll": partial(
            dash.post,
            f"{dash_col}/identities/{iid}/faces",
            data={"csrf": csrf},
            files=[("files", part)],
        ),
    }


def _run_files(
    svc: Served, world: dict[str, Any], files: list[tuple[str, bytes]], full: bool
) -> dict[str, set[int]]:
    """Every file to identify, and to all other endpoints (``full``, marked slow) or to one of
    them in turn, so each endpoint still sees every seventh file."""
    t = Tally(svc)
    dash, csrf = admin_session(svc.url, world["admin_key"])
    statuses: dict[str, set[int]] = {}
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        for i, (name, data) in enumerate(files):
            calls = _file_calls(c, dash, csrf, world, name, data)
            others = list(calls)[1:]
            chosen = list(calls) if full else ["identify", others[i % len(others)]]
            for what in chosen:
                r = t.check(f"{what} {name}", calls[what])
                if r is not None:
                    statuses.setdefault(f"{what} {name}", set()).add(r.status_code)
        t.check(
            "job-archive tar bomb",
            partial(
                c.post,
                f"/v1/collections/{world['col']}/jobs",
                headers=world["admin"],
                files={"file": ("bomb.tar.gz", _tar_gz("bomb.png", _png_bomb(12_000)))},
            ),
        )
    dash.close()
    t.assert_clean()
    return statuses


def test_crafted_files_on_face_gallery_and_dashboard_endpoints(svc: Served, world, files) -> None:  # type: ignore[no-untyped-def]
    statuses = _run_files(svc, world, files, full=False)
    # the control photo and the odd-but-valid formats still work: refusals come with reasons,
    # from a service that has not started refusing everything
    # (the API's identify; the dashboard answers its pages with 200 and the error in the page)
    for ok in (
        "face.jpg",
        "jpeg-exif-rotated.jpg",
        "jpeg-7000.jpg",
        "webp.webp",
        "png-face-rgba.png",
    ):
        assert statuses[f"identify {ok}"] == {200}, (ok, statuses[f"identify {ok}"])
    for bomb in ("png-declares-100000.png", "png-bomb-12000.png", "jpeg-declares-65500.jpg"):
        assert statuses[f"identify {bomb}"] == {413}, (bomb, statuses[f"identify {bomb}"])


@pytest.mark.slow
def test_crafted_files_on_every_endpoint_full_matrix(svc: Served, world, files) -> None:  # type: ignore[no-untyped-def]
    _run_files(svc, world, files, full=True)


def _param_cases(world: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
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
                "content": _json_lenient(b),
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


def _json_lenient(value: Any) -> bytes:
    import json

    return json.dumps(value, allow_nan=True).encode()


def test_parameter_cases(svc: Served, world) -> None:  # type: ignore[no-untyped-def]
    t = Tally(svc)
    cases = list(_param_cases(world))
    assert len(cases) >= 100
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        for what, method, path, kw in cases:
            kw = dict(kw)
            headers = {**kw.pop("headers", {}), **kw.pop("headers_extra", {})}
            t.check(what, partial(c.request, method, path, headers=headers, **kw))
    t.assert_clean()


def test_crafted_files_on_body_endpoints(svc: Served, world, files) -> None:  # type: ignore[no-untyped-def]
    """Last in this file: until the person detector is replaced, OpenCV's HOG may take the
    process down here, which would fail the tests after it."""
    col, iid = world["col"], world["iid"]
    t = Tally(svc)
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        for name, data in files:
            part = (name, data, "application/octet-stream")
            t.check(
                f"identify-body {name}",
                partial(
                    c.post,
                    f"/v1/collections/{col}/identify-body",
                    headers=world["verify"],
                    files={"file": part},
                ),
            )
            t.check(
                f"enroll body {name}",
                partial(
                    c.post,
                    f"/v1/collections/{col}/identities/{iid}/bodies",
                    headers=world["admin"],
                    files=[("files", part)],
                ),
            )
            if not svc.alive():
                break
    t.assert_clean()
