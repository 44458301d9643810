"""Every service in one process behind the guard (tests/inprocess.py), on a scratch PostgreSQL
database: for the benches that measure a command's own cost, without gRPC or other processes
(bench_perk_history, bench_campaign_size, profile_commands)."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bench.common import scratch_database
from shared.store.application import forget_older
from tests.conftest import badges_key_env, pg_env
from tests.inprocess import InProcessQiji

# Settings a bench run may set for the processes it measures.
PASSED_ON = ("QIJI_AGGREGATE_CACHE_SIZE",)


@contextmanager
def qiji_on_postgres() -> Iterator[InProcessQiji]:
    """Warnings only in the log: a bench prints its own figures. QIJI_AGGREGATE_CACHE_SIZE is
    taken from the environment, as a deployment takes it."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with scratch_database() as db, tempfile.TemporaryDirectory() as tmp:
        env = {"QIJI_DATA_DIR": str(Path(tmp) / "data"), **badges_key_env(),
               **pg_env(db, f"p_{uuid.uuid4().hex[:8]}"),
               **{name: os.environ[name] for name in PASSED_ON if name in os.environ}}
        q = InProcessQiji(env, Path(tmp) / "tokens.json")
        try:
            yield q
        finally:
            q.close()


@dataclass
class FirstReads:
    """Wall ms, each the median of the rounds, with one aggregate out of the cache (a restart,
    for it): one read alone; `readers` at once, until the last answers; the raw fetch of its
    stored rows (psycopg, binary, nothing checked or decoded) and how many; and, when asked,
    one read alone with its snapshots deleted (every event read, as before snapshots)."""

    alone: float
    at_once: float
    raw: float
    rows: int
    without_snapshot: float | None = None


def first_reads(q: InProcessQiji, service: str, ident: str, get: Callable[[], None],
                readers: int, rounds: int = 3, without_snapshot: bool = False) -> FirstReads:
    app: Any = q.apps[service]
    aggregate = uuid.UUID(ident)

    def cold(count: int) -> float:
        # Only this aggregate leaves the cache: what its read also reads stays as it was.
        with contextlib.suppress(KeyError):
            app.repository.cache.get(aggregate, evict=True)
        threads = [threading.Thread(target=get) for _ in range(count)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return (time.perf_counter() - started) * 1e3

    get()  # what the read reads besides the aggregate (the caller, the directory) warm
    app.settle_snapshots()  # one the last commands asked for is not taken meanwhile
    alone = statistics.median(cold(1) for _ in range(rounds))
    at_once = statistics.median(cold(readers) for _ in range(rounds))
    recorder = app.recorder
    table = f"{recorder.datastore.schema}.{recorder.events_table_name}"
    fetched: list[float] = []
    with recorder.datastore.get_connection() as conn:
        for _ in range(rounds):
            started = time.perf_counter()
            with conn.cursor(binary=True) as cursor:
                rows = cursor.execute(
                    f"SELECT originator_version, topic, state FROM {table} "
                    "WHERE originator_id = %s ORDER BY originator_version",
                    (aggregate,)).fetchall()
            fetched.append((time.perf_counter() - started) * 1e3)
    found = FirstReads(alone, at_once, statistics.median(fetched), len(rows))
    if without_snapshot and app.snapshots is not None:
        forget_older(app.snapshots.recorder, aggregate, 2**62)
        found.without_snapshot = statistics.median(cold(1) for _ in range(rounds))
    return found
