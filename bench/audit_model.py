"""A small aggregate to fill a log quickly for bench_audit (its events are ordinary events)."""

from eventsourcing.domain import Aggregate, event


class Counter(Aggregate):
    @event("Started")
    def __init__(self, name: str):
        self.name = name
        self.ticks = 0

    @event("Ticked")
    def tick(self, note: str) -> None:
        self.ticks += 1
