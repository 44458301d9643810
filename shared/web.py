"""What every Qiji HTTP face (the public credentials face, the console) shares: around each
request a request id, one structured log line, the HTTP metrics and the headers every answer
carries (nosniff); where it listens, and the uvicorn server that stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

import structlog
import uvicorn
from prometheus_client import Counter, Histogram

from shared import metrics
from shared.config import ConfigError, Settings

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


class HttpsFiles(TypedDict, total=False):
    """uvicorn's arguments for serving HTTPS itself (none: plain HTTP)."""

    ssl_certfile: str
    ssl_keyfile: str


def http_settings(settings: Settings, name: str) -> tuple[str, int, HttpsFiles]:
    """Where a face listens (<NAME>_HTTP_HOST / _HTTP_PORT) and, if it serves HTTPS itself
    rather than behind the city's reverse proxy, its certificate (<NAME>_HTTPS_CERT_FILE /
    _KEY_FILE), read and checked at start with every other setting (shared/config.py)."""
    host: str = settings.own_setting("HTTP_HOST")
    port: int = settings.own_setting("HTTP_PORT")
    cert: Path | None = settings.own_setting("HTTPS_CERT_FILE")
    key: Path | None = settings.own_setting("HTTPS_KEY_FILE")
    prefix = name.upper()
    if (cert is None) != (key is None):
        raise ConfigError(f"{prefix}_HTTPS_CERT_FILE and {prefix}_HTTPS_KEY_FILE go together: "
                          "set both (serve HTTPS) or neither")
    tls = (HttpsFiles(ssl_certfile=str(cert), ssl_keyfile=str(key)) if cert and key
           else HttpsFiles())
    return host, port, tls


class Server(uvicorn.Server):
    """uvicorn handles SIGTERM / SIGINT: it stops accepting, lets requests finish, exits."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self._stop_signal: int | None = None

    def handle_exit(self, sig: int, frame: object) -> None:
        # A signal handler, on the event loop's thread between two bytecodes: nothing here
        # may take a lock. Logging would: had the loop been mid-line (it writes one after
        # every request), the process would wait on itself for ever. So the stop is only
        # noted here and said in shutdown(), on the loop.
        self._stop_signal = sig
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        # uvicorn raises the signal again once it has stopped, which would end the process
        # "killed by SIGTERM"; a stop asked for and done is exit 0, like every Qiji process.
        self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        sig = self._stop_signal
        log.info("service.stopping", signal=signal.Signals(sig).name if sig else None)
        await super().shutdown(sockets)
