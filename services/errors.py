"""The service's errors, and one problem shape for every error:
``{"error": {"code", "message", "details"}}``.

The service's own tree (``ServiceError``: unknown or duplicate resources, authentication, scope,
request limits) sits beside the library's (``identity.errors.IdentityError``) under
``CodedError``, which carries its code and HTTP status; the handlers below map both,
FastAPI's validation errors (422), Starlette's HTTP errors (404, 405...), oversize requests (413),
values Postgres refuses to store (422; the API models should have refused them first) and, last,
anything unexpected (500, logged with its traceback, no internals in the body).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity.errors import CodedError

log = logging.getLogger(__name__)


class ServiceError(CodedError):
    """The root of the errors the service raises (the library raises ``IdentityError``)."""

    code = "service_error"


class NotFound(ServiceError):
    code = "not_found"
    http_status = 404


class Conflict(ServiceError):
    code = "conflict"
    http_status = 409


class DuplicateImage(Conflict):
    """The same image (by SHA-256) is already enrolled for this identity."""

    code = "duplicate_image"


class NoTemplates(Conflict):
    """Verification against an identity that has no template for the current model."""

    code = "no_templates"


class MigrationIncomplete(Conflict):
    """A switch to a face model whose templates do not yet cover the active model's."""

    code = "migration_incomplete"


class ActiveModel(Conflict):
    """Dropping the templates of the model a collection decides with."""

    code = "active_model"


class Unauthorized(ServiceError):
    code = "unauthorized"
    http_status = 401


class Forbidden(ServiceError):
    code = "forbidden"
    http_status = 403


class TooManyAttempts(ServiceError):
    """Too many failed key checks from one client or for one key prefix; ``retry_after_s``
    says when to try again (sent as Retry-After)."""

    code = "too_many_attempts"
    http_status = 429


class RequestTooLarge(ServiceError):
    code = "request_too_large"
    http_status = 413


class EnrollmentRejected(ServiceError):
    """Every image of an enrollment request was rejected; ``details.rejected`` says why."""

    code = "enrollment_rejected"
    http_status = 422


class VectorStoreUnavailable(ServiceError):
    """The external vector store (Milvus) did not answer; Postgres holds every write, so a retry
    after it is back gives the right answer."""

    code = "vector_store_unavailable"
    http_status = 503


class TooManyFiles(ServiceError):
    """More images in one enrollment request than ``enroll_max_files``; the cap is in details."""

    code = "too_many_files"
    http_status = 413


def check_file_count(count: int, max_files: int) -> None:
    """Refuse an enrollment request with more than ``max_files`` images before reading any: each
    costs a full analysis, so one request could otherwise hold a worker for minutes."""
    if count > max_files:
        raise TooManyFiles(
            f"{count} files in one request, over the limit of {max_files} per request; send them "
            "in several requests or as a batch job",
            files=count,
            max_files=max_files,
        )


class ServiceBusy(ServiceError):
    """Every inference worker is busy and the queue is full (services.limits)."""

    code = "busy"
    http_status = 503


def problem(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}}, status_code=status
    )


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    # Drop ``input`` (it may be an uploaded image or a secret) and ``ctx`` (may hold exceptions).
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg")),
            "type": str(e.get("type")),
        }
        for e in errors
    ]


_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CodedError)
    async def coded_error(request: Request, exc: CodedError) -> JSONResponse:
        response = JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status)
        retry_after = exc.details.get("retry_after_s")
        if isinstance(retry_after, int | float):  # a 429/503 that says when to come back
            response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(exc.errors())
        where = ", ".join(".".join(e["loc"]) + ": " + e["msg"] for e in errors[:3])
        return problem(422, "invalid_input", f"invalid request: {where}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        resp = problem(exc.status_code, code, message)
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        # Backstop for input the API models let through (a NUL, an out-of-range number): it is
        # the client's value, not a server fault. Postgres's message may quote the value, so it
        # goes to the log, not the body; a warning, since it means a model check is missing.
        log.warning(
            "database refused a value on %s %s: %s",
            request.method,
            request.url.path,
            str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__,
        )
        return problem(422, "invalid_input", "a value in the request cannot be stored or compared")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "internal server error")


class RequestSizeLimit:
    """Refuse request bodies over ``max_bytes`` with a 413 problem, declared or streamed.

    A declared ``Content-Length`` over the limit is refused before reading anything. A chunked
    body is counted as it arrives; once over, the app sees an end of body and whatever response
    it starts is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self) -> JSONResponse:
        return problem(
            413,
            RequestTooLarge.code,
            f"request body over the limit of {self.max_bytes} bytes",
            limit=self.max_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await problem(400, "bad_request", "invalid Content-Length")(
                        scope, receive, send
                    )
                    return
                if declared > self.max_bytes:
                    await self._refusal()(scope, receive, send)
                    return
        seen = 0
        too_large = False

        async def counted_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if too_large:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    body = json.dumps(
                        {
                            "error": {
                                "code": RequestTooLarge.code,
                                "message": f"request body over the limit of {self.max_bytes} bytes",
                                "details": {"limit": self.max_bytes},
                            }
                        }
                    ).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
