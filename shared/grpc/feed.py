"""The feed every service exposes over its own notification log (qiji.feed.v1.FeedService).
It checks each event it serves — its MAC, and its place among its aggregate's versions
(shared/continuity.py) — and stops at the first that fails: a reader never gets past it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc
from qiji.feed.v1 import feed_service_pb2 as pb
from qiji.feed.v1 import feed_service_pb2_grpc as pb_grpc
from qiji.feed.v1 import public_feed_service_pb2 as public_pb

from shared import auth
from shared.application import META_KEY, QijiApplication
from shared.continuity import read_checked
from shared.errors import VALUE_OUT_OF_RANGE, DataLoss, Violations
from shared.integrity import EventIntegrityError
from shared.tenancy import Access, city_wide, on_wide_pool

DEFAULT_LIMIT = 100
# AIP-158, as for page sizes: a larger limit is coerced to this one (a reader asking for more
# gets a full batch and reads on from next_position); only a negative limit is refused.
MAX_LIMIT = 1000
# How often a stream looks again when nothing woke it: events stored by this process wake it at
# once, on PostgreSQL so do other processes' (NOTIFY, shared/store/wake.py); this poll is the
# fallback for SQLite's other writers and for notifications lost with a dropped connection.
POLL_SECONDS = 0.5

# The raw log, free text and unsealed names in it as stored: Qiji's own processes and the city
# admin only. Auditors and operators read the history through AuditService, masked.
FEED_ROLES = frozenset({auth.SERVICE, auth.CITY_ADMIN})


def feed_limit(limit: int) -> int:
    """How many events a read of a non-negative `limit` returns at most: 0 means the default,
    above the maximum is coerced to it (AIP-158)."""
    return min(limit, MAX_LIMIT) or DEFAULT_LIMIT


def feed_access() -> dict[str, Access]:
    name = pb.DESCRIPTOR.services_by_name["FeedService"].full_name
    # What the other services' followers read: on the wide pool, never queued behind a burst of
    # callers' commands (shared/grpc/lanes.py).
    return {f"/{name}/{rpc}": on_wide_pool(city_wide(FEED_ROLES))
            for rpc in ("ReadEvents", "StreamEvents")}


class FeedServicer(pb_grpc.FeedServiceServicer):
    def __init__(self, app: QijiApplication, stopping: threading.Event):
        self._app = app
        self._stopping = stopping

    def ReadEvents(self, request: pb.ReadEventsRequest, context: grpc.ServicerContext
                   ) -> pb.ReadEventsResponse:
        violations = Violations()
        violations.require(request.from_position >= 0, "from_position", "must not be negative",
                           VALUE_OUT_OF_RANGE)
        violations.require(request.limit >= 0, "limit",
                           f"must not be negative (0 means {DEFAULT_LIMIT}; above {MAX_LIMIT} "
                           f"means {MAX_LIMIT})", VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        last = self._app.last_position()
        notifications, failure = read_checked(self._app, request.from_position,
                                              feed_limit(request.limit), request.topics)
        reply = pb.ReadEventsResponse(events=[self._to_proto(n) for n in notifications],
                                      last_position=last)
        if failure is not None:
            reply.next_position = failure.position
            reply.integrity_failure.CopyFrom(public_pb.IntegrityFailure(
                position=failure.position, problem=failure.problem, topic=failure.topic))
        else:
            reply.next_position = notifications[-1].id + 1 if notifications else max(
                request.from_position, 1)
        return reply

    def StreamEvents(self, request: pb.StreamEventsRequest, context: grpc.ServicerContext
                     ) -> Iterator[pb.StreamEventsResponse]:
        violations = Violations()
        violations.require(request.from_position >= 0, "from_position", "must not be negative",
                           VALUE_OUT_OF_RANGE)
        violations.raise_if_any()
        position = max(request.from_position, 1)
        while context.is_active() and not self._stopping.is_set():
            # Noted before the read: a change stored after it wakes the wait below.
            generation = self._app.log_generation()
            notifications, failure = read_checked(self._app, position, DEFAULT_LIMIT,
                                                  request.topics)
            for notification in notifications:
                yield pb.StreamEventsResponse(event=self._to_proto(notification))
                position = notification.id + 1
            if failure is not None:
                raise DataLoss(
                    f"the log is stopped at position {failure.position}: the event there fails "
                    f"its integrity check ({failure.problem}); nothing after it is sent until "
                    "the operators repair the store", reason=EventIntegrityError.reason,
                    position=str(failure.position))
            if not notifications:
                self._app.wait_for_log_change(POLL_SECONDS, since=generation)

    def _to_proto(self, notification: Any) -> pb.StoredEvent:
        state = self._app.mapper.transcoder.decode(notification.state)
        meta = state.get(META_KEY) or {}
        event = pb.StoredEvent(
            position=notification.id,
            originator_id=str(notification.originator_id),
            originator_version=notification.originator_version,
            topic=notification.topic,
            state=notification.state,
            principal=meta.get("principal", ""),
            request_id=meta.get("request_id", ""),
            correlation_id=meta.get("correlation_id", ""),
        )
        timestamp = state.get("timestamp")
        if isinstance(timestamp, datetime):
            event.time.FromDatetime(timestamp)
        return event


def register(server: grpc.Server, app: QijiApplication, stopping: threading.Event) -> str:
    pb_grpc.add_FeedServiceServicer_to_server(FeedServicer(app, stopping), server)
    return pb.DESCRIPTOR.services_by_name["FeedService"].full_name
