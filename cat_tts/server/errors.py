"""OpenAI-style errors: every failure is answered as `{"error": {"message", "type", "param", "code"}}`.

User input never produces a 500 or a traceback: validation raises `APIError` with a 4xx status; anything else is a
bug, logged with its traceback and answered with a generic 500 body.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# OpenAI's error types
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
SERVER_ERROR = "server_error"
UNAVAILABLE = "service_unavailable"
TIMEOUT = "timeout"

_TYPE_BY_STATUS = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    404: NOT_FOUND,
    405: INVALID_REQUEST,
    409: INVALID_REQUEST,
    413: INVALID_REQUEST,
    415: INVALID_REQUEST,
    429: RATE_LIMIT,
    503: UNAVAILABLE,
    504: TIMEOUT,
}


class APIError(Exception):
    """An HTTP error answered in OpenAI's format.

    Args:
        status: HTTP status code.
        message: what was wrong and how to fix it.
        param: the request field at fault, if any.
        code: a short machine-readable code (e.g. "voice_not_found").
        type: OpenAI error type; derived from the status when omitted.
        headers: extra response headers (e.g. Retry-After).
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPE_BY_STATUS.get(status, INVALID_REQUEST if status < 500 else SERVER_ERROR)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """`{"error": {...}}` as OpenAI sends it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 naming the field at fault."""
    return APIError(400, message, param=param, code=code)


def install_error_handlers(app: Any) -> None:
    """Makes every error of a FastAPI app an OpenAI-style JSON body (validation, unknown routes, bugs)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def on_api_error(request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_http_error(request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        error = APIError(exc.status_code, message, code=f"http_{exc.status_code}")
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def on_validation_error(request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        error = bad_request(f"{param or 'request'}: {first.get('msg', 'invalid value')}", param)
        return JSONResponse(error.body(), status_code=400)

    async def on_bug(request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        body = error_body("internal server error (logged on the server)", SERVER_ERROR, code="internal_error")
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_bug)
