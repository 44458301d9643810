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
`snapshot_state()` and `from_snapshot_state()` (SnapshotForm writes both from what the class
says of its attributes); its service's application names it in `snapshot_kinds` (which
gives the service its snapshot store). When a save moves the aggregate
past a multiple of `snapshot_step(version)`, a thread of the service's own takes a snapshot of
the saved copy after the commit, beside the answer (shared/store/application.py), and deletes
the older ones (each holds the whole state: keeping them all would grow with the square of
the history). The step grows with the history, one sixteenth of it (at least 1,024 events), so
the cost of taking snapshots stays a small constant per command while the events read after
the newest one stay a small share of the history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
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


class SnapshotForm:
    """How an aggregate writes its state as a snapshot and reads it back: every attribute by
    its name, in the aggregate's own order (what an auditor reads of it, its state as of a
    moment, reads the same either way), each as plain JSON:
    - `_SNAPSHOT_PLAIN` types (str, int, bool, None) as they are; `_SNAPSHOT_JSON` attributes
      (lists and dicts of those) as they are;
    - `_SNAPSHOT_ENUMS` by value; `_SNAPSHOT_TIMES` (and the library's two) in ISO 8601;
    - `_SNAPSHOT_OWN` through the aggregate's own pair of functions: (the value, the aggregate)
      → JSON, and (the JSON, the snapshot's whole state) → the value; a value that another
      attribute's form already holds may be written as None and rebuilt from that one.
    An attribute none of these names fails the snapshot with a TypeError (logged, never the
    command), until it says how its snapshot holds it."""

    _SNAPSHOT_ENUMS: ClassVar[dict[str, type[Any]]] = {}
    _SNAPSHOT_TIMES: ClassVar[frozenset[str]] = frozenset()
    _SNAPSHOT_JSON: ClassVar[frozenset[str]] = frozenset()
    _SNAPSHOT_OWN: ClassVar[dict[str, tuple[Callable[[Any, Any], Any],
                                            Callable[[Any, dict[str, Any]], Any]]]] = {}
    _SNAPSHOT_PLAIN: ClassVar[tuple[type, ...]] = (str, int, bool, type(None))
    _LIBRARY_TIMES: ClassVar[frozenset[str]] = frozenset({"_created_on", "_modified_on"})

    def snapshot_state(self) -> dict[str, Any]:
        cls = type(self)
        state: dict[str, Any] = {}
        for name, value in vars(self).items():
            if name in ("_id", "_version", "_pending_events"):
                continue
            if name in cls._SNAPSHOT_OWN:
                state[name] = cls._SNAPSHOT_OWN[name][0](value, self)
            elif name in cls._SNAPSHOT_ENUMS:
                state[name] = value.value
            elif name in cls._SNAPSHOT_TIMES or name in cls._LIBRARY_TIMES:
                state[name] = value.isoformat()
            elif name in cls._SNAPSHOT_JSON or type(value) in cls._SNAPSHOT_PLAIN:
                state[name] = value
            else:  # a field added without saying how its snapshot holds it
                raise TypeError(f"a {cls.__name__}'s snapshot cannot hold {name}: "
                                f"{type(value)}")
        return state

    @classmethod
    def from_snapshot_state(cls, state: dict[str, Any], ident: Any, version: int) -> Any:
        values: dict[str, Any] = {"_id": ident, "_version": version}
        for name, value in state.items():
            if name in cls._SNAPSHOT_OWN:
                value = cls._SNAPSHOT_OWN[name][1](value, state)
            elif name in cls._SNAPSHOT_ENUMS:
                value = cls._SNAPSHOT_ENUMS[name](value)
            elif name in cls._SNAPSHOT_TIMES or name in cls._LIBRARY_TIMES:
                value = datetime.fromisoformat(value)
            values[name] = value
            if name == "_modified_on":  # the library's attributes' order
                values["_pending_events"] = []
        values.setdefault("_pending_events", [])
        aggregate = object.__new__(cls)
        aggregate.__dict__.update(values)
        return aggregate


def takes_snapshots(aggregate: Any) -> bool:
    """Whether an aggregate (or an aggregate class) takes snapshots."""
    cls = aggregate if isinstance(aggregate, type) else type(aggregate)
    snapshot = getattr(cls, "Snapshot", None)
    return isinstance(snapshot, type) and issubclass(snapshot, QijiSnapshot)
