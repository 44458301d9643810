"""Takes the snapshots that saves did not (shared/snapshots.py).

A save takes a snapshot only when it moves an aggregate past a step. So an aggregate is read
from all of its events after a restart, however long its history, and until its next step:
- when its snapshot was never taken (the snapshot thread failed, or the process stopped with
  one queued);
- when an operator deleted its snapshots (they are derived, and may be dropped);
- when its snapshot is of another `SNAPSHOT_FORMAT` (the code was changed and the format
  raised). Every first read passes such a snapshot over.

A perk that is rarely claimed now may not cross a step for weeks, and every restart meanwhile
reads all of its events: 6.3 s for one claimed 40,000 times (BENCHMARKS.md, ninth pass). This
job looks at start, and every `every` seconds after, on one replica at a time (a leadership
lock). For each aggregate of a snapshotting kind that has reached a step's length of history,
it takes a snapshot when the newest one is more than a step behind, or missing, or of another
format.

A snapshot that fails its MAC is left where it is. Reads pass it over (`snapshot.refused`),
and it is the evidence `qiji audit verify` names. An operator deletes it, and the next round
takes a new one."""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from eventsourcing.utils import get_topic

from shared import snapshots
from shared.background import PeriodicJob
from shared.integrity import EventIntegrityError
from shared.store.application import aggregates_reaching, stored_snapshots

log = structlog.get_logger(__name__)


class SnapshotCatchUp(PeriodicJob[Any]):
    upstream = "snapshots"
    job, done, counted = "snapshot_catch_up", "snapshot_catch_up.taken", "snapshots"
    led = True
    at_start = True
    # After start, rarely: a missed snapshot costs only a slower first read, and a round scans
    # the log's long histories (by version, so only they pass the filter).
    EVERY_SECONDS = 3600.0

    def __init__(self, app: Any, every_seconds: float = EVERY_SECONDS):
        super().__init__(app, every_seconds)
        # Snapshots found of today's format, not decoded again each round (one of a perk
        # claimed 40,000 times is about 6 MB of JSON).
        self._usable: set[tuple[uuid.UUID, int]] = set()

    def round(self) -> int:
        if self.app.snapshots is None or not self.app.snapshot_kinds:
            return 0
        newest: dict[uuid.UUID, int] = {}
        for ident, version in stored_snapshots(self.app.snapshots.recorder):
            newest[ident] = max(version, newest.get(ident, 0))
        taken = 0
        for kind in self.app.snapshot_kinds:
            for ident, version in aggregates_reaching(self.app.recorder, get_topic(kind),
                                                      snapshots.MIN_STEP):
                have = newest.get(ident)
                if have is not None:
                    usable = self._is_usable(ident, have)
                    if usable is None:
                        continue  # refused: left for an operator
                    if usable and version - have < snapshots.snapshot_step(version):
                        continue  # as a save would have left it
                started = time.perf_counter()
                aggregate = self.app.aggregates.read_only(ident, kind=kind)
                if self.app.store_snapshot(aggregate, replacing=aggregate.version == have):
                    taken += 1
                    log.info("snapshot_catch_up.snapshot", aggregate_id=str(ident),
                             version=aggregate.version, replaced=have,
                             seconds=round(time.perf_counter() - started, 3))
        return taken

    def _is_usable(self, ident: uuid.UUID, version: int) -> bool | None:
        """Whether the stored snapshot of `ident` at `version` is of today's format; None when
        its MAC fails (or it was deleted since it was listed)."""
        if (ident, version) in self._usable:
            return True
        try:
            found = list(self.app.snapshots.get(ident, gt=version - 1, lte=version))
        except EventIntegrityError as error:
            log.error("snapshot.refused", aggregate_id=str(ident), version=version,
                      problem=str(error), why="its MAC fails: left for an operator (qiji "
                      "audit verify names it); delete it and the next round takes another")
            return None
        if not found:
            return None
        snapshot: Any = found[0]
        if snapshot.usable():
            self._usable.add((ident, version))
            return True
        return False
