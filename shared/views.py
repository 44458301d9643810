"""In-memory read models that follow their own service's notification log.

A view is derived state: it is rebuilt from the log when the process starts and caught up
before each query, so a replica answers with every event committed before the query began,
whoever stored it. Dropping one loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from shared import context, replay
from shared.application import QijiApplication
from shared.continuity import Continuity, EventsTable
from shared.idempotency import RequestRecord
from shared.integrity import ALARM, EventIntegrityError
from shared.paging import page

log = structlog.get_logger(__name__)

BATCH = 500
PROGRESS_EVERY = 10_000


class LogFollower:
    """Applies the service's own log to a view, in order. An event that fails its integrity
    check — its MAC, or its place among its aggregate's versions (a genuine event moved later
    in the log would otherwise be applied again, out of order) — stops the view there: it never
    applies anything past it, and raises the integrity alarm. A view that cannot be brought up
    to date must not answer as if it were (a rule checked against it would miss what came
    after), so every later catch-up — before each query and command that reads the view —
    raises EventIntegrityError (DATA_LOSS to the caller) until the store is repaired; the
    rebuild at start alone does not raise, so that the process comes up and serves its health,
    its audit API and what needs no view."""

    def __init__(self, app: QijiApplication, name: str,
                 apply: Callable[[int, Any], None], reads: Sequence[type] | None = None):
        """`reads`: the event classes `apply` does anything with (subclasses included), when
        it ignores the others; None: every event is applied. Whatever `apply` reads, it never
        sees the service's request records (shared/idempotency.py: the first answer of each
        command, about half of a service's log), which are bookkeeping, not any view's data.
        An event `apply` does not see is still checked (MAC and place), but not decoded."""
        self._app = app
        self._name = name
        self._apply = apply
        only = tuple(reads) if reads is not None else None

        def read(cls: type) -> bool:
            return not issubclass(cls, RequestRecord.Event) and (
                only is None or issubclass(cls, only))
        self._reads = read
        self._lock = threading.Lock()
        self._reader = f"{app.name}.view.{name}"
        self._started = False
        # Each aggregate's newest version applied so far (bounded): what the next must follow.
        self._continuity = Continuity(EventsTable(app))
        self.position = 0

    def catch_up(self) -> int:
        """Applies every event stored since the last call; returns how many."""
        # A follower's policy reading this view while the follower holds reactions of its
        # batch not yet committed would miss them: it commits them first (shared/followers.py).
        self._app.aggregates.require_no_pending()
        with self._lock:
            first, self._started = not self._started, True
            try:
                applied = self._catch_up()
            except EventIntegrityError as error:
                self._continuity.forget()
                ALARM.broken(self._app.name, self._reader,
                             error.position or self.position + 1, error.problem)
                if first:
                    return 0
                raise
            except BaseException:
                # The event the view failed to apply was checked, and noted as its aggregate's
                # newest: the next catch-up reads it again, which must not look like an event
                # come twice (a false integrity alarm over a view's own fault).
                self._continuity.forget()
                raise
            if ALARM.stopped_at(self._app.name, self._reader):
                ALARM.intact(self._app.name, self._reader)
            return applied

    def _catch_up(self) -> int:
        applied = 0
        started = time.perf_counter()
        while True:
            # Usually a handful of new events: one page answers. A full page means a
            # rebuild (or a long absence): the rest streams through one cursor.
            count = 0
            for position, event in replay.scan(self._app, self.position + 1,
                                               self._continuity, first=BATCH,
                                               reads=self._reads):
                if event is not None:  # None: of a class this view does not read
                    self._apply(position, event)
                self.position = position
                count += 1
                if (applied + count) % PROGRESS_EVERY == 0:
                    # A long rebuild shows that it is moving, and how fast.
                    log.info("view.rebuild.progress", view=self._name,
                             events=applied + count, position=self.position,
                             per_second=round((applied + count)
                                              / (time.perf_counter() - started)))
            applied += count
            if count < BATCH:
                # Less than a page: nothing more was there. After a scan, look once more
                # for what was committed while it ran.
                break
        if applied >= PROGRESS_EVERY:
            log.info("view.rebuild.done", view=self._name, events=applied,
                     seconds=round(time.perf_counter() - started, 2))
        return applied


@dataclass
class Row:
    aggregate_id: str
    attrs: dict[str, Any]


class Index:
    """Rows in log order (the position of each aggregate's first event), filtered in memory.
    A city's riders number in the tens of thousands: a scan per page is cheap."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.rows: dict[int, Row] = {}
        self.by_id: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, position: int, aggregate_id: str, **attrs: Any) -> None:
        with self.lock:
            self.keys.append(position)  # positions only grow: the list stays sorted
            self.rows[position] = Row(aggregate_id, attrs)
            self.by_id[aggregate_id] = position

    def update(self, aggregate_id: str, **attrs: Any) -> None:
        with self.lock:
            position = self.by_id.get(aggregate_id)
            if position is not None:
                self.rows[position].attrs.update(attrs)

    def select(self, match: dict[str, Any], *, page_size: int, page_token: str,
               extra: Callable[[dict[str, Any], str], bool] | None = None,
               filters: Sequence[object] = (), rows: bool = False) -> tuple[list[Any], str]:
        """A page of aggregate ids (or, with `rows`, of row dicts with their "id") whose
        attributes equal every non-empty value of `match` and pass `extra(attrs, id)`.
        `filters` describes `extra` for the page token, which must not outlive its filters."""
        wanted = {k: v for k, v in match.items() if v}
        # A list answers only the rows the caller's organisation may see (its access entry's
        # Rows, shared/tenancy.py); the guard put that in the request context.
        reach = context.current().reach

        def row(key: int) -> Any:
            r = self.rows[key]
            if all(r.attrs.get(k) == v for k, v in wanted.items()) and (
                    extra is None or extra(r.attrs, r.aggregate_id)) and (
                    reach is None or reach.admits_row({**r.attrs, "id": r.aggregate_id})):
                return {**r.attrs, "id": r.aggregate_id} if rows else r.aggregate_id
            return None

        with self.lock:
            keys = list(self.keys)
        described = [*sorted(f"{k}={v}" for k, v in match.items()), *map(str, filters)]
        return page(keys, row, page_size=page_size, page_token=page_token, filters=described)

    def snapshot(self) -> list[tuple[int, str, dict[str, Any]]]:
        with self.lock:
            return [(k, self.rows[k].aggregate_id, dict(self.rows[k].attrs)) for k in self.keys]
