"""Where the relay stands in each service's log: the next position to read, stored only after
the broker confirmed every message before it. A table `relay_positions` in the relay's own
PostgreSQL schema (`RELAY_POSTGRES_SCHEMA`, default `relay`), or in a SQLite file
(`<data dir>/relay.sqlite3`) on the embedded default: the same `QIJI_PERSISTENCE` switch as the
services. The relay is the only writer. It holds no event data, only positions, so dropping it
makes the relay publish everything again (with the same CloudEvents ids)."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Protocol

import psycopg
import structlog
from psycopg import sql

from shared.config import Settings
from shared.store import ensure_postgres_schema, postgres_conninfo

log = structlog.get_logger(__name__)

TABLE = "relay_positions"


class PositionStore(Protocol):
    def load(self) -> dict[str, int]:
        ...

    def save(self, service: str, next_position: int) -> None:
        ...

    def close(self) -> None:
        ...


class SqlitePositions:
    def __init__(self, settings: Settings):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = settings.sqlite_path
        self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS relay_positions (service TEXT PRIMARY KEY, "
                         "next_position INTEGER NOT NULL, updated_at TEXT NOT NULL)")

    def load(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT service, next_position FROM relay_positions"))

    def save(self, service: str, next_position: int) -> None:
        self._db.execute(
            "INSERT INTO relay_positions (service, next_position, updated_at) "
            "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT (service) DO "
            "UPDATE SET next_position = excluded.next_position, updated_at = excluded.updated_at",
            (service, next_position))

    def close(self) -> None:
        self._db.close()


class PostgresPositions:
    """One autocommit connection of its own; reconnects once on a dropped connection."""

    def __init__(self, settings: Settings):
        self._settings = settings
        ensure_postgres_schema(settings)
        self._table = sql.Identifier(settings.postgres_schema, TABLE)
        self._conn: psycopg.Connection | None = None
        self._execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (service TEXT PRIMARY KEY, "
            "next_position BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ).format(self._table))

    def _execute(self, query: sql.Composed, params: tuple = ()) -> list[tuple]:
        for attempt in range(2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(postgres_conninfo(self._settings),
                                                 autocommit=True)
                cursor = self._conn.execute(query, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError:
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def load(self) -> dict[str, int]:
        return dict(self._execute(sql.SQL("SELECT service, next_position FROM {}").format(
            self._table)))

    def save(self, service: str, next_position: int) -> None:
        self._execute(sql.SQL(
            "INSERT INTO {} (service, next_position, updated_at) VALUES (%s, %s, now()) "
            "ON CONFLICT (service) DO UPDATE SET next_position = excluded.next_position, "
            "updated_at = excluded.updated_at").format(self._table), (service, next_position))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def open_positions(settings: Settings) -> PositionStore:
    if settings.persistence == "postgres":
        return PostgresPositions(settings)
    return SqlitePositions(settings)


class PositionWriter:
    """Stores positions on a thread of its own, so that the relay's next batch does not wait
    for PostgreSQL's commit of the last one's position (issue 20: on a busy machine that commit
    took 1–20 ms a cycle, and now and then hundreds, all of it on every event's way to the
    consumer).

    What is stored is only positions the relay hands over, each after the broker confirmed
    everything before it, and a service's positions only ever go forward: handed over while a
    save is in flight, a position replaces the one waiting (the later is the one that counts).
    The lag is bounded: once a save has taken `lag_seconds`, handing over waits for it, as a
    synchronous store would. So after a crash what is published again (same CloudEvents ids;
    consumers drop duplicates) is at most what the broker confirmed in about `lag_seconds`,
    plus a batch. A save that failed is raised by the next hand-over (the relay then waits, as
    for any store outage, and publishes that batch again) and its position is tried again;
    `close` stores the last one before it closes the store."""

    def __init__(self, store: PositionStore, lag_seconds: float = 1.0,
                 close_seconds: float = 5.0):
        self._store = store
        self._lag_seconds = lag_seconds
        self._close_seconds = close_seconds
        self._condition = threading.Condition()
        self._pending: dict[str, int] = {}
        self._saving = False
        self._save_started = 0.0
        self._error: Exception | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="relay-positions", daemon=True)
        self._thread.start()

    def load(self) -> dict[str, int]:
        self.flush()
        return self._store.load()

    def save(self, service: str, next_position: int) -> None:
        """Hands `next_position` over to be stored (waiting only for a save in flight longer
        than `lag_seconds`); raises the error of a save that failed instead (and the position
        is not taken)."""
        with self._condition:
            while (self._error is None and self._saving
                   and time.monotonic() - self._save_started >= self._lag_seconds):
                self._condition.wait(self._lag_seconds)
            self._raise_failed()
            if next_position > self._pending.get(service, 0):
                self._pending[service] = next_position
            self._condition.notify_all()

    def _raise_failed(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            self._condition.notify_all()  # the thread tries what failed again
            raise error

    def flush(self, timeout: float | None = None) -> None:
        """Returns once every position handed over is stored (as a synchronous save would:
        as long as the store takes); raises a save's error, or TimeoutError after
        `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while (self._pending or self._saving) and self._error is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"a position was not stored within {timeout} s")
                self._condition.wait(remaining)
            self._raise_failed()

    def close(self) -> None:
        """Stores the last position handed over (if the store answers within
        `close_seconds`: otherwise that batch is published again) and closes the store."""
        try:
            self.flush(self._close_seconds)
        except Exception as error:  # closing: what was not stored is published again
            log.warning("relay.position_not_stored", error=str(error))
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout=self._close_seconds)
        self._store.close()

    def _run(self) -> None:
        while True:
            with self._condition:
                while (not self._pending or self._error is not None) and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return
                # Taken out (another service's comes next; a later one of this service may
                # be handed over meanwhile), put back if it fails and nothing later came.
                service, position = next(iter(self._pending.items()))
                del self._pending[service]
                self._saving = True
                self._save_started = time.monotonic()
            error: Exception | None = None
            try:
                self._store.save(service, position)
            except Exception as failed:  # the relay's loop decides what it means
                error = failed
            with self._condition:
                self._saving = False
                if error is not None:
                    self._error = error  # tried again once the relay heard
                    self._pending.setdefault(service, position)
                self._condition.notify_all()
