"""What a save collects (shared/store/application.py Collected): exactly what the library's
ProcessingEvent collects — the same events in the same order, the same aggregates, the same
keyword arguments — without its runtime Protocol checks."""

from __future__ import annotations

import uuid

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking

from shared.store.application import Collected


class Box(Aggregate):
    @event("Made")
    def __init__(self, label: str) -> None:
        self.label = label

    @event("Relabelled")
    def relabel(self, label: str) -> None:
        self.label = label


def test_it_collects_what_the_librarys_processing_event_collects() -> None:
    def objects() -> list[object]:
        first, second, loose = Box("a"), Box("b"), Box("c")
        first.relabel("a2")
        bare = loose.collect_events()[0]  # an event given by itself
        return [first, None, bare, second]

    ours, theirs = objects(), objects()
    collected, expected = Collected(), ProcessingEvent()
    collected.collect_events(*ours, note=1)
    expected.collect_events(*theirs, note=1)
    assert [(type(e).__name__, e.originator_version) for e in collected.events] == \
        [(type(e).__name__, e.originator_version) for e in expected.events] == \
        [("Made", 1), ("Relabelled", 2), ("Made", 1), ("Made", 1)]
    assert [e.originator_id for e in collected.events] == \
        [ours[0].id, ours[0].id, ours[2].originator_id, ours[3].id]
    assert list(collected.aggregates.values()) == [ours[0], ours[3]]
    assert collected.saved_kwargs == expected.saved_kwargs == {"note": 1}
    assert ours[0].collect_events() == []  # collected: nothing pending is left


class Thing(Aggregate):
    @event("Made")
    def __init__(self, name: str):
        self.name = name

    @event("Renamed")
    def rename(self, name: str) -> None:
        self.name = name


def collected(kind: type[ProcessingEvent]) -> tuple[list, dict, dict, object]:
    uuid_ = uuid.UUID(int=7)
    one, two = Thing(name="a"), Thing(name="b")
    two.rename("c")
    loose = Thing(name="d").collect_events()[0]  # an event on its own, not its aggregate
    processing = kind(tracking=Tracking(application_name="up", notification_id=3))
    processing.collect_events(one, None, loose, two, why="x")
    processing.collect_events(saved=uuid_)
    return ([(type(e).__qualname__, e.originator_id, e.originator_version)
             for e in processing.events],
            {k: v.name for k, v in processing.aggregates.items()},
            processing.saved_kwargs, processing.tracking)


def test_a_reaction_with_its_tracking_record_collects_what_the_library_collects():
    """A follower's reaction (shared/followers.py) collects into Collected with a tracking
    record, aggregates, loose events, None and keyword arguments over two calls."""
    ours, theirs = collected(Collected), collected(ProcessingEvent)
    # Ids differ between the two runs (new aggregates): compare the shapes and the order.
    assert [e[0] for e in ours[0]] == [e[0] for e in theirs[0]] == [
        "Thing.Made", "Thing.Made", "Thing.Made", "Thing.Renamed"]
    assert [e[2] for e in ours[0]] == [e[2] for e in theirs[0]] == [1, 1, 1, 2]
    assert sorted(ours[1].values()) == sorted(theirs[1].values()) == ["a", "c"]
    assert ours[2] == theirs[2] and ours[3] == theirs[3]
    # Each aggregate's events were taken from it: collected once.
    assert len({e[1] for e in ours[0]}) == 3
