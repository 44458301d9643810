"""Structured logs: JSON lines (or readable lines on a terminal), with the request and
correlation ids bound by the gRPC guard."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import structlog

from shared import context
from shared.config import ConfigError


def configure(service: str, fmt: str = "json", level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    common: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request,
        _add_service(service),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks as data, without local variables: locals would put riders' phone
        # numbers and names into the log in clear.
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
    ]
    out = LineWriter(sys.stderr)
    structlog.configure(
        processors=[*common, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_args: out,
        cache_logger_on_first_use=True,
    )
    # What the libraries log (grpc, kombu, psycopg) goes out as the same structured lines.
    handler = _LineHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*common, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    # The pool's reconnection failures during an outage of the store: the store gate says
    # that once (store.unavailable), and the pool would repeat it as errors.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)


class LineWriter:
    """A structlog logger that writes each line, its newline included, in one write(2) to the
    file's descriptor. Processes that share an output (`qiji run`'s six services on one
    terminal) then never run two lines together: structlog's PrintLogger prints the line and
    then its newline, two writes when Python's output is unbuffered (PYTHONUNBUFFERED=1, as
    `deploy/up` and most containers set it), and another process's line could fall between
    them. A write to a pipe is atomic up to PIPE_BUF (4 KiB), to a terminal whole."""

    def __init__(self, file: TextIO):
        self._file = file
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", "replace")
        with self._lock:
            try:
                fd = self._file.fileno()
            except (AttributeError, OSError, ValueError):  # a file without one (a test's)
                self._file.write(message + "\n")
                self._file.flush()
                return
            self._file.flush()  # whatever Python buffered for this file goes first
            while data:
                data = data[os.write(fd, data):]

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _LineHandler(logging.Handler):
    def __init__(self, out: LineWriter):
        super().__init__()
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:
            self.handleError(record)


def add_request(_logger: object, _name: str, event: structlog.typing.EventDict
                ) -> structlog.typing.EventDict:
    """The request being served (the guard's context: shared/context.py), on every line logged
    while it is: its rpc, principal, request id and correlation id. Read when a line is logged
    rather than bound on every call: a call that logs nothing (most) pays nothing, where
    binding structlog's context variables cost each call about 14 µs of CPU. What a line says
    itself wins, as with bound variables."""
    ctx = context.serving()
    if ctx is None:
        return event
    for key, value in (("rpc", ctx.rpc), ("principal", ctx.actor.principal),
                       ("request_id", ctx.request_id), ("correlation_id", ctx.correlation_id)):
        event.setdefault(key, value)
    return event


def _add_service(service: str) -> structlog.typing.Processor:
    # A processor, not a bound context variable: gRPC worker threads do not inherit contexts.
    def add(_logger: object, _name: str, event: structlog.typing.EventDict
            ) -> structlog.typing.EventDict:
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
