"""The gateway's gRPC entry point (qiji.platform.v1.PlatformFeedService): translate the request,
call the feed, render CloudEvents with their cursors. Platform role only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
from qiji.platform.v1 import platform_feed_service_pb2 as pb
from qiji.platform.v1 import platform_feed_service_pb2_grpc as pb_grpc

from services.platform.application import Page, PlatformFeed, check_page_size
from services.platform.catalogue import subscribed, types_by_service
from shared import context
from shared.errors import Unavailable, Violations
from shared.tenancy import OWN, access_table, scoped

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PlatformFeedService"].full_name
# How long a stream waits before looking again when every service had nothing new and nothing
# woke it (a wake lost, a service that cannot be watched).
STREAM_POLL_SECONDS = 0.5
STREAM_BATCH = 100

# A platform reads its own feed: rider events of the riders it registered, and the public
# events of everyone (each service's public feed filters by the caller's organisation).
ACCESS = access_table(SERVICE_NAME, {
    "ReadEvents": scoped(platform=OWN),
    "StreamEvents": scoped(platform=OWN),
})


class PlatformFeedServicer(pb_grpc.PlatformFeedServiceServicer):
    def __init__(self, feed: PlatformFeed, stopping: threading.Event):
        self.feed = feed
        self.stopping = stopping

    def ReadEvents(self, request: pb.ReadEventsRequest, context_: grpc.ServicerContext
                   ) -> pb.ReadEventsResponse:
        positions, types = self._checked(request, request.page_size)
        page = self.feed.read(positions, request.page_size, types, _organisation())
        return pb.ReadEventsResponse(
            events=[pb.FeedEvent(event=e, cursor=c) for e, c in page.events],
            next_cursor=page.next_cursor, caught_up=page.caught_up)

    def StreamEvents(self, request: pb.StreamEventsRequest, context_: grpc.ServicerContext
                     ) -> Iterator[pb.StreamEventsResponse]:
        positions, types = self._checked(request, STREAM_BATCH)
        organisation = _organisation()
        # Noted before each read: a log that grows after it wakes the idle wait below.
        generation = self.feed.wake.generation
        # Validate everything before the first message, so a bad request fails at once.
        page = self.feed.read(positions, STREAM_BATCH, types, organisation)
        while True:
            for event, cursor in page.events:
                yield pb.StreamEventsResponse(event=pb.FeedEvent(event=event, cursor=cursor))
            positions = page.positions
            if not page.events:
                self.feed.idle(page)
                # Until a service's log grows (the gateway's watch of each, which their
                # stores' notifications answer) or, the fallback, STREAM_POLL_SECONDS.
                self.feed.wake.wait(generation, STREAM_POLL_SECONDS)
            if not context_.is_active() or self.stopping.is_set():
                return
            generation = self.feed.wake.generation
            try:
                page = self.feed.read(positions, STREAM_BATCH, types, organisation)
            except Unavailable:
                # Every wanted service is down for now: the stream waits, it does not end.
                page = Page(events=[], positions=positions, caught_up=False)


    def _checked(self, request: Any, page_size: int) -> tuple[dict[str, int], list[str]]:
        """The cursor's positions and the types asked for, every fault of the three fields in
        one answer; then what the consumer is not subscribed to is refused."""
        violations = Violations()
        positions = violations.collect(lambda: self.feed.decode_cursor(request.cursor))
        violations.collect(lambda: check_page_size(page_size))
        types = list(request.types)
        violations.collect(lambda: types_by_service(types))
        violations.raise_if_any()
        assert positions is not None
        return positions, subscribed(types, context.current().actor.subscriptions)


def _organisation() -> str:
    # Consent is given to an organisation: the one the caller's token acts for.
    return context.current().actor.organisation_id


def add_servicers(server: grpc.Server, feed: PlatformFeed, stopping: threading.Event
                  ) -> list[str]:
    pb_grpc.add_PlatformFeedServiceServicer_to_server(PlatformFeedServicer(feed, stopping),
                                                      server)
    return [SERVICE_NAME]
