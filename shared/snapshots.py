"""Snapshots of an aggregate whose history grows for as long as it lives (a perk claimed for
weeks: a quota may be a million): its first read after a restart reads the newest snapshot and
the events after it, instead of every event it ever had (55-65 µs an event: a perk claimed
100,000 times took about 9 s, bench_perk_history).

A snapshot is derived, like a view: the events stay the truth, and any snapshot can be dropped
and is made again (at the next step, or at start by the catch-up job,
shared/snapshot_catch_up.py, which also replaces those of another format). So a snapshot that
cannot be used is passed over, never believed, and the aggregate is read from its events, as if
there were none:
- its MAC fails (it is written through the service's mapper, MAC'd like an event: someone with
  only database access cannot forge or alter one): the read logs `snapshot.refused` at error
  level, for an operator to look into, and goes on from the events;
- it was taken by code that kept the aggregate's state in another shape (`SNAPSHOT_FORMAT`,
  raised whenever what an aggregate derives from its events changes): the events, read by
  today's code, are what that code derives.

An aggregate takes part by defining `Snapshot` (a QijiSnapshot), `SNAPSHOT_FORMAT`,
`snapshot_state()` and `from_snapshot_state()`; its service's application sets
`is_snapshotting_enabled` and names it in `snapshot_kinds`. When a save moves the aggregate
past a multiple of `snapshot_step(version)`, a thread of the service's own takes a snapshot of
the saved copy after the commit, beside the answer (shared/store/application.py), and deletes
the older ones (each holds the whole state: keeping them all would grow with the square of
the history). The step grows with the history, one sixteenth of it (at least 1,024 events), so
the cost of taking snapshots stays a small constant per command while the events read after
the newest one stay a small share of the history."""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.domain import Snapshot
from eventsourcing.utils import get_topic, resolve_topic

MIN_STEP = 1024
STEP_SHARE = 16


def snapshot_step(version: int) -> int:
    """Versions between snapshots at `version`: a power of two, at least MIN_STEP, about a
    STEP_SHARE-th of the history."""
    return max(MIN_STEP, 1 << max(0, (version // STEP_SHARE).bit_length() - 1))


def crosses_step(before: int, after: int) -> bool:
    """Whether a save that took an aggregate from version `before` to `after` passed a
    multiple of the step (the step at `after`)."""
    step = snapshot_step(after)
    return after // step > before // step


class QijiSnapshot(Snapshot):
    """The state of an aggregate at a version, as the aggregate class itself writes and reads
    it (`snapshot_state`, `from_snapshot_state`: plain JSON values, not the library's copy of
    `__dict__`, which would need a transcoding for every value class an aggregate holds), with
    the class's SNAPSHOT_FORMAT."""

    FORMAT_KEY: ClassVar[str] = "format"

    @classmethod
    def take(cls, aggregate: Any) -> Any:
        return cls(
            originator_id=aggregate.id, originator_version=aggregate.version,
            timestamp=cls.create_timestamp(), topic=get_topic(type(aggregate)),
            state={cls.FORMAT_KEY: type(aggregate).SNAPSHOT_FORMAT,
                   **aggregate.snapshot_state()})

    def usable(self) -> bool:
        """Taken by code that keeps the aggregate's state in today's shape."""
        try:
            cls = resolve_topic(self.topic)
        except Exception:  # a class renamed or gone since
            return False
        return self.state.get(self.FORMAT_KEY) == getattr(cls, "SNAPSHOT_FORMAT", None)

    def mutate(self, _: Any) -> Any:
        cls = resolve_topic(self.topic)
        state = {k: v for k, v in self.state.items() if k != self.FORMAT_KEY}
        return cls.from_snapshot_state(state, self.originator_id, self.originator_version)


def takes_snapshots(aggregate: Any) -> bool:
    """Whether an aggregate (or an aggregate class) takes snapshots."""
    cls = aggregate if isinstance(aggregate, type) else type(aggregate)
    snapshot = getattr(cls, "Snapshot", None)
    return isinstance(snapshot, type) and issubclass(snapshot, QijiSnapshot)
