"""Waking a log's readers when the log grows, rather than making them poll.

`LogWake` is a generation counter: a reader notes `generation` before it reads the log, and, if
it found nothing new, waits for a later generation. A change that happens between its read and
its wait is never missed (a bare condition variable would lose it, and the reader would sleep a
whole poll interval at 1,000 events/s).

Who bumps it: the process that stores an event (QijiApplication.stored, at once), and, for
events stored by other processes (another replica of the service, a tool), `NotifyListener`:
the PostgreSQL recorder NOTIFYs the events table's channel in the transaction that inserts
(shared/store/recorder.py, `qiji_insert_<table>`; the library's recorder does too), and
PostgreSQL delivers it after the commit, so a reader woken by it sees the event. SQLite has no
notifications: there, and whenever a notification is lost (the listening connection dropped),
readers still look again after their own timeout — the fallback poll."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import structlog
from psycopg import sql

log = structlog.get_logger(__name__)

# How long the listener waits for a notification before it looks at `stopping` again.
LISTEN_TICK = 1.0
RECONNECT_START = 0.5
RECONNECT_MAX = 5.0


class LogWake:
    """A log's generation: every change bumps it; readers wait for one after theirs."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation

    def changed(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, since: int, timeout: float) -> bool:
        """Returns once the generation is past `since` (True) or after `timeout` (False)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._generation == since:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True


class NotifyListener:
    """A thread of its own, on a connection of its own, that LISTENs to `channel` and bumps
    `wake` for every notification (and once after each reconnection: what was stored while it
    was away is looked at). It stops when `close` is called; a connection it loses is made
    again with backoff, readers falling back on their poll meanwhile."""

    def __init__(self, connect: Callable[[], psycopg.Connection[tuple[object, ...]]],
                 channel: str, wake: LogWake, name: str = "log"):
        self._connect = connect
        self._channel = channel
        self._wake = wake
        self._closing = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-listen", daemon=True)
        self._name = name

    def start(self) -> NotifyListener:
        self._thread.start()
        return self

    def listening(self, timeout: float) -> bool:
        """True once LISTEN is in force (tests wait for it before they store)."""
        return self._listening.wait(timeout)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=LISTEN_TICK * 2)

    def _run(self) -> None:
        backoff = RECONNECT_START
        while not self._closing.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self._listening.set()
                    if backoff > RECONNECT_START:
                        log.info("store.listen_back", log=self._name)
                    backoff = RECONNECT_START
                    self._wake.changed()  # what was stored while nobody listened
                    while not self._closing.is_set():
                        for _ in conn.notifies(timeout=LISTEN_TICK):
                            self._wake.changed()
            except psycopg.Error as error:
                self._listening.clear()
                if backoff == RECONNECT_START:  # said once per outage
                    log.warning("store.listen_lost", log=self._name, error=str(error))
                self._closing.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX)
