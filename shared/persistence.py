"""Where a service's events live: a SQLite file (embedded default) or a PostgreSQL schema of its
own. The domain and the application code never know which."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg import sql

from shared.config import Settings

log = structlog.get_logger(__name__)

# Store failures a caller can retry: the database is down, restarting or out of connections.
# Nothing was written. (The library wraps the driver's errors; the driver's own are here for
# the few places that use psycopg directly.)
STORE_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
# The health probe's own connection gives up this soon (connecting, or its SELECT 1).
PROBE_TIMEOUT_SECONDS = 2
# How long the pool keeps re-trying one lost connection, on a backoff that doubles each time,
# before it gives up and makes new ones on demand. psycopg_pool's default (5 minutes) lets the
# backoff grow so long during an outage that the pool reconnects long after the store is back.
POOL_RECONNECT_SECONDS = 10.0

# Aggregates stay cached between requests and are fast-forwarded with only the events stored
# since (by any replica), instead of being replayed from their first event on every read: a
# busy training session has hundreds of events.
CACHE = {"AGGREGATE_CACHE_MAXSIZE": "20000", "AGGREGATE_CACHE_FASTFORWARD": "y"}


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing library's settings for this service's store."""
    if settings.persistence == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return {
            **CACHE,
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.sqlite_path),
            # Writers queue for the file lock instead of failing at once under concurrency.
            "SQLITE_LOCK_TIMEOUT": "10",
            "ORIGINATOR_ID_TYPE": "uuid",
        }
    ensure_postgres_schema(settings)
    return {
        **CACHE,
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": settings.postgres_dbname,
        "POSTGRES_HOST": settings.postgres_host,
        "POSTGRES_PORT": str(settings.postgres_port),
        "POSTGRES_USER": settings.postgres_user,
        "POSTGRES_PASSWORD": settings.postgres_password,
        "POSTGRES_SCHEMA": settings.postgres_schema,
        "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
        "POSTGRES_MAX_OVERFLOW": str(settings.postgres_pool_size * 2),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        # No pre-ping: it costs a round trip on every checkout; the library retries a call
        # that meets a dropped connection, and the pool replaces the connection.
        "POSTGRES_PRE_PING": "n",
        "ORIGINATOR_ID_TYPE": "uuid",
    }


def postgres_conninfo(settings: Settings, dbname: str | None = None) -> str:
    return psycopg.conninfo.make_conninfo(
        dbname=dbname or settings.postgres_dbname,
        host=settings.postgres_host,
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password or None,
        connect_timeout=5,
    )


def ensure_postgres_schema(settings: Settings) -> None:
    """The library creates tables but not schemas (ARCHITECTURE.md): create ours if missing."""
    with psycopg.connect(postgres_conninfo(settings), autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(settings.postgres_schema)))
        except psycopg.errors.UniqueViolation:
            pass  # another process created it at the same moment: IF NOT EXISTS is not atomic


class StoreGate:
    """The store as the health probe last found it. While it does not answer, taking a pooled
    connection fails at once with the library's OperationalError (UNAVAILABLE to a caller):
    otherwise every command would wait for a connection the pool cannot make, once per
    retry of the library (10 × the pool timeout), far past any caller's deadline, holding a
    server thread all along. The probe has a connection of its own, so a pool busy under load
    is never taken for a store that is down."""

    def __init__(self, settings: Settings, datastore: Any):
        self._settings = settings
        self._open = threading.Event()
        self._open.set()  # until a probe says otherwise (tools never probe)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        if settings.persistence == "postgres":
            datastore.pool.reconnect_timeout = POOL_RECONNECT_SECONDS
            pooled = datastore.get_connection

            @contextmanager
            def gated() -> Iterator[Any]:
                if not self._open.is_set():
                    raise OperationalError("the event store does not answer")
                with pooled() as conn:
                    yield conn
            # The recorders take every connection through this method of their datastore.
            datastore.get_connection = gated

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def probe(self, fallback: Any) -> bool:
        """True when the store answers (PostgreSQL: SELECT 1 on the probe's own connection;
        SQLite: `fallback()` does not raise); opens or closes the gate accordingly."""
        with self._lock:
            if self._settings.persistence != "postgres":
                try:
                    fallback()
                    ok = True
                except Exception:  # any failure means "not serving", whatever was raised
                    ok = False
            else:
                ok = self._select_one()
        if ok:
            self._open.set()
        else:
            self._open.clear()
        return ok

    def _select_one(self) -> bool:
        # Twice: the probe's connection may have been dropped by a restart that is already
        # over; only a fresh connection that fails too means the store is down.
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        postgres_conninfo(self._settings),
                        connect_timeout=PROBE_TIMEOUT_SECONDS, autocommit=True,
                        options=f"-c statement_timeout={PROBE_TIMEOUT_SECONDS * 1000}")
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error as error:
                self.close()
                if attempt == 2:
                    log.info("store.probe_failed", error=str(error).strip())
        return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
