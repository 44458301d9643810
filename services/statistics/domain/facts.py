"""What an upstream event counts as: facts. A fact is one measure's value (+1 rider registered,
+2.5 volunteer hours, −1 redemption reversed) at one moment of the programme, with the
dimensions it can be broken down by. The read model adds facts up; it never edits one.

Two moments, because the store is event-sourced: `effective_at` puts a fact in a period (the
day a shift was served, the moment a code was redeemed), `recorded_at` is when the event that
says so was stored. "The March figures as they stood on 1 April" are the facts effective in
March and recorded by 1 April; a shift confirmed on 3 April for 30 March joins March later, and
shows as the difference between that view and today's.

A mapper turns one upstream event into facts. It reads nothing but the event, the directory
(who a rider is, where an organisation sits) and its own memory (what earlier events of the
same log said: a perk's merchant, a session's track); memory is kept in the read model's store
in the same transaction as the facts, so a rebuild from position 1 remembers the same."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol


class Dimension(StrEnum):
    """What a figure can be broken down by (the proto's Dimension, by name)."""

    CITY = "CITY"
    DISTRICT = "DISTRICT"
    STREET = "STREET"
    COMMUNITY = "COMMUNITY"
    STATION = "STATION"
    MERCHANT = "MERCHANT"
    PLATFORM = "PLATFORM"
    TRACK = "TRACK"
    REPORT_KIND = "REPORT_KIND"
    REPORT_CATEGORY = "REPORT_CATEGORY"


# The dimensions of a fact about a rider (their home street's places, their platform and
# station), and of one that has a place but no rider: said once for every service's measures.
RIDER_DIMENSIONS = frozenset({Dimension.CITY, Dimension.DISTRICT, Dimension.STREET,
                              Dimension.STATION, Dimension.PLATFORM})
PLACE_DIMENSIONS = frozenset({Dimension.CITY, Dimension.DISTRICT, Dimension.STREET})


class MeasureKind(StrEnum):
    FLOW = "FLOW"    # what happened within the period
    STOCK = "STOCK"  # how many at the period's end: the sum of every fact before it


@dataclass(frozen=True)
class Measure:
    """One measure of the catalogue. `scale`: facts store integers (exact sums whatever the
    order); a measure in hours stores minutes and has scale 60.

    `description` is the developers' precise definition (English, naming the measures it
    relates to); `explanation` says the same to the city's officials, who read Chinese: what is
    counted and which moment puts it in a period, as a monthly report's 口径说明 says it. The
    console and the exports show the explanation."""

    name: str
    label: str
    unit: str
    service: str
    dimensions: frozenset[Dimension]
    description: str
    explanation: str
    kind: MeasureKind = MeasureKind.FLOW
    scale: int = 1

    def value(self, stored: int) -> Decimal:
        return Decimal(stored) / self.scale if self.scale != 1 else Decimal(stored)


@dataclass(frozen=True)
class Where:
    """Where a fact happened or whom it is about: each a UUID string, "" when it does not
    apply. The store fills `district_id` from the street (and the street from a community)
    through the directory, so a mapper gives the finest it knows."""

    district_id: str = ""
    street_id: str = ""
    community_id: str = ""
    station_id: str = ""
    merchant_id: str = ""
    platform_id: str = ""


@dataclass(frozen=True)
class Fact:
    measure: str
    value: int  # in the measure's stored unit (minutes for hours)
    effective_at: datetime
    recorded_at: datetime
    where: Where = field(default_factory=Where)
    track: str = ""
    report_kind: str = ""
    report_category: str = ""


class Memory(Protocol):
    """What a mapper remembers from earlier events of the same log, kept with the facts."""

    def get(self, kind: str, ident: str) -> Mapping[str, Any] | None: ...

    def put(self, kind: str, ident: str, value: Mapping[str, Any]) -> None: ...


class Directory(Protocol):
    """Who a rider is and where an organisation sits, as identity recorded it."""

    def rider(self, ident: str) -> Any | None: ...  # .platform_id, .home_street_id, .station_id

    def organisation(self, ident: str) -> Any | None: ...  # .kind, .parent_id

    def service_space_street(self, ident: str) -> str | None: ...


@dataclass(frozen=True)
class Event:
    """One upstream event as a mapper sees it: its topic, decoded state and place in the log."""

    service: str
    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: Mapping[str, Any]

    @property
    def recorded_at(self) -> datetime:
        recorded: datetime = self.state["timestamp"]
        return recorded


# A mapper: the facts one event of its topic counts as (often none).
Mapper = Callable[[Event, Directory, Memory], list[Fact]]


def rider_where(directory: Directory, rider_id: str, *, street_id: str = "",
                community_id: str = "") -> Where:
    """Where a fact about a rider is counted (the one rule for `Where`): at `street_id` /
    `community_id` when the thing happened at a place, else at the rider's home street; always
    with the rider's platform and station."""
    rider = directory.rider(rider_id) if rider_id else None
    if rider is None:
        return Where(street_id=street_id, community_id=community_id)
    return Where(street_id=street_id or ("" if community_id else rider.home_street_id),
                 community_id=community_id, station_id=rider.station_id or "",
                 platform_id=rider.platform_id or "")


def measure_maker(service: str) -> Callable[..., Measure]:
    """The measures of one service: `Measure` with its service filled in, so that a catalogue
    reads name, label, unit, dimensions, description, explanation."""

    def make(name: str, label: str, unit: str, dimensions: frozenset[Dimension],
             description: str, explanation: str, kind: MeasureKind = MeasureKind.FLOW,
             scale: int = 1) -> Measure:
        return Measure(name=name, label=label, unit=unit, service=service,
                       dimensions=dimensions, description=description,
                       explanation=explanation, kind=kind, scale=scale)

    return make
