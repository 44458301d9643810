"""The rider's map: where service spaces and merchants are, kept in memory for FindNearby.

Both halves are derived, rebuildable views: merchants' own places from merchants' log
(MerchantsViews applies them), service spaces from identity's feed (ServiceSpaceMap, as the
tenancy directory reads identity). Each kind has its own spatial index (shared/geo.PointSet),
rebuilt on the next query after a place is added, moved or leaves the map."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from services.identity import events as identity_events
from services.merchants.domain.values import PlaceKind
from shared.background import FeedMirror
from shared.geo import PointSet

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Place:
    """A place as the map shows it; latitude and longitude in WGS-84 degrees."""

    kind: PlaceKind
    ident: str
    name: str
    address: str
    latitude: float
    longitude: float
    amenities: tuple[str, ...]
    opening_hours: tuple[Mapping[str, Any], ...]


class PlaceLayer:
    """The places of one kind that are on the map, and their index. Thread-safe: writers
    are the views' catch-ups, readers any RPC thread."""

    def __init__(self, kind: PlaceKind):
        self.kind = kind
        self._places: dict[str, Place] = {}
        self.points = PointSet()

    def put(self, place: Place) -> None:
        self._places[place.ident] = place
        self.points.put(place.ident, place.latitude, place.longitude)

    def remove(self, ident: str) -> None:
        self.points.remove(ident)
        self._places.pop(ident, None)

    def get(self, ident: str) -> Place | None:
        return self._places.get(ident)

    def __len__(self) -> int:
        return len(self._places)

    def within(self, latitude: float, longitude: float, metres: float
               ) -> Iterable[tuple[float, Place]]:
        for distance, ident in self.points.index().within(latitude, longitude, metres):
            place = self._places.get(ident)
            if place is not None:  # removed since the index was built
                yield distance, place


class ServiceSpaceMap(FeedMirror):
    """Service spaces as identity recorded them (name, address, amenities, opening hours,
    location), read from identity's feed, kept in memory, rebuilt from position 1 when the
    process starts. A space without a location (one stored before locations existed, or
    given none) is not on the map until an update gives it one."""

    upstream = "identity-service-spaces"
    upstream_service = "identity"
    unreachable = "for its service spaces"
    topics = identity_events.SERVICE_SPACE_TOPICS

    def __init__(self, feed: Any):
        super().__init__(feed)
        self.layer = PlaceLayer(PlaceKind.SERVICE_SPACE)
        # Every space seen, with or without a location: an update changes part of it.
        self._spaces: dict[str, dict[str, Any]] = {}

    def run_forever(self, stopping: threading.Event, every: float = 2.0) -> None:
        """Kept close behind identity so that a query's own catch-up is short. The index's
        libraries are loaded here, at start, not by the first rider who asks."""
        self.layer.points.index()
        super().run_forever(stopping, every)

    def _apply(self, topic: str, ident: str, state: Mapping[str, Any]) -> None:
        space: dict[str, Any] | None
        if topic == identity_events.SERVICE_SPACE_OPENED:
            space = {"name": state["name"], "address": state["address"],
                     "location": state.get("location")}
        else:
            space = self._spaces.get(ident)
            if space is None:
                return
            if state.get("location") is not None:
                space["location"] = state["location"]
        space["amenities"] = tuple(sorted(set(state["amenities"])))
        space["opening_hours"] = tuple(sorted(state["opening_hours"],
                                              key=lambda h: h["weekday"]))
        self._spaces[ident] = space
        location = space["location"]
        if location is not None:
            self.layer.put(Place(PlaceKind.SERVICE_SPACE, ident, space["name"],
                                 space["address"], float(location["latitude"]),
                                 float(location["longitude"]), space["amenities"],
                                 space["opening_hours"]))
