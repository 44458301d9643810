"""The event store's write path without gRPC: concurrent saves through the library's PostgreSQL
recorder and through Qiji's group-commit recorder, beside raw psycopg single-row transactions.

Each save is what a command stores: two events (the domain event and the request record, about
1,200 bytes together) for a new aggregate, committed durably before the writer goes on. The
library's recorder holds an exclusive table lock through each commit, so concurrent writers
queue behind one fsync each; group commit lets the writers that queue share a commit. Same
server, same run, median of rounds."""

from __future__ import annotations

import os
import time
import uuid
from functools import partial
from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory, StoredEvent
from eventsourcing.utils import Environment
from psycopg.adapt import PyFormat, Transformer
from psycopg_pool import ConnectionPool

from bench.common import (
    PG,
    WRITE_GOAL,
    median_of,
    print_table,
    scratch_database,
    throughput,
)
from shared.config import load_settings
from shared.store import eventsourcing_env
from shared.store.columns import column

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PER_ROUND = int(os.environ.get("BENCH_OPS", "600"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8,32").split(",")]
EVENT_BYTES = (900, 300)


def recorder(db: str, schema: str, *, group_commit: bool):
    settings = load_settings("identity", {
        "QIJI_PERSISTENCE": "postgres", "QIJI_POSTGRES_DBNAME": db,
        "QIJI_POSTGRES_HOST": PG["host"], "QIJI_POSTGRES_PORT": str(PG["port"]),
        "QIJI_POSTGRES_USER": PG["user"], "QIJI_POSTGRES_SCHEMA": schema,
        "QIJI_POSTGRES_POOL_SIZE": str(max(CONCURRENCY)), "QIJI_DATA_DIR": "/tmp/qiji-bench",
    })
    env = {**eventsourcing_env(settings), "CREATE_TABLE": "y", "POSTGRES_MAX_OVERFLOW": "0"}
    if not group_commit:
        env.pop("PROCESS_RECORDER_TOPIC")  # the library's own recorder
    # Named as the service's application is, so that the tables are named as in production.
    return InfrastructureFactory.construct(Environment("identity", env)).process_recorder()


def saves(count: int) -> list[list[StoredEvent]]:
    return [[StoredEvent(originator_id=o, originator_version=version, topic="bench:Event",
                         state=os.urandom(size)) for version, size in enumerate(EVENT_BYTES, 1)]
            for o in (uuid.uuid4() for _ in range(count))]


def main() -> None:
    rows, grouped_rows = [], []
    with scratch_database() as db:
        library = recorder(db, "library", group_commit=False)
        ours = recorder(db, "grouped", group_commit=True)
        with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
            conn.execute("CREATE TABLE raw_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA)")
        pool = ConnectionPool(conninfo=psycopg.conninfo.make_conninfo(dbname=db, **PG),
                              min_size=max(CONCURRENCY), max_size=max(CONCURRENCY),
                              kwargs={"autocommit": True}, open=True)
        payload = os.urandom(sum(EVENT_BYTES))

        def raw_insert(_: int) -> None:
            with pool.connection() as conn:
                conn.execute("INSERT INTO raw_rows (payload) VALUES (%s)", (payload,))

        def measure(rec, clients: int) -> float:
            batch = saves(PER_ROUND)
            return throughput(lambda i: rec.insert_events(batch[i]), PER_ROUND, clients)

        for warm in (library, ours):
            measure(warm, 1)
        for clients in CONCURRENCY:
            lib = median_of(ROUNDS, partial(measure, library, clients))
            grouped = median_of(ROUNDS, partial(measure, ours, clients))
            raw = median_of(ROUNDS, partial(throughput, raw_insert, PER_ROUND, clients))
            rows.append((f"library recorder, {clients} writer(s)", lib, raw))
            grouped_rows.append((f"group commit, {clients} writer(s)", grouped, raw))
        pool.close()
        for rec in (library, ours):
            rec.datastore.close()
        dumps = dumping(db)
    title = (f"(PostgreSQL; saves of 2 events; median of {ROUNDS} rounds of {PER_ROUND}; "
             f"raw = psycopg one-row INSERT per transaction)")
    print_table(f"event store write path, no gRPC: the library's recorder {title}", rows,
                unit="saves/s")
    print_table(f"event store write path, no gRPC: Qiji's group commit {title}", grouped_rows,
                unit="saves/s", goal=WRITE_GOAL)
    print_table("a save's four columns made into the statement's parameters (2 events; "
                f"median of {ROUNDS} rounds of {DUMPS}; raw = psycopg's own list dumper)", dumps,
                unit="saves/s")


DUMPS = 20_000


def dumping(db: str) -> list[tuple[str, float, float]]:
    """What the group-commit statement's parameters cost to make (shared/store/columns.py):
    the columns as Qiji builds them, against the same values as plain lists."""
    events = saves(1)[0]
    plain: tuple[list[object], ...] = (
        [e.originator_id for e in events], [e.originator_version for e in events],
        [e.topic for e in events], [e.state for e in events])
    typed = tuple(column(t, values) for t, values in zip(("uuid", "bigint", "text", "bytea"),
                                                          plain, strict=True))
    formats = [PyFormat.AUTO] * 4
    with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
        def rate(params: tuple[Any, ...]) -> float:
            started = time.perf_counter()
            for _ in range(DUMPS):
                Transformer(conn).dump_sequence(params, formats)  # a new one per statement
            return DUMPS / (time.perf_counter() - started)
        ours = median_of(ROUNDS, lambda: rate(typed))
        raw = median_of(ROUNDS, lambda: rate(plain))
    return [("columns of one save", ours, raw)]


if __name__ == "__main__":
    main()
