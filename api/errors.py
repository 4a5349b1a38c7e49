"""One error format for every failure: RFC 9457 ``application/problem+json``, never a stack trace.

    {"type": "urn:pingan:problem:invalid_parameter", "title": "Invalid parameter", "status": 422,
     "detail": "step: must be a multiple of 300 seconds ...", "code": "invalid_parameter", "field": "step",
     "error": {"code": "invalid_parameter", "message": "...", "field": "step"}}

``code`` (the stable machine-readable name, also the last part of ``type``) and ``field`` (the offending
parameter) are extension members. ``error`` repeats them in the API's first format so clients written
against it (the ingest gateway's producers) keep working; it is deprecated and will be removed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from pingan.api.responses import OrjsonResponse
from pingan.errors import StorageError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:pingan:problem:"


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


class ProblemResponse(OrjsonResponse):
    media_type = PROBLEM_MEDIA_TYPE


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The first format's ``{"error": {...}}`` member (kept inside every problem document)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def _title(code: str, status: int) -> str:
    return code.replace("_", " ").capitalize() if code else HTTPStatus(status).phrase


def problem(status: int, code: str, detail: str, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem document (with the deprecated ``error`` member)."""
    body: dict[str, Any] = {"type": TYPE_PREFIX + code, "title": _title(code, status), "status": status,
                            "detail": detail, "code": code}  # fmt: skip
    if field is not None:
        body["field"] = field
    return {**body, **error_body(code, detail, field)}


def error_response(status: int, code: str, message: str, field: str | None = None, **extra: Any) -> Response:
    return ProblemResponse({**problem(status, code, message, field), **extra}, status_code=status)


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


# --- OpenAPI: every error response documented as problem+json ---------------------------------------------

_PROBLEM_REF = {"$ref": "#/components/schemas/ErrorBody"}
# Statuses any route can answer whatever its own documentation says.
COMMON_ERRORS = {
    "401": "no API key, or an unknown one (`WWW-Authenticate` says how to send one)",
    "403": "the key's role may not read this",
    "422": "invalid parameter",
    "500": "internal error (a bug: reported with no detail)",
}


def document_problems(schema: dict[str, Any], *, protected: set[str]) -> None:
    """Rewrite, in place, every 4xx/5xx response of the query API (GET operations) as
    ``application/problem+json`` with the problem schema, and add the statuses every operation can answer
    (401/403 on ``protected`` paths). The ingest routes (POST) document their own bodies."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method != "get":
                continue
            responses = operation.setdefault("responses", {})
            extra = dict(COMMON_ERRORS) if path in protected else {"422": COMMON_ERRORS["422"],
                                                                    "500": COMMON_ERRORS["500"]}  # fmt: skip
            if "parameters" not in operation and "requestBody" not in operation:
                extra.pop("422", None)
            for status, description in extra.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status[:1] not in ("4", "5"):
                    continue
                content = response.get("content", {})
                json_schema = content.pop("application/json", {}).get("schema")
                if json_schema is None or json_schema.get("$ref", "").endswith("/HTTPValidationError"):
                    json_schema = _PROBLEM_REF
                content[PROBLEM_MEDIA_TYPE] = {"schema": json_schema}
                response["content"] = content
