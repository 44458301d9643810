"""A follower's policies collect their reactions into `Reactions` (shared/followers.py), which
skips the library's two runtime-protocol checks for an aggregate: what it collects must be
exactly what the library's ProcessingEvent collects, for aggregates, events, None and kwargs."""

from __future__ import annotations

import uuid

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking

from shared.followers import Reactions


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


def test_reactions_collect_what_the_library_collects():
    ours, theirs = collected(Reactions), collected(ProcessingEvent)
    # Ids differ between the two runs (new aggregates): compare the shapes and the order.
    assert [e[0] for e in ours[0]] == [e[0] for e in theirs[0]] == [
        "Thing.Made", "Thing.Made", "Thing.Made", "Thing.Renamed"]
    assert [e[2] for e in ours[0]] == [e[2] for e in theirs[0]] == [1, 1, 1, 2]
    assert sorted(ours[1].values()) == sorted(theirs[1].values()) == ["a", "c"]
    assert ours[2] == theirs[2] and ours[3] == theirs[3]
    # Each aggregate's events were taken from it: collected once.
    assert len({e[1] for e in ours[0]}) == 3
