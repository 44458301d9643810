"""Structured logs: JSON lines (or readable lines on a terminal), with the request and
correlation ids bound by the gRPC guard."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from shared.config import ConfigError


def configure(service: str, fmt: str = "json", level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_service(service),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks as data, without local variables: locals would put riders' phone
            # numbers and names into the log in clear.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def _add_service(service: str) -> structlog.typing.Processor:
    # A processor, not a bound context variable: gRPC worker threads do not inherit contexts.
    def add(_logger: object, _name: str, event: dict) -> dict:
        event.setdefault("service", service)
        return event
    return add


@contextmanager
def exits_on_config_error(service: str) -> Iterator[None]:
    """A setting that cannot work (a certificate without its key, a file that cannot be read)
    stops the process at start with one structured line and exit code 2, not a traceback."""
    try:
        yield
    except ConfigError as error:
        if not structlog.is_configured():
            configure(service, os.environ.get(f"{service.upper()}_LOG_FORMAT")
                      or os.environ.get("QIJI_LOG_FORMAT") or "json")
        structlog.get_logger(__name__).error("service.misconfigured", error=str(error))
        raise SystemExit(2) from None


def redacted(uri: str) -> str:
    """A connection URI fit for a log line or a message: the password replaced by ***."""
    head, sep, tail = uri.rpartition("@")
    if not sep:
        return uri
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}"
