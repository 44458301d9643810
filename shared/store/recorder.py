"""Group commit: the PostgreSQL process recorder that lets concurrent saves share one commit.

The one module of Qiji that reaches inside the library's recorder (shared/store/__init__.py
lists what and why)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.rows
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg import sql

from shared import metrics
from shared.store.columns import BigintColumn, ByteaColumn, TextColumn, column


@dataclass(frozen=True)
class BatchTracking(Tracking):
    """A follower's tracking record for a batch of upstream events that it read after
    `after`, its tracked position then: stored only while no tracking record of the same
    upstream lies past `after` (checked under the events table's lock, in the transaction
    that stores it). A batch's one record is at its last position, so two replicas applying
    overlapping batches would not meet on the same row; this makes the later one fail
    (IntegrityError) instead of repeating the other's reactions."""

    after: int = 0


@dataclass(frozen=True)
class RowsBeside:
    """Rows of a table beside the log (in the store's schema), inserted by the statement that
    stores a save's events, so in its transaction: both commit or neither does, and a row
    whose key is taken fails the save (IntegrityError) as a conflicting event would. A new
    rider's data key goes this way (shared/personal_data.py `new_subject`): one round trip for
    the key and the events instead of two. `columns` are (name, PostgreSQL type) pairs."""

    table: str
    columns: tuple[tuple[str, str], ...]
    rows: tuple[tuple[Any, ...], ...]


class _PendingSave:
    """One request's events (and a follower's tracking record, or rows beside the log)
    waiting to be committed."""

    __slots__ = ("beside", "done", "error", "events", "ids", "tracking", "wake")

    def __init__(self, events: Sequence[StoredEvent], tracking: Tracking | None,
                 beside: Sequence[RowsBeside] = ()):
        self.events = events
        self.tracking = tracking
        self.beside = beside
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
        # The looks at the log (`changes_after`) have a connection of their own: the
        # LogWatermark makes one look at a time, often one per few reads under load, and a
        # pooled connection's checkout and return (the gate, the library's wrapper, the pool's
        # locks) cost as much CPU as the query itself (about 92 against 41 µs in-process) and
        # twice its wall time, which every get waiting for a look waits through.
        self._look_lock = threading.Lock()
        self._look_conn: psycopg.Connection[Any] | None = None
        close = self.datastore.close

        def close_too() -> None:
            self._drop_look_connection()
            close()
        self.datastore.close = close_too  # type: ignore[method-assign]

    # As the library's recorder does: a connection lost before the commit is retried on a
    # fresh one. Were it lost during the commit, the retry meets its own rows (IntegrityError)
    # and the command's request record tells the caller the first answer.
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        beside: Sequence[RowsBeside] = kwargs.get("beside") or ()
        if not stored_events and tracking is None:
            if beside:
                raise ValueError("rows beside the log go with a save's events")
            return []
        return self._group_commit.submit(_PendingSave(stored_events, tracking, beside))

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def has_events_after(self, originator_id: Any, version: int) -> bool:
        """Whether an event of `originator_id` newer than `version` is stored."""
        with self.datastore.get_connection() as conn:
            cursor = conn.cursor(row_factory=psycopg.rows.tuple_row)
            cursor.execute(self._newer_event, (originator_id, version), prepare=True)
            return cursor.fetchone() is not None

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def stored_among(self, originator_ids: Sequence[Any]) -> set[Any]:
        """Which of `originator_ids` have any event stored: one statement for a follower's
        whole batch (shared/store/cache.py `existence_of`), not one per aggregate."""
        with self.datastore.get_connection() as conn:
            cursor = conn.cursor(row_factory=psycopg.rows.tuple_row)
            cursor.execute(self._stored_among, (list(originator_ids),), prepare=True)
            return {row[0] for row in cursor.fetchall()}

    def _on_events(self, statement: str) -> bytes:
        """`statement` with `{events}` naming this recorder's events table in its schema,
        rendered once (each a cached property): a composed statement is re-rendered, every
        identifier escaped through libpq, on every execution."""
        return sql.SQL(statement).format(events=sql.Identifier(
            self.datastore.schema, self.events_table_name)).as_string(None).encode()

    @functools.cached_property
    def _stored_among(self) -> bytes:
        return self._on_events("SELECT id FROM unnest(%s::uuid[]) AS id WHERE EXISTS ("
                               "SELECT 1 FROM {events} WHERE originator_id = id)")

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def changes_after(self, position: int, limit: int) -> list[tuple[int, Any]]:
        """(position, aggregate id) of the events stored after `position`, in log order, at
        most `limit`: what the aggregate cache's LogWatermark looks at."""
        with self._look_lock:
            conn = self._look_conn
            if conn is None or conn.closed:
                # (Re)connecting takes a pooled connection first, and so passes the store's
                # gate: refused at once while the store is away, and a failure to connect
                # wakes the health probe, as for any statement (shared/store/persistence.py).
                with self.datastore.get_connection():
                    pass
                pooled = self.datastore.pool.kwargs  # the library's: a dict
                assert isinstance(pooled, dict)
                kwargs = {k: v for k, v in pooled.items() if k != "row_factory"}
                try:
                    conn = self._look_conn = psycopg.connect(
                        **kwargs, autocommit=True, row_factory=psycopg.rows.tuple_row,
                        connect_timeout=5)
                except psycopg.Error as error:
                    raise OperationalError(str(error)) from error
            try:
                return conn.execute(self._changes_after, (position, limit),
                                    prepare=True).fetchall()
            except psycopg.Error as error:
                # Broken (a restart, a dropped link): a fresh one on the retry, which passes
                # the gate again.
                self._look_conn = None
                conn.close()
                raise OperationalError(str(error)) from error

    def _drop_look_connection(self) -> None:
        with self._look_lock:
            conn, self._look_conn = self._look_conn, None
        if conn is not None:
            conn.close()

    @functools.cached_property
    def _changes_after(self) -> bytes:
        return self._on_events("SELECT notification_id, originator_id FROM {events} "
                               "WHERE notification_id > %s ORDER BY notification_id LIMIT %s")

    @functools.cached_property
    def _newer_event(self) -> bytes:
        return self._on_events("SELECT 1 FROM {events} WHERE originator_id = %s "
                               "AND originator_version > %s LIMIT 1")

    def _write_batch(self, batch: list[_PendingSave]) -> None:
        if not any(p.tracking is not None for p in batch):
            try:
                ids = self._write_together([e for p in batch for e in p.events],
                                           [b for p in batch for b in p.beside])
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

    def _write_together(self, events: list[StoredEvent], beside: list[RowsBeside]
                        ) -> list[int]:
        """Every save of the batch in one call of `qiji_insert_<table>` on an autocommit
        connection: lock, insert and commit in one round trip, whatever the batch size. The
        columns go as four arrays of plain types, which psycopg sends in binary, rather than
        as one array of a composite type, which it renders as text field by field."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            return self._insert_rows(curs, events, beside)

    def _insert_rows(self, curs: Any, events: Sequence[StoredEvent],
                     beside: Sequence[RowsBeside] = ()) -> list[int]:
        # Each column one binary array, built in one pass (shared/store/columns.py).
        params: tuple[Any, ...] = (
            column(self.datastore.originator_id_type, (e.originator_id for e in events)),
            BigintColumn(e.originator_version for e in events),
            TextColumn(e.topic for e in events), ByteaColumn(e.state for e in events))
        statement = self._insert_together
        if beside:
            # The rows beside as data-modifying CTEs of the same statement: PostgreSQL runs
            # each to completion whether or not the query reads it, and a unique violation in
            # one fails the whole statement, which on this autocommit connection (or in its
            # savepoint) stores nothing. The function, its lock and its notify are unchanged.
            tables: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[Any, ...]]] = {}
            for save in beside:
                tables.setdefault((save.table, save.columns), []).extend(save.rows)
            ctes: list[bytes] = []
            arrays: list[list[Any]] = []
            for n, ((table, columns), rows) in enumerate(tables.items()):
                ctes.append(self._insert_beside(n, table, columns))
                arrays.extend([column(t, values) for (_, t), values
                               in zip(columns, zip(*rows, strict=True), strict=True)])
            statement = b"WITH " + b", ".join(ctes) + b" " + statement
            params = (*arrays, *params)
        curs.execute(statement, params, prepare=True)
        return [row["notification_id"] for row in curs.fetchall()]

    @functools.cache  # noqa: B019 (a few shapes per recorder, which lives as long as its app)
    def _insert_beside(self, n: int, table: str, columns: tuple[tuple[str, str], ...]
                       ) -> bytes:
        return sql.SQL("{} AS (INSERT INTO {}.{} ({}) SELECT * FROM unnest({}))").format(
            sql.Identifier(f"beside{n}"), sql.Identifier(self.datastore.schema),
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns),
            sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for _, t in columns),
        ).as_string(None).encode()

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
        # Each position is answered in the order the events were given, matched to its event by
        # (aggregate, version): PostgreSQL does not promise RETURNING's rows in input order,
        # and a position answered to the wrong event would be the wrong event's to its caller.
        return sql.SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}(ids {id_type}[], versions bigint[], "
            "topics text[], states bytea[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ BEGIN "
            "SET LOCAL lock_timeout = '{lock_timeout}s'; "
            "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "NOTIFY {channel}; "
            "RETURN QUERY WITH inserted AS (INSERT INTO {schema}.{table} "
            "(originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(ids, versions, topics, states) "
            "RETURNING notification_id, originator_id, originator_version) "
            "SELECT inserted.notification_id FROM inserted "
            "JOIN unnest(ids, versions) WITH ORDINALITY "
            "AS given(originator_id, originator_version, n) "
            "USING (originator_id, originator_version) ORDER BY given.n; "
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
        a save that conflicts is undone alone. The table is locked first, before any
        savepoint (a lock taken inside one would go with its rollback), and before any tracking
        record: transactions queue for the lock before they hold anything another one waits
        for. The events then go through the same server-side function as a batch written
        together (its lock is then already held; its notify is the one this commit sends)."""
        tentative: dict[int, list[int]] = {}
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            # The library's own lock statements (a public attribute of its recorder).
            for statement in self.lock_table_statements:
                curs.execute(statement, prepare=True)
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
            # The library's own statement for the tracking table (and its check that the
            # table is the multi-row kind): the one private call of this recorder.
            if isinstance(pending.tracking, BatchTracking):
                self._check_tracked_after(curs, pending.tracking)
            self._insert_tracking(curs, pending.tracking)
        if not pending.events:
            return []
        return self._insert_rows(curs, pending.events, pending.beside)

    def _check_tracked_after(self, curs: Any, tracking: BatchTracking) -> None:
        # The table lock is held (_write_each takes it first): no other replica's tracking
        # record can be committed between this check and this transaction's commit.
        curs.execute(self.max_tracking_id_statement, (tracking.application_name,),
                     prepare=True)
        row = curs.fetchone()
        newest = (row["max"] if row is not None else None) or 0
        if newest > tracking.after:
            raise IntegrityError(
                f"{tracking.application_name} is tracked at {newest}, past {tracking.after} "
                "where this batch was read: another replica applied it")
