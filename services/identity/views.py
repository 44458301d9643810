"""Read models of identity, for the list queries: derived from the log, rebuilt at start."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.identity.domain.model import (
    Organisation,
    Rider,
    ServiceSpace,
    status_after_reinstatement,
    status_after_verification,
)
from services.identity.domain.values import Amenity, OrganisationKind, RiderStatus
from shared.paging import page
from shared.views import LogFollower

if TYPE_CHECKING:
    from shared.application import QijiApplication


@dataclass
class _Row:
    aggregate_id: str
    attrs: dict[str, Any]


class _Index:
    """Rows in log order (the position of each aggregate's first event), filtered in memory.
    A city's riders number in the tens of thousands: a scan per page is cheap."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.rows: dict[int, _Row] = {}
        self.by_id: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, position: int, aggregate_id: str, **attrs: Any) -> None:
        with self.lock:
            self.keys.append(position)  # positions only grow: the list stays sorted
            self.rows[position] = _Row(aggregate_id, attrs)
            self.by_id[aggregate_id] = position

    def update(self, aggregate_id: str, **attrs: Any) -> None:
        with self.lock:
            position = self.by_id.get(aggregate_id)
            if position is not None:
                self.rows[position].attrs.update(attrs)

    def select(self, match: dict[str, Any], *, page_size: int, page_token: str,
               extra: Any = None) -> tuple[list[str], str]:
        wanted = {k: v for k, v in match.items() if v}

        def row(key: int) -> str | None:
            r = self.rows[key]
            if all(r.attrs.get(k) == v for k, v in wanted.items()) and (
                    extra is None or extra(r.attrs)):
                return r.aggregate_id
            return None

        with self.lock:
            keys = list(self.keys)
        filters = [*sorted(f"{k}={v}" for k, v in match.items()), repr(extra)]
        return page(keys, row, page_size=page_size, page_token=page_token, filters=filters)

    def snapshot(self) -> list[tuple[int, str, dict[str, Any]]]:
        with self.lock:
            return [(k, self.rows[k].aggregate_id, dict(self.rows[k].attrs)) for k in self.keys]


class _Organisations(_Index):
    def page(self, *, kind: OrganisationKind | None, parent_id: str, page_size: int,
             page_token: str) -> tuple[list[str], str]:
        return self.select({"kind": kind.value if kind else "", "parent_id": parent_id},
                           page_size=page_size, page_token=page_token)


class _ServiceSpaces(_Index):
    def page(self, *, street_id: str, amenities: list[Amenity], page_size: int,
             page_token: str) -> tuple[list[str], str]:
        needed = frozenset(a.value for a in amenities)
        extra = _HasAll(needed) if needed else None
        return self.select({"street_id": street_id}, page_size=page_size, page_token=page_token,
                           extra=extra)


@dataclass(frozen=True)
class _HasAll:
    needed: frozenset[str]

    def __call__(self, attrs: dict[str, Any]) -> bool:
        return self.needed <= set(attrs["amenities"])

    def __repr__(self) -> str:  # part of the page token's filter hash
        return f"amenities={sorted(self.needed)}"


class _Riders(_Index):
    def page(self, *, home_street_id: str, station_id: str, status: RiderStatus | None,
             page_size: int, page_token: str) -> tuple[list[str], str]:
        return self.select({"home_street_id": home_street_id, "station_id": station_id,
                            "status": status.value if status else ""},
                           page_size=page_size, page_token=page_token)


class IdentityViews:
    def __init__(self, app: QijiApplication):
        self.organisations = _Organisations()
        self.service_spaces = _ServiceSpaces()
        self.riders = _Riders()
        self._follower = LogFollower(app, "identity", self._apply)

    def catch_up(self) -> int:
        return self._follower.catch_up()

    def organisation(self, organisation_id: str) -> dict[str, Any] | None:
        """Kind and parent of an organisation, which never change once created: the view can
        answer for the store. Caught up first when the id is not known yet, so an organisation
        created a moment ago, by any replica, is found."""
        for attempt in range(2):
            with self.organisations.lock:
                position = self.organisations.by_id.get(organisation_id)
                if position is not None:
                    return dict(self.organisations.rows[position].attrs)
            if attempt == 0:
                self.catch_up()
        return None

    @property
    def position(self) -> int:
        return self._follower.position

    def _apply(self, position: int, event: Any) -> None:
        ident = str(event.originator_id)
        if isinstance(event, Organisation.Created):
            self.organisations.add(position, ident, kind=event.kind, parent_id=event.parent_id)
        elif isinstance(event, ServiceSpace.Opened):
            self.service_spaces.add(position, ident, street_id=event.street_id,
                                    amenities=list(event.amenities))
        elif isinstance(event, ServiceSpace.FacilitiesUpdated):
            self.service_spaces.update(ident, amenities=list(event.amenities))
        elif isinstance(event, Rider.Registered):
            self.riders.add(position, ident, home_street_id=event.home_street_id,
                            station_id=event.station_id, status=RiderStatus.REGISTERED.value,
                            verified=False)
        elif isinstance(event, Rider.Verified):
            row = self.riders.rows[self.riders.by_id[ident]].attrs
            status = status_after_verification(RiderStatus(row["status"]))
            self.riders.update(ident, verified=True, status=status.value)
        elif isinstance(event, Rider.Suspended):
            self.riders.update(ident, status=RiderStatus.SUSPENDED.value)
        elif isinstance(event, Rider.Reinstated):
            row = self.riders.rows[self.riders.by_id[ident]].attrs
            self.riders.update(ident, status=status_after_reinstatement(row["verified"]).value)
        elif isinstance(event, Rider.Left):
            self.riders.update(ident, status=RiderStatus.LEFT.value)
