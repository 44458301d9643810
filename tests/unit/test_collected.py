"""What a save collects (shared/store/application.py _Collected): exactly what the library's
ProcessingEvent collects — the same events in the same order, the same aggregates, the same
keyword arguments — without its runtime Protocol checks."""

from __future__ import annotations

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate, event

from shared.store.application import _Collected


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
    collected, expected = _Collected(), ProcessingEvent()
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
