"""An idle follower of another service (GrpcFeed) long-polls the upstream's public feed: a new
upstream event reaches it at once, not at its next poll; and an upstream that answers such a
poll at once (an older release, or one stopping) is not asked in a tight loop."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from qiji.feed.v1 import public_feed_service_pb2 as public_pb
from qiji.feed.v1 import public_feed_service_pb2_grpc as public_grpc

import shared.grpc.feed as feed_api
import shared.grpc.public_feed as public_api
from services.identity.application import IdentityApplication
from services.identity.public_events import CATALOGUE as IDENTITY_EVENTS
from shared.followers import REDIAL_SECONDS, GrpcFeed
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, settings_for

POLL = 30.0  # the follower's poll and the server's fallback: only a wake can be prompt
PROMPT = 3.0


@pytest.fixture
def identity(store_env):
    app = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    yield app
    app.close()


def serve(servicer, also=None) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    public_grpc.add_PublicFeedServiceServicer_to_server(servicer, server)
    if also is not None:
        also(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_an_idle_follower_is_woken_by_the_upstream_at_once(identity, monkeypatch):
    monkeypatch.setattr(public_api, "POLL_SECONDS", POLL)
    stopping = threading.Event()
    server, address = serve(public_api.PublicFeedServicer(identity, IDENTITY_EVENTS, stopping),
                            lambda server: feed_api.register(server, identity, stopping))
    feed = GrpcFeed("identity", address, "unused", poll_seconds=POLL)
    try:
        feed.read(1, 100, [])  # where the upstream stands now
        waited: list[float] = []
        waiter = threading.Thread(target=lambda: (
            t := time.monotonic(), feed.wait(POLL), waited.append(time.monotonic() - t)))
        waiter.start()
        time.sleep(0.5)
        assert not waited  # held: nothing new yet
        build_city(in_application(identity))  # the upstream stores events
        waiter.join(PROMPT)
        assert waited and waited[0] < PROMPT + 0.5
    finally:
        stopping.set()
        identity.wake_waiters()
        feed.close()
        server.stop(0)


class AnswersAtOnce(public_grpc.PublicFeedServiceServicer):
    """An upstream that does not hold a long poll (an older release): answers empty at once."""

    def __init__(self) -> None:
        self.calls = 0

    def ReadPublicEvents(self, request, context):
        self.calls += 1
        return public_pb.ReadPublicEventsResponse(next_position=request.from_position,
                                                  last_position=0)


def test_an_upstream_that_answers_at_once_is_not_asked_in_a_loop():
    servicer = AnswersAtOnce()
    server, address = serve(servicer)
    feed = GrpcFeed("identity", address, "unused", poll_seconds=0.5)
    try:
        started = time.monotonic()
        feed.wait(0.5)
        assert time.monotonic() - started >= 0.45  # the rest of the wait slept
        assert servicer.calls == 1
    finally:
        feed.close()
        server.stop(0)


def test_an_upstream_without_the_public_feed_is_waited_for_by_sleeping():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    feed = GrpcFeed("identity", f"127.0.0.1:{port}", "unused", poll_seconds=0.3)
    try:
        started = time.monotonic()
        feed.wait(0.3)  # UNIMPLEMENTED: no error, the wait as before
        assert time.monotonic() - started >= 0.25
    finally:
        feed.close()
        server.stop(0)


def test_a_read_just_after_the_upstream_restarted_waits_for_the_channel_to_dial_again(
        identity):
    """identity restarts; a request to training that must catch up with identity's directory
    (a rider registered a moment ago) comes just after identity is back. The channel is still
    waiting out its reconnect back-off (up to 2 s, shared/grpc/channels.py): the read waits
    for it, within its deadline, instead of failing at once with UNAVAILABLE (which the caller
    got as "identity cannot be reached", an e2e test of the platform feed saw it); while the
    upstream is away, a read still fails within a couple of seconds, not at its deadline."""
    stopping = threading.Event()

    def register(server: grpc.Server) -> None:
        feed_api.register(server, identity, stopping)
    server, address = serve(public_api.PublicFeedServicer(identity, IDENTITY_EVENTS, stopping),
                            register)
    feed = GrpcFeed("identity", address, "unused", poll_seconds=1.0)
    try:
        build_city(in_application(identity))
        assert feed.read(1, 100, [])
        server.stop(0).wait()
        # Down long enough for the back-off to grow to its ceiling: the long poll, on the same
        # channel, fails at once and sleeps, as a follower's loop does while identity is away.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            feed.wait(0.2)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as away:
            feed.read(1, 100, [], redial=True)
        assert away.value.code() is grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < REDIAL_SECONDS + 1.0
        # A loop in the background is told at once (a wait would hold up the process's stop).
        started = time.monotonic()
        with pytest.raises(grpc.RpcError):
            feed.read(1, 100, [])
        assert time.monotonic() - started < 0.5
        again = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        public_grpc.add_PublicFeedServiceServicer_to_server(
            public_api.PublicFeedServicer(identity, IDENTITY_EVENTS, stopping), again)
        register(again)
        assert again.add_insecure_port(address) == int(address.rsplit(":", 1)[1])
        again.start()
        try:
            started = time.monotonic()
            # At once after the restart, for a request: no UNAVAILABLE.
            assert feed.read(1, 100, [], redial=True)
            assert time.monotonic() - started < 4.0
        finally:
            again.stop(0)
    finally:
        stopping.set()
        identity.wake_waiters()
        feed.close()
