"""A small aggregate to fill a log quickly for bench_audit (its events are ordinary events)."""

from typing import TYPE_CHECKING, ClassVar

from eventsourcing.domain import Aggregate, event


class Counter(Aggregate):
    if TYPE_CHECKING:  # the event classes @event makes (bench_audit's view reads Started)
        Started: ClassVar[type[Aggregate.Created]]
        Ticked: ClassVar[type[Aggregate.Event]]

    @event("Started")
    def __init__(self, name: str):
        self.name = name
        self.ticks = 0

    @event("Ticked")
    def tick(self, note: str) -> None:
        self.ticks += 1
