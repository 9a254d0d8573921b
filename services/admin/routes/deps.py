"""What every dashboard page shares: the signed-in Admin, the CSRF check, cookies, flashes and
rendering a template (or the error page).

Dependencies come in through FastAPI ``Depends``, as in the API (``services.deps``): a route
takes ``admin: AdminDep`` (a GET) or ``admin: CheckedAdminDep`` (a POST: the form must carry the
session's CSRF token) and ``store: StoreDep``. Not signed in, or the key revoked: a 303 to the
sign-in page.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from identity.errors import CodedError, InvalidInput
from services.admin.render import format_detail, format_duration, format_when
from services.admin.session import (
    COOKIE_NAME,
    AdminSession,
    SessionCodec,
    csrf_ok,
    load_or_create_secret,
    session_key,
)
from services.auth import Principal
from services.deps import SessionsDep, SettingsDep, lazy_state
from services.errors import NotFound
from services.store import IdentityStore

ADMIN_DIR = Path(__file__).resolve().parent.parent
FLASH_COOKIE = "identity_admin_flash"

templates = Jinja2Templates(directory=str(ADMIN_DIR / "templates"))
templates.env.filters["when"] = format_when
templates.env.filters["duration"] = format_duration
templates.env.filters["detail"] = format_detail
templates.env.globals["quote"] = quote


# cookies and flashes -------------------------------------------------------------------------
def get_codec(request: Request, settings: SettingsDep) -> SessionCodec:
    # One codec per app, made on first use: the secret may have to be generated into data_dir.
    return lazy_state(
        request, "admin_session_codec", lambda: SessionCodec(load_or_create_secret(settings))
    )


CodecDep = Annotated[SessionCodec, Depends(get_codec)]


def secure_cookie(request: Request) -> bool:
    # Browsers accept Secure cookies on http://localhost and 127.0.0.1 (both count as secure
    # contexts), so only a plain-HTTP non-loopback deployment lacks the flag; the login page
    # warns about exactly that case.
    return request.url.scheme == "https" or _is_loopback(request)


def _is_loopback(request: Request) -> bool:
    host = (request.url.hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1", "[::1]")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/admin",
        httponly=True,
        secure=secure_cookie(request),
        samesite="lax",
    )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def flash(request: Request, response: Response, message: str, kind: str = "ok") -> Response:
    value = base64.urlsafe_b64encode(f"{kind}\n{message}".encode()).decode()
    set_cookie(request, response, FLASH_COOKIE, value, max_age=60)
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


# the signed-in admin -------------------------------------------------------------------------
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


def current_admin(request: Request, codec: CodecDep, sessions: SessionsDep) -> Admin:
    """Dependency: the signed-in admin, or a 303 to the sign-in page."""
    session = codec.read(request.cookies.get(COOKIE_NAME))
    if session is None:
        raise _login_redirect(request)
    key = session_key(sessions, session)  # ended, expired or key revoked: None
    if key is None or key.scope != "admin":
        raise _login_redirect(request)
    admin = Admin(session, Principal(key.id, key.scope, key.collection), key.prefix)
    request.state.admin = admin  # for the error page (PageRoute) of whatever the route raises
    return admin


async def checked_admin(request: Request, admin: Annotated[Admin, Depends(current_admin)]) -> Admin:
    """Dependency for every POST: the signed-in admin whose form carries the session's token."""
    form = await request.form()  # Starlette caches it; the route's Form/File params reuse it
    submitted = form.get("csrf") or request.headers.get("x-csrf-token")
    if not csrf_ok(admin.session, submitted if isinstance(submitted, str) else None):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong: reload the page")
    return admin


AdminDep = Annotated[Admin, Depends(current_admin)]
CheckedAdminDep = Annotated[Admin, Depends(checked_admin)]


# pages ---------------------------------------------------------------------------------------
def render(
    request: Request,
    template: str,
    admin: Admin | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    shown = context.pop("flash", None) or _pop_flash(request)
    response = templates.TemplateResponse(
        request,
        template,
        {"admin": admin, "flash": shown, "path": request.url.path, **context},
        status_code=status_code,
    )
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    # Pages show biometric results: keep them out of shared caches and the back-forward cache.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def error_page(request: Request, admin: Admin | None, exc: CodedError) -> HTMLResponse:
    return render(
        request,
        "error.html",
        admin,
        status_code=exc.http_status,
        error=exc,
    )


def explained(exc: CodedError) -> dict[str, Any]:
    """What ``render`` takes to show a page again with ``exc`` explained: the flash, and the
    error's HTTP status."""
    return {"flash": {"kind": "error", "message": exc.message}, "status_code": exc.http_status}


class PageRoute(APIRoute):
    """A dashboard route: a ``CodedError`` that the page lets out (an unknown collection, a key
    without the right) is the error page at the error's HTTP status, not the API's JSON problem.
    Pages that answer an error otherwise (a flash on the same page) catch it themselves."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except CodedError as exc:
                return error_page(request, getattr(request.state, "admin", None), exc)

        return page


def screen() -> APIRouter:
    """The router of one dashboard screen (``services.admin.routes``)."""
    return APIRouter(prefix="/admin", include_in_schema=False, route_class=PageRoute)


def collection_or_404(store: IdentityStore, admin: Admin, cid: str) -> dict[str, Any]:
    if not admin.may_see(cid):
        raise NotFound(f"collection '{cid}' not found", collection=cid)
    return store.get_collection(cid)


def visible_names(store: IdentityStore, admin: Admin) -> list[str]:
    """The collections this admin's key may see (all of them for an unbound key)."""
    return [c["name"] for c in store.list_collections() if admin.may_see(c["name"])]


def identity_choices(store: IdentityStore, cid: str) -> list[dict[str, Any]]:
    return store.list_identities(cid, limit=1000)["items"]


async def read_upload(upload: UploadFile | None, what: str) -> bytes:
    if upload is None or not upload.filename:
        raise InvalidInput(f"choose a {what} image")
    data = await upload.read()
    if not data:
        raise InvalidInput(f"the {what} image '{upload.filename}' is empty")
    return data
