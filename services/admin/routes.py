"""The admin dashboard at ``/admin``: server-rendered pages over the identity store.

Routes stay thin: read the form, call one store (or ``queries``) function, render a template.
Sign-in takes an admin API key once; after that a signed, http-only cookie carries a server-side
session's token (see ``session.py``) and every POST carries the session's CSRF token. Errors
from the store (``CodedError``) are shown on the page instead of the API's JSON problem body. Gallery jobs
and their proposed clusters (docs/batch.md) go through the same ``GalleryStore`` as the API.
"""

from __future__ import annotations

import base64
import math
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from identity.errors import CodedError, InvalidInput
from services.admin import queries
from services.admin.render import (
    annotated_probe,
    format_detail,
    format_duration,
    format_when,
    human_metrics,
    system_models,
    thresholds_table,
)
from services.admin.session import (
    COOKIE_NAME,
    AdminSession,
    SessionCodec,
    csrf_ok,
    end_session,
    load_or_create_secret,
    session_key,
    start_session,
)
from services.audit import verify_chain
from services.auth import Principal
from services.deps import client_address
from services.deps import get_gallery as _gallery
from services.deps import get_keys as _keys
from services.deps import get_settings as _settings
from services.deps import get_store as _store
from services.errors import NotFound, TooManyAttempts, Unauthorized, check_file_count
from services.gallery import LIVE_STATUSES

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
LOGIN_COOKIE = "identity_admin_login"
FLASH_COOKIE = "identity_admin_flash"
PAGE_SIZE = 24

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["when"] = format_when
templates.env.filters["duration"] = format_duration
templates.env.filters["detail"] = format_detail
templates.env.globals["quote"] = quote

router = APIRouter(prefix="/admin", include_in_schema=False)


# plumbing ------------------------------------------------------------------------------------
def _codec(request: Request) -> SessionCodec:
    # One codec per app, made on first use: the secret may have to be generated into data_dir.
    codec = getattr(request.app.state, "admin_session_codec", None)
    if codec is None:
        codec = SessionCodec(load_or_create_secret(_settings(request)))
        request.app.state.admin_session_codec = codec
    return codec


def _secure_cookie(request: Request) -> bool:
    # Browsers accept Secure cookies on http://localhost and 127.0.0.1 (both count as secure
    # contexts), so only a plain-HTTP non-loopback deployment lacks the flag; the login page
    # warns about exactly that case.
    return request.url.scheme == "https" or _is_loopback(request)


def _is_loopback(request: Request) -> bool:
    host = (request.url.hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1", "[::1]")


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/admin",
        httponly=True,
        secure=_secure_cookie(request),
        samesite="lax",
    )


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _flash(request: Request, response: Response, message: str, kind: str = "ok") -> Response:
    value = base64.urlsafe_b64encode(f"{kind}\n{message}".encode()).decode()
    _set_cookie(request, response, FLASH_COOKIE, value, max_age=60)
    return response


def _pop_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        kind, _, message = base64.urlsafe_b64decode(raw.encode()).decode().partition("\n")
    except (ValueError, UnicodeDecodeError):
        return None
    return {"kind": kind if kind in ("ok", "error", "warn") else "ok", "message": message}


class Admin:
    """The signed-in operator: cookie session plus the key's scope (re-read every request)."""

    def __init__(self, session: AdminSession, principal: Principal, prefix: str) -> None:
        self.session = session
        self.principal = principal
        self.prefix = prefix

    @property
    def csrf(self) -> str:
        return self.session.csrf

    @property
    def actor(self) -> int:
        return self.principal.key_id

    def may_see(self, collection: str) -> bool:
        return self.principal.collection is None or self.principal.collection == collection


def _login_redirect(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(
        status_code=303, headers={"Location": "/admin/login?" + urlencode({"next": target})}
    )


def current_admin(request: Request) -> Admin:
    """Dependency: the signed-in admin, or a 303 to the sign-in page."""
    session = _codec(request).read(request.cookies.get(COOKIE_NAME))
    if session is None:
        raise _login_redirect(request)
    key = session_key(_store(request).sessions, session)  # ended, expired or key revoked: None
    if key is None or key.scope != "admin":
        raise _login_redirect(request)
    return Admin(session, Principal(key.id, key.scope, key.collection), key.prefix)


async def checked_admin(request: Request, admin: Annotated[Admin, Depends(current_admin)]) -> Admin:
    """Dependency for every POST: the signed-in admin whose form carries the session's token."""
    form = await request.form()  # Starlette caches it; the route's Form/File params reuse it
    submitted = form.get("csrf") or request.headers.get("x-csrf-token")
    if not csrf_ok(admin.session, submitted if isinstance(submitted, str) else None):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong: reload the page")
    return admin


AdminDep = Annotated[Admin, Depends(current_admin)]
CheckedAdminDep = Annotated[Admin, Depends(checked_admin)]


def render(
    request: Request,
    template: str,
    admin: Admin | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    flash = context.pop("flash", None) or _pop_flash(request)
    response = templates.TemplateResponse(
        request,
        template,
        {"admin": admin, "flash": flash, "path": request.url.path, **context},
        status_code=status_code,
    )
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    # Pages show biometric results: keep them out of shared caches and the back-forward cache.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _collection_or_404(request: Request, admin: Admin, cid: str) -> dict[str, Any]:
    if not admin.may_see(cid):
        raise NotFound(f"collection '{cid}' not found", collection=cid)
    return _store(request).get_collection(cid)


def _error_page(request: Request, admin: Admin | None, exc: CodedError) -> HTMLResponse:
    return render(
        request, "error.html", admin, status_code=exc.http_status, error=exc,
    )


async def _read_upload(upload: UploadFile | None, what: str) -> bytes:
    if upload is None or not upload.filename:
        raise InvalidInput(f"choose a {what} image")
    data = await upload.read()
    if not data:
        raise InvalidInput(f"the {what} image '{upload.filename}' is empty")
    return data


# static --------------------------------------------------------------------------------------
@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file():
        raise HTTPException(status_code=404, detail="no such file")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=300"})


# sign in / out -------------------------------------------------------------------------------
def _safe_next(target: str | None) -> str:
    # Only same-site dashboard paths: an open redirect would make the login page a phishing aid.
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return "/admin/collections"


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        login_token=token,
        next=_safe_next(next),
        insecure=not _secure_cookie(request),
    )
    # Double-submit token: a cross-site form cannot read this cookie to copy it into the form.
    _set_cookie(request, response, LOGIN_COOKIE, token, max_age=1800)
    return response


@router.post("/login")
def login(
    request: Request,
    api_key: Annotated[str, Form()] = "",
    login_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not csrf_ok(AdminSession("", expected), login_token):
        return _login_failed(request, next, "Your sign-in form expired; please try again.")
    client = client_address(request)
    try:
        principal = _keys(request).authenticate(api_key.strip(), client=client, action="admin.login")
    except TooManyAttempts as exc:
        return _login_failed(
            request, next,
            f"Too many failed sign-ins from this computer or for this key. Wait "
            f"{exc.details['retry_after_s']} seconds, then try again.",
            status_code=429, retry_after=exc.details["retry_after_s"],
        )
    except Unauthorized:
        return _login_failed(request, next, "That API key is not valid or has been revoked.")
    if principal.scope != "admin":
        _store(request).audit(
            principal.key_id, "admin.login", "refused", reason="not_admin", client=client
        )
        return _login_failed(
            request, next, f"That is a '{principal.scope}' key; the dashboard needs an admin key."
        )
    codec = _codec(request)
    session, cookie = codec.new()
    start_session(_store(request).sessions, session, principal.key_id, codec.max_age_s)
    _store(request).audit(
        principal.key_id, "admin.login", "ok", collection=principal.collection, client=client
    )
    response = _redirect(_safe_next(next))
    _set_cookie(request, response, COOKIE_NAME, cookie, max_age=codec.max_age_s)
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


def _login_failed(
    request: Request, next: str, message: str, status_code: int = 401, retry_after: int | None = None
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        status_code=status_code,
        login_token=token,
        next=_safe_next(next),
        insecure=not _secure_cookie(request),
        flash={"kind": "error", "message": message},
    )
    _set_cookie(request, response, LOGIN_COOKIE, token, max_age=1800)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@router.post("/logout")
def logout(request: Request, admin: CheckedAdminDep) -> Response:
    end_session(_store(request).sessions, admin.session)  # the cookie is dead, wherever copied
    _store(request).audit(admin.actor, "admin.logout", "ok")
    response = _redirect("/admin/login")
    response.delete_cookie(COOKIE_NAME, path="/admin")
    return response


@router.get("")
@router.get("/")
def home(admin: AdminDep) -> Response:
    return _redirect("/admin/collections")


# collections ---------------------------------------------------------------------------------
@router.get("/collections")
def collections_page(request: Request, admin: AdminDep) -> HTMLResponse:
    items = [c for c in _store(request).list_collections() if admin.may_see(c["name"])]
    return render(request, "collections.html", admin, collections=items)


@router.post("/collections")
def create_collection(
    request: Request,
    admin: CheckedAdminDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    liveness_policy: Annotated[str, Form()] = "off",
) -> Response:
    try:
        admin.principal.require("admin")
        created = _store(request).create_collection(
            name.strip(), description.strip(), actor=admin.actor, liveness_policy=liveness_policy
        )
    except CodedError as exc:
        items = [c for c in _store(request).list_collections() if admin.may_see(c["name"])]
        return render(
            request, "collections.html", admin, status_code=exc.http_status, collections=items,
            flash={"kind": "error", "message": exc.message}, form={"name": name, "description": description},
        )
    return _flash(request, _redirect("/admin/collections"), f"Collection '{created['name']}' created.")


@router.get("/collections/{cid}/delete")
def confirm_delete_collection(request: Request, cid: str, admin: AdminDep) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    return render(request, "collection_delete.html", admin, collection=collection)


@router.post("/collections/{cid}/delete")
def delete_collection(
    request: Request, cid: str, admin: CheckedAdminDep, confirm: Annotated[str, Form()] = ""
) -> Response:
    try:
        collection = _collection_or_404(request, admin, cid)
        admin.principal.require("admin")
        if confirm.strip() != cid:
            raise InvalidInput(f"type the collection name '{cid}' to confirm the deletion")
        result = _store(request).delete_collection(cid, actor=admin.actor)
    except CodedError as exc:
        if isinstance(exc, InvalidInput):
            return render(
                request, "collection_delete.html", admin, status_code=400, collection=collection,
                flash={"kind": "error", "message": exc.message},
            )
        return _error_page(request, admin, exc)
    return _flash(
        request,
        _redirect("/admin/collections"),
        f"Collection '{cid}' deleted with {result['identities']} identities and "
        f"{result['templates']} faces.",
    )


# identities ----------------------------------------------------------------------------------
@router.get("/collections/{cid}")
def identities_page(
    request: Request, cid: str, admin: AdminDep, q: str = "", page: int = 1
) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
        page = max(page, 1)
        result = _store(request).list_identities(
            cid, q=q.strip() or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
    except CodedError as exc:
        return _error_page(request, admin, exc)
    thumbs = queries.first_template_ids(_store(request), [i["id"] for i in result["items"]])
    pages = max(1, math.ceil(result["total"] / PAGE_SIZE))
    return render(
        request, "identities.html", admin, collection=collection, result=result, thumbs=thumbs,
        q=q, page=page, pages=pages, tab="identities",
    )


@router.post("/collections/{cid}/liveness")
def set_liveness_policy(
    request: Request, cid: str, admin: CheckedAdminDep,
    liveness_policy: Annotated[str, Form()] = "",
) -> Response:
    back = _redirect(f"/admin/collections/{quote(cid)}")
    try:
        admin.principal.require("admin")
        _collection_or_404(request, admin, cid)
        _store(request).update_collection(cid, liveness_policy=liveness_policy, actor=admin.actor)
    except CodedError as exc:
        return _flash(request, back, exc.message, kind="error")
    return _flash(request, back, f"Liveness policy set to '{liveness_policy}'.")


@router.post("/collections/{cid}/identities")
def create_identity(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    external_id: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
) -> Response:
    try:
        _collection_or_404(request, admin, cid)
        created = _store(request).create_identity(
            cid, external_id.strip(), display_name.strip(), actor=admin.actor
        )
    except CodedError as exc:
        return _flash(
            request, _redirect(f"/admin/collections/{quote(cid)}"), exc.message, kind="error"
        )
    return _flash(
        request,
        _redirect(f"/admin/collections/{quote(cid)}/identities/{created['id']}"),
        f"Identity '{created['external_id']}' created: add photos to enroll faces.",
    )


def _identity_page(
    request: Request,
    cid: str,
    iid: str,
    admin: Admin,
    upload: dict[str, Any] | None = None,
    flash: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
        identity = _store(request).get_identity(cid, iid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    return render(
        request, "identity.html", admin, status_code=status_code, collection=collection,
        identity=identity, upload=upload, flash=flash, tab="identities",
    )


def _identity_error(
    request: Request, cid: str, iid: str, admin: Admin, exc: CodedError
) -> HTMLResponse:
    """The identity page again with the error explained, at the error's HTTP status."""
    return _identity_page(
        request, cid, iid, admin, flash={"kind": "error", "message": exc.message},
        status_code=exc.http_status,
    )


@router.get("/collections/{cid}/identities/{iid}")
def identity_page(request: Request, cid: str, iid: str, admin: AdminDep) -> HTMLResponse:
    return _identity_page(request, cid, iid, admin)


@router.post("/collections/{cid}/identities/{iid}/faces")
async def upload_faces(
    request: Request,
    cid: str,
    iid: str,
    admin: CheckedAdminDep,
    files: Annotated[list[UploadFile], File()],
) -> HTMLResponse:
    try:
        _collection_or_404(request, admin, cid)
        chosen = [f for f in files if f.filename]
        if not chosen:
            raise InvalidInput("choose one or more photos to enroll")
        check_file_count(len(chosen), _settings(request).enroll_max_files)
        images = [(f.filename or "photo", await f.read()) for f in chosen]
        store = _store(request)
        from starlette.concurrency import run_in_threadpool

        # Analysis runs the models for seconds: off the event loop, like the sync routes.
        result = await run_in_threadpool(store.enroll_images, cid, iid, images, actor=admin.actor)
    except CodedError as exc:
        return _identity_error(request, cid, iid, admin, exc)
    n_ok, n_bad = len(result["accepted"]), len(result["rejected"])
    message = f"{n_ok} photo{'s' if n_ok != 1 else ''} enrolled, {n_bad} rejected."
    return _identity_page(
        request, cid, iid, admin, upload=result,
        flash={"kind": "ok" if n_ok and not n_bad else ("warn" if n_ok else "error"), "message": message},
    )


@router.post("/collections/{cid}/identities/{iid}/faces/{tid}/remove")
def remove_face(request: Request, cid: str, iid: str, tid: int, admin: CheckedAdminDep) -> Response:
    try:
        _collection_or_404(request, admin, cid)
        _store(request).remove_face(cid, iid, tid, actor=admin.actor)
    except CodedError as exc:
        return _identity_error(request, cid, iid, admin, exc)
    return _flash(
        request,
        _redirect(f"/admin/collections/{quote(cid)}/identities/{quote(iid)}"),
        f"Face {tid} removed.",
    )


@router.post("/collections/{cid}/identities/{iid}/erase")
def erase_identity(
    request: Request,
    cid: str,
    iid: str,
    admin: CheckedAdminDep,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    try:
        _collection_or_404(request, admin, cid)
        if confirm != "erase":
            raise InvalidInput("tick the box to confirm the erasure")
        identity = _store(request).get_identity(cid, iid)
        result = _store(request).erase_identity(cid, iid, actor=admin.actor)
    except CodedError as exc:
        return _identity_error(request, cid, iid, admin, exc)
    return _flash(
        request,
        _redirect(f"/admin/collections/{quote(cid)}"),
        f"Identity '{identity['external_id']}' erased with {result['templates']} faces; "
        "the audit log keeps the fact.",
    )


@router.get("/collections/{cid}/thumbnails/{tid}")
def thumbnail(request: Request, cid: str, tid: int, admin: AdminDep) -> Response:
    try:
        if not admin.may_see(cid):
            raise NotFound("no such thumbnail")
        jpeg = _store(request).thumbnail_jpeg(cid, tid)
    except CodedError:
        raise HTTPException(status_code=404, detail="no such thumbnail") from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


# search by photo -----------------------------------------------------------------------------
@router.get("/collections/{cid}/search")
def search_page(request: Request, cid: str, admin: AdminDep) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    return render(request, "search.html", admin, collection=collection, tab="search", top_k=5)


@router.post("/collections/{cid}/search")
async def search(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    probe: Annotated[UploadFile | None, File()] = None,
    top_k: Annotated[int, Form()] = 5,
) -> HTMLResponse:
    from starlette.concurrency import run_in_threadpool

    try:
        collection = _collection_or_404(request, admin, cid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    try:
        data = await _read_upload(probe, "probe")
        result = await run_in_threadpool(
            _store(request).identify, cid, data, top_k=top_k, all_faces=True, actor=admin.actor
        )
        picture = await run_in_threadpool(annotated_probe, data, _settings(request), result["faces"])
    except CodedError as exc:
        return render(
            request, "search.html", admin, status_code=exc.http_status, collection=collection,
            tab="search", top_k=top_k, flash={"kind": "error", "message": exc.message},
        )
    return render(
        request, "search.html", admin, collection=collection, tab="search", top_k=top_k,
        result=result, picture=picture, filename=probe.filename if probe else "",
    )


# verify --------------------------------------------------------------------------------------
def _identity_choices(request: Request, cid: str) -> list[dict[str, Any]]:
    return _store(request).list_identities(cid, limit=1000)["items"]


@router.get("/collections/{cid}/verify")
def verify_page(
    request: Request, cid: str, admin: AdminDep, identity: str = ""
) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    return render(
        request, "verify.html", admin, collection=collection, tab="verify",
        choices=_identity_choices(request, cid), chosen=identity, mode="identity",
    )


@router.post("/collections/{cid}/verify")
async def verify(
    request: Request,
    cid: str,
    admin: CheckedAdminDep,
    probe: Annotated[UploadFile | None, File()] = None,
    other: Annotated[UploadFile | None, File()] = None,
    mode: Annotated[str, Form()] = "identity",
    identity_id: Annotated[str, Form()] = "",
    liveness: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    from starlette.concurrency import run_in_threadpool

    from identity.calibration import far_at

    try:
        collection = _collection_or_404(request, admin, cid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    context: dict[str, Any] = {
        "collection": collection, "tab": "verify", "choices": _identity_choices(request, cid),
        "chosen": identity_id, "mode": mode, "liveness": liveness,
    }
    store = _store(request)
    try:
        data = await _read_upload(probe, "probe")
        if mode == "pair":
            second = await _read_upload(other, "second")
            result = await run_in_threadpool(
                store.verify, cid, data, other=second, actor=admin.actor, liveness=liveness
            )
        else:
            if not identity_id:
                raise InvalidInput("choose the identity to compare with")
            result = await run_in_threadpool(
                store.verify, cid, data, identity_id=identity_id, actor=admin.actor,
                liveness=liveness,
            )
    except CodedError as exc:
        return render(
            request, "verify.html", admin, status_code=exc.http_status,
            flash={"kind": "error", "message": exc.message},
            refused=exc.details if exc.code == "presentation_attack" else None, **context,
        )
    # The FAR of the operating threshold is the policy; the FAR at this very similarity tells
    # an operator how surprising this score would be for two different people.
    far_here = far_at(result["model"], result["similarity"], _settings(request))
    matched = next((c for c in context["choices"] if c["id"] == result.get("identity_id")), None)
    return render(
        request, "verify.html", admin, result=result, far_here=far_here, matched=matched, **context
    )


# audit ---------------------------------------------------------------------------------------
def _parse_when(value: str, field: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field}: not a date and time: '{value}'") from None
    # The form's datetime-local has no zone: read it as UTC, as the table shows.
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@router.get("/audit")
def audit_page(
    request: Request,
    admin: AdminDep,
    action: str = "",
    collection: str = "",
    since: str = "",
    until: str = "",
    page: int = 1,
    check: bool = False,
) -> HTMLResponse:
    page = max(page, 1)
    filters = {"action": action, "collection": collection, "since": since, "until": until}
    # The whole chain is read to check it (seconds for millions of rows): on request only.
    chain = verify_chain(_store(request).sessions) if check else None
    if admin.principal.collection is not None:
        collection = admin.principal.collection
    flash = None
    try:
        result = queries.audit_page(
            _store(request),
            action=action or None,
            collection=collection or None,
            since=_parse_when(since, "from"),
            until=_parse_when(until, "until"),
            offset=(page - 1) * queries.AUDIT_PAGE,
        )
    except CodedError as exc:
        flash = {"kind": "error", "message": exc.message}
        result = queries.audit_page(_store(request), limit=0)
    pages = max(1, math.ceil(result["total"] / queries.AUDIT_PAGE))
    collections = [c["name"] for c in _store(request).list_collections() if admin.may_see(c["name"])]
    query = urlencode({k: v for k, v in filters.items() if v})
    return render(
        request, "audit.html", admin, result=result, filters=filters, page=page, pages=pages,
        collections=collections, query=query, flash=flash, chain=chain,
        last_day=(datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    )


# system --------------------------------------------------------------------------------------
@router.get("/system")
def system_page(request: Request, admin: AdminDep) -> HTMLResponse:
    settings = _settings(request)
    store = _store(request)
    metrics = getattr(request.app.state, "metrics", None)
    registry = getattr(metrics, "registry", None)
    indexes = [
        i for i in store.indexes.describe() if admin.may_see(i["collection"])
    ]
    return render(
        request,
        "system.html",
        admin,
        models=system_models(settings),
        indexes=indexes,
        index_factory=settings.index_factory,
        thresholds=thresholds_table(store.model_name, settings, store.detector_name),
        default_far=settings.default_far,
        metrics=human_metrics(registry) if registry is not None else None,
    )


# gallery jobs and clusters -------------------------------------------------------------------
# The batch indexing jobs (docs/batch.md) run through the API or the CLI; the dashboard shows
# them and lets an operator turn proposed clusters into identities, with the same GalleryStore
# calls the /v1 gallery routes make.
def _visible_names(request: Request, admin: Admin) -> list[str]:
    return [c["name"] for c in _store(request).list_collections() if admin.may_see(c["name"])]


def _any_running(jobs: list[dict[str, Any]]) -> bool:
    return any(j["status"] in LIVE_STATUSES for j in jobs)


@router.get("/jobs")
def all_jobs_page(request: Request, admin: AdminDep) -> HTMLResponse:
    jobs = queries.recent_jobs(_gallery(request), _visible_names(request, admin))
    return render(request, "jobs.html", admin, jobs=jobs, refresh=_any_running(jobs))


@router.get("/collections/{cid}/jobs")
def jobs_page(request: Request, cid: str, admin: AdminDep) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
        jobs = _gallery(request).list_jobs(cid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    return render(
        request, "jobs.html", admin, collection=collection, tab="jobs", jobs=jobs,
        refresh=_any_running(jobs),
    )


@router.get("/collections/{cid}/jobs/{jid}")
def job_page(request: Request, cid: str, jid: str, admin: AdminDep) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
        job = _gallery(request).get_job(cid, jid)
    except CodedError as exc:
        return _error_page(request, admin, exc)
    return render(
        request, "job.html", admin, collection=collection, tab="jobs", job=job,
        refresh=_any_running([job]),
    )


@router.post("/collections/{cid}/jobs/{jid}/cancel")
def cancel_job(request: Request, cid: str, jid: str, admin: CheckedAdminDep) -> Response:
    """The API's cancel: a queued job ends at once, a running one at its next check."""
    target = _redirect(f"/admin/collections/{quote(cid)}/jobs/{quote(jid)}")
    try:
        _collection_or_404(request, admin, cid)
        job = _gallery(request).cancel_job(cid, jid, actor=admin.actor)
    except NotFound as exc:
        return _error_page(request, admin, exc)
    except CodedError as exc:
        return _flash(request, target, exc.message, kind="error")
    if job["status"] == "cancelled":
        return _flash(request, target, f"Job {jid[:8]} cancelled before it started.")
    return _flash(
        request, target,
        f"Job {jid[:8]} is stopping; what it committed stays. This page updates when it has.",
    )


def _clusters_page(
    request: Request,
    cid: str,
    admin: Admin,
    flash: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    try:
        collection = _collection_or_404(request, admin, cid)
        clusters = _gallery(request).list_clusters(cid, "proposed")
    except CodedError as exc:
        return _error_page(request, admin, exc)
    return render(
        request, "clusters.html", admin, status_code=status_code, collection=collection,
        tab="clusters", clusters=clusters, choices=_identity_choices(request, cid), flash=flash,
    )


@router.get("/collections/{cid}/clusters")
def clusters_page(request: Request, cid: str, admin: AdminDep) -> HTMLResponse:
    return _clusters_page(request, cid, admin)



def _clusters_error(request: Request, cid: str, admin: Admin, exc: CodedError) -> HTMLResponse:
    """The clusters page again with the error explained, at the error's HTTP status."""
    return _clusters_page(
        request, cid, admin, flash={"kind": "error", "message": exc.message},
        status_code=exc.http_status,
    )

@router.post("/collections/{cid}/clusters/{clid}/name")
def name_cluster(
    request: Request,
    cid: str,
    clid: int,
    admin: CheckedAdminDep,
    external_id: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    identity_id: Annotated[str, Form()] = "",
) -> Response:
    try:
        _collection_or_404(request, admin, cid)
        if identity_id:  # the form's "add to an existing identity" choice wins over a new id
            result = _gallery(request).name_cluster(
                cid, clid, identity_id=identity_id, actor=admin.actor
            )
        else:
            if not external_id.strip():
                raise InvalidInput("type an external id for the new identity, or choose one")
            result = _gallery(request).name_cluster(
                cid, clid, external_id=external_id.strip(), display_name=display_name.strip(),
                actor=admin.actor,
            )
        identity = _store(request).get_identity(cid, result["identity_id"])
    except CodedError as exc:
        return _clusters_error(request, cid, admin, exc)
    return _flash(
        request,
        _redirect(f"/admin/collections/{quote(cid)}/clusters"),
        f"Cluster {clid} named '{identity['external_id']}': {result['templates']} faces enrolled "
        "and searchable.",
    )


@router.post("/collections/{cid}/clusters/{clid}/merge")
def merge_cluster(
    request: Request,
    cid: str,
    clid: int,
    admin: CheckedAdminDep,
    source: Annotated[str, Form()] = "",
) -> Response:
    try:
        _collection_or_404(request, admin, cid)
        if not source.isdigit():
            raise InvalidInput("choose the cluster to merge into this one")
        result = _gallery(request).merge_clusters(cid, clid, [int(source)], actor=admin.actor)
    except CodedError as exc:
        return _clusters_error(request, cid, admin, exc)
    return _flash(
        request,
        _redirect(f"/admin/collections/{quote(cid)}/clusters"),
        f"Cluster {source} merged into cluster {clid}: {result['size']} faces.",
    )


@router.get("/collections/{cid}/gallery-faces/{face_id}/thumbnail")
def gallery_face_thumbnail(request: Request, cid: str, face_id: int, admin: AdminDep) -> Response:
    try:
        if not admin.may_see(cid):
            raise NotFound("no such thumbnail")
        jpeg = _gallery(request).face_thumbnail(cid, face_id)
    except CodedError:
        raise HTTPException(status_code=404, detail="no such thumbnail") from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
