from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from services.auth import KEY_PREFIX
from services.deps import client_address
from services.errors import Unauthorized

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Database reachable, migrations applied, indexes loaded and models warm."""
    state = request.app.state
    checks: dict[str, bool] = {"started": bool(getattr(state, "ready", False))}
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = True
    except SQLAlchemyError:
        checks["database"] = False
    ok = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", responses={401: {"description": "no or wrong credentials"}, 403: {}})
def metrics(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Prometheus metrics. They name collections, so they need credentials: the
    ``IDENTITY_METRICS_TOKEN`` as a Bearer token (Prometheus ``authorization``), or an admin
    API key for every collection (as a Bearer token or X-API-Key)."""
    scheme, _, bearer = (authorization or "").partition(" ")
    bearer = bearer.strip() if scheme.lower() == "bearer" else ""
    token = request.app.state.settings.metrics_token
    if not (token and bearer and hmac.compare_digest(bearer.encode(), token.encode())):
        key = bearer if bearer.startswith(KEY_PREFIX) else x_api_key
        if not key and not bearer:
            raise Unauthorized("/metrics needs the metrics token or an admin API key")
        principal = request.app.state.keys.authenticate(
            key or bearer, client=client_address(request)
        )
        principal.require("admin")
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
