"""The API key: off by default; when set, every /v1 route needs it, and /metrics too unless `public_metrics`.
/health never does (load balancers probe it without a key)."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from cat_tts.server.errors import APIError


def given_key(request: Request) -> str:
    """The key a request carries: `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")


def check_key(request: Request, key: str | None) -> None:
    """Raises 401 unless `key` is None or the request carries it (compared in constant time)."""
    if key is None:
        return
    given = given_key(request)
    if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
        message = "missing API key (send Authorization: Bearer KEY)" if not given else "wrong API key"
        raise APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def require_key(request: Request) -> None:
    """FastAPI dependency of the /v1 routes."""
    check_key(request, request.app.state.cat.config.api_key)


async def require_metrics_key(request: Request) -> None:
    """FastAPI dependency of /metrics: the key, unless the server was started with `--public-metrics`."""
    config = request.app.state.cat.config
    if not config.public_metrics:
        check_key(request, config.api_key)
