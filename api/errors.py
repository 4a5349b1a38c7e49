"""One error body for every failure: ``{"error": {"code", "message", "field"?}}``, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from api.responses import OrjsonResponse
from pingan.errors import StorageError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the API refuses on purpose, with the status and the body to send."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})  # e.g. WWW-Authenticate on 401, Retry-After on 429/503


def not_found(message: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", message, field)


def invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, "invalid_parameter", message, field)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def error_response(status: int, code: str, message: str, field: str | None = None, **extra: Any) -> Response:
    return OrjsonResponse({**error_body(code, message, field), **extra}, status_code=status)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.code, exc.message, exc.field)
    response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ())]
    # loc is ("query", "step") or ("path", "grid_id"): the parameter name is what a client can act on.
    field = loc[-1] if len(loc) >= 2 else None
    message = str(first.get("msg", "invalid request"))
    if field:
        message = f"{field}: {message}"
    return error_response(422, "invalid_parameter", message, field)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_"))
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _storage_error(request: Request, exc: Exception) -> Response:
    # The driver's message can name hosts and SQL; it goes to the log, the client gets a stable sentence.
    log.warning("storage unavailable for %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "storage_unavailable", "ClickHouse is unavailable; try again shortly")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error for %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(Exception, _unexpected)
