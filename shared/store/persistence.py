"""Where a service's events live: a SQLite file (embedded default) or a PostgreSQL schema of its
own (the library's settings for either); and the store's health: the gate that fails calls at
once while the store does not answer, and what background jobs say of an outage. The domain and
the application code never know which store it is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import psycopg_pool
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError
from psycopg import sql

from shared.config import Settings

log = structlog.get_logger(__name__)


class StoreUnavailable(PersistenceError):
    """The store does not answer (the health probe says so): the call fails at once. Not one of
    the library's OperationalErrors on purpose, so that the library's recorders do not retry
    it (10 times, 0.2 s apart) while the caller waits."""


# Store failures a caller can retry: the database is down, restarting or out of connections.
# Nothing was written. (The library wraps the driver's errors; the driver's own are here for
# the few places that use psycopg directly; StoreUnavailable is the gate's own.)
STORE_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
    StoreUnavailable)
# The health probe's own connection gives up this soon (connecting, or its SELECT 1).
PROBE_TIMEOUT_SECONDS = 2
# How long the pool keeps re-trying one lost connection, on a backoff that doubles each time,
# before it gives up and makes new ones on demand. psycopg_pool's default (5 minutes) lets the
# backoff grow so long during an outage that the pool reconnects long after the store is back.
POOL_RECONNECT_SECONDS = 10.0
# A wait for a pooled connection looks at the gate this often (see StoreGate).
POOL_WAIT_SLICE_SECONDS = 0.25
# However many calls cast doubt on the store, the probe runs at most this often.
MIN_PROBE_INTERVAL_SECONDS = 0.1


def _cache(settings: Settings) -> dict[str, str]:
    """Aggregates stay cached between requests and are brought up to date with only the events
    stored since (by any replica), instead of being replayed from their first event on every
    read: a busy training session has hundreds of events. The cache is the library's (its size
    is `QIJI_AGGREGATE_CACHE_SIZE`); keeping it current is shared/store/cache.py's,
    copy-on-write, never the library's in-place fast-forward."""
    return {"AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size)}


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing library's settings for this service's store."""
    if settings.persistence == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return {
            **_cache(settings),
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.sqlite_path),
            # Writers queue for the file lock instead of failing at once under concurrency.
            "SQLITE_LOCK_TIMEOUT": "10",
            "ORIGINATOR_ID_TYPE": "uuid",
        }
    ensure_postgres_schema(settings)
    return {
        **_cache(settings),
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
        "PROCESS_RECORDER_TOPIC": "shared.store.recorder:GroupCommitRecorder",
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
    connection fails at once with StoreUnavailable (UNAVAILABLE to a caller): otherwise every
    command would wait for a connection the pool cannot make, once per retry of the library
    (10 × the pool timeout), far past any caller's deadline, holding a server thread all along.
    The probe has a connection of its own, so a pool busy under load is never taken for a store
    that is down.

    Calls already under way when the store goes must hear it within about a second too: a call
    whose connection breaks, or whose wait for a pooled connection runs a slice long, casts
    doubt, which wakes the probe at once (instead of at its next tick); the wait for a pooled
    connection goes in slices, so that a gate closing meanwhile ends it."""

    def __init__(self, settings: Settings, datastore: Any):
        self._settings = settings
        self._open = threading.Event()
        self._open.set()  # until a probe says otherwise (tools never probe)
        self._doubt = threading.Event()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        if settings.persistence == "postgres":
            datastore.pool.reconnect_timeout = POOL_RECONNECT_SECONDS
            pooled = datastore.get_connection
            # The whole wait for a pooled connection stays what the library configured; each
            # slice of it is short.
            wait_seconds = float(datastore.pool.timeout)
            datastore.pool.timeout = POOL_WAIT_SLICE_SECONDS

            @contextmanager
            def gated() -> Iterator[Any]:
                deadline = time.monotonic() + wait_seconds
                while True:
                    self._refuse_if_closed()
                    taking = ExitStack()
                    try:
                        conn = taking.enter_context(pooled())
                    except OperationalError as error:
                        if not isinstance(error.__cause__, psycopg_pool.PoolTimeout):
                            self.doubt()  # could not connect: is the store there at all?
                            raise
                        if time.monotonic() >= deadline:
                            raise
                        self.doubt()  # a slice went by without a connection: why?
                        continue
                    break
                with taking:
                    try:
                        yield conn
                    except STORE_DOWN_ERRORS:
                        self.doubt()  # the connection broke under the call
                        raise
            # The recorders take every connection through this method of their datastore.
            datastore.get_connection = gated

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def _refuse_if_closed(self) -> None:
        if not self._open.is_set():
            raise StoreUnavailable("the event store does not answer")

    def doubt(self) -> None:
        """Something a call met suggests the store is away: probe now, not at the next tick."""
        self._doubt.set()

    def wait_for_doubt(self, timeout: float) -> None:
        """Returns after `timeout` seconds, or as soon as a call casts doubt (the health
        probe's loop waits here between probes)."""
        if self._doubt.wait(timeout):
            # Probing more than a few times a second tells nothing new.
            time.sleep(MIN_PROBE_INTERVAL_SECONDS)
        self._doubt.clear()

    def probe(self, fallback: Any) -> bool:
        """True when the store answers (PostgreSQL: SELECT 1 on the probe's own connection;
        SQLite: `fallback()` does not raise); opens or closes the gate accordingly. Says once
        when the store goes away and once when it is back: an outage is expected, not an
        error of ours."""
        with self._lock:
            if self._settings.persistence != "postgres":
                try:
                    fallback()
                    ok, why = True, ""
                except Exception as error:  # any failure means "not serving"
                    ok, why = False, f"{type(error).__name__}: {error}"
            else:
                ok, why = self._select_one()
            was_open = self._open.is_set()
            if ok:
                self._open.set()
                if not was_open:
                    log.info("store.available")
            else:
                self._open.clear()
                if was_open:
                    log.warning("store.unavailable", error=why)
        return ok

    def _select_one(self) -> tuple[bool, str]:
        # Twice: the probe's connection may have been dropped by a restart that is already
        # over; only a fresh connection that fails too means the store is down.
        why = ""
        for _attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        postgres_conninfo(self._settings),
                        connect_timeout=PROBE_TIMEOUT_SECONDS, autocommit=True,
                        options=f"-c statement_timeout={PROBE_TIMEOUT_SECONDS * 1000}")
                self._conn.execute("SELECT 1")
                return True, ""
            except psycopg.Error as error:
                self.close()
                why = str(error).strip()
        return False, why

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class OutageNotice:
    """What a background job (follower, sealer, lapse and expiry jobs, deadline scan, relay)
    says about an outage of the store: one line when it first finds the store away, one when it
    works again, nothing on the ticks between: an outage is expected, not a fault to dump a
    traceback for, and a job that ticks every second must not fill the log. The line is a
    warning only if the job met the outage before the store gate did; otherwise the gate's own
    `store.unavailable` warning has said it, and the job's line is information."""

    def __init__(self, job: str, **fields: str):
        self.job = job
        self.fields = fields
        self.down = False

    def failed(self, error: BaseException) -> None:
        if not self.down:
            say = log.info if isinstance(error, StoreUnavailable) else log.warning
            say(f"{self.job}.store_unavailable", error=str(error).strip(), **self.fields)
        self.down = True

    def worked(self) -> None:
        if self.down:
            log.info(f"{self.job}.store_back", **self.fields)
        self.down = False
