"""The gateway's service layer: pages of public events merged from the five services' public
feeds, with the cursor after each event. It keeps no state: where a consumer stands is all in
its cursor, so the gateway can restart, or run as several replicas, without losing anyone."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from qiji.feed.v1 import public_feed_service_pb2 as feed_pb

from services.platform import cursor as cursors
from services.platform.catalogue import CATALOGUES, SERVICES, types_by_service
from shared import paging
from shared.errors import Unavailable
from shared.grpc.upstream import LogWatch, Upstream, UpstreamDown
from shared.integrity import ALARM
from shared.store.wake import LogWake

log = structlog.get_logger(__name__)

READER = "platform"
_NEVER = LogWake()  # the wake of a feed without a watch: nothing bumps it
_CATALOGUE = {c.service: c for c in CATALOGUES}

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass
class Page:
    # (CloudEvent message, cursor that resumes right after it)
    events: list[tuple[Any, str]]
    positions: dict[str, int]
    caught_up: bool
    unreachable: list[str] = field(default_factory=list)
    # The last position of each service's log whose events were all read, as that read found it.
    read_to: dict[str, int] = field(default_factory=dict)

    @property
    def next_cursor(self) -> str:
        return cursors.encode(self.positions)


def check_page_size(page_size: int) -> int:
    """AIP-158 as every list reads it (shared/paging.py), with the feed's own default and
    maximum: 0 is 100, above 1000 is 1000, a negative size is refused."""
    return paging.check_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)


class PlatformFeed:
    def __init__(self, upstreams: Mapping[str, Upstream], watch: LogWatch | None = None):
        self.upstreams = dict(upstreams)
        # Wakes idle streams when a service's log grows (shared/grpc/upstream.py); without
        # one, they wait on the clock alone.
        self.watch = watch

    @property
    def wake(self) -> LogWake:
        return self.watch.wake if self.watch is not None else _NEVER

    def idle(self, page: Page) -> None:
        """A stream read `page` and found nothing: wake it when a log grows past it."""
        if self.watch is not None:
            for service, last_position in page.read_to.items():
                self.watch.idle(service, last_position)

    def decode_cursor(self, cursor: str) -> dict[str, int]:
        return cursors.decode(cursor, SERVICES)

    def read(self, positions: Mapping[str, int], page_size: int, types: Sequence[str],
             organisation_id: str) -> Page:
        """The next events after `positions`, at most `page_size`, in each service's log order
        (services interleaved by event time; no order is promised between services)."""
        size = check_page_size(page_size)
        wanted = types_by_service(list(types))
        positions = dict(positions)
        batches: dict[str, tuple[list[Any], int]] = {}
        caught_up = True
        unreachable = []
        read_to: dict[str, int] = {}
        for service, service_types in wanted.items():
            upstream = self.upstreams.get(service)
            if upstream is None:
                continue
            try:
                reply = upstream.read_public_events(feed_pb.ReadPublicEventsRequest(
                    from_position=positions[service], limit=size, types=service_types,
                    consumer_organisation_id=organisation_id))
            except UpstreamDown as down:
                log.warning("platform.upstream_unavailable", upstream=service, code=str(down))
                unreachable.append(service)
                caught_up = False
                continue
            batches[service] = (list(reply.events), reply.next_position)
            if reply.next_position <= reply.last_position:
                caught_up = False
            elif not reply.HasField("integrity_failure"):
                read_to[service] = reply.last_position
            self._integrity(service, reply, positions[service], service_types, organisation_id)
        if unreachable and not batches:
            raise Unavailable(f"{', '.join(unreachable)} cannot be reached; retry with the "
                              "same cursor", reason="UPSTREAM_UNAVAILABLE")
        merged = heapq.merge(
            *[[(e.event.attributes["time"].ce_timestamp.ToNanoseconds(), service, e)
               for e in events] for service, (events, _) in batches.items()],
            key=lambda item: (item[0], item[1]))
        taken: list[tuple[Any, str]] = []
        for _, service, public in merged:
            if len(taken) == size:
                caught_up = False
                break
            positions[service] = public.position + 1
            taken.append((public.event, cursors.encode(positions)))
        for service, (events, next_position) in batches.items():
            # A service whose whole batch was delivered moves past everything it looked at.
            if not events or positions[service] > events[-1].position:
                positions[service] = max(positions[service], next_position)
        return Page(events=taken, positions=positions, caught_up=caught_up,
                    unreachable=unreachable, read_to=read_to)

    def _integrity(self, service: str, reply: Any, start: int, types: list[str],
                   organisation_id: str) -> None:
        """The gateway holds no key (least privilege: it faces outside consumers): the service
        checks every event as it reads it for the gateway and stops its answer at one that
        fails. The reply's events are those before it and its `next_position` is the bad
        event's, so no consumer's cursor ever passes it; the gateway raises the alarm. Many
        consumers read from their own cursors, for their own types: only a read of the bad
        event's topic, for an organisation that was stopped there, from at or before it, that
        gets past it clears the alarm — not one that merely looked elsewhere."""
        failure = reply.integrity_failure
        if reply.HasField("integrity_failure"):
            ALARM.broken(service, READER, failure.position, failure.problem,
                         {f"{failure.topic}|{organisation_id}"})
        else:
            topics = _CATALOGUE[service].topics_for(types)
            ALARM.passed(service, READER, start, reply.next_position - 1,
                         {f"{topic}|{organisation_id}" for topic in topics})
