"""Sign in with an admin API key, sign out, the home redirect and the pages' static files.

The key is typed once; after that a signed, http-only cookie carries a server-side session's
token (``services.admin.session``). The sign-in form itself carries a double-submit token.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from services.admin.routes.deps import (
    ADMIN_DIR,
    AdminDep,
    CheckedAdminDep,
    CodecDep,
    redirect,
    render,
    screen,
    secure_cookie,
    set_cookie,
)
from services.admin.session import COOKIE_NAME, AdminSession, csrf_ok, end_session, start_session
from services.deps import KeysDep, SessionsDep, StoreDep, client_address
from services.errors import TooManyAttempts, Unauthorized

STATIC_DIR = ADMIN_DIR / "static"
LOGIN_COOKIE = "identity_admin_login"

router = screen()


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file():
        raise HTTPException(status_code=404, detail="no such file")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=300"})


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
        insecure=not secure_cookie(request),
    )
    # Double-submit token: a cross-site form cannot read this cookie to copy it into the form.
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=1800)
    return response


@router.post("/login")
def login(
    request: Request,
    store: StoreDep,
    sessions: SessionsDep,
    keys: KeysDep,
    codec: CodecDep,
    api_key: Annotated[str, Form()] = "",
    login_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not csrf_ok(AdminSession("", expected), login_token):
        return _login_failed(request, next, "Your sign-in form expired; please try again.")
    client = client_address(request)
    try:
        principal = keys.authenticate(api_key.strip(), client=client, action="admin.login")
    except TooManyAttempts as exc:
        return _login_failed(
            request,
            next,
            f"Too many failed sign-ins from this computer or for this key. Wait "
            f"{exc.details['retry_after_s']} seconds, then try again.",
            status_code=429,
            retry_after=exc.details["retry_after_s"],
        )
    except Unauthorized:
        return _login_failed(request, next, "That API key is not valid or has been revoked.")
    if principal.scope != "admin":
        store.audit(principal.key_id, "admin.login", "refused", reason="not_admin", client=client)
        return _login_failed(
            request, next, f"That is a '{principal.scope}' key; the dashboard needs an admin key."
        )
    session, cookie = codec.new()
    start_session(sessions, session, principal.key_id, codec.max_age_s)
    store.audit(
        principal.key_id, "admin.login", "ok", collection=principal.collection, client=client
    )
    response = redirect(_safe_next(next))
    set_cookie(request, response, COOKIE_NAME, cookie, max_age=codec.max_age_s)
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


def _login_failed(
    request: Request,
    next: str,
    message: str,
    status_code: int = 401,
    retry_after: int | None = None,
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        status_code=status_code,
        login_token=token,
        next=_safe_next(next),
        insecure=not secure_cookie(request),
        flash={"kind": "error", "message": message},
    )
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=1800)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@router.post("/logout")
def logout(admin: CheckedAdminDep, store: StoreDep, sessions: SessionsDep) -> Response:
    end_session(sessions, admin.session)  # the cookie is dead, wherever copied
    store.audit(admin.actor, "admin.logout", "ok")
    response = redirect("/admin/login")
    response.delete_cookie(COOKIE_NAME, path="/admin")
    return response


@router.get("")
@router.get("/")
def home(admin: AdminDep) -> Response:
    return redirect("/admin/collections")
