"""Structured logs: JSON lines (or readable lines on a terminal), with the request and
correlation ids bound by the gRPC guard."""

from __future__ import annotations

import logging
import sys

import structlog


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
