"""Where a service's events live: a SQLite file (embedded default) or a PostgreSQL schema of its
own. The domain and the application code never know which."""

from __future__ import annotations

import psycopg
from psycopg import sql

from shared.config import Settings

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
