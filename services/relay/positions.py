"""Where the relay stands in each service's log: the next position to read, stored only after
the broker confirmed every message before it. A table `relay_positions` in the relay's own
PostgreSQL schema (`RELAY_POSTGRES_SCHEMA`, default `relay`), or in a SQLite file
(`<data dir>/relay.sqlite3`) on the embedded default: the same `QIJI_PERSISTENCE` switch as the
services. The relay is the only writer. It holds no event data, only positions, so dropping it
makes the relay publish everything again (with the same CloudEvents ids)."""

from __future__ import annotations

import sqlite3
from typing import Protocol

import psycopg
from psycopg import sql

from shared.config import Settings
from shared.store import ensure_postgres_schema, postgres_conninfo

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
