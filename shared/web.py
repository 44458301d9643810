"""What every Qiji HTTP face (the public credentials face, the console) does around each
request: a request id, one structured log line, the HTTP metrics, and the headers every answer
carries (nosniff)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client import Counter, Histogram

from shared import metrics

log = structlog.get_logger(__name__)

REQUESTS = Counter("qiji_http_requests_total", "HTTP requests served, by route and status",
                   ["service", "route", "status"], registry=metrics.REGISTRY)
SECONDS = Histogram("qiji_http_request_duration_seconds", "HTTP request latency",
                    ["service", "route"], registry=metrics.REGISTRY,
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]],
                    Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Observed:
    """Wraps an ASGI app: every HTTP request gets a request id (x-request-id), one
    `http.request` log line, and its count and latency by route in the metrics."""

    def __init__(self, app: ASGIApp, service: str):
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        status = {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:  # noqa: S110
            # Already answered (500 with a correlation id) and logged with its traceback by
            # the handler: re-raising would only print it again, unstructured, via uvicorn.
            pass
        finally:
            route = route_name(scope)
            seconds = time.perf_counter() - started
            REQUESTS.labels(self.service, route, str(status["code"])).inc()
            SECONDS.labels(self.service, route).observe(seconds)
            log.info("http.request", method=scope.get("method"), path=scope.get("path"),
                     route=route, status=status["code"], ms=round(seconds * 1000, 1),
                     request_id=request_id)


def route_name(scope: dict[str, Any]) -> str:
    """The route's template (`/issuers/{issuer_id}`), never the path: ids would make every
    request a metric series of its own."""
    route = scope.get("route")
    return getattr(route, "path", "unmatched")
