"""What a client may send: header and body sizes, and JSON that parses into bounded values.

* Headers: uvicorn's h11 parser with its incomplete-event limit (`uvicorn_limits`): a request line plus headers
  beyond `max_header_bytes` is answered 400 and the connection closed, before the app sees it (uvicorn's default
  parser, httptools, has no such limit).
* Bodies: `BodyLimit`, an ASGI middleware: 413 from `Content-Length` before reading, or while reading a chunked body.
* JSON: `read_json` refuses what Python's parser would turn into an exception or an unbounded value: integers of
  more than `MAX_INT_DIGITS` digits (no field holds one; Python raises past 4300 digits), `NaN` / `Infinity` (not
  JSON), nesting past the interpreter's recursion limit. Each is a 400.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from cat_tts.server.config import ServerConfig
from cat_tts.server.errors import APIError, bad_request

MAX_INT_DIGITS = 64  # an int64 has 19 digits; longer integers are refused while parsing


def uvicorn_limits(config: ServerConfig) -> dict[str, Any]:
    """uvicorn.Config arguments that bound what a client can make the server hold: the h11 parser and its limit on a
    request line plus headers."""
    return {"http": "h11", "h11_max_incomplete_event_size": config.max_header_bytes}


async def read_json(request: Request) -> Any:
    """The request's JSON body.

    Raises:
        APIError: 415 when the body is not JSON, 400 when it does not parse (or holds unbounded values).
        starlette.requests.ClientDisconnect: the client left while sending it (answered by the error handlers).
    """
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        raise APIError(415, f"send the request as application/json, got {content_type[:80]!r}", code="bad_content_type")
    body = await request.body()
    try:
        return loads_bounded(body)
    except RecursionError:
        raise bad_request("the body is not usable JSON (nested too deep)", None, code="invalid_json") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError and the two refusals above
        raise bad_request(f"the body is not valid JSON ({err})", None, code="invalid_json") from None


def loads_bounded(data: str | bytes) -> Any:
    """JSON whose integers have at most `MAX_INT_DIGITS` digits and with no NaN / Infinity (the HTTP bodies and the
    realtime messages). Raises ValueError (not JSON, or a refused value) or RecursionError (nested too deep)."""
    return json.loads(data, parse_int=_parse_int, parse_constant=_refuse_constant)


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class BodyLimit:
    """ASGI middleware: 413 for bodies over `config.max_body_bytes` (`max_upload_mb` for voice uploads)."""

    def __init__(self, app: Any, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        uploads = scope.get("path", "").startswith("/v1/audio/voices")
        limit = self.config.max_upload_bytes if uploads else self.config.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await _send_error(send, _too_large(limit))
            return
        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, receive_limited, send)


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than this server's limit of {limit} bytes",
                    code="request_too_large")  # fmt: skip


async def _send_error(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
