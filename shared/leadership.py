"""One leader among replicas: for a follower of an upstream, governance's deadline job and the
relay. A PostgreSQL advisory lock, held on a connection of its own for as long as the process
leads (a crash releases it with the session), or a file lock on the embedded default."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import structlog

from shared import metrics
from shared.config import Settings

log = structlog.get_logger(__name__)

# How often a leader checks that the connection holding its lock is still alive.
LEASE_CHECK_SECONDS = 5.0


class Lease:
    """Leadership as held: a PostgreSQL advisory lock lives as long as the session holding it,
    and a restart of the server ends every session. `held()` says so (checked every few
    seconds), so a leader steps down and queues for the lock again instead of going on
    leading without it beside a replica that took the lock in the meantime."""

    def __init__(self, conn: psycopg.Connection[Any] | None, what: str):
        self._conn = conn
        self._what = what
        self._checked = time.monotonic()

    def held(self) -> bool:
        if self._conn is None or time.monotonic() - self._checked < LEASE_CHECK_SECONDS:
            return True
        self._checked = time.monotonic()
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as error:
            log.warning("leadership.lost", of=self._what, error=str(error).strip())
            return False
        return True


@contextmanager
def leadership(settings: Settings, key: str, lock_file: str, stopping: threading.Event, *,
               retry_seconds: float = 2.0,
               waiting: Callable[[bool], None] | None = None,
               work: str = "") -> Iterator[Lease | None]:
    """Waits to lead `key` (PostgreSQL) or `lock_file` in the data directory (SQLite) and
    yields the Lease; yields None if `stopping` was set first. `waiting(reachable)` is told
    after each failed try whether the store answered (a standby that can reach it is fine).
    `work` names what is led in /metrics (`qiji_leader{service, work}`), so an operator sees
    which replica leads what (deploy/status reads it)."""
    leading = metrics.LEADER.labels(settings.service, work or key)
    leading.set(0)
    with _led(settings, key, lock_file, stopping, retry_seconds, waiting) as lease:
        if lease is not None:
            leading.set(1)
            log.info("leadership.taken", work=work or key)
        try:
            yield lease
        finally:
            leading.set(0)


@contextmanager
def _led(settings: Settings, key: str, lock_file: str, stopping: threading.Event,
         retry_seconds: float, waiting: Callable[[bool], None] | None
         ) -> Iterator[Lease | None]:
    if settings.persistence == "postgres":
        from shared.store import postgres_conninfo
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        conn = None
        try:
            while not stopping.is_set():
                try:
                    conn = conn or psycopg.connect(postgres_conninfo(settings), autocommit=True)
                    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,)
                                          ).fetchone()
                    if locked is not None and locked[0]:
                        break
                    reachable = True
                except psycopg.OperationalError:
                    if conn is not None:
                        conn.close()
                    conn, reachable = None, False
                if waiting is not None:
                    waiting(reachable)
                stopping.wait(retry_seconds)
            yield None if stopping.is_set() else Lease(conn, key)
        finally:
            if conn is not None:
                conn.close()  # the session's advisory lock goes with it
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(settings.data_dir) / lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not stopping.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if waiting is not None:
                        waiting(True)
                    stopping.wait(retry_seconds)
            # A file lock lives as long as this process: nothing to check.
            yield None if stopping.is_set() else Lease(None, key)
        finally:
            os.close(fd)
