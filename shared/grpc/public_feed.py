"""The public feed every service serves over its own log (qiji.feed.v1.PublicFeedService): the
log mapped through the service's public event contract, for the platform gateway only."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from cloudevents.v1 import cloudevents_pb2 as ce
from qiji.feed.v1 import public_feed_service_pb2 as pb
from qiji.feed.v1 import public_feed_service_pb2_grpc as pb_grpc

from shared import auth
from shared.application import QijiApplication
from shared.continuity import EventsTable, out_of_place
from shared.errors import VALUE_OUT_OF_RANGE, Violations
from shared.grpc.feed import DEFAULT_LIMIT, MAX_LIMIT, POLL_SECONDS, feed_limit
from shared.integrity import ALARM, EventIntegrityError
from shared.public_feed import DATA_CONTENT_TYPE, SPEC_VERSION, Fact, PublicCatalogue, PublicEvent
from shared.tenancy import Access, city_wide, on_wide_pool

PUBLIC_FEED_ROLES = frozenset({auth.SERVICE})
# The longest a read waits for the log to grow (`max_wait` above it is coerced to it).
MAX_WAIT_SECONDS = 30.0


def public_feed_access() -> dict[str, Access]:
    name = pb.DESCRIPTOR.services_by_name["PublicFeedService"].full_name
    # The relay's and the gateway's feed, and with `max_wait` a long poll: the wide pool.
    return {f"/{name}/ReadPublicEvents": on_wide_pool(city_wide(PUBLIC_FEED_ROLES))}


def to_cloudevent(event: PublicEvent) -> ce.CloudEvent:
    """The CloudEvents protobuf format: required attributes as fields, the optional ones in the
    attributes map, data as JSON text."""
    message = ce.CloudEvent(id=event.id, source=event.source, spec_version=SPEC_VERSION,
                            type=event.type,
                            text_data=json.dumps(event.data, ensure_ascii=False, sort_keys=True,
                                                 separators=(",", ":")))
    attrs = message.attributes
    attrs["time"].ce_timestamp.FromDatetime(event.time)
    attrs["subject"].ce_string = event.subject
    attrs["datacontenttype"].ce_string = DATA_CONTENT_TYPE
    return message


def read_public(app: QijiApplication, catalogue: PublicCatalogue,
                request: pb.ReadPublicEventsRequest,
                given_up: Callable[[], bool] = lambda: False) -> pb.ReadPublicEventsResponse:
    """ReadPublicEvents over one application: its log from a position, through its catalogue,
    for one consumer organisation. Positions of internal events, and of events this consumer
    may not see, are passed over: `next_position` moves past them. With `max_wait`, a read
    from past the end of the log waits for the log to reach it (until `given_up()`)."""
    violations = Violations()
    violations.require(request.from_position >= 0, "from_position", "must not be negative",
                           VALUE_OUT_OF_RANGE)
    wait = request.max_wait.ToTimedelta().total_seconds()
    violations.require(wait >= 0, "max_wait", "must not be negative", VALUE_OUT_OF_RANGE)
    violations.require(request.limit >= 0, "limit",
                       f"must not be negative (0 means {DEFAULT_LIMIT}; above {MAX_LIMIT} means "
                       f"{MAX_LIMIT})", VALUE_OUT_OF_RANGE)
    wanted = list(request.types)
    topics = violations.collect(lambda: catalogue.topics_for(wanted))
    violations.raise_if_any()
    assert topics is not None
    start = max(request.from_position, 1)
    if wait > 0:
        _wait_for_position(app, start, min(wait, MAX_WAIT_SECONDS), given_up)
    if not topics:  # a service that publishes nothing: nothing to look at, ever
        last = app.last_position()
        return pb.ReadPublicEventsResponse(next_position=max(start, last + 1),
                                           last_position=last)
    limit = feed_limit(request.limit)
    # The last position, the page and each event's neighbours in one statement (one snapshot:
    # every position up to `last` is committed, so a short read may move the caller past all
    # of them). Each event stands in its place among its aggregate's versions (a genuine event
    # moved later in the log passes its MAC, and would go out again under its old id, out of
    # order); each MAC is checked below, as it is decoded.
    table = EventsTable(app)
    last, notifications, neighbours = table.read_placed(app, start, limit, topics)
    misplaced = out_of_place(table, notifications, neighbours)
    events: list[pb.PublicEvent] = []
    reader = f"{app.name}.public-feed"
    # Consumers read from their own positions, for their own types, and what a mapping reads
    # depends on who asks (a rider's consent): only a read of the stopped event's topic, for a
    # consumer that was stopped there, that gets past it clears the alarm.
    consumer = f"{request.consumer_organisation_id}:{int(request.all_platforms)}"
    for n in notifications:
        if misplaced is not None and n.id == misplaced.position:
            return _stopped(app, reader, n, misplaced.problem, consumer, events, last)
        try:
            # Checked before it is decoded (the mapper checks every MAC), and so is every
            # event a mapping reads (today's rider, for consent): nothing unchecked goes out.
            fact = Fact(position=n.id, originator_id=n.originator_id,
                        originator_version=n.originator_version, topic=n.topic,
                        event=app.to_domain_event(n),
                        consumer_organisation_id=request.consumer_organisation_id,
                        all_platforms=request.all_platforms)
            mapped = catalogue.map(app, fact, wanted)
        except EventIntegrityError as error:
            problem = error.problem if error.position == n.id else (
                f"it needs the stored event {error.originator_id} v{error.version}"
                + (f" (position {error.position})" if error.position else "")
                + f", which fails its integrity check: {error.problem}")
            return _stopped(app, reader, n, problem, consumer, events, last)
        events += [pb.PublicEvent(position=n.id, event=to_cloudevent(e),
                                  platform_id=e.platform_id) for e in mapped]
    next_position = notifications[-1].id + 1 if notifications else start
    if len(notifications) < limit:
        next_position = max(next_position, last + 1)
    ALARM.passed(app.name, reader, start, next_position - 1,
                 {f"{topic}|{consumer}" for topic in topics})
    return pb.ReadPublicEventsResponse(events=events, next_position=next_position,
                                       last_position=last)


def _wait_for_position(app: QijiApplication, position: int, wait: float,
                       given_up: Callable[[], bool]) -> None:
    """Returns once the log holds `position`, or after `wait` seconds. The store's
    notifications (or this process's own saves) wake it; between them it looks again every
    POLL_SECONDS (SQLite's other writers, a notification lost)."""
    deadline = time.monotonic() + wait
    while not given_up():
        generation = app.log_generation()  # before the look: a later change wakes the wait
        if app.last_position() >= position:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        app.wait_for_log_change(min(remaining, POLL_SECONDS), since=generation)


def _stopped(app: QijiApplication, reader: str, n: Any, problem: str, consumer: str,
             events: list[Any], last: int) -> pb.ReadPublicEventsResponse:
    """The answer of a read that stopped at `n`: what came before it, and where and why."""
    ALARM.broken(app.name, reader, n.id, problem, {f"{n.topic}|{consumer}"})
    return pb.ReadPublicEventsResponse(
        events=events, next_position=n.id, last_position=last,
        integrity_failure=pb.IntegrityFailure(position=n.id, problem=problem, topic=n.topic))


class PublicFeedServicer(pb_grpc.PublicFeedServiceServicer):
    def __init__(self, app: QijiApplication, catalogue: PublicCatalogue,
                 stopping: threading.Event | None = None):
        self._app = app
        self._catalogue = catalogue
        self._stopping = stopping or threading.Event()

    def ReadPublicEvents(self, request: pb.ReadPublicEventsRequest, context: grpc.ServicerContext
                         ) -> pb.ReadPublicEventsResponse:
        # A long poll ends with the server's stop (its wake_waiters) or the caller's going.
        return read_public(self._app, self._catalogue, request,
                           lambda: self._stopping.is_set() or not context.is_active())


def register(server: grpc.Server, app: QijiApplication, catalogue: PublicCatalogue,
             stopping: threading.Event | None = None) -> str:
    pb_grpc.add_PublicFeedServiceServicer_to_server(
        PublicFeedServicer(app, catalogue, stopping), server)
    return pb.DESCRIPTOR.services_by_name["PublicFeedService"].full_name
