"""Where a service's events live: a SQLite file (embedded default) or a PostgreSQL schema of its
own. The domain and the application code never know which."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import psycopg.rows
import psycopg_pool
import structlog
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg import sql

from shared import metrics
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

# Aggregates stay cached between requests and are brought up to date with only the events
# stored since (by any replica), instead of being replayed from their first event on every
# read: a busy training session has hundreds of events. QijiApplication._current does that
# (copy-on-write); the library's own fast-forward is never called. FASTFORWARD stays on because
# it also stops the library caching a saved aggregate itself: QijiApplication caches the
# command's copy once it is committed.
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
        "PROCESS_RECORDER_TOPIC": "shared.persistence:GroupCommitRecorder",
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


class _PendingSave:
    """One request's events (and a follower's tracking record) waiting to be committed."""

    __slots__ = ("done", "error", "events", "ids", "tracking", "wake")

    def __init__(self, events: Sequence[StoredEvent], tracking: Tracking | None):
        self.events = events
        self.tracking = tracking
        self.ids: list[int] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Event()


class GroupCommit:
    """Shares one transaction, one table lock and one commit between the saves that arrive
    while another commit is in flight.

    The library's recorder takes an exclusive table lock (so that notification ids are never
    committed out of order) and holds it through its commit, so concurrent saves queue behind
    one fsync each. Here the first save to arrive writes at once; saves arriving meanwhile wait,
    and when the commit returns the first of them writes all waiting saves together, each in a
    savepoint of its own: a save that conflicts (a concurrent writer got to its aggregate
    first) fails alone, the others commit. Nobody is answered before the commit that holds their
    events has returned, so an acknowledged command is durable exactly as before; a single
    writer pays nothing (it writes at once, without a savepoint)."""

    def __init__(self, write: Callable[[list[_PendingSave]], None], max_batch: int = 200):
        self._write = write
        self._max_batch = max_batch
        self._guard = threading.Lock()
        self._queue: list[_PendingSave] = []
        self._busy = False

    def submit(self, pending: _PendingSave) -> list[int] | None:
        with self._guard:
            self._queue.append(pending)
            lead = not self._busy
            self._busy = True
        if not lead:
            pending.wake.wait()
            # Woken either because a batch holding our save committed (or failed), or because
            # leadership was handed to us: then our save is first in the queue.
        if not pending.done:
            self._lead()
        if pending.error is not None:
            raise pending.error
        return pending.ids

    def _lead(self) -> None:
        with self._guard:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._write(batch)
        except BaseException as error:  # the batch as a whole failed: no save in it committed
            for pending in batch:
                pending.ids, pending.error = None, error
        finally:
            with self._guard:
                successor = self._queue[0] if self._queue else None
                self._busy = successor is not None
            for pending in batch:
                pending.done = True
                pending.wake.set()
            if successor is not None:
                successor.wake.set()  # not done: it leads the next batch


class GroupCommitRecorder(PostgresProcessRecorder):
    """The PostgreSQL process recorder with group commit (see GroupCommit). Notification order
    stays gap-free: every batch holds the same exclusive table lock through its one commit."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._group_commit = GroupCommit(self._write_batch)

    # As the library's recorder does: a connection lost before the commit is retried on a
    # fresh one. Were it lost during the commit, the retry meets its own rows (IntegrityError)
    # and the command's request record tells the caller the first answer.
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if not stored_events and tracking is None:
            return []
        return self._group_commit.submit(_PendingSave(stored_events, tracking))

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def has_events_after(self, originator_id: Any, version: int) -> bool:
        """Whether an event of `originator_id` newer than `version` is stored."""
        with self.datastore.get_connection() as conn:
            cursor = conn.cursor(row_factory=psycopg.rows.tuple_row)
            cursor.execute(self._newer_event, (originator_id, version), prepare=True)
            return cursor.fetchone() is not None

    @functools.cached_property
    def _newer_event(self) -> bytes:
        return sql.SQL(
            "SELECT 1 FROM {}.{} WHERE originator_id = %s AND originator_version > %s LIMIT 1"
        ).format(sql.Identifier(self.datastore.schema),
                 sql.Identifier(self.events_table_name)).as_string(None).encode()

    def _write_batch(self, batch: list[_PendingSave]) -> None:
        if not any(p.tracking is not None for p in batch):
            try:
                ids = self._write_together([e for p in batch for e in p.events])
            except IntegrityError:
                if len(batch) == 1:
                    raise  # the one save in it conflicted: that is its answer
                # Someone in the batch conflicts: write them again one savepoint each, so that
                # the conflict fails its own save only.
            else:
                for pending in batch:
                    pending.ids, ids = ids[: len(pending.events)], ids[len(pending.events):]
                metrics.COMMIT_BATCH.labels(self.datastore.schema).observe(len(batch))
                return
        self._write_each(batch)

    def _write_together(self, events: list[StoredEvent]) -> list[int]:
        """Every save of the batch in one call of `qiji_insert_<table>` on an autocommit
        connection: lock, insert and commit in one round trip, whatever the batch size. The
        columns go as four arrays of plain types, which psycopg sends in binary, rather than
        as one array of a composite type, which it renders as text field by field."""
        columns = ([e.originator_id for e in events], [e.originator_version for e in events],
                   [e.topic for e in events], [e.state for e in events])
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._insert_together, columns, prepare=True)
            return [row["notification_id"] for row in curs.fetchall()]

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as curs:
            # Processes starting together would otherwise collide replacing the function
            # ("tuple concurrently updated").
            curs.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"{self.datastore.schema}.{self._insert_function}",))
            curs.execute(self._create_insert_together)

    @property
    def _insert_function(self) -> str:
        # One per events table: several services may share a schema (tests, small installs).
        return f"qiji_insert_{self.events_table_name}"

    @functools.cached_property
    def _insert_together(self) -> bytes:
        # Rendered once: a composed statement is re-rendered (each identifier escaped through
        # libpq) on every execution.
        return sql.SQL(
            "SELECT notification_id FROM {}.{}(%s::{}[], %s::bigint[], %s::text[], "
            "%s::bytea[]) AS notification_id").format(
            sql.Identifier(self.datastore.schema), sql.Identifier(self._insert_function),
            sql.SQL(self.datastore.originator_id_type)).as_string(None).encode()

    @property
    def _create_insert_together(self) -> sql.Composed:
        # The same statements the library's recorder sends one by one (the exclusive lock that
        # keeps notification order gap-free, the notify, the insert), as one server-side call.
        return sql.SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}(ids {id_type}[], versions bigint[], "
            "topics text[], states bytea[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ BEGIN "
            "SET LOCAL lock_timeout = '{lock_timeout}s'; "
            "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "NOTIFY {channel}; "
            "RETURN QUERY INSERT INTO {schema}.{table} "
            "(originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(ids, versions, topics, states) "
            "RETURNING notification_id; "
            "END; $body$"
        ).format(
            schema=sql.Identifier(self.datastore.schema),
            function=sql.Identifier(self._insert_function),
            id_type=sql.SQL(self.datastore.originator_id_type),
            lock_timeout=sql.Literal(int(self.datastore.lock_timeout)),
            table=sql.Identifier(self.events_table_name),
            channel=sql.Identifier(self.channel_name),
        )

    def _write_each(self, batch: list[_PendingSave]) -> None:
        """Each save in a savepoint of its own (tracking records, or a batch with a conflict):
        a save that conflicts is undone alone."""
        tentative: dict[int, list[int]] = {}
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._lock_table(curs)
            self._notify_channel(curs)
            if len(batch) == 1:
                # Alone (a follower's reaction, usually): its conflict fails the transaction,
                # which holds nothing else; no savepoint needed.
                tentative[0] = self._insert_one(curs, batch[0])
            for index, pending in enumerate(batch if len(batch) > 1 else ()):
                try:
                    with conn.transaction():
                        tentative[index] = self._insert_one(curs, pending)
                except (psycopg.IntegrityError, IntegrityError) as error:
                    pending.error = IntegrityError(str(error))
        # Committed: only now are the saves in it acknowledged.
        for index, ids in tentative.items():
            batch[index].ids = ids
        metrics.COMMIT_BATCH.labels(self.datastore.schema).observe(len(batch))

    def _insert_one(self, curs: Any, pending: _PendingSave) -> list[int]:
        if pending.tracking is not None:
            self._insert_tracking(curs, pending.tracking)
        if not pending.events:
            return []
        # The plain insert (the table is already locked and the channel notified).
        PostgresAggregateRecorder._insert_stored_events(self, curs, pending.events)
        return list(self._fetch_ids_after_insert_events(curs, pending.events) or [])


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
