"""The city's figures as a service layer: follows the five services' feeds into the read model
(exactly once, under leadership) and answers queries by measure, dimension and period, as of
any moment, within the caller's scope. The API and the console use only this interface."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.statistics.domain.facts import Dimension, Measure
from shared.context import Actor

# Granularities, by the proto's names without their prefix.
DAY, WEEK, MONTH, WHOLE_RANGE = "DAY", "WEEK", "MONTH", "WHOLE_RANGE"
GRANULARITIES = (DAY, WEEK, MONTH, WHOLE_RANGE)
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000


@dataclass(frozen=True)
class FigureQuery:
    """One query: a measure by one dimension over [start, end) cut into periods, as of a moment
    (None: now), within one organisation ("" : the caller's whole scope)."""

    measure: str
    dimension: Dimension
    granularity: str  # DAY | WEEK | MONTH | WHOLE_RANGE
    start: datetime
    end: datetime
    as_of: datetime | None = None
    within: str = ""
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class FigureRow:
    period_start: datetime
    period_end: datetime
    period_label: str
    key: str
    key_label: str
    value: Decimal
    # Only when the query was as of a moment: the same figure as it stands now.
    current_value: Decimal | None = None


@dataclass(frozen=True)
class FeedPosition:
    service: str
    # The last position of the service's log the figures include.
    position: int
    # The service's last position as last seen (0: not reached yet).
    last_position: int
    # When the figures last read it (None: never).
    read_at: datetime | None


@dataclass(frozen=True)
class FigurePage:
    rows: list[FigureRow]
    next_page_token: str
    measure: Measure
    # The moment the figures stand at (the query's as_of, or the time of the answer).
    as_of: datetime
    positions: list[FeedPosition]


@dataclass(frozen=True)
class Viewer:
    """What a caller may see of the figures: everything (the city), or the facts of its streets
    (their communities included), of its communities, of its platform's riders, of its
    merchant."""

    everything: bool = False
    street_ids: frozenset[str] = frozenset()
    community_ids: frozenset[str] = frozenset()
    platform_id: str = ""
    merchant_id: str = ""


class Statistics:
    """The read model's service layer.

    `settings`: the process's (persistence, data dir or PostgreSQL schema `statistics`);
    `feeds`: the five services' feeds by name (shared.followers GrpcFeed.of(s, settings), or
    LocalFeed in tests and tools); `event_mac`: shared.integrity EventMac of the audit key,
    which checks each upstream event; `directory`: a shared.tenancy TenancyDirectory on a feed
    of identity's own (not one of `feeds`: a feed remembers its last failure); `clock`: "now"
    (tests)."""

    def __init__(self, settings: Any, feeds: Mapping[str, Any], event_mac: Any,
                 directory: Any, *, clock: Callable[[], datetime] | None = None):
        raise NotImplementedError

    # ------------------------------------------------------------------ answers

    def measures(self) -> list[Measure]:
        raise NotImplementedError

    def viewer(self, actor: Actor) -> Viewer:
        """What `actor` may see; PermissionDenied for a caller with no figures to see."""
        raise NotImplementedError

    def query(self, q: FigureQuery, viewer: Viewer) -> FigurePage:
        raise NotImplementedError

    def figures(self, q: FigureQuery, viewer: Viewer) -> Iterator[FigureRow]:
        """Every row of the query (paged inside): for exports."""
        raise NotImplementedError

    def count(self, q: FigureQuery, viewer: Viewer) -> int:
        """How many rows `figures` gives."""
        raise NotImplementedError

    def freshness(self) -> list[FeedPosition]:
        raise NotImplementedError

    # ------------------------------------------------------------------ following

    def catch_up(self) -> int:
        """Applies what every upstream has now; returns how many events it applied."""
        raise NotImplementedError

    def run_forever(self, stopping: threading.Event) -> None:
        """Follows the five feeds until `stopping` is set, as the leader among replicas."""
        raise NotImplementedError

    def rebuild(self) -> int:
        """Drops the read model and reads every log again from position 1, with progress."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
