"""Hostile inputs against a real ``identity serve`` process: crafted files (corrupt, tiny, huge,
bombs, not images at all, odd pixel formats) on every endpoint that takes an image, and parameter
cases (bad ids, out-of-range and non-finite numbers, NUL and unicode, wrong types, missing
fields, wrong scopes) on every route. The rule: no answer is a 5xx and the process is alive at
the end; a crash shows as a dead server, never as a dead pytest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from hostile_files import FACE, crafted_files, png_bomb, tar_gz
from hostile_params import param_cases
from served import Served, admin_session, serve


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
                files={"file": ("bomb.tar.gz", tar_gz("bomb.png", png_bomb(12_000)))},
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


def test_parameter_cases(svc: Served, world) -> None:  # type: ignore[no-untyped-def]
    t = Tally(svc)
    cases = list(param_cases(world))
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
