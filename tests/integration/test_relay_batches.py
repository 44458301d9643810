"""The relay publishes a batch and awaits its confirms once (services/relay/publisher.py); at
least once still holds: a position is stored only when every message of it, and before it, was
confirmed, so a batch the broker confirmed only in part is published again from its first
unconfirmed position, and nothing is lost."""

from __future__ import annotations

from typing import Any

import pytest
from qiji.feed.v1 import public_feed_service_pb2 as public_pb

from services.identity.application import IdentityApplication
from services.identity.public_events import CATALOGUE as IDENTITY_EVENTS
from services.relay.publisher import BatchPublisher, BrokerDown
from services.relay.relay import Relay
from shared.grpc.upstream import LocalUpstream
from tests.city import build_city, in_application
from tests.conftest import MASTER_KEY, MemoryPositions, actor, as_actor, settings_for


class Broker:
    """Takes whole batches; the first `fail_after` messages of the batch it fails are
    confirmed, the rest are published but never confirmed (the broker went away)."""

    reads_ahead = False

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.batches: list[list[tuple[str, dict[str, Any]]]] = []

    def __call__(self, key: str, event: dict[str, Any]) -> None:
        raise AssertionError("the relay publishes in batches")

    def publish_batch(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        self.batches.append(list(messages))
        if self.fail_after is not None:
            confirmed, self.fail_after = self.fail_after, None
            raise BrokerDown("connection lost (test)", confirmed=confirmed)

    @property
    def ids(self) -> list[str]:
        return [event["id"] for batch in self.batches for _, event in batch]


class PipelinedBroker(Broker):
    """As BatchPublisher: a batch sent, then its confirms awaited (the relay reads the next
    batch in between); the confirm of the batch it fails says how many it did confirm."""

    reads_ahead = True

    def __init__(self, fail_after: int | None = None):
        super().__init__(fail_after)
        self.calls: list[tuple[str, int]] = []  # ("send" | "confirm", the batch's number)

    def send(self, messages: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        self.batches.append(list(messages))
        self.calls.append(("send", len(self.batches)))
        return self.batches[-1]

    def confirm(self, sent: list[Any]) -> None:
        self.calls.append(("confirm", next(i for i, b in enumerate(self.batches, 1)
                                           if b is sent)))
        if self.fail_after is not None:
            confirmed, self.fail_after = self.fail_after, None
            raise BrokerDown("connection lost (test)", confirmed=confirmed)


@pytest.fixture
def identity(tmp_path) -> Any:
    app = IdentityApplication(settings_for("identity", {"QIJI_DATA_DIR": str(tmp_path)}),
                              MASTER_KEY)
    made = build_city(in_application(app))
    platform = actor("platform-co", "platform", organisation_id=made.platform)
    with as_actor(platform):
        for number in range(5):
            rider = app.register_rider(
                platform_id=made.platform, platform_rider_id=f"B{number}", name="王骑手",
                phone="13812345678", national_id="", home_street_id=made.street,
                station_id=made.station)["rider_id"]
            app.verify_rider(rider_id=rider)
    yield app
    app.close()


def relay_over(feed: Any, broker: Any, batch: int) -> tuple[Relay, Any, MemoryPositions]:
    """A relay of identity's public feed `feed` to `broker`, `batch` messages a cycle: the
    relay, its state for identity, and the positions it stores."""
    positions = MemoryPositions()
    relay = Relay({"identity": feed}, positions, broker, batch=batch)
    return relay, relay.services["identity"], positions


def public_events(feed: LocalUpstream) -> list[Any]:
    """Every public event of the log, in log order."""
    return list(feed.read_public_events(public_pb.ReadPublicEventsRequest(
        from_position=1, limit=200, all_platforms=True)).events)


@pytest.mark.parametrize("kind", [Broker, PipelinedBroker])
def test_a_batch_confirmed_in_part_is_published_again_from_its_first_unconfirmed(identity, kind):
    feed = LocalUpstream(identity, IDENTITY_EVENTS)
    broker = kind(fail_after=4)
    relay, state, positions = relay_over(feed, broker, batch=200)
    with pytest.raises(BrokerDown):
        relay.run_once(state)
    (batch,) = broker.batches
    assert len(batch) >= 10  # every public event of the log in one batch, one confirm wait
    # Only what was confirmed is stored as done: the relay resumes at the fifth message's.
    stored = public_events(feed)
    everything = [e.event.id for e in stored]
    assert positions.saved["identity"] == stored[4].position
    assert state.published == 4

    assert state.prefetched is None  # nothing read ahead survives a failed confirm
    again = kind()
    restarted = Relay({"identity": feed}, positions, again, batch=200)
    restarted.run_once(restarted.services["identity"])
    assert set(broker.ids[:4]) | set(again.ids) == set(everything)  # nothing lost
    assert again.ids == everything[4:]  # what was not confirmed, again, in order


def test_confirms_are_counted_from_the_batchs_first_message_whatever_order_they_come_in():
    publisher = BatchPublisher("amqp://guest:guest@127.0.0.1:1/")
    publisher._sent = 10  # a batch of ten published on a fresh channel: tags 1..10
    publisher._on_ack(3, True)
    publisher._on_ack(5, False)  # alone, beyond a gap: not yet a prefix
    assert publisher._confirmed_since(0) == 3
    publisher._on_ack(4, False)
    assert publisher._confirmed_since(0) == 5
    publisher._on_nack(7, False)
    publisher._on_ack(10, True)  # after a nack, nothing from it on counts as confirmed
    assert publisher._confirmed_since(0) == 6
    assert publisher._confirmed_since(2) == 4


def test_the_next_batch_is_read_while_the_confirms_come_and_published_from_where_it_was_read(
        identity):
    feed = LocalUpstream(identity, IDENTITY_EVENTS)
    broker = PipelinedBroker()
    relay, state, positions = relay_over(feed, broker, batch=4)  # small batches: several cycles
    relay.run_once(state)
    assert state.prefetched is not None  # the next batch, read while the first was confirmed
    assert state.prefetched[0] == state.next_position == positions.saved["identity"]
    while state.next_position <= identity.last_position():
        relay.run_once(state)
    # Each once, in log order, none skipped.
    assert broker.ids == [e.event.id for e in public_events(feed)]
    assert positions.saved["identity"] == identity.last_position() + 1


def test_the_batch_read_ahead_goes_out_before_the_last_ones_confirms_and_is_stored_after_its_own(
        identity):
    """The broker's confirm (its fsync) is not on the next batch's way to consumers: the batch
    read ahead is sent at once, behind the last on the same channel; its position is stored
    only after its own confirms."""
    broker = PipelinedBroker()
    relay, state, positions = relay_over(LocalUpstream(identity, IDENTITY_EVENTS), broker,
                                         batch=4)
    relay.run_once(state)
    assert broker.calls == [("send", 1), ("send", 2), ("confirm", 1)]
    first_stored = positions.saved["identity"]
    assert first_stored == state.prefetched[0]  # batch 2: sent, not yet stored
    relay.run_once(state)
    # Batch 2 was not sent again: its confirms were awaited, batch 3 went out before them.
    assert broker.calls[3:] == [("send", 3), ("confirm", 2)]
    assert positions.saved["identity"] > first_stored


def test_a_failed_confirm_drops_the_batch_sent_ahead_and_it_is_published_again(identity):
    feed = LocalUpstream(identity, IDENTITY_EVENTS)
    broker = PipelinedBroker(fail_after=2)
    relay, state, positions = relay_over(feed, broker, batch=4)
    with pytest.raises(BrokerDown):
        relay.run_once(state)
    assert broker.calls == [("send", 1), ("send", 2), ("confirm", 1)]
    assert state.prefetched is None  # batch 2 went out unconfirmed: it goes again
    everything = public_events(feed)
    assert positions.saved["identity"] == everything[2].position  # only what was confirmed
    again = PipelinedBroker()
    restarted = Relay({"identity": feed}, positions, again, batch=4)
    while restarted.services["identity"].next_position <= identity.last_position():
        restarted.run_once(restarted.services["identity"])
    ids = [e.event.id for e in everything]
    assert again.ids == ids[2:]  # from the first unconfirmed, in order, each once
    assert set(broker.ids[:2]) | set(again.ids) == set(ids)  # nothing lost


class Starting(LocalUpstream):
    """A public feed whose reads can be begun ahead (as GrpcUpstream.start_read): each begun
    read noted in the broker's calls, answered when asked."""

    def __init__(self, app: Any, catalogue: Any, calls: list[tuple[str, int]]):
        super().__init__(app, catalogue)
        self.calls = calls

    def start_read(self, request: Any) -> Any:
        self.calls.append(("start_read", request.from_position))
        return lambda: self.read_public_events(request)


def test_the_read_after_the_batch_sent_ahead_runs_while_the_confirms_come(identity):
    """Issue 20: the service reads the next batch while the relay awaits the broker's confirms
    and stores the position — not after them."""
    broker = PipelinedBroker()
    feed = Starting(identity, IDENTITY_EVENTS, broker.calls)
    relay, state, positions = relay_over(feed, broker, batch=4)
    relay.run_once(state)
    ahead = state.prefetched
    assert ahead is not None
    # Batch 1 sent, batch 2 read and sent, the read after it begun, then batch 1 confirmed.
    assert [c[0] for c in broker.calls] == ["send", "start_read", "send", "start_read",
                                            "confirm"]
    assert broker.calls[3] == ("start_read", ahead[1].next_position)
    while state.next_position <= identity.last_position():
        relay.run_once(state)
    assert broker.ids == [e.event.id for e in public_events(feed)]  # each once, in order
    assert positions.saved["identity"] == identity.last_position() + 1
