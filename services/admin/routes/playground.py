"""The verify/identify playground of a collection: search by photo (every face found, with its
candidates) and verify a probe against an identity or a second photo."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from identity.calibration import far_at
from identity.errors import CodedError, InvalidInput
from services.admin.render import annotated_probe
from services.admin.routes.deps import (
    AdminDep,
    CheckedAdminDep,
    collection_or_404,
    explained,
    identity_choices,
    read_upload,
    render,
    screen,
)
from services.deps import SettingsDep, StoreDep

router = screen()


@router.get("/collections/{cid}/search")
def search_page(request: Request, cid: str, admin: AdminDep, store: StoreDep) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    return render(request, "search.html", admin, collection=collection, tab="search", top_k=5)


@router.post("/collections/{cid}/search")
async def search(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    settings: SettingsDep,
    probe: Annotated[UploadFile | None, File()] = None,
    top_k: Annotated[int, Form()] = 5,
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    try:
        data = await read_upload(probe, "probe")
        result = await run_in_threadpool(
            store.identify, cid, data, top_k=top_k, all_faces=True, actor=admin.actor
        )
        picture = await run_in_threadpool(annotated_probe, data, settings, result["faces"])
    except CodedError as exc:
        return render(
            request,
            "search.html",
            admin,
            collection=collection,
            tab="search",
            top_k=top_k,
            **explained(exc),
        )
    return render(
        request,
        "search.html",
        admin,
        collection=collection,
        tab="search",
        top_k=top_k,
        result=result,
        picture=picture,
        filename=probe.filename if probe else "",
    )


@router.get("/collections/{cid}/verify")
def verify_page(
    request: Request, cid: str, admin: AdminDep, store: StoreDep, identity: str = ""
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    return render(
        request,
        "verify.html",
        admin,
        collection=collection,
        tab="verify",
        choices=identity_choices(store, cid),
        chosen=identity,
        mode="identity",
    )


@router.post("/collections/{cid}/verify")
async def verify(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    store: StoreDep,
    settings: SettingsDep,
    probe: Annotated[UploadFile | None, File()] = None,
    other: Annotated[UploadFile | None, File()] = None,
    mode: Annotated[str, Form()] = "identity",
    identity_id: Annotated[str, Form()] = "",
    liveness: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    collection = collection_or_404(store, admin, cid)
    context: dict[str, Any] = {
        "collection": collection,
        "tab": "verify",
        "choices": identity_choices(store, cid),
        "chosen": identity_id,
        "mode": mode,
        "liveness": liveness,
    }
    try:
        data = await read_upload(probe, "probe")
        if mode == "pair":
            second = await read_upload(other, "second")
            result = await run_in_threadpool(
                store.verify, cid, data, other=second, actor=admin.actor, liveness=liveness
            )
        else:
            if not identity_id:
                raise InvalidInput("choose the identity to compare with")
            result = await run_in_threadpool(
                store.verify,
                cid,
                data,
                identity_id=identity_id,
                actor=admin.actor,
                liveness=liveness,
            )
    except CodedError as exc:
        return render(
            request,
            "verify.html",
            admin,
            **explained(exc),
            refused=exc.details if exc.code == "presentation_attack" else None,
            **context,
        )
    # The FAR of the operating threshold is the policy; the FAR at this very similarity tells
    # an operator how surprising this score would be for two different people.
    far_here = far_at(result["model"], result["similarity"], settings)
    matched = next((c for c in context["choices"] if c["id"] == result.get("identity_id")), None)
    return render(
        request, "verify.html", admin, result=result, far_here=far_here, matched=matched, **context
    )
