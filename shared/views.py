"""In-memory read models that follow their own service's notification log.

A view is derived state: it is rebuilt from the log when the process starts and caught up
before each query, so a replica answers with every event committed before the query began,
whoever stored it. Dropping one loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from shared.application import QijiApplication

log = structlog.get_logger(__name__)

BATCH = 500
PROGRESS_EVERY = 10_000


class LogFollower:
    def __init__(self, app: QijiApplication, name: str,
                 apply: Callable[[int, Any], None]):
        self._app = app
        self._name = name
        self._apply = apply
        self._lock = threading.Lock()
        self.position = 0

    def catch_up(self) -> int:
        """Applies every event stored since the last call; returns how many."""
        with self._lock:
            applied = 0
            started = time.perf_counter()
            while True:
                batch = self._app.read_log(self.position + 1, BATCH)
                for notification in batch:
                    self._apply(notification.id, self._app.to_domain_event(notification))
                    self.position = notification.id
                    applied += 1
                    if applied % PROGRESS_EVERY == 0:
                        # A long rebuild shows that it is moving, and how fast.
                        log.info("view.rebuild.progress", view=self._name, events=applied,
                                 position=self.position,
                                 per_second=round(applied / (time.perf_counter() - started)))
                if len(batch) < BATCH:
                    break
            if applied >= PROGRESS_EVERY:
                log.info("view.rebuild.done", view=self._name, events=applied,
                         seconds=round(time.perf_counter() - started, 2))
            return applied
