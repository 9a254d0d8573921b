"""The per-request limits of the request path: files per enrollment (413 naming the cap, before
any image is analysed) and the inference queue (bounded slots, 503 busy with Retry-After)."""

from __future__ import annotations

import asyncio
import concurrent.futures

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from services.limits import InferenceLimit

from svc_helpers import TRAIN, assert_problem

FACE = TRAIN / "obama" / "obama.jpg"


def _run_in_fresh_loop(coro):  # type: ignore[no-untyped-def]
    """asyncio.run in a thread of its own: in the whole suite, Playwright's sync API keeps an
    event loop running in the main thread, where asyncio.run refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_enrollment_over_the_file_cap_is_413_naming_it(
    client: TestClient, admin, collection: str, settings
) -> None:  # type: ignore[no-untyped-def]
    iid = client.post(
        f"/v1/collections/{collection}/identities", json={"external_id": "cap"}, headers=admin
    ).json()["id"]
    cap = settings.enroll_max_files
    files = [("files", (f"f{i}.jpg", FACE.read_bytes(), "image/jpeg")) for i in range(cap + 1)]
    for path in (
        f"/v1/collections/{collection}/identities/{iid}/faces",
        f"/v1/collections/{collection}/identities/{iid}/bodies",
    ):
        error = assert_problem(client.post(path, files=files, headers=admin), 413, "too_many_files")
        assert error["details"] == {"files": cap + 1, "max_files": cap}
        assert str(cap) in error["message"]
    # nothing was analysed or stored
    assert (
        client.get(f"/v1/collections/{collection}/identities/{iid}", headers=admin).json()[
            "templates"
        ]
        == 0
    )
    # at the cap it is an ordinary request (the same photo twice is a per-image rejection)
    r = client.post(
        f"/v1/collections/{collection}/identities/{iid}/faces", files=files[:2], headers=admin
    )
    assert r.status_code == 201, r.text
    assert [x["code"] for x in r.json()["rejected"]] == ["duplicate_image"]


async def _slow_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands for a route that analyses an image for a while."""
    await asyncio.sleep(0.3)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _call(
    app: InferenceLimit, content_type: bytes = b"multipart/form-data; boundary=x"
) -> httpx.Response:
    """One request straight through the ASGI interface (no client in between to serialise)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "headers": [(b"content-type", content_type)],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return httpx.Response(start["status"], headers=start.get("headers", []), content=body)


@pytest.mark.parametrize("workers,queue", [(1, 0), (1, 2), (2, 1)])
def test_inference_queue_admits_workers_plus_queue_and_refuses_the_rest(
    workers: int, queue: int
) -> None:
    app = InferenceLimit(_slow_app, workers=workers, queue=queue, timeout_s=30)

    async def burst() -> list[httpx.Response]:
        uploads = [_call(app) for _ in range(workers + queue + 3)]
        plain = _call(app, b"application/json")  # not an image request: never queued
        return list(await asyncio.gather(*uploads, plain))

    *uploads, plain = _run_in_fresh_loop(burst())
    assert plain.status_code == 200
    assert sum(r.status_code == 200 for r in uploads) == workers + queue
    refused = [r for r in uploads if r.status_code == 503]
    assert len(refused) == 3
    for r in refused:
        assert_problem(r, 503, "busy")
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["details"]["queue"] == queue


def test_queued_request_past_the_timeout_is_refused() -> None:
    app = InferenceLimit(_slow_app, workers=1, queue=5, timeout_s=0.1)

    async def two() -> list[httpx.Response]:
        return list(await asyncio.gather(_call(app), _call(app)))

    statuses = sorted(r.status_code for r in _run_in_fresh_loop(two()))
    assert statuses == [200, 503]


def test_an_upload_is_parsed_in_memory_never_spooled_to_disk(
    client: TestClient, admin, collection: str
) -> None:  # type: ignore[no-untyped-def]
    """A photo over Starlette's 1 MiB spool is enrolled without the multipart parser making a
    temporary file: the face image never touches the disk while the request is parsed."""
    import io
    import sys

    from PIL import Image

    big = io.BytesIO()
    Image.open(FACE).resize((2400, 2400)).save(big, "JPEG", quality=97)
    assert big.tell() > 1024 * 1024
    spooled: list[str] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:  # type: ignore[type-arg]
        # a spooled upload rolls over to a file: SpooledTemporaryFile.rollover -> TemporaryFile
        # (an O_TMPFILE open on Linux, else mkstemp)
        if watching[0] and event in ("open", "tempfile.mkstemp"):
            frame = sys._getframe()  # not traceback: reading source files opens them too
            while frame is not None:
                if frame.f_code.co_name == "rollover":
                    spooled.append(str(args[0]))
                    break
                frame = frame.f_back

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one goes quiet at the end
    try:
        iid = client.post(
            f"/v1/collections/{collection}/identities", json={"external_id": "big"}, headers=admin
        ).json()["id"]
        r = client.post(
            f"/v1/collections/{collection}/identities/{iid}/faces",
            files=[("files", ("big.jpg", big.getvalue(), "image/jpeg"))],
            headers=admin,
        )
    finally:
        watching[0] = False
    assert r.status_code == 201, r.text
    assert len(r.json()["accepted"]) == 1 and not r.json()["rejected"]
    assert spooled == []
