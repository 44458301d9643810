"""One service's public feed as its two readers see it: the platform gateway
(services/platform), which merges them for the platform companies, and the relay
(services/relay), which pushes them over AMQP. Both read `ReadPublicEvents` with the `service`
role token and treat an outage alike, so the reading side lives here, in the kernel, rather
than in one of them for the other to reach into (issue 21: a service imports no other service
but its published topics)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc
import structlog
from google.protobuf.duration_pb2 import Duration
from qiji.feed.v1 import public_feed_service_pb2 as feed_pb
from qiji.feed.v1 import public_feed_service_pb2_grpc as feed_grpc

from shared.config import TlsSettings
from shared.grpc.channels import open_channel
from shared.grpc.public_feed import read_public
from shared.store.wake import LogWake

log = structlog.get_logger(__name__)

UPSTREAM_TIMEOUT = 10.0
# How long one long poll of a watch is held by the service when its log does not grow.
WATCH_WAIT_SECONDS = 5.0
WATCH_RETRY_SECONDS = 1.0


class UpstreamDown(Exception):
    """A service's public feed cannot be read just now; its events wait, none are lost."""


class Upstream(Protocol):
    """One service's public feed: ReadPublicEvents."""

    def read_public_events(self, request: Any) -> Any:
        ...


class GrpcUpstream:
    """A service's PublicFeedService over gRPC, with the `service` role token."""

    def __init__(self, address: str, token: str, tls: TlsSettings | None = None):
        self._channel = open_channel(address, tls)
        self._stub = feed_grpc.PublicFeedServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    def read_public_events(self, request: Any) -> Any:
        # A long poll is held up to its max_wait: the deadline is on top of it.
        wait = request.max_wait.ToTimedelta().total_seconds()
        try:
            return self._stub.ReadPublicEvents(request, metadata=self._metadata,
                                               timeout=UPSTREAM_TIMEOUT + wait)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            if code is grpc.StatusCode.INVALID_ARGUMENT:
                raise  # a bug of ours, not an outage: let it show
            raise UpstreamDown(code.name if code else "UNKNOWN") from None

    def start_read(self, request: Any) -> Callable[[], Any]:
        """`read_public_events` begun now (the relay reads its next batch while the broker
        confirms the last): its answer, or UpstreamDown, when the returned function is called."""
        wait = request.max_wait.ToTimedelta().total_seconds()
        future = self._stub.ReadPublicEvents.future(request, metadata=self._metadata,
                                                    timeout=UPSTREAM_TIMEOUT + wait)

        def answer() -> Any:
            try:
                return future.result()
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code is grpc.StatusCode.INVALID_ARGUMENT:
                    raise  # a bug of ours, not an outage: let it show
                raise UpstreamDown(code.name if code else "UNKNOWN") from None
        return answer

    def close(self) -> None:
        self._channel.close()


class LocalUpstream:
    """A service's public feed in this process (tests and tools): the same code path as its
    servicer, without the network."""

    def __init__(self, app: Any, catalogue: Any):
        self._app = app
        self._catalogue = catalogue

    def read_public_events(self, request: Any) -> Any:
        return read_public(self._app, self._catalogue, request)


class LogWatch:
    """Wakes the readers of the services' public feeds (the relay, the gateway's streams) when a
    log grows, so that an idle reader reads at once instead of at its next poll.

    A reader notes `wake.generation` before its reads; when a read of a service found nothing
    new it says so with `idle(service, last_position)` and then waits on `wake`. One thread per
    service then long-polls its public feed from past that position (`max_wait`): the service
    answers as soon as its log reaches it, woken by its store's notifications, and the watch
    bumps `wake`. The watch carries no events — readers read them as before, from their own
    positions, every event checked as always — so one watch serves every reader of the
    process. It asks only while some reader is idle: a busy reader (more stored than read)
    reads on without it, and the watch makes no call at all, whatever the rate. A service that
    cannot be reached is asked again every WATCH_RETRY_SECONDS; meanwhile, and whenever a wake
    is lost, the readers' own poll still finds what is new.

    A process with one reader of a service (the relay) may hand its own next read to `idle`:
    the watch then long-polls with that request and keeps the answer, which the reader `take`s
    instead of reading again — an event stored while it was idle reaches it in one call, not
    two (issue 20). The answer is a read like any other, every event in it checked by the
    service, and is used only by a reader that stands exactly where it was read from."""

    def __init__(self, upstreams: Mapping[str, Upstream], stopping: threading.Event,
                 wait: float = WATCH_WAIT_SECONDS):
        self.wake = LogWake()
        self._stopping = stopping
        self._wait = wait
        self._idle: dict[str, int] = {}  # service → the last position an idle reader saw
        self._reads: dict[str, Any] = {}  # service → the idle reader's own next read
        self._answers: dict[str, tuple[int, Any]] = {}  # service → (from_position, its reply)
        self._condition = threading.Condition()
        self._threads = [threading.Thread(target=self._watch, args=(name, upstream),
                                          name=f"watch-{name}", daemon=True)
                         for name, upstream in upstreams.items()]

    def start(self) -> LogWatch:
        for thread in self._threads:
            thread.start()
        return self

    def idle(self, service: str, last_position: int, read: Any = None) -> None:
        """A reader found nothing past `last_position` in `service`'s log: wake it when the log
        grows past it. `read`: the reader's next ReadPublicEventsRequest (from past
        `last_position`), to be long-polled as it is and its answer kept for `take`."""
        with self._condition:
            self._idle[service] = max(self._idle.get(service, last_position), last_position)
            if read is not None:
                self._reads[service] = read
            else:
                self._reads.pop(service, None)
            self._condition.notify_all()

    def take(self, service: str, from_position: int) -> Any | None:
        """The answer to a read handed to `idle`, if it was read from `from_position`."""
        with self._condition:
            answer = self._answers.pop(service, None)
        return answer[1] if answer is not None and answer[0] == from_position else None

    def stop(self) -> None:
        with self._condition:
            self._condition.notify_all()
        self.wake.changed()

    def _watch(self, name: str, upstream: Upstream) -> None:
        known = 0  # the log reached at least this far when the watch last woke the readers
        held = Duration()
        held.FromMilliseconds(int(self._wait * 1000))
        while not self._stopping.is_set():
            with self._condition:
                while name not in self._idle and not self._stopping.is_set():
                    self._condition.wait(WATCH_RETRY_SECONDS)
                if self._stopping.is_set():
                    return
                seen = self._idle.pop(name)
                read = self._reads.pop(name, None)
            start = max(seen, known) + 1
            asked = time.monotonic()
            try:
                if read is not None:
                    # The reader's own read, held until the log reaches it.
                    request = feed_pb.ReadPublicEventsRequest()
                    request.CopyFrom(read)
                    request.max_wait.CopyFrom(held)
                    start = request.from_position
                else:
                    # One position looked at, mapped for nobody (no personal field, no rider
                    # event): only `last_position` is wanted.
                    request = feed_pb.ReadPublicEventsRequest(from_position=start, limit=1,
                                                              max_wait=held)
                reply = upstream.read_public_events(request)
            except Exception as error:  # UpstreamDown, or a bug: readers fall back on polls
                log.debug("upstream.watch_failed", upstream=name, error=repr(error))
                self.idle(name, seen, read)  # still idle: ask again
                self._stopping.wait(WATCH_RETRY_SECONDS)
                continue
            if reply.last_position >= start:
                known = reply.last_position
                if read is not None:
                    with self._condition:
                        self._answers[name] = (read.from_position, reply)
                self.wake.changed()  # idle readers read; each says when it is idle again
                continue
            self.idle(name, seen, read)  # not grown within max_wait: ask again
            if time.monotonic() - asked < self._wait / 2:
                # Answered early with nothing new: a service stopping, or one older than
                # max_wait that answers at once — never ask it in a tight loop.
                self._stopping.wait(WATCH_RETRY_SECONDS)
