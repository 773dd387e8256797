"""OpenAI-style errors: every failure is answered as `{"error": {"message", "type", "param", "code"}}`.

The pipeline's and engine's exceptions are answered as they are, without renaming layers: `FieldError` -> 400 whose
`param` is the server's label of the field, any other `InputError` -> 400, `QueueFull` -> 429 with `Retry-After`,
`EngineClosed` -> 503 with `Retry-After`, `EngineError` -> 500 (the engine could not run the request; logged). A
client that disconnects while sending its body gets nothing (it is gone) and no traceback is logged. Anything else
is a bug: logged with its traceback and answered with a generic 500 body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from cat_tts.errors import FieldError, InputError, UserError
from cat_tts.generation import EngineClosed, EngineError, QueueFull

logger = logging.getLogger(__name__)

CLIENT_GONE = 499  # nginx's "client closed request": counted in /metrics, never seen by the client

# OpenAI's error types
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
SERVER_ERROR = "server_error"
UNAVAILABLE = "service_unavailable"
TIMEOUT = "timeout"

_TYPE_BY_STATUS = {401: AUTHENTICATION, 404: NOT_FOUND, 429: RATE_LIMIT, 503: UNAVAILABLE, 504: TIMEOUT}


class APIError(Exception):
    """An HTTP error answered in OpenAI's format.

    Args:
        status: HTTP status code.
        message: what was wrong and how to fix it.
        param: the request field at fault, if any.
        code: a short machine-readable code (e.g. "voice_not_found").
        headers: extra response headers (e.g. Retry-After).
    """

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = _TYPE_BY_STATUS.get(status, INVALID_REQUEST if status < 500 else SERVER_ERROR)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 naming the field at fault."""
    return APIError(400, message, param=param, code=code)


def field_error(err: FieldError, labels: dict[str, str]) -> APIError:
    """A 400 for a request field, under the label the client used for it (`input` for the request's `text`)."""
    return bad_request(err.labelled(labels), labels.get(err.field, err.field))


def queue_full(err: QueueFull, retry_after_s: int) -> APIError:
    return APIError(429, f"the server is busy: {err}; retry in {retry_after_s} s", code="queue_full",
                    headers={"Retry-After": str(retry_after_s)})  # fmt: skip


def shutting_down(retry_after_s: int) -> APIError:
    return APIError(503, "the server is shutting down; retry on another instance", code="shutting_down",
                    headers={"Retry-After": str(retry_after_s)})  # fmt: skip


def engine_failed(err: EngineError) -> APIError:
    return APIError(500, f"the engine could not run this request ({err})", code="engine_error")


def install_error_handlers(app: Any) -> None:
    """Makes every error of the FastAPI app an OpenAI-style JSON body (validation, unknown routes, engine, bugs)."""

    def answer(error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    def retry_after(request) -> int:
        return request.app.state.cat.config.retry_after_s

    async def on_api_error(request, exc: APIError) -> JSONResponse:
        return answer(exc)

    async def on_input_error(request, exc: UserError) -> JSONResponse:
        return answer(bad_request(str(exc), exc.field if isinstance(exc, FieldError) else None))

    async def on_queue_full(request, exc: QueueFull) -> JSONResponse:
        return answer(queue_full(exc, retry_after(request)))

    async def on_engine_closed(request, exc: EngineClosed) -> JSONResponse:
        return answer(shutting_down(retry_after(request)))

    async def on_engine_error(request, exc: EngineError) -> JSONResponse:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return answer(engine_failed(exc))

    async def on_client_gone(request, exc: ClientDisconnect) -> Response:
        return Response(status_code=CLIENT_GONE)  # the client left while sending its body: nobody reads this

    async def on_http_error(request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        error = APIError(exc.status_code, message, code=f"http_{exc.status_code}", headers=exc.headers)
        return answer(error)

    async def on_validation_error(request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        return answer(bad_request(f"{param or 'request'}: {first.get('msg', 'invalid value')}", param))

    async def on_bug(request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return answer(APIError(500, "internal server error (logged on the server)", code="internal_error"))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(InputError, on_input_error)
    app.add_exception_handler(QueueFull, on_queue_full)
    app.add_exception_handler(EngineClosed, on_engine_closed)
    app.add_exception_handler(EngineError, on_engine_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_bug)
