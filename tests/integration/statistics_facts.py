"""What the facts tests share: a service's stored events read as the statistics model reads
them (its log, through a feed, decoded as followers decode them), fed to that service's
mappers with identity's real directory and a memory that keeps only JSON, and the figures the
facts add up to — by effective period, as recorded by a moment, where they lie."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.statistics.domain import catalogue
from services.statistics.domain.facts import Event, Fact, Where
from shared.followers import LocalFeed
from shared.tenancy import TenancyDirectory


class JsonMemory:
    """The read model's memory as its store keeps it: JSON, so a mapper that remembers a
    datetime or a Decimal fails here as it would there."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str], str] = {}

    def get(self, kind: str, ident: str) -> Mapping[str, Any] | None:
        text = self.kept.get((kind, ident))
        return None if text is None else json.loads(text)

    def put(self, kind: str, ident: str, value: Mapping[str, Any]) -> None:
        self.kept[(kind, ident)] = json.dumps(dict(value))


@dataclass
class Mapped:
    """What one service's log counted as, event by event."""

    service: str
    events: list[Event] = field(default_factory=list)
    facts: list[tuple[Event, Fact]] = field(default_factory=list)
    topics_seen: set[str] = field(default_factory=set)

    def of(self, measure: str) -> list[Fact]:
        return [f for _, f in self.facts if f.measure == measure]

    def by_topic(self, suffix: str) -> list[Fact]:
        return [f for e, f in self.facts if e.topic.endswith(suffix)]

    def total(self, measure: str, *, start: datetime | None = None,
              end: datetime | None = None, as_of: datetime | None = None,
              where: Callable[[Where], bool] = lambda _: True) -> int:
        """The measure's figure: facts effective in [start, end) (a stock: before end),
        recorded by `as_of`, whose place `where` admits."""
        kind = catalogue.measures()[measure].kind.value
        return sum(f.value for f in self.of(measure)
                   if (start is None or kind == "STOCK" or f.effective_at >= start)
                   and (end is None or f.effective_at < end)
                   and (as_of is None or f.recorded_at <= as_of) and where(f.where))


def events_of(app: Any, service: str) -> list[Event]:
    """Every event the service stored, as its FeedService serves them (MAC checked)."""
    feed = LocalFeed(app, service)
    found, position = [], 1
    while batch := feed.read(position, 500, ()):
        found += [Event(service=service, position=e.position,
                        originator_id=str(e.originator_id),
                        originator_version=e.originator_version, topic=e.topic,
                        state=e.state) for e in batch]
        position = batch[-1].position + 1
    assert feed.failure is None
    return found


def directory_of(identity: Any) -> TenancyDirectory:
    directory = TenancyDirectory(LocalFeed(identity))
    directory.catch_up()
    return directory


def map_log(app: Any, service: str, identity: Any, memory: JsonMemory | None = None,
            after: int = 0) -> Mapped:
    """The service's log from position `after` + 1 through its mappers, in order."""
    mappers = catalogue.mappers(service)
    directory = directory_of(identity)
    memory = memory if memory is not None else JsonMemory()
    mapped = Mapped(service)
    for event in events_of(app, service):
        if event.position <= after:
            continue
        mapped.events.append(event)
        mapper = mappers.get(event.topic)
        if mapper is None:
            continue
        mapped.topics_seen.add(event.topic)
        mapped.facts += [(event, f) for f in mapper(event, directory, memory)]
    return mapped


def measures_are_well_formed(service: str) -> None:
    """Every measure of the service: Chinese label and unit, a description of what is counted
    and when, the city among its dimensions; every fact the catalogue may be asked about."""
    for m in catalogue.measures().values():
        if m.service != service:
            continue
        assert any("\u4e00" <= ch <= "\u9fff" for ch in m.label), m.name
        assert m.unit and all("\u4e00" <= ch <= "\u9fff" for ch in m.unit), m.name
        assert len(m.description) > 40 and "CITY" in {d.value for d in m.dimensions}, m.name


def facts_fit_their_measures(mapped: Mapped) -> None:
    """A fact names a measure of its own service and lies only in dimensions it declares."""
    measures = catalogue.measures()
    for _, f in mapped.facts:
        m = measures[f.measure]
        assert m.service == mapped.service
        dims = {d.value for d in m.dimensions}
        for name, dimension in (("merchant_id", "MERCHANT"), ("platform_id", "PLATFORM"),
                                ("station_id", "STATION"), ("community_id", "COMMUNITY"),
                                ("street_id", "STREET")):
            if getattr(f.where, name):
                assert dimension in dims, (f.measure, name)
        if f.report_kind:
            assert "REPORT_KIND" in dims
        assert f.effective_at.tzinfo is not None and f.recorded_at.tzinfo is not None


def values(facts: Iterable[Fact]) -> list[int]:
    return [f.value for f in facts]
